"""The safe executor's limits (issue 13): dry-run default, allow-list, deny-list, escalation of unbound targets,
one action in flight, cooldown, per-incident cap, replica bounds, pre-checks, revert on worse SLOs, and one audit
record per decision. Fake handlers and a fake clock: no Ray, no network."""
from __future__ import annotations

import subprocess
import sys

import pytest

from ifshm_ray.config import ConfigError
from ifshm_ray.live.binding import Binding, load_binding
from ifshm_ray.live.config import ExecutorConfig
from ifshm_ray.live.executor import ActionRequest, PlannedCall, SafeExecutor, telemetry_hash

pytestmark = pytest.mark.timeout(30)


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeService:
    """A live component's state; handlers change it and record their calls."""

    def __init__(self, replicas: int = 2):
        self.replicas = replicas
        self.calls: list[tuple] = []
        self.fail_execute = False

    def scale(self, req: ActionRequest) -> PlannedCall:
        before = self.replicas
        after = round(before * (req.ratio or 1.0))

        def execute():
            if self.fail_execute:
                raise RuntimeError("dashboard answered 500")
            self.calls.append(("scale", after))
            self.replicas = after
            return {"status": 200}

        def undo():
            self.calls.append(("undo", before))
            self.replicas = before
            return {"status": 200}

        return PlannedCall(call={"method": "PUT", "replicas": after}, execute=execute, undo=undo,
                           replicas=(before, after))

    def restart(self, req: ActionRequest) -> PlannedCall:
        def execute():
            self.calls.append(("restart", req.component))
            return {"restarted": req.component}

        return PlannedCall(call={"restart": req.component}, execute=execute, undo=lambda: {"noop": True})


def answer(category: str, target: str | None = "inference-server", ratio: float | None = None, **extra) -> dict:
    return {"action": {"category": category, "target": target, "ratio": ratio, "probability": 0.9},
            "escalate": False, "escalate_reasons": [], **extra}


@pytest.fixture
def setup(tmp_path):
    svc = FakeService()
    clock = FakeClock()
    badness = {"value": 1.0}

    def make(**cfg):
        c = ExecutorConfig(audit_log=str(tmp_path / "audit.jsonl"), **cfg)
        ex = SafeExecutor(c, load_binding(), {"scale": svc.scale, "restart": svc.restart},
                          probe=lambda: badness["value"], clock=clock)
        return ex

    return make, svc, clock, badness


def test_dry_run_is_the_default_and_changes_nothing(setup):
    make, svc, _, _ = setup
    assert ExecutorConfig().execute is False
    ex = make()
    rec = ex.decide(incident="i1", answer=answer("scale", ratio=2.0), telemetry={"w": 1}, fingerprint="fp")
    assert rec["outcome"] == "dry_run" and rec["mode"] == "dry_run"
    assert rec["call"] == {"method": "PUT", "replicas": 4}
    assert svc.calls == [] and svc.replicas == 2 and not ex.in_flight


def test_audit_record_fields_and_one_per_decision_including_refused(setup):
    make, _, _, _ = setup
    ex = make(execute=True, verify_after_s=0.0)
    decisions = [answer("scale", ratio=2.0), answer("migrate"), answer("restart", target="coredns"),
                 answer("observe", target=None), answer("restart", target="api-gateway")]
    recs = [ex.decide(incident="i1", answer=a, telemetry={"k": i}, fingerprint=f"fp{i}")
            for i, a in enumerate(decisions)]
    log = ex.audit.read()
    assert [r["outcome"] for r in log] == ["executed", "refused", "page", "observed", "refused"]
    assert log == [{**r} for r in recs]
    first = log[0]
    for key in ("incident", "alert_fingerprint", "telemetry_sha256", "answer", "mode", "call", "reply",
                "started_at", "finished_at", "executed_at", "component", "reason"):
        assert key in first, key
    assert first["telemetry_sha256"] == telemetry_hash({"k": 0})
    assert first["answer"] == decisions[0] and first["reply"] == {"status": 200}
    assert "in flight" in log[4]["reason"]  # the executed scale is still waiting for verification


def test_allow_list(setup):
    make, svc, _, _ = setup
    rec = make(execute=True).decide(incident="i", answer=answer("rollback"))
    assert rec["outcome"] == "refused" and "not allow-listed" in rec["reason"] and svc.calls == []


@pytest.mark.parametrize("target", ["inference-server", "api-gateway"])
def test_deny_list_by_kind_and_name(setup, target):
    make, svc, _, _ = setup
    ex = make(execute=True, deny_components=["model"], deny_kinds=["nginx", "ray_gcs"])
    rec = ex.decide(incident="i", answer=answer("restart", target=target))
    assert rec["outcome"] == "refused" and "deny-list" in rec["reason"] and svc.calls == []


def test_protected_components_are_refused_by_default(setup):
    make, svc, _, _ = setup
    binding = load_binding()
    data = binding.model_dump()
    data["entities"]["job-scheduler"] = "serve-controller"
    data["entities"]["coredns"] = "ray-gcs"
    ex = make(execute=True)
    ex.binding = Binding.from_dict(data)
    for target in ("job-scheduler", "coredns"):
        rec = ex.decide(incident="i", answer=answer("restart", target=target))
        assert rec["outcome"] == "refused" and "deny-list" in rec["reason"]
    assert svc.calls == []


def test_unbound_target_and_escalate_are_pages(setup):
    make, svc, _, _ = setup
    ex = make(execute=True)
    assert ex.decide(incident="i", answer=answer("restart", target="message-queue"))["outcome"] == "page"
    assert ex.decide(incident="i", answer=answer("escalate", target=None))["outcome"] == "page"
    rec = ex.decide(incident="i", answer=answer("scale", ratio=2.0, escalate=True, escalate_reasons=["low conf"]))
    assert rec["outcome"] == "page" and rec["reason"] == "low conf"
    assert svc.calls == []


def test_one_action_in_flight_then_cooldown(setup):
    make, svc, clock, _ = setup
    ex = make(execute=True, verify_after_s=10.0, cooldown_s=60.0)
    assert ex.decide(incident="a", answer=answer("restart"))["outcome"] == "executed"
    busy = ex.decide(incident="b", answer=answer("restart", target="api-gateway"))
    assert busy["outcome"] == "refused" and "in flight" in busy["reason"]
    assert ex.poll() is None  # not due yet
    clock.t += 10.0
    assert ex.poll()["outcome"] == "verified" and not ex.in_flight
    cool = ex.decide(incident="b", answer=answer("restart"))
    assert cool["outcome"] == "refused" and "cooling down" in cool["reason"]
    assert ex.decide(incident="b", answer=answer("restart", target="api-gateway"))["outcome"] == "executed"
    clock.t += 60.0
    ex.poll()
    assert ex.decide(incident="b", answer=answer("restart"))["outcome"] == "executed"


def test_at_most_three_actions_per_incident(setup):
    make, _, _, _ = setup
    ex = make(execute=False, cooldown_s=0.0)
    outcomes = [ex.decide(incident="i", answer=answer("restart"))["outcome"] for _ in range(4)]
    assert outcomes == ["dry_run"] * 3 + ["refused"]
    assert "max_actions_per_incident" in ex.audit.read()[-1]["reason"]
    assert ex.decide(incident="other", answer=answer("restart"))["outcome"] == "dry_run"


@pytest.mark.parametrize("ratio,replicas,outcome", [(2.0, 2, "dry_run"), (3.0, 2, "refused"),
                                                     (0.5, 1, "refused"), (0.5, 2, "dry_run")])
def test_replica_bounds(setup, ratio, replicas, outcome):
    make, svc, _, _ = setup
    svc.replicas = replicas
    rec = make(min_replicas=1, max_replicas=4).decide(incident="i", answer=answer("scale", ratio=ratio))
    assert rec["outcome"] == outcome, rec["reason"]
    if outcome == "refused":
        assert "outside the bounds" in rec["reason"]


def test_pre_check_problems_and_planning_errors_refuse(setup, tmp_path):
    make, _, _, _ = setup
    ex = make(execute=True)

    def unhealthy(req):
        return PlannedCall(call={}, execute=lambda: pytest.fail("must not run"), problems=["app not RUNNING"])

    def unreachable(req):
        raise ConnectionError("dashboard down")

    ex.handlers.update(rollback=unhealthy, reroute=unreachable)
    r1 = ex.decide(incident="i", answer=answer("rollback"))
    r2 = ex.decide(incident="i", answer=answer("reroute", target="api-gateway"))
    assert r1["outcome"] == r2["outcome"] == "refused"
    assert "app not RUNNING" in r1["reason"] and "dashboard down" in r2["reason"]
    assert not ex.in_flight


@pytest.mark.parametrize("ratio", ["2", -1.0, 0.0, float("nan"), True])
def test_bad_ratio_is_refused_and_recorded(setup, ratio):
    make, svc, _, _ = setup
    ex = make(execute=True)
    rec = ex.decide(incident="i", answer=answer("scale", ratio=ratio))
    assert rec["outcome"] == "refused" and "ratio" in rec["reason"] and svc.calls == []
    assert len(ex.audit.read()) == 1


def test_unexpected_errors_still_give_one_record(setup):
    make, _, _, _ = setup
    ex = make(execute=True)
    ex.handlers["restart"] = lambda req: PlannedCall(call={}, execute=lambda: {}, replicas="oops")
    rec = ex.decide(incident="i", answer=answer("restart"))
    assert rec["outcome"] == "refused" and "executor error" in rec["reason"]
    assert ex.audit.read() == [rec] and not ex.in_flight


def test_a_heal_response_model_is_accepted(setup):
    from ifshm_ray.serve.schemas import HealResponse

    make, _, _, _ = setup
    body = {"diagnosis": {"fault_mode": "x", "confidence": 0.9, "unknown_score": None, "unknown": False, "top": [],
                          "explanation": ""},
            "action": {"category": "scale", "target": "inference-server", "ratio": 2.0, "probability": 0.8},
            "category_probability": 0.9, "alternatives": [], "expected_recovery_s": None,
            "expected_recovery_basis": "", "escalate": False, "escalate_reasons": [], "value": None}
    rec = make().decide(incident="i", answer=HealResponse.model_validate(body))
    assert rec["outcome"] == "dry_run" and rec["answer"]["diagnosis"]["fault_mode"] == "x"


def test_failed_call_is_recorded_and_counted(setup):
    make, svc, _, _ = setup
    svc.fail_execute = True
    ex = make(execute=True)
    rec = ex.decide(incident="i", answer=answer("scale", ratio=2.0))
    assert rec["outcome"] == "failed" and "500" in rec["reply"]["error"] and not ex.in_flight


@pytest.mark.parametrize("after,outcome,replicas", [(3.0, "reverted", 2), (1.0, "verified", 4),
                                                    (0.2, "verified", 4)])
def test_revert_when_slo_worse(setup, after, outcome, replicas):
    make, svc, clock, badness = setup
    ex = make(execute=True, verify_after_s=30.0, revert_margin=0.5)
    assert ex.decide(incident="i", answer=answer("scale", ratio=2.0))["outcome"] == "executed"
    assert svc.replicas == 4
    badness["value"] = after
    clock.t += 30.0
    rec = ex.poll()
    assert rec["outcome"] == outcome and svc.replicas == replicas
    assert ex.audit.read()[-1] == rec and rec["slo_before"] == 1.0 and rec["slo_after"] == after


def test_probe_failure_after_acting_reverts(setup):
    make, svc, clock, badness = setup
    ex = make(execute=True, verify_after_s=0.0)
    ex.decide(incident="i", answer=answer("scale", ratio=2.0))
    ex.probe = lambda: (_ for _ in ()).throw(TimeoutError("probe timed out"))
    rec = ex.poll()
    assert rec["outcome"] == "reverted" and "probe timed out" in rec["probe_error"] and svc.replicas == 2


def test_worse_without_undo_is_a_page(setup):
    make, _, _, badness = setup
    ex = make(execute=True, verify_after_s=0.0)
    ex.handlers["clear_storage"] = lambda req: PlannedCall(call={"rm": "x"}, execute=lambda: {"ok": 1}, undo=None)
    assert ex.decide(incident="i", answer=answer("clear_storage", target="gpu-0"))["outcome"] == "executed"
    badness["value"] = 9.0
    rec = ex.poll()
    assert rec["outcome"] == "revert_failed" and rec["page"] is True


def test_wait_verified_is_bounded(setup):
    make, _, clock, _ = setup
    ex = make(execute=True, verify_after_s=5.0)
    ex.decide(incident="i", answer=answer("restart"))
    assert ex.wait_verified(timeout_s=0.05, poll_s=0.01) is None and ex.in_flight  # fake clock never advances
    clock.t += 5.0
    assert ex.wait_verified(timeout_s=0.05, poll_s=0.01)["outcome"] == "verified"


def test_config_refuses_inverted_bounds_and_handlers_for_builtins(tmp_path):
    with pytest.raises(ConfigError, match="min_replicas"):
        ExecutorConfig(min_replicas=5, max_replicas=2)
    with pytest.raises(ConfigError, match=r"deny_kinds.0 = 'gcs'"):  # a typo must not open the deny-list
        ExecutorConfig(deny_kinds=["gcs"])
    cfg = ExecutorConfig(audit_log=str(tmp_path / "a.jsonl"))
    with pytest.raises(ValueError, match="observe"):
        SafeExecutor(cfg, load_binding(), {"observe": lambda r: None}, probe=lambda: 0.0)
    with pytest.raises(ValueError, match="unknown categories"):
        SafeExecutor(cfg, load_binding(), {"clear-storage": lambda r: None}, probe=lambda: 0.0)
    with pytest.raises(ValueError, match="not components of the binding"):
        SafeExecutor(ExecutorConfig(audit_log=cfg.audit_log, deny_components=["modle"]), load_binding(), {},
                     probe=lambda: 0.0)


def test_live_package_imports_neither_torch_nor_ray():
    code = ("import sys, ifshm_ray.live.executor, ifshm_ray.live.handlers, ifshm_ray.live.injectors, "
            "ifshm_ray.live.proxy, ifshm_ray.live.slo, ifshm_ray.live.loadgen, ifshm_ray.live.recording, "
            "ifshm_ray.live.binding as b; b.load_binding(); "
            "print(sorted(m for m in ('torch', 'ray', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

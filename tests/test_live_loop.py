"""The live pieces together, in one process on 127.0.0.1: load generator -> fault proxy -> echo upstream, a fault
injected with experiment(), the SafeExecutor acting with the real SLO probe, recovery judged on the wall clock.
The "reroute" handler here bypasses the faulty path by clearing the proxy's fault (a stand-in for the nginx
upstream switch, which needs nginx)."""
from __future__ import annotations

import time

import pytest
from live_helpers import upstream, wait_until  # noqa: F401  (upstream is a fixture)

from ifshm_ray.config import SimConfig
from ifshm_ray.live.binding import load_binding
from ifshm_ray.live.config import ExecutorConfig, InjectorConfig, LoadConfig, ProxyConfig, SloProbeConfig
from ifshm_ray.live.executor import PlannedCall, SafeExecutor
from ifshm_ray.live.injectors import FaultPlan, ProxyControl, build_injector, experiment, load_fault_plans
from ifshm_ray.live.loadgen import LoadGenerator
from ifshm_ray.live.proxy import FaultProxy
from ifshm_ray.live.slo import HttpSloProbe, RecoveryWatch

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def stack(upstream, tmp_path):
    proxy = FaultProxy(upstream, cfg=ProxyConfig(seed=0, idle_timeout_s=5)).start()
    control = ProxyControl(proxy.control_url, timeout_s=5.0)
    probe = HttpSloProbe(proxy.url + "/", SloProbeConfig(requests=5, green_s=0.3), SimConfig(),
                         baseline_latency_ms=1000.0)

    def bypass(req):
        return PlannedCall(call={"reroute": req.component, "bypass": proxy.url}, execute=control.clear,
                           undo=lambda: {"noop": True})

    executor = SafeExecutor(ExecutorConfig(execute=True, verify_after_s=0.0, audit_log=str(tmp_path / "a.jsonl")),
                            load_binding(), {"reroute": bypass}, probe=probe)
    load = LoadGenerator(proxy.url + "/", LoadConfig(rate_rps=20, concurrency=2, max_duration_s=120)).start()
    yield proxy, control, probe, executor, load
    load.stop()
    proxy.stop()


def _plan(name: str, **changes) -> FaultPlan:
    """A committed fault plan with some values changed for a fast test (validated again)."""
    return FaultPlan.from_dict({**load_fault_plans().get(name).model_dump(), **changes})


def _recovered(probe, watch, timeout_s=10.0) -> bool:
    return wait_until(lambda: watch.update(time.monotonic(), probe() == 0.0), timeout_s=timeout_s, step_s=0.05)


def test_fault_detected_healed_and_verified(stack):
    proxy, control, probe, executor, load = stack
    plan = _plan("path-errors", proxy={"error_rate": 1.0})
    with experiment(build_injector(plan, InjectorConfig(), proxy=control)) as run:
        t_inject = time.monotonic()
        assert probe() > 0  # SLOs violated
        rec = executor.decide(incident="inc-1", answer={"action": {"category": "reroute", "target": "api-gateway",
                                                                   "ratio": None}}, fingerprint="fp-1")
        assert rec["outcome"] == "executed" and rec["slo_before"] > 0
        assert executor.poll()["outcome"] == "verified"
        assert _recovered(probe, RecoveryWatch(green_s=0.3))
        mttr = time.monotonic() - t_inject
    assert run["undone_at"] >= run["injected_at"] and mttr < 10
    assert load.window(since=t_inject).requests > 0
    assert [r["outcome"] for r in executor.audit.read()] == ["executed", "verified"]


def test_negative_control_needs_no_action(stack):
    proxy, control, probe, executor, _ = stack
    plan = _plan("negative-control", hold_s=0.3, proxy={"error_rate": 1.0})
    inj = build_injector(plan, InjectorConfig(), proxy=control)
    with experiment(inj):
        rec = executor.decide(incident="neg", answer={"action": {"category": "observe", "target": None,
                                                                 "ratio": None}})
        assert rec["outcome"] == "observed"
        assert wait_until(inj.resolved, timeout_s=5)
        assert _recovered(probe, RecoveryWatch(green_s=0.3))
    assert [r["outcome"] for r in executor.audit.read()] == ["observed"]

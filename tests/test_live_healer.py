"""The trained-policy arm's healer (ifshm_ray/live/healer.py) and the replay of recorded live windows through
/v1/heal (ifshm_ray/live/replay.py): the request the live loop sends (window, last action, history in decision
windows), the healer's process (own session on 127.0.0.1, stopped by its group), the escalation of an unbound
target by the executor, and that recorded windows replayed through /v1/heal give the recorded decisions."""
from __future__ import annotations

import copy
import os

import pytest

from ifshm_ray.live.healer import HealerArm, heal_request
from ifshm_ray.live.recording import IncidentRecorder, read_windows
from ifshm_ray.live.replay import decision, replay_windows

pytestmark = pytest.mark.timeout(240)
SERVE_SETS = ["model=tiny-llama", "min_confidence=0.0", "torch_threads=1"]


def live_window(t: float = 20.0, latency: float = 900.0, firing: bool = True) -> dict:
    """A window in the collector's shape (ifshm_ray/live/collector.py): entity metrics from PromQL, Prometheus
    alerts, log lines rendered like the simulator's."""
    from ifshm_ray.sim.topology import Topology
    from ifshm_ray.config import TopologyConfig
    topo = Topology(TopologyConfig())
    return {"schema": "ifshm.telemetry/v1", "time_s": t, "window_s": 30.0,
            "topology": {"services": list(topo.services), "nodes": list(topo.nodes)},
            "metrics": {"api-gateway": {"latency_p99_ms": [120.0, latency], "error_rate": [0.0, 0.02],
                                        "throughput_ratio": [1.0, 0.8], "latency_slo_ratio": [0.4, latency / 300.0],
                                        "ready_ratio": [1.0, 1.0]},
                        "feature-store": {"memory_util": [0.02, 0.02], "ready_ratio": [1.0, 1.0]},
                        "gpu-0": {"node_filesystem_used_ratio": [0.01, 0.01], "node_cpu_utilisation": [0.7, 0.9]}},
            "alarms": [{"name": "ServiceLatencyHigh", "severity": "warning", "entity": "api-gateway",
                        "state": "firing" if firing else "pending", "active_for_s": 6.0,
                        "summary": "p99 latency of api-gateway above its SLO"}],
            "logs": ["2026-11-30T07:00:01.000Z gpu-0 api-gateway: upstream timed out (110: Connection timed out) "
                     "while reading response header from upstream"]}


def test_heal_request_carries_last_action_and_history_in_decision_windows():
    tel = live_window()
    assert heal_request(tel, []) == {"telemetry": tel, "last_action": None, "history": []}
    decisions = [{"category": "reroute", "target": "api-gateway"}, {"category": "observe", "target": None},
                 {"category": "restart", "target": "inference-server"}]
    body = heal_request(tel, decisions)
    assert body["last_action"] == "restart"
    assert body["history"] == [{"category": "reroute", "target": "api-gateway", "steps_ago": 3},
                               {"category": "restart", "target": "inference-server", "steps_ago": 1}]


def test_an_action_not_taken_is_remembered_as_observe():
    arm = HealerArm("http://127.0.0.1:1", 1.0)
    arm.decisions = [{"category": "scale", "target": "inference-server"}]
    arm.taken("executed")
    assert arm.decisions[-1]["category"] == "scale"
    arm.taken("refused")
    assert arm.decisions[-1] == {"category": "observe", "target": None}
    arm.decisions = [{"category": "escalate", "target": None}, {"category": "reallocate", "target": "coredns"}]
    arm.taken("page")  # no live binding: the executor paged, nothing was applied (as the masks refusing it)
    assert arm.decisions[-1] == {"category": "observe", "target": None}
    assert heal_request(live_window(), arm.decisions)["history"] == [
        {"category": "escalate", "target": None, "steps_ago": 2}]
    arm.decisions.append({"category": "escalate", "target": None})
    arm.taken("page")  # the policy's own escalate stays one
    assert arm.decisions[-1] == {"category": "escalate", "target": None}
    with pytest.raises(Exception, match="127.0.0.1"):
        HealerArm("http://10.0.0.1:8000", 1.0)


def test_the_gate_decides_once_per_incident_and_a_deferral_lets_the_runbook_act():
    """The live healer arm with a gate in the answers: the first answer whose gate decides here fixes the incident's
    actor, sent back as incident_gate; after a deferral to the runbook the runbook's action goes to the executor
    (the healer's answer is still what is recorded), and the incident's memory holds what was applied."""
    import numpy as np

    from ifshm_ray.config import TopologyConfig
    from ifshm_ray.live.incident import healer_decision
    from ifshm_ray.sim.actions import CATEGORIES
    from ifshm_ray.sim.topology import Topology

    topo = Topology(TopologyConfig())

    def answer(cat, target, gate):
        return {"action": {"category": cat, "target": target, "ratio": None}, "escalate": gate["deferred"],
                "gate": gate}

    calm = {"actor": "runbook", "deferred": True, "decides_here": False}       # not deciding yet: ignored
    decide = {"actor": "runbook", "deferred": True, "decides_here": True}
    later = {"actor": "policy", "deferred": False, "decides_here": True}       # a later window would say policy
    answers = iter([answer("observe", None, calm), answer("drain", "gpu-0", decide), answer("drain", "gpu-0", later)])
    sent = []

    class FakeHealer(HealerArm):
        def decide(self, telemetry):
            body = heal_request(telemetry, self.decisions)
            if self.gate_actor is not None:
                body["incident_gate"] = self.gate_actor
            sent.append(body)
            a = next(answers)
            self.note_gate(a)
            self.decisions.append({"category": a["action"]["category"], "target": a["action"]["target"]})
            return body, a

    class Runbook:
        def act(self, obs, info, env):
            assert "telemetry" in info
            return np.array([CATEGORIES.index("clear_storage"), topo.targets.index("gpu-0"), 0])

    h = FakeHealer("http://127.0.0.1:1", 1.0)
    h.reset()
    _, ans, acting, actor = healer_decision(h, Runbook(), live_window(), None, topo)
    assert h.gate_actor is None and acting is ans and actor == "policy"  # the policy's own answer stands
    _, ans, acting, actor = healer_decision(h, Runbook(), live_window(), None, topo)
    assert h.gate_actor == "runbook" and actor == "runbook" and ans["action"]["category"] == "drain"
    assert acting["action"] == {"category": "clear_storage", "target": "gpu-0", "ratio": None}
    assert not acting["escalate"]
    h.taken("executed", applied=acting["action"])
    assert h.decisions[-1] == {"category": "clear_storage", "target": "gpu-0"}
    _, ans, acting, actor = healer_decision(h, Runbook(), live_window(), None, topo)
    assert sent[-1]["incident_gate"] == "runbook" and "incident_gate" not in sent[0] and h.gate_actor == "runbook"
    assert actor == "runbook" and acting["action"]["category"] == "clear_storage"
    assert sent[-1]["history"][-1] == {"category": "clear_storage", "target": "gpu-0", "steps_ago": 1}
    h.reset()
    assert h.gate_actor is None and h.decisions == []


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from ifshm_ray.serve.testing import untrained_policy_bundle
    return untrained_policy_bundle(tmp_path_factory.mktemp("bundle"), seed=3)


@pytest.fixture(scope="module")
def in_process(bundle):
    from ifshm_ray.live.replay import in_process_heal
    heal, close = in_process_heal(str(bundle), SERVE_SETS)
    yield heal
    close()


def test_recorded_windows_replayed_through_v1_heal_give_the_recorded_decisions(in_process, tmp_path):
    arm = HealerArm("http://127.0.0.1:1", 1.0)
    arm.reset()
    rec = IncidentRecorder(tmp_path / "w.parquet")
    for i, tel in enumerate([live_window(10.0, 300.0, False), live_window(20.0), live_window(30.0, 1500.0)]):
        body = heal_request(tel, arm.decisions)
        answer = in_process(body)
        arm.decisions.append({"category": answer["action"]["category"], "target": answer["action"]["target"]})
        rec.add(incident="inc", fault="path-latency", arm="policy", window_index=i, wall_time=float(i),
                telemetry=tel, answer=answer, outcome="dry_run", request=body)
    rec.add(incident="rb", fault="path-latency", arm="runbook", window_index=0, wall_time=9.0,
            telemetry=live_window(), answer=None)
    windows = read_windows(rec.write())
    assert windows[1]["request"]["history"] == heal_request(windows[1]["telemetry"],
                                                           arm.decisions[:1])["history"]
    res = replay_windows(windows, in_process)
    assert res == {"windows": 3, "matches": 3, "mismatches": []}
    # a decision that changes is found (here: a recorded answer altered)
    bad = copy.deepcopy(windows)
    bad[2]["answer"]["action"]["category"] = "escalate" if decision(bad[2]["answer"])["category"] != "escalate" \
        else "observe"
    res = replay_windows(bad, in_process)
    assert res["matches"] == 2 and res["mismatches"][0]["window_index"] == 2


@pytest.mark.slow
def test_the_healer_process_answers_v1_heal_and_stops(bundle, tmp_path):
    from ifshm_ray.live.config import HealerConfig
    from ifshm_ray.live.healer import HealerProcess
    from ifshm_ray.live.stack import free_port
    cfg = HealerConfig(serve={"model": "tiny-llama", "min_confidence": 0.0, "torch_threads": 1},
                       startup_timeout_s=180)
    with HealerProcess(cfg, str(bundle), free_port(), tmp_path / "healer.log", max_lifetime_s=200) as hp:
        assert hp.health()["policy"]["kind"] == "hierarchical"
        arm = HealerArm(hp.url, 30.0)
        body, answer = arm.decide(live_window())
        assert body["last_action"] is None and answer["action"]["category"] == decision(answer)["category"]
        _, answer2 = arm.decide(live_window(30.0))
        assert len(arm.decisions) == 2
        pgid = hp.popen.pid
    assert hp.popen.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)  # nothing of its process group is left


def test_an_unbound_target_is_escalated_not_guessed(tmp_path):
    """The healer's answer goes to the executor unchanged; a simulator entity with no live binding pages."""
    from ifshm_ray.live.binding import load_binding
    from ifshm_ray.live.config import ExecutorConfig
    from ifshm_ray.live.executor import SafeExecutor
    binding = load_binding()
    unbound = next(t for t in ("training-worker", "gpu-1", "coredns") if binding.component_for(t) is None)
    ex = SafeExecutor(ExecutorConfig(audit_log=str(tmp_path / "a.jsonl")), binding,
                      {"restart": lambda r: pytest.fail("guessed")}, probe=lambda: 0.0)
    rec = ex.decide(incident="i", answer={"action": {"category": "restart", "target": unbound}, "escalate": False})
    assert rec["outcome"] == "page" and "no live binding" in rec["reason"]


def test_the_healer_names_what_the_policy_and_the_diagnosis_read():
    """The healer's log says whether the policy embeds text (the bundle's manifest) and warns where an untrained
    diagnosing encoder could page, or where the policy's semantic state came from another encoder."""
    from ifshm_ray.live.healer import describe_inputs
    from ifshm_ray.serve.config import ServeConfig
    manifest = {"spaces": {"num_features": 578}, "encoder": None, "env": {"config": {"faults": "known"}}}
    untrained = {"model": "minilm", "trained": False, "checkpoint": None}
    lines = describe_inputs(manifest, untrained, ServeConfig(checkpoint="b", min_confidence=0.0))
    assert len(lines) == 2 and "578" in lines[0] and "no encoder" in lines[0] and "untrained" in lines[1]
    assert "missing_metrics=steady_state" in lines[0]
    lines = describe_inputs(manifest, untrained, ServeConfig(checkpoint="b", min_confidence=0.5))
    assert len(lines) == 3 and "min_confidence=0.5" in lines[2]
    semantic = {**manifest, "encoder": {"checkpoint": "results/encoder", "model": "smollm2"}}
    lines = describe_inputs(semantic, untrained, ServeConfig(checkpoint="b", min_confidence=0.0))
    assert "semantic state" in lines[0] and any("results/encoder" in x for x in lines[2:])

"""The live healer's path gives the policy's own decisions on simulator telemetry (issue 13, sim-to-real check).

A simulator episode is stepped with the policy acting in the env on the env's observation; at every step the same
step's ``info["telemetry"]`` window goes through exactly what the live loop does (``heal_request`` with the
incident's earlier decisions, ``/v1/heal`` of the healer's app in-process, ``HealerArm.taken``) and must give the
same action (category, target, ratio). So whatever the healer builds from a window (observation, incident memory
counted in decision windows, the series read at the steady state) is what the policy met in training, and a live
window that misleads the policy does so through its telemetry, not through the pipeline. Simulator windows report
every series, so nothing is read at the steady state there. Run for the trained bundle of the recorded live run
(``tests/data/live_replay/policy_bundle``) and an untrained one (other actions, other histories)."""
from __future__ import annotations

from pathlib import Path

import pytest

from ifshm_ray.live.healer import HealerArm, heal_request
from ifshm_ray.live.replay import in_process_heal

pytestmark = pytest.mark.timeout(300)
TRAINED = Path(__file__).resolve().parent / "data" / "live_replay" / "policy_bundle"
SERVE_SETS = ["model=tiny-llama", "min_confidence=0.0", "torch_threads=1"]
# the simulator's counterparts of the live faults (a full feature store, a full disk, 5xx at the gateway) and a
# fault-free episode
FAULTS = ["feature_store_maxmemory", "disk_full_checkpoint_volume", "api_5xx_storm", "none"]
STEPS = 8


def _untrained(tmp_path_factory):
    from ifshm_ray.serve.testing import untrained_policy_bundle
    return untrained_policy_bundle(tmp_path_factory.mktemp("bundle"), seed=5)


@pytest.mark.parametrize("which", ["trained", "untrained"])
def test_simulator_windows_through_the_healer_give_the_policys_decisions_in_the_env(which, tmp_path_factory):
    from ifshm_ray.env.fault_env import FaultInjectionEnv
    from ifshm_ray.policy.bundle import load_policy_bundle

    bundle = TRAINED if which == "trained" else _untrained(tmp_path_factory)
    policy = load_policy_bundle(bundle)
    env = FaultInjectionEnv({**policy.manifest["env"]["config"], "render_telemetry": True})
    heal, close = in_process_heal(str(bundle), SERVE_SETS)
    arm = HealerArm("http://127.0.0.1:1", 1.0)
    seen, compared, with_history = set(), 0, 0
    try:
        for k, fault in enumerate(FAULTS):
            obs, info = env.reset(seed=100 + k, options={"faults": fault})
            arm.reset()
            for _ in range(STEPS):
                c, t, r = policy.act(obs, deterministic=True)
                want = env.decode((c, t, r))
                body = heal_request(info["telemetry"], arm.decisions)
                answer = heal(body)
                got = answer["action"]
                assert (got["category"], got["target"], got["ratio"]) == (want.category, want.target, want.ratio), \
                    (fault, compared, body["history"])
                assert answer["imputed_metrics"] == []  # (a simulator window reports every series)
                with_history += bool(body["history"])
                arm.decisions.append({"category": got["category"], "target": got["target"]})
                arm.taken("executed")
                seen.add(got["category"])
                compared += 1
                obs, _, term, trunc, info = env.step((c, t, r))
                if term or trunc:
                    break
    finally:
        close()
    assert compared >= len(FAULTS) * 2
    assert with_history >= len(FAULTS)  # the incident memory is exercised
    if which == "trained":
        assert len(seen) >= 2, seen  # more than one kind of decision

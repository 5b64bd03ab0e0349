"""GatedPolicy on the simulator: known incidents stay with the policy, untrusted novel ones go to the runbook or
are escalated, the decision is taken at the first alarm and holds, outcomes go to the trust table."""
from __future__ import annotations

import numpy as np
import pytest

from ifshm_ray.baselines.policies import Policy, RunbookPolicy
from ifshm_ray.env.fault_env import FaultInjectionEnv
from ifshm_ray.meta.config import MetaConfig
from ifshm_ray.meta.controller import MetaController
from ifshm_ray.meta.gate import GatedPolicy
from ifshm_ray.meta.novelty import calibrate
from ifshm_ray.sim.actions import CATEGORY_INDEX


class Observer(Policy):
    name = "observer"

    def act(self, obs, info, env):
        return np.zeros(3, np.int64)


def _run(policy, fault, seed=7, steps=30):
    env = FaultInjectionEnv({"faults": "all"})
    obs, info = env.reset(seed=seed, options={"faults": fault})
    policy.reset(env, episode_seed=seed)
    actions = []
    for _ in range(steps):
        a = policy.act(obs, info, env)
        actions.append(tuple(int(x) for x in a))
        obs, _, term, trunc, info = env.step(a)
        if term or trunc:
            break
    return actions, info


def _meta(fallback):
    return MetaController(MetaConfig(enabled=True, trust={"fallback": fallback}), calibrate(np.linspace(0, 1, 100)))


@pytest.mark.timeout(120)
def test_untrusted_novel_incident_runs_the_runbook():
    calls = []
    gated = GatedPolicy(Observer(), RunbookPolicy(), _meta("runbook"),
                        lambda t: (calls.append(1), (5.0, np.eye(4)[0]))[1], update=True)
    fault = "node_crash"
    got, info = _run(gated, fault)
    assert gated.decision.actor == "runbook" and gated.decision.deferred and len(calls) == 1  # decided once
    # from the first alarm on, exactly the runbook's actions (the runbook alone on the same episode)
    alone, _ = _run(RunbookPolicy(), fault)
    assert got == alone[:len(got)] and any(a[0] != 0 for a in got)  # the runbook did act
    assert gated.record_outcome(True, 240.0)
    assert gated.meta.trust.stats(gated.decision.cluster, "runbook").n == 1


@pytest.mark.timeout(120)
def test_escalate_and_known_paths():
    esc = GatedPolicy(Observer(), RunbookPolicy(), _meta("escalate"), lambda t: (5.0, None))
    got, _ = _run(esc, "node_crash")
    assert got.count((CATEGORY_INDEX["escalate"], 0, 0)) == 1
    known = GatedPolicy(Observer(), RunbookPolicy(), _meta("runbook"), lambda t: (0.1, None))
    got, _ = _run(known, "node_crash")
    assert known.decision.actor == "policy" and set(got) == {(0, 0, 0)}
    assert not known.record_outcome(True, 100.0)  # known incidents are not in the trust table

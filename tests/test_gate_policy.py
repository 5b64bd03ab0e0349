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


@pytest.mark.timeout(120)
def test_recorded_gated_incident_enters_the_replay_with_the_runbooks_actions():
    from ray.rllib.core.columns import Columns

    from ifshm_ray.meta.gate import incident_stratum, record_incident
    from ifshm_ray.replay.actor import ReplayActor
    from ifshm_ray.replay.config import ReplayConfig

    env = FaultInjectionEnv({"faults": "all"})
    gated = GatedPolicy(Observer(), RunbookPolicy(), _meta("runbook"), lambda t: (5.0, np.eye(4)[0]), update=True)
    rec = record_incident(env, gated, "node_crash", seed=7)
    assert rec.deferred and rec.decision.actor == "runbook"
    alone, _ = _run(RunbookPolicy(), "node_crash", steps=10_000)
    assert [tuple(a) for a in rec.episode.get_actions()] == alone  # whoever acted: here the runbook
    assert rec.episode.is_done and len(rec.episode) == len(alone) and "mttr_s" in rec.info
    stratum = incident_stratum(rec, "known", "novel")
    assert stratum == "novel-0"
    replay = ReplayActor(ReplayConfig(capacity=10_000, recovered_only=False))
    replay.push(rec.episode, stratum)
    assert replay.flush() == 1
    batch = replay.sample(8)
    c, t, r = batch.columns[Columns.ACTIONS]
    assert set(zip(c.tolist(), t.tolist(), r.tolist())) <= set(alone)
    known = record_incident(env, GatedPolicy(Observer(), RunbookPolicy(), _meta("runbook"), lambda t: (0.1, None)),
                            "node_crash", seed=8)
    assert not known.deferred and incident_stratum(known, "known", "novel") == "known"

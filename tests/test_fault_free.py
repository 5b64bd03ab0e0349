"""Fault-free episodes (fault name "none"): forced at reset or sampled with ``SimConfig.fault_free_prob``; they run
to the time limit, still see benign noise and false alarms, charge every action other than observe, report
themselves as fault "none", and share their benign randomness with the same seed's faulted run."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ifshm_ray.config import SimConfig
from ifshm_ray.env import FaultInjectionEnv, FaultInjectionVectorEnv
from ifshm_ray.sim.actions import CATEGORIES
from ifshm_ray.sim.catalog import FAULT_FREE
from ifshm_ray.sim.core import BatchedSim, SimError

pytestmark = pytest.mark.timeout(120)


def _run_observe(env, seed, faults):
    obs, info = env.reset(seed=seed, options={"faults": faults})
    steps, rewards = 0, []
    while True:
        obs, r, term, trunc, info = env.step((0, 0, 0))
        steps += 1
        rewards.append(r)
        if term or trunc:
            return term, trunc, info, steps, rewards


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fault_free_episode_runs_to_the_time_limit_without_harm(seed):
    env = FaultInjectionEnv({"faults": "all", "render_telemetry": False, "false_alarm_prob": 1.0})
    term, trunc, info, steps, _ = _run_observe(env, seed, FAULT_FREE)
    assert not term and trunc
    assert info["time_s"] >= env.sim_cfg.time_limit_s
    assert steps == math.ceil(env.sim_cfg.time_limit_s / env.sim_cfg.step_s)
    assert info["harmful_actions"] == 0 and info["actions"] == 0 and info["fault_free"]
    assert info["success"] and not info["recovered"] and math.isnan(info["mttr_s"])
    inc = env.incident()
    assert inc == {"fault": FAULT_FREE, "fault_free": True, "faults": []}
    assert env.sim.f_id[0].tolist() == [env.sim.cc.F] * env.sim.f_id.shape[1]  # no slot live
    assert (env.oracle_action() == 0).all()


def test_fault_free_still_has_benign_noise_and_false_alarms():
    env = FaultInjectionEnv({"faults": "all", "false_alarm_prob": 1.0})
    env.reset(seed=4, options={"faults": "none"})
    pending, lines = 0, 0
    for _ in range(60):
        _, _, _, _, info = env.step((0, 0, 0))
        pending += len(info["telemetry"]["alarms"])
        lines += len(info["telemetry"]["logs"])
    assert lines > 0 and pending > 0


def test_acting_in_a_fault_free_episode_is_a_false_action():
    env = FaultInjectionEnv({"faults": "all", "render_telemetry": False})
    env.reset(seed=5, options={"faults": "none"})
    _, r_obs, *_ = env.step((0, 0, 0))
    env.reset(seed=5, options={"faults": "none"})
    _, r_act, *_ = env.step((CATEGORIES.index("restart"), 0, 0))
    assert r_act <= r_obs - env.sim_cfg.reward.false_alarm_penalty
    done = False
    while not done:
        _, _, term, trunc, info = env.step((0, 0, 0))
        done = term or trunc
    assert trunc and info["actions"] == 1 and not info["success"]


def test_sampled_fault_free_share_is_about_fault_free_prob():
    n = 4000
    for p in (0.1, 0.3):
        sim = BatchedSim(SimConfig(faults="all", fault_free_prob=p), batch_size=n)
        sim.reset(np.arange(n), np.arange(1, n + 1, dtype=np.uint64) * 7919)
        share = float((~sim.has_fault).mean())
        sd = math.sqrt(p * (1 - p) / n)
        assert abs(share - p) < 4 * sd, (p, share)
    sim = BatchedSim(SimConfig(faults="all", fault_free_prob=0.0), batch_size=500)
    sim.reset(np.arange(500), np.arange(500) + 1)
    assert sim.has_fault.all()


def test_fault_free_and_faulted_runs_of_a_seed_share_the_benign_noise():
    """Same key, fault forced vs "none": identical telemetry before the injection, identical benign log counts and
    false-alarm transient throughout; they differ once the fault shows."""
    n = 2
    sim = BatchedSim(SimConfig(faults="all", false_alarm_prob=1.0), batch_size=n)
    sim.reset([0, 1], [12345, 12345], faults=["host_memory_leak", FAULT_FREE])
    assert sim.f_t0[0, 0] > 0 and np.isinf(sim.f_t0[1]).all()
    assert sim.blip_t0[0] == sim.blip_t0[1] and sim.phase[0] == sim.phase[1]
    assert (sim.ep_shipped[0] == sim.ep_shipped[1]).all()  # (the same log pipeline: observability.yaml)
    differed = False
    for _ in range(40):
        before = sim.t[0] < sim.f_t0[0, 0] + sim.cc.onset[sim.f_id[0, 0]]
        sim.step(np.zeros((n, 3), np.int64))
        np.testing.assert_array_equal(sim.benign_counts[0], sim.benign_counts[1])
        if before and sim.t[0] - sim.cfg.step_s < sim.f_t0[0, 0]:
            np.testing.assert_array_equal(sim.obs_flat[0], sim.obs_flat[1])
        differed |= not np.array_equal(sim.obs_flat[0], sim.obs_flat[1])
    assert differed


def test_vector_env_forces_fault_free_per_sub_env_and_reports_it():
    v = FaultInjectionVectorEnv({"faults": "all", "time_limit_s": 300}, num_envs=3)
    v.reset(seed=[1, 2, 3], options={"faults": [FAULT_FREE, "node_crash", FAULT_FREE]})
    assert v.sim.has_fault.tolist() == [False, True, False]
    ends = {}
    for _ in range(12):
        _, _, term, trunc, info = v.step(np.zeros((3, 3), np.int64))
        for i in np.flatnonzero(info.get("_fault_free", np.zeros(3, bool))):
            ends.setdefault(int(i), (bool(term[i]), bool(trunc[i]), bool(info["fault_free"][i])))
    assert ends[0] == (False, True, True) and ends[2] == (False, True, True)
    v.reset(seed=0, options={"faults": FAULT_FREE})
    assert not v.sim.has_fault.any()
    with pytest.raises(SimError, match="fault-free"):
        v.reset(options={"faults": [[FAULT_FREE, "node_crash"]] * 3})


def test_training_callback_logs_false_actions_not_mttr_for_fault_free_episodes():
    from ifshm_ray.policy.callbacks import FALSE_ACTION_KEY, MTTR_KEY, HealingMetricsCallback

    class Logger:
        def __init__(self):
            self.values = []

        def log_value(self, key, value, **_):
            self.values.append((key, value))

    class Episode:
        def __init__(self, info):
            self.info = info

        def get_infos(self, _):
            return self.info

    cb, log = HealingMetricsCallback(), Logger()
    cb.on_episode_end(episode=Episode({"fault_free": True, "mttr_s": float("nan"), "actions": 2, "success": False}),
                      metrics_logger=log)
    cb.on_episode_end(episode=Episode({"fault_free": False, "mttr_s": 300.0, "actions": 1, "success": True,
                                       "recovered": True, "harmful_actions": 0}), metrics_logger=log)
    assert log.values[0] == (FALSE_ACTION_KEY, 1.0)
    assert (MTTR_KEY, 300.0) in log.values and not any(k == MTTR_KEY and math.isnan(v) for k, v in log.values)

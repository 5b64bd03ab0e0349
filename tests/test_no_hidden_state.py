"""The observation holds no hidden state: it is a function of the rendered telemetry and the agent's own actions.

* every fault type: a fresh :class:`TelemetryObserver`, given only the serialised telemetry JSON of each step and the
  executed actions, rebuilds the env's observation exactly, at every step, steps taken in reverse order (so it can
  carry nothing over from one window to the next);
* differential: two simulator states that differ only in hidden variables (root cause cleared or not, healthy
  streak, when the fault was injected, the episode clock) render the same telemetry and give the same observation;
* a mitigation that only buys time (raising the limits of a leaking service, restarting it) leaves the policy
  seeing exactly what it would see had the action fixed the root cause, as long as the telemetry is the same; the
  episode still ends on true recovery only.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from ifshm_ray.env import FaultInjectionEnv
from ifshm_ray.env.observation import TelemetryObserver, incident_history
from ifshm_ray.sim.actions import CATEGORIES, CATEGORY_INDEX, RATIO_LEVELS, Action
from ifshm_ray.sim.catalog import load_catalog
from ifshm_ray.sim.render import mask_body

pytestmark = pytest.mark.timeout(120)
ALL = load_catalog().names
KEYS = ("obs", "action_mask", "ratio_mask")


def _random_action(obs: dict, rng: np.random.Generator, act: bool = False) -> tuple[int, int, int]:
    """Mostly observe (unless ``act``); otherwise a random (category, target) pair other than observe, valid by the
    masks 9 times in 10."""
    if not act and rng.random() < 0.6:
        return 0, 0, 0
    tm = obs["action_mask"].reshape(len(CATEGORIES), -1).copy()
    tm[CATEGORY_INDEX["observe"]] = np.nan  # (in neither set)
    pairs = np.argwhere(tm > 0) if act or rng.random() < 0.9 else np.argwhere(tm <= 0)
    c, t = pairs[rng.integers(len(pairs))]
    return int(c), int(t), int(rng.integers(len(RATIO_LEVELS)))


def _rollout(env: FaultInjectionEnv, fault: str, seed: int, steps: int) -> list[tuple[dict, str, list[Action]]]:
    """(observation, telemetry JSON, executed actions so far) of every step of a rollout: ``steps`` random actions,
    then the oracle's until the episode ends (so that recovery, and what v1 leaked of it, is in every rollout)."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed, options={"faults": [fault]})
    out = [(obs, json.dumps(info["telemetry"]), [])]
    actions: list[Action] = []
    for i in range(steps + 60):
        a = _random_action(obs, rng, act=i == 1) if i < steps else tuple(env.oracle_action().tolist())
        obs, _, term, trunc, info = env.step(a)
        actions.append(env.decode((0, 0, 0) if info["invalid_action"] else a))  # (refused: executed as observe)
        out.append((obs, json.dumps(info["telemetry"]), list(actions)))
        if term or trunc:
            break
    return out


@pytest.mark.parametrize("fault", ALL)
def test_observation_is_rebuilt_from_telemetry_json_and_actions_alone(fault):
    env = FaultInjectionEnv({"faults": "all"})
    trace = _rollout(env, fault, seed=len(fault), steps=25)
    observer = TelemetryObserver(env.sim_cfg)  # fresh: shares nothing with the env
    acted = 0
    for obs, telemetry, actions in reversed(trace):
        history = incident_history(actions)
        acted = max(acted, len(history))
        x = observer.observe(json.loads(telemetry), history=history)
        for k in KEYS:
            np.testing.assert_array_equal(x[k], obs[k], err_msg=f"{fault}, step {len(actions)}: {k}")
    assert acted > 0  # (the rollout exercised the incident memory)


def _twins(fault: str, seed: int, steps: int) -> tuple[FaultInjectionEnv, FaultInjectionEnv]:
    env = FaultInjectionEnv({"faults": [fault]})
    env.reset(seed=seed)
    for _ in range(steps):
        env.step((0, 0, 0))
    return env, copy.deepcopy(env)


def _telemetry(env: FaultInjectionEnv) -> dict:
    return json.loads(json.dumps(env.renderer.telemetry(0)))


def _without_clock(t: dict) -> dict:
    """The telemetry less what tells the time of day / since the episode started (time_s, the time stamps of the
    log lines and in their bodies: every token holding a digit masked, as the template miner reads them)."""
    return {**t, "time_s": None, "logs": [mask_body(line.split(" ", 1)[1]) for line in t["logs"]]}


@pytest.mark.parametrize("fault", ["host_memory_leak", "gpu_xid79_fallen_off_bus", "node_crash"])
def test_hidden_variables_do_not_change_the_observation(fault):
    """Same telemetry, different hidden state -> the same observation (v1 leaked the healthy streak and the time)."""
    a, b = _twins(fault, seed=7, steps=25)  # (onsets, ramps and severities are drawn: the slowest shows by then)
    assert a.sim.f_active[0].any() and a.sim.pending[0].any()  # (the fault shows: alerts are pending)
    sim = b.sim
    sim.f_active[0] = False            # root cause cleared
    sim.f_heal_t[0] = sim.t[0]
    sim.streak[0] = 2                  # and healthy for two steps
    sim.healthy[0] = True
    shift = 900.0                      # injected and started 15 minutes earlier (the clock reads later)
    for arr in (sim.t, sim.alarm_since, sim.f_t0, sim.f_eff_t0):
        arr[0] += shift
    ta, tb = _telemetry(a), _telemetry(b)
    assert _without_clock(ta) == _without_clock(tb) and ta["time_s"] + shift == tb["time_s"]
    for env in (a, b):
        env.render_telemetry = env.mine_logs = False  # (numeric path, as the vector env)
    for k in KEYS:
        np.testing.assert_array_equal(a._obs()[k], b._obs()[k], err_msg=k)
    observer = TelemetryObserver(a.sim_cfg)
    np.testing.assert_array_equal(observer.observe(ta)["obs"], observer.observe(tb)["obs"])


@pytest.mark.parametrize("mitigation", [("reallocate", 2.0), ("restart", None)])
def test_mitigation_only_action_shows_only_in_the_telemetry(mitigation):
    """host_memory_leak: raising the limits (or restarting) buys time without fixing the leak. A twin whose root
    cause is cleared by the same action sees exactly the same observations for as long as the telemetry agrees; only
    the twin's episode ends (true recovery)."""
    category, ratio = mitigation
    a, _ = _twins("host_memory_leak", seed=3, steps=0)
    for _ in range(40):  # observe until the leak shows
        obs, *_ = a.step((0, 0, 0))
        if a.oracle_action()[0] != CATEGORY_INDEX["observe"]:
            break
    for _ in range(3):
        a.step((0, 0, 0))
    b = copy.deepcopy(a)
    act = a.encode(Action(category, "api-gateway", ratio))
    assert load_catalog().spec("host_memory_leak").remedies[category]["effect"] == "mitigate"
    oa, _, term_a, _, ia = a.step(act)
    ob, _, term_b, _, ib = b.step(act)
    b.sim.f_active[0] = False  # the twin: the same action, but as if it had fixed the leak (hidden)
    b.sim.f_heal_t[0] = b.sim.t[0]
    same_steps, b_ended = 0, False
    for _ in range(40):
        if ia["telemetry"] != ib["telemetry"]:
            break
        for k in KEYS:
            np.testing.assert_array_equal(oa[k], ob[k], err_msg=f"step {same_steps}: {k}")
        same_steps += 1
        if term_b:
            b_ended = True
            break
        oa, _, term_a, _, ia = a.step((0, 0, 0))
        ob, _, term_b, _, ib = b.step((0, 0, 0))
        assert not term_a  # the leak is still there: the episode never ends on a mitigation
    assert same_steps >= a.sim_cfg.healthy_steps + 1 and b_ended
    assert a.sim.f_active[0].any()  # (and the mitigated env's root cause is still active)

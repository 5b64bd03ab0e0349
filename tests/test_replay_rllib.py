"""Pieces of the replay's RLlib wiring that run without Ray: episode joining, GAE, the simulator's scenario
weights, the level sampler's external draws, the actor's batched push, mix and level state."""
from __future__ import annotations

import numpy as np
import pytest
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from ifshm_ray.config import SimConfig
from ifshm_ray.replay.actor import ReplayActor
from ifshm_ray.replay.config import LevelSamplerConfig, ReplayConfig
from ifshm_ray.replay.level_sampler import LevelSampler
from ifshm_ray.policy.replay import gae, join_chunks
from ifshm_ray.sim.core import BatchedSim, SimError
from test_replay_buffer import episode


def test_join_chunks_restores_the_whole_episode():
    # two chunks of one episode, as an env runner hands them over when the episode spans two samples
    first = SingleAgentEpisode(id_="ep-1", observations=[np.array([i], np.float32) for i in range(3)],
                               actions=[0, 1], rewards=[-1.0, -2.0], len_lookback_buffer=0)
    second = SingleAgentEpisode(id_="ep-1", observations=[np.array([i], np.float32) for i in range(2, 6)],
                                actions=[2, 3, 4], rewards=[-3.0, -4.0, -5.0], terminated=True, len_lookback_buffer=0)
    joined = join_chunks([first, second])
    assert len(joined) == 5 and joined.is_terminated and joined.id_ == "ep-1"
    assert [float(o[0]) for o in (joined.get_observations(i) for i in range(6))] == list(range(6))
    assert list(joined.get_actions()) == [0, 1, 2, 3, 4]
    assert list(joined.get_rewards()) == [-1.0, -2.0, -3.0, -4.0, -5.0]
    with pytest.raises(ValueError):
        join_chunks([])
    assert not joined.extra_model_outputs  # no extra outputs unless asked for


def test_join_chunks_keeps_the_behaviour_outputs_asked_for():
    from ray.rllib.core.columns import Columns

    def chunk(start, n, done):
        return SingleAgentEpisode(id_="ep-2",
                                  observations=[np.array([i], np.float32) for i in range(start, start + n + 1)],
                                  actions=list(range(start, start + n)), rewards=[-1.0] * n, terminated=done,
                                  extra_model_outputs={Columns.ACTION_DIST_INPUTS: [np.full(2, i, np.float32)
                                                                                    for i in range(start, start + n)],
                                                       Columns.ACTION_LOGP: [0.0] * n},
                                  len_lookback_buffer=0)

    joined = join_chunks([chunk(0, 2, False), chunk(2, 3, True)], extra_keys=(Columns.ACTION_DIST_INPUTS,))
    assert set(joined.extra_model_outputs) == {Columns.ACTION_DIST_INPUTS}
    np.testing.assert_array_equal(np.asarray(joined.get_extra_model_outputs(Columns.ACTION_DIST_INPUTS))[:, 0],
                                  np.arange(5))
    # a key some chunk lacks is left out (the episode then has no cloning target)
    plain = SingleAgentEpisode(id_="ep-2", observations=[np.array([i], np.float32) for i in range(2, 4)],
                               actions=[2], rewards=[-1.0], terminated=True, len_lookback_buffer=0)
    assert not join_chunks([chunk(0, 2, False), plain], extra_keys=(Columns.ACTION_DIST_INPUTS,)).extra_model_outputs


def test_gae_matches_the_recursion():
    r = np.array([-1.0, 0.5, -2.0])
    v = np.array([0.3, -0.2, 0.1, 0.0])
    g, lam = 0.9, 0.8
    d = r + g * v[1:] - v[:-1]
    expected = [d[0] + g * lam * (d[1] + g * lam * d[2]), d[1] + g * lam * d[2], d[2]]
    np.testing.assert_allclose(gae(r, v, g, lam), expected)
    with pytest.raises(ValueError, match="len\\(rewards\\) \\+ 1"):
        gae(r, v[:-1], g, lam)


def test_sim_fault_weights_change_only_the_fault_draw():
    cfg = SimConfig(fault_free_prob=0.0)  # (every episode has a first fault to look at)
    plain, weighted = BatchedSim(cfg, batch_size=64), BatchedSim(cfg, batch_size=64)
    names = plain.fault_names
    weighted.set_fault_weights({names[2]: 1.0})  # every incident is names[2] (compound seconds aside)
    keys = np.arange(64) + 1000
    plain.reset(np.arange(64), keys)
    weighted.reset(np.arange(64), keys)
    firsts = {weighted.incident(b)["faults"][0]["fault"] for b in range(64)}
    assert firsts == {names[2]}
    # the other draws of the reset use the same uniforms: injection times are equal
    np.testing.assert_array_equal(plain.f_t0[:, 0], weighted.f_t0[:, 0])
    assert len({plain.incident(b)["faults"][0]["fault"] for b in range(64)}) > 1
    weighted.set_fault_weights(None)
    np.testing.assert_array_equal(weighted.freq_allowed, plain.freq_allowed)
    with pytest.raises(SimError, match="does not draw"):
        weighted.set_fault_weights({"no_such_fault": 1.0})
    with pytest.raises(SimError, match="not all 0"):
        weighted.set_fault_weights({names[0]: 0.0})


def test_level_sampler_record_draws():
    s = LevelSampler(["a", "b", "c"], LevelSamplerConfig())
    s.record_draws({"a": 3, "b": 0})
    assert s.staleness.tolist() == [0.0, 3.0, 3.0]
    s.record_draws({"c": 2})
    assert s.staleness.tolist() == [2.0, 5.0, 0.0]
    with pytest.raises(KeyError):
        s.record_draws({"zzz": 1})
    with pytest.raises(ValueError):
        s.record_draws({"a": -1})


def test_actor_push_many_mix_and_levels_roundtrip(tmp_path):
    cfg = ReplayConfig(capacity=500, recovered_only=False)
    a = ReplayActor(cfg, state_dir=str(tmp_path / "s"), levels=["x", "y"], level_config={"temperature": 1.0})
    assert a.sample_or_none(4) is None  # empty replay: no sample, no error
    a.push_many([("known", [episode(1), episode(2)]), ("novel", [episode(3)])], source=1)
    assert a.flush() == 3
    a.set_mix({"novel": 1.0})
    batch = a.sample_or_none(6, {"known": 1.0})
    assert set(batch.columns["stratum"]) == {"novel"}  # the meta-controller's mix wins over the learner's
    with pytest.raises(ValueError):
        a.set_mix({"novel": 0.0})
    w = a.update_levels({"x": 2.0, "y": 1.0, "unknown_type": 9.0}, {"x": 1, "unknown_type": 4})
    assert set(w) == {"x", "y"} and w["x"] > w["y"]
    a.save(str(tmp_path / "ckpt"))
    b = ReplayActor(cfg, state_dir=str(tmp_path / "s"), levels=["x", "y"], level_config={"temperature": 1.0})
    assert b.mix == {"novel": 1.0} and b.level_weights() == a.level_weights()
    assert ReplayActor(cfg).update_levels({"x": 1.0}, {}) == {}  # no levels: scenario replay off


@pytest.mark.timeout(60)
def test_scenario_weights_reweight_only_the_known_share_of_a_stream():
    """The continual protocol's stream env draws a new type beside the known ones: the level sampler's weights
    (over the known types) share out the known types' probability and leave the new type's alone."""
    import types

    from ifshm_ray.meta.continual import make_stream_env
    from ifshm_ray.policy.replay import _set_runner_weights, simulators

    new, k1, k2 = "clock_skew_tls", "node_crash", "dns_upstream_failure"
    env = make_stream_env({"faults": [new, k1, k2], "num_envs": 4, "fault_free_prob": 0.0, "seed": 1,
                           "render_telemetry": False, "fault_weights": {new: 0.9, k1: 0.05, k2: 0.05}})
    sim = next(iter(simulators(env)))[0]
    runner = types.SimpleNamespace(env=env)
    assert sim.fault_probabilities()[new] == pytest.approx(0.9)
    assert _set_runner_weights(runner, {k1: 3.0, k2: 1.0}) == 1
    p = sim.fault_probabilities()
    assert p[new] == pytest.approx(0.9) and p[k1] == pytest.approx(0.075) and p[k2] == pytest.approx(0.025)
    assert _set_runner_weights(runner, {k1: 1.0, k2: 1.0}) == 1  # again: the stream's share is still 0.9
    assert sim.fault_probabilities() == pytest.approx({new: 0.9, k1: 0.05, k2: 0.05})
    # every type covered (plain training): the weights replace the draw
    assert _set_runner_weights(runner, {new: 1.0, k1: 1.0, k2: 2.0}) == 1
    assert sim.fault_probabilities() == pytest.approx({new: 0.25, k1: 0.25, k2: 0.5})
    # a stream of the new type alone (new_share 1.0): nothing to share out, left as it is
    only = make_stream_env({"faults": [new, k1], "num_envs": 2, "fault_free_prob": 0.0, "seed": 1,
                            "render_telemetry": False, "fault_weights": {new: 1.0}})
    assert _set_runner_weights(types.SimpleNamespace(env=only), {k1: 1.0}) == 0
    assert next(iter(simulators(only)))[0].fault_probabilities() == pytest.approx({new: 1.0, k1: 0.0})

"""Semi-MDP discounting across steps (``ifshm_ray/policy/semi_mdp.py``): the env reports each step's length, the
learner's GAE, the replay's returns-to-go and its level scores discount by gamma ** length."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets

from ifshm_ray.env import FaultInjectionEnv
from ifshm_ray.env.fault_env import ELAPSED_STEPS_KEY, make_vector_env
from ifshm_ray.policy.replay import gae, join_chunks
from ifshm_ray.policy.semi_mdp import elapsed_of, semi_mdp_value_targets
from ifshm_ray.replay.buffer import returns_to_go, with_returns
from ifshm_ray.sim.actions import CATEGORY_INDEX

from test_policy_learner import _config, _episode
from test_policy_standin_env import StandInFaultEnv

OBSERVE = np.array([CATEGORY_INDEX["observe"], 0, 0])
ESCALATE = np.array([CATEGORY_INDEX["escalate"], 0, 0])
G, LAM = 0.99, 0.95


@pytest.mark.timeout(60)
def test_value_targets_equal_rllibs_with_one_interval_steps_and_discount_a_long_step():
    rng = np.random.default_rng(0)
    n = 40
    values, rewards = rng.normal(size=n), rng.normal(size=n)
    term, trunc = np.zeros(n), np.zeros(n)
    term[12], trunc[25], trunc[-1] = 1, 1, 1  # an episode that ended, a chunk cut, the last one
    ours = semi_mdp_value_targets(values, rewards, term, trunc, np.full(n, G), LAM)
    assert ours == pytest.approx(compute_value_targets(values, rewards, term, trunc, G, LAM), abs=1e-5)
    # two steps, the first a 20-minute page (41 intervals): its bootstrap is discounted by G ** 41
    v, r = np.array([-5.0, -2.0, 0.0]), np.array([-1.0, -0.5, 0.0])
    d = G ** np.array([41.0, 1.0, 1.0])
    t = semi_mdp_value_targets(v, r, np.array([0, 1, 0]), np.zeros(3), d, LAM)
    a1 = r[1] - v[1]  # terminated at step 1: no bootstrap
    a0 = (r[0] + d[0] * v[1] - v[0]) + d[0] * LAM * a1
    assert t[:2] == pytest.approx([a0 + v[0], a1 + v[1]], rel=1e-6)
    assert t[0] != pytest.approx(compute_value_targets(v, r, np.array([0, 1, 0]), np.zeros(3), G, LAM)[0])


@pytest.mark.timeout(60)
def test_returns_and_level_scores_follow_the_step_lengths():
    r = [-1.0, -2.0, -0.5]
    assert returns_to_go(r, G, [1, 1, 1]) == pytest.approx(returns_to_go(r, G), abs=1e-6)
    el = [41.0, 1.0, 2.0]
    want = [-1.0 + G ** 41 * (-2.0 + G * -0.5), -2.0 + G * -0.5, -0.5]
    assert returns_to_go(r, G, el) == pytest.approx(want, rel=1e-6)
    v = np.array([-3.0, -2.0, -1.0, 0.0])
    assert gae(r, v, G, LAM, np.ones(3)) == pytest.approx(gae(r, v, G, LAM))
    assert gae(r, v, G, LAM, el)[0] != pytest.approx(gae(r, v, G, LAM)[0])
    # a step the env gave no length counts as one interval; a length below one is refused
    assert elapsed_of([{}, {ELAPSED_STEPS_KEY: 3.0}, {}], 3).tolist() == [3.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=">= 1"):
        elapsed_of([{}, {ELAPSED_STEPS_KEY: 0.5}], 1)


@pytest.mark.timeout(60)
def test_envs_report_step_lengths_only_with_the_duration_discount():
    def steps(discount):
        env = FaultInjectionEnv({"render_telemetry": False, "reward": {"duration_discount": discount}})
        env.reset(seed=5, options={"faults": "node_crash"})
        infos = [env.step(a)[4] for a in (OBSERVE, ESCALATE)]
        env.close()
        return [i.get(ELAPSED_STEPS_KEY) for i in infos]

    assert steps(None) == [None, None]
    look, page = steps(G)
    assert look == 1.0 and page == pytest.approx(1.0 + 1200.0 / 30.0)  # the fixed human: 900 + 300 s
    vec = make_vector_env({"render_telemetry": False, "reward": {"duration_discount": G}, "num_envs": 3})
    vec.reset(seed=1)
    _, _, _, _, infos = vec.step(np.stack([OBSERVE, ESCALATE, OBSERVE]))
    el = infos[ELAPSED_STEPS_KEY]
    assert el[0] == 1.0 and el[1] > 30 and infos["_" + ELAPSED_STEPS_KEY].all()
    vec.close()
    plain = make_vector_env({"render_telemetry": False, "num_envs": 2})
    plain.reset(seed=1)
    assert ELAPSED_STEPS_KEY not in plain.step(np.stack([OBSERVE, ESCALATE]))[4]
    plain.close()


@pytest.mark.timeout(60)
def test_joined_chunks_and_stored_episodes_keep_the_step_lengths():
    env = FaultInjectionEnv({"render_telemetry": False, "reward": {"duration_discount": G}})
    obs, info = env.reset(seed=5, options={"faults": "node_crash"})
    ep = SingleAgentEpisode(observations=[obs], infos=[info], observation_space=env.observation_space,
                            action_space=env.action_space)
    for i, a in enumerate((OBSERVE, ESCALATE, OBSERVE)):
        obs, r, term, _, info = env.step(a)
        assert not term
        ep.add_env_step(obs, tuple(int(x) for x in a), r, infos=info, truncated=i == 2)  # cut after 3 steps
    env.close()
    full = join_chunks([ep])
    assert elapsed_of(full.get_infos(), len(full)).tolist() == pytest.approx([1.0, 41.0, 1.0])
    stored = with_returns(full, G)
    want = returns_to_go(full.get_rewards(), G, [1.0, 41.0, 1.0])
    assert stored.get_extra_model_outputs("returns_to_go") == pytest.approx(want)
    assert want[0] != pytest.approx(returns_to_go(full.get_rewards(), G)[0])


@pytest.mark.timeout(120)
def test_learner_swaps_in_semi_mdp_gae_and_one_interval_steps_train_as_plain_gae():
    """The learner replaces RLlib's GAE piece with SemiMDPGAE; on an episode whose infos give no step length (every
    step one interval) both learners compute the same losses from the same weights."""
    import torch

    from ifshm_ray.policy.semi_mdp import SemiMDPGAE

    plain = _config().build_learner_group(env=StandInFaultEnv())
    smdp = _config(semi_mdp_gae=True).build_learner_group(env=StandInFaultEnv())
    pieces = [type(p).__name__ for p in smdp._learner._learner_connector.connectors]
    assert pieces[-1] == SemiMDPGAE.__name__ and "GeneralAdvantageEstimation" not in pieces
    smdp.set_weights(plain.get_weights())

    def update(group, episode):
        torch.manual_seed(0)
        res = group.update(episodes=[episode], num_epochs=1, minibatch_size=8)
        stats = res[0]["default_policy"] if isinstance(res, list) else res["default_policy"]
        return {k: float(v.peek()) for k, v in stats.items()}

    a, b = update(plain, _episode()), update(smdp, _episode())
    for key in ("policy_loss", "vf_loss", "total_loss"):
        assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
    # the same episode with long steps: other value targets, so another value loss
    long = _episode()
    infos = [{}] + [{ELAPSED_STEPS_KEY: 41.0}] * len(long)
    long = SingleAgentEpisode(observations=long.get_observations(), actions=long.get_actions(),
                              rewards=long.get_rewards(), infos=infos,
                              extra_model_outputs={k: long.get_extra_model_outputs(k)
                                                   for k in long.extra_model_outputs.keys()},
                              observation_space=long.observation_space, action_space=long.action_space,
                              terminated=long.is_terminated, truncated=long.is_truncated, len_lookback_buffer=0)
    smdp2 = _config(semi_mdp_gae=True).build_learner_group(env=StandInFaultEnv())
    smdp2.set_weights(plain.get_weights())
    c = update(smdp2, long)
    assert c["vf_loss"] != pytest.approx(a["vf_loss"], rel=1e-4)


@pytest.mark.timeout(60)
def test_recorded_incidents_keep_the_step_lengths():
    """An incident recorded for the replay (the gate, the demonstrations) carries each step's length."""
    from ifshm_ray.baselines.policies import Policy
    from ifshm_ray.meta.gate import record_incident

    class PageThird(Policy):  # observes twice, then pages
        def reset(self, env, episode_seed=None):
            self.n = 0

        def act(self, obs, info, env):
            self.n += 1
            return ESCALATE if self.n == 3 else OBSERVE

    env = FaultInjectionEnv({"render_telemetry": False, "reward": {"duration_discount": G}})
    rec = record_incident(env, PageThird(), "node_crash", seed=3)
    el = elapsed_of(rec.episode.get_infos(), len(rec.episode))
    assert el.max() > 30  # the page
    stored = with_returns(rec.episode, G)
    assert stored.get_extra_model_outputs("returns_to_go") == pytest.approx(
        returns_to_go(rec.episode.get_rewards(), G, el))
    env.close()

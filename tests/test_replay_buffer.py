"""StratifiedReplayBuffer: strata under one capacity, prioritization, importance weights, beta, state (no Ray)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from ifshm_ray.config import ConfigError
from ifshm_ray.replay.buffer import StratifiedReplayBuffer, returns_to_go, split_counts
from ifshm_ray.replay.config import ReplayConfig


def episode(tag: int, n: int = 10, *, terminated: bool = True, reward: float = -1.0) -> SingleAgentEpisode:
    """An n-step episode whose observations are (tag, t): every sampled row says where it came from."""
    return SingleAgentEpisode(
        observations=[np.array([tag, t], np.float32) for t in range(n + 1)],
        actions=[np.int64(t % 3) for t in range(n)],
        rewards=[reward] * n,
        terminated=terminated,
        truncated=not terminated,
        len_lookback_buffer=0,
    )


def tags(buf: StratifiedReplayBuffer, stratum: str) -> list[int]:
    """Tags of the episodes a stratum holds, oldest first."""
    state = buf.state()
    for name, sub, _ in state["strata"]:
        if name == stratum:
            return [int(SingleAgentEpisode.from_state(e).get_observations(0)[0]) for e in sub["episodes"]]
    return []


# ----------------------------------------------------------------------------------------------- small functions
def test_returns_to_go_by_hand():
    # R_2 = -3; R_1 = -2 + 0.5 * -3 = -3.5; R_0 = -1 + 0.5 * -3.5 = -2.75
    np.testing.assert_allclose(returns_to_go([-1.0, -2.0, -3.0], 0.5), [-2.75, -3.5, -3.0])
    np.testing.assert_allclose(returns_to_go([1.0, 1.0], 1.0), [2.0, 1.0])


@pytest.mark.parametrize("total,mix,expected", [
    (10, {"a": 1, "b": 1}, {"a": 5, "b": 5}),
    (7, {"a": 1, "b": 1}, {"a": 4, "b": 3}),  # tie of remainders: the earlier key
    (10, {"a": 0.7, "b": 0.2, "c": 0.1}, {"a": 7, "b": 2, "c": 1}),
    (3, {"a": 1, "b": 1, "c": 1, "d": 1}, {"a": 1, "b": 1, "c": 1, "d": 0}),
    (5, {"a": 0, "b": 2}, {"a": 0, "b": 5}),
])
def test_split_counts(total, mix, expected):
    assert split_counts(total, mix) == expected


def test_config_refuses_a_known_floor_under_half():
    with pytest.raises(ConfigError, match="known_floor"):
        ReplayConfig(known_floor=0.4)


# ----------------------------------------------------------------------------------------------- strata capacity
@pytest.mark.parametrize("capacity", [100, 101, 50_000])
@pytest.mark.parametrize("novel", [0, 1, 2, 3, 7])
def test_shares_sum_to_capacity_and_known_keeps_half(capacity, novel):
    buf = StratifiedReplayBuffer(ReplayConfig(capacity=capacity))
    buf.add(episode(0, 1), "known")
    for k in range(novel):
        buf.add(episode(k + 1, 1), f"novel-{k}")
    shares = buf.shares()
    assert sum(shares.values()) == capacity
    assert shares["known"] >= capacity / 2
    assert buf.strata[0] == "known"
    if novel:
        novel_shares = {v for k, v in shares.items() if k != "known"}
        assert len(novel_shares) == 1  # equal split
        assert shares["known"] == max(capacity - novel * novel_shares.pop(), 0)


def test_known_alone_uses_the_whole_capacity_fifo():
    buf = StratifiedReplayBuffer(ReplayConfig(capacity=100))
    for k in range(12):
        buf.add(episode(k), "known")
    assert buf.num_steps("known") == 100
    assert tags(buf, "known") == list(range(2, 12))  # the two oldest evicted


def test_a_surge_of_a_new_fault_leaves_the_known_half():
    buf = StratifiedReplayBuffer(ReplayConfig(capacity=100))
    for k in range(10):
        buf.add(episode(k), "known")
    for k in range(30):
        buf.add(episode(100 + k), "novel-0")
    assert buf.num_steps("known") == 50 and buf.num_steps("novel-0") == 50
    assert tags(buf, "known") == list(range(5, 10))  # the known stratum lost only its oldest, down to its floor
    assert tags(buf, "novel-0") == list(range(125, 130))  # then the surge evicted only its own oldest


def test_a_surge_cannot_evict_another_novel_cluster_under_its_share():
    buf = StratifiedReplayBuffer(ReplayConfig(capacity=100))
    for k in range(5):
        buf.add(episode(k), "known")
    for k in range(2):
        buf.add(episode(50 + k), "novel-b")  # 20 steps, under its share of 25
    for k in range(20):
        buf.add(episode(100 + k), "novel-a")
    assert buf.shares() == {"known": 50, "novel-b": 25, "novel-a": 25}
    assert buf.num_steps("known") == 50 and buf.num_steps("novel-b") == 20 and buf.num_steps("novel-a") == 30
    assert tags(buf, "novel-b") == [50, 51]
    assert tags(buf, "novel-a") == [117, 118, 119]


def test_a_stratum_under_its_share_reclaims_room_from_one_over_it():
    buf = StratifiedReplayBuffer(ReplayConfig(capacity=100))
    for k in range(3):
        buf.add(episode(k), "known")  # 30 < 50
    for k in range(10):
        buf.add(episode(100 + k), "novel-0")  # borrows the known stratum's unused room: 70
    assert buf.num_steps("known") == 30 and buf.num_steps("novel-0") == 70
    for k in range(3, 5):
        buf.add(episode(k), "known")
    assert buf.num_steps("known") == 50 and buf.num_steps("novel-0") == 50
    assert tags(buf, "known") == list(range(5))  # nothing of the known stratum evicted
    assert tags(buf, "novel-0") == list(range(105, 110))  # the novel stratum's oldest went
    buf.add(episode(5), "known")  # now the known stratum is the one over its share: its own oldest goes
    assert tags(buf, "known") == list(range(1, 6)) and tags(buf, "novel-0") == list(range(105, 110))


def test_a_higher_known_floor():
    buf = StratifiedReplayBuffer(ReplayConfig(capacity=100, known_floor=0.8))
    for k in range(10):
        buf.add(episode(k), "known")
    for k in range(10):
        buf.add(episode(100 + k), "novel-0")
    assert buf.num_steps("known") == 80 and buf.num_steps("novel-0") == 20


def test_recovered_only_drops_truncated_episodes():
    buf = StratifiedReplayBuffer(ReplayConfig(capacity=100))
    assert buf.add([episode(0), episode(1, terminated=False)], "known") == 1
    assert buf.num_filtered == 1 and buf.num_episodes() == 1
    keep_all = StratifiedReplayBuffer(ReplayConfig(capacity=100, recovered_only=False))
    assert keep_all.add([episode(0), episode(1, terminated=False)], "known") == 2


def test_incomplete_episode_is_refused():
    ep = SingleAgentEpisode(observations=[np.zeros(2, np.float32)] * 3, actions=[0, 1], rewards=[0.0, 0.0],
                            len_lookback_buffer=0)
    with pytest.raises(ValueError, match="not done"):
        StratifiedReplayBuffer(ReplayConfig(recovered_only=False)).add(ep, "known")


# ----------------------------------------------------------------------------------------------- sampling
def test_sample_columns_returns_and_mix():
    buf = StratifiedReplayBuffer(ReplayConfig(capacity=100, gamma=0.5))
    buf.add(episode(1, 3, reward=-2.0), "known")
    buf.add(episode(2, 3, reward=-4.0), "novel-0")
    batch = buf.sample(10, mix={"known": 0.3, "novel-0": 0.7, "novel-9": 1.0})  # novel-9 holds nothing
    assert batch.handle.counts == (("known", 3), ("novel-0", 7))
    obs = batch.columns[Columns.OBS]
    assert obs.shape == (10, 2)
    assert list(batch.columns["stratum"]) == ["known"] * 3 + ["novel-0"] * 7
    assert set(obs[:3, 0]) == {1.0} and set(obs[3:, 0]) == {2.0}
    # R_t of a constant reward r over 3 steps with gamma 0.5: r * (1 + 0.5 + 0.25), r * 1.5, r
    expect = {0: 1.75, 1: 1.5, 2: 1.0}
    for tag, t, r in zip(obs[:, 0], batch.columns[Columns.T], batch.columns[Columns.RETURNS_TO_GO]):
        assert obs is not None and r == pytest.approx((-2.0 if tag == 1 else -4.0) * expect[int(t)])
    np.testing.assert_array_equal(batch.columns[Columns.T], obs[:, 1])
    with pytest.raises(ValueError, match="nothing to sample"):
        buf.sample(4, mix={"novel-9": 1.0})


def test_default_mix_follows_stratum_sizes():
    buf = StratifiedReplayBuffer(ReplayConfig(capacity=100))
    for k in range(3):
        buf.add(episode(k), "known")
    buf.add(episode(9), "novel-0")
    assert buf.sample(8).handle.counts == (("known", 6), ("novel-0", 2))


def test_beta_anneals_linearly_to_one():
    buf = StratifiedReplayBuffer(ReplayConfig(capacity=100, beta=0.5, beta_anneal_samples=4))
    buf.add(episode(0), "known")
    betas = [buf.sample(1).beta for _ in range(6)]
    assert betas == pytest.approx([0.5, 0.625, 0.75, 0.875, 1.0, 1.0])


def set_priorities(buf: StratifiedReplayBuffer, priority_of_tag: dict[int, float]) -> None:
    """Draw until every 1-step episode was sampled in one batch, then write its priority by tag."""
    batch = buf.sample(64)
    seen = {int(t) for t in batch.columns[Columns.OBS][:, 0]}
    assert seen == set(priority_of_tag), "a 64-row draw should cover every stored step"
    buf.update_priorities(batch.handle, [priority_of_tag[int(t)] for t in batch.columns[Columns.OBS][:, 0]])


def test_importance_weights_match_a_hand_computation():
    cfg = ReplayConfig(capacity=100, alpha=0.6, beta=0.5, beta_anneal_samples=1_000_000, priority_eps=1e-6)
    buf = StratifiedReplayBuffer(cfg)
    buf.add([episode(k, 1) for k in range(4)], "known")
    prio = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}
    set_priorities(buf, prio)
    batch = buf.sample(50)
    # P(i) = p_i^a / sum_j p_j^a; w_i = (N P(i))^-beta / max_j (N P(j))^-beta = (p_i^a / p_min^a)^-beta
    p = {k: (v + cfg.priority_eps) ** cfg.alpha for k, v in prio.items()}
    for tag, w in zip(batch.columns[Columns.OBS][:, 0], batch.weights):
        assert w == pytest.approx((p[int(tag)] / min(p.values())) ** -batch.beta, rel=1e-5)
    assert batch.beta == pytest.approx(0.5 + 0.5 / 1_000_000)


def test_priority_updates_change_sampling_frequencies():
    cfg = ReplayConfig(capacity=100, alpha=0.6, seed=3)
    buf = StratifiedReplayBuffer(cfg)
    buf.add([episode(k, 1) for k in range(4)], "known")
    before = np.bincount(buf.sample(2000).columns[Columns.OBS][:, 0].astype(int), minlength=4) / 2000
    np.testing.assert_allclose(before, 0.25, atol=0.03)  # new steps enter at the max priority: uniform
    prio = {0: 0.0, 1: 1.0, 2: 3.0, 3: 8.0}
    set_priorities(buf, prio)
    freq = np.bincount(buf.sample(4000).columns[Columns.OBS][:, 0].astype(int), minlength=4) / 4000
    p = np.array([(prio[k] + cfg.priority_eps) ** cfg.alpha for k in range(4)])
    np.testing.assert_allclose(freq, p / p.sum(), atol=0.025)
    assert freq[0] < 0.01  # (R - V)+ = 0: almost never replayed, but not impossible


def test_stale_handles_are_skipped():
    buf = StratifiedReplayBuffer(ReplayConfig(capacity=30))
    buf.add(episode(0), "known")
    buf.add(episode(1), "novel-0")
    first = buf.sample(4, mix={"known": 1, "novel-0": 1})
    second = buf.sample(2, mix={"known": 1})  # the known stratum's first sample is now stale, novel-0's is not
    assert buf.update_priorities(first.handle, np.ones(4)) == 2
    assert buf.num_stale_updates == 2
    assert buf.update_priorities(second.handle, np.ones(2)) == 2
    assert buf.update_priorities(second.handle, np.ones(2)) == 0  # written once only
    third = buf.sample(2, mix={"novel-0": 1})
    for k in range(3):
        buf.add(episode(10 + k), "novel-0")  # evicts in novel-0: its pending sample can no longer be updated
    assert buf.update_priorities(third.handle, np.ones(2)) == 0
    with pytest.raises(ValueError, match="shape"):
        buf.update_priorities(third.handle, np.ones(3))
    with pytest.raises(ValueError, match=">= 0"):
        buf.update_priorities(third.handle, -np.ones(2))


# ----------------------------------------------------------------------------------------------- state, determinism
def fill(buf: StratifiedReplayBuffer) -> None:
    for k in range(6):
        buf.add(episode(k, 5), "known")
    for k in range(4):
        buf.add(episode(100 + k, 5), "novel-0")
    batch = buf.sample(16)
    buf.update_priorities(batch.handle, np.abs(batch.columns[Columns.RETURNS_TO_GO]))


def test_same_seed_same_samples():
    a, b = (StratifiedReplayBuffer(ReplayConfig(capacity=40, seed=7)) for _ in range(2))
    fill(a)
    fill(b)
    np.testing.assert_array_equal(a.sample(32).columns[Columns.OBS], b.sample(32).columns[Columns.OBS])


def test_state_round_trip():
    cfg = ReplayConfig(capacity=40, seed=1)
    buf = StratifiedReplayBuffer(cfg)
    fill(buf)
    state = pickle.loads(pickle.dumps(buf.state()))
    copy = StratifiedReplayBuffer(cfg)
    copy.restore(state)
    assert copy.stats() == buf.stats()
    assert tags(copy, "known") == tags(buf, "known") and tags(copy, "novel-0") == tags(buf, "novel-0")
    x, y = buf.sample(32), copy.sample(32)  # same priorities and generator state: the same draw
    for key in (Columns.OBS, Columns.RETURNS_TO_GO, "weights", "stratum"):
        np.testing.assert_array_equal(x.columns[key], y.columns[key])
    copy.add(episode(200, 5), "novel-1")  # and it goes on working
    assert copy.num_steps() == 40
    with pytest.raises(ValueError, match="capacity"):
        StratifiedReplayBuffer(ReplayConfig(capacity=41)).restore(state)


def test_episodes_of_the_fault_env_go_in_and_come_out_batched():
    """What env runners will push: episodes over the env's Dict observations and Tuple (c, t, r) actions."""
    from ifshm_ray.env.fault_env import FaultInjectionEnv

    env = FaultInjectionEnv({"time_limit_s": 240.0})
    episodes = []
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        env.action_space.seed(seed)
        ep = SingleAgentEpisode(observation_space=env.observation_space, action_space=env.action_space)
        ep.add_env_reset(obs, info)
        while not ep.is_done:
            action = env.action_space.sample()
            obs, reward, terminated, truncated, info = env.step(action)
            ep.add_env_step(obs, action, reward, info, terminated=terminated, truncated=truncated)
        episodes.append(ep.to_numpy())
    buf = StratifiedReplayBuffer(ReplayConfig(capacity=100, recovered_only=False))
    assert buf.add(episodes, "known") == 3
    batch = buf.sample(6)
    assert set(batch.columns[Columns.OBS]) == set(env.observation_space.spaces)
    for key, space in env.observation_space.spaces.items():
        assert batch.columns[Columns.OBS][key].shape == (6, *space.shape)
    assert len(batch.columns[Columns.ACTIONS]) == 3 and all(a.shape == (6,) for a in batch.columns[Columns.ACTIONS])
    for row, (t, ret) in enumerate(zip(batch.columns[Columns.T], batch.columns[Columns.RETURNS_TO_GO])):
        source = [ep for ep in episodes if t < len(ep) and np.array_equal(
            ep.get_observations(int(t))["obs"], batch.columns[Columns.OBS]["obs"][row])]
        assert source, "every sampled row is a step of a pushed episode"
        assert ret == pytest.approx(returns_to_go(source[0].get_rewards(), buf.config.gamma)[t], rel=1e-5)


def test_cap_oversampling_by_hand():
    from ifshm_ray.replay.buffer import cap_oversampling

    mix = {"known": 0.5, "novel-0": 0.25, "novel-1": 0.25}
    sizes = {"known": 9_800, "novel-0": 100, "novel-1": 100}
    # caps: 4 x the data shares = 3.92, 0.04, 0.04: both novel strata capped, the known one takes the rest
    assert cap_oversampling(mix, sizes, 4.0) == pytest.approx({"known": 0.92, "novel-0": 0.04, "novel-1": 0.04})
    # a generous cap changes nothing but the normalisation
    assert cap_oversampling({"known": 1.0, "novel-0": 1.0}, {"known": 50, "novel-0": 50}, 4.0) == \
        pytest.approx({"known": 0.5, "novel-0": 0.5})
    # water filling: "a" is capped at its 0.1, "b" and "c" share the rest by their weights, each within its cap
    out = cap_oversampling({"a": 1.0, "b": 1.0, "c": 2.0}, {"a": 10, "b": 30, "c": 60}, 1.0)
    assert out == pytest.approx({"a": 0.1, "b": 0.3, "c": 0.6}) and sum(out.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=">= 1"):
        cap_oversampling(mix, sizes, 0.5)


def test_max_oversample_reaches_the_sample_counts():
    capped = StratifiedReplayBuffer(ReplayConfig(capacity=1_000, max_oversample=2.0))
    plain = StratifiedReplayBuffer(ReplayConfig(capacity=1_000))
    for buf in (capped, plain):
        for i in range(9):
            buf.add(episode(i, 10), "known")
        buf.add(episode(99, 10), "novel-0")  # 10 of 100 stored steps
    mix = {"known": 0.5, "novel-0": 0.5}
    assert dict(plain.sample(100, mix=mix).handle.counts) == {"known": 50, "novel-0": 50}
    assert dict(capped.sample(100, mix=mix).handle.counts) == {"known": 80, "novel-0": 20}  # 2 x its 10% share
    with pytest.raises(ConfigError, match="max_oversample"):
        ReplayConfig.from_dict({"max_oversample": 0.5})

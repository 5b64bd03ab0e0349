"""LevelSampler (prioritized level replay): exact probability vectors from given scores, staleness, schedule."""
from __future__ import annotations

import numpy as np
import pytest

from ifshm_ray.config import ConfigError
from ifshm_ray.replay.config import LevelSamplerConfig
from ifshm_ray.replay.level_sampler import LevelSampler, rank_weights, value_l1_score

LEVELS = ["a", "b", "c", "d"]


def sampler(scores=None, **kw) -> LevelSampler:
    s = LevelSampler(LEVELS, LevelSamplerConfig(**kw))
    for level, score in zip(LEVELS, scores or []):
        s.update(level, score)
    return s


def test_value_l1_score_is_mean_absolute_advantage():
    assert value_l1_score([1.0, -2.0, 3.0]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        value_l1_score([])


@pytest.mark.parametrize("scores,temperature,expected", [
    ([0.5, 2.0, 1.0, 0.1], 1.0, [1 / 3, 1, 1 / 2, 1 / 4]),
    ([0.5, 2.0, 1.0, 0.1], 0.5, [1 / 9, 1, 1 / 4, 1 / 16]),
    ([1.0, 1.0, 0.0], 1.0, [1, 1 / 2, 1 / 3]),  # tie: the earlier level ranks higher
])
def test_rank_weights(scores, temperature, expected):
    np.testing.assert_allclose(rank_weights(scores, temperature), expected)


def test_rank_transform_probabilities_by_hand():
    # ranks 3, 1, 2, 4 -> weights 1/3, 1, 1/2, 1/4; sum 25/12
    p = sampler([0.5, 2.0, 1.0, 0.1], temperature=1.0, staleness_coef=0.0).probabilities()
    np.testing.assert_allclose(p, np.array([4, 12, 6, 3]) / 25)
    # temperature 0.5: weights (1/rank)^2 = 16/144, 144/144, 36/144, 9/144
    p = sampler([0.5, 2.0, 1.0, 0.1], temperature=0.5, staleness_coef=0.0).probabilities()
    np.testing.assert_allclose(p, np.array([16, 144, 36, 9]) / 205)


def test_default_temperature_concentrates_on_the_worst_understood_level():
    p = sampler([0.5, 2.0, 1.0, 0.1], staleness_coef=0.0).probabilities()  # temperature 0.1: (1/rank)^10
    w = 1.0 / np.array([3.0, 1.0, 2.0, 4.0]) ** 10
    np.testing.assert_allclose(p, w / w.sum())
    assert p[1] > 0.99


def test_staleness_mixing_by_hand():
    s = sampler([0.5, 2.0, 1.0, 0.1], temperature=1.0, staleness_coef=0.5, seed=0)
    np.testing.assert_allclose(s.probabilities(), np.array([4, 12, 6, 3]) / 25)  # nothing drawn yet
    s.staleness[:] = [3.0, 0.0, 1.0, 2.0]
    expected = 0.5 * np.array([4, 12, 6, 3]) / 25 + 0.5 * np.array([3, 0, 1, 2]) / 6
    np.testing.assert_allclose(s.probabilities(), expected)
    s2 = sampler([0.5, 2.0, 1.0, 0.1], temperature=1.0, staleness_coef=0.5, staleness_temperature=0.5)
    s2.staleness[:] = [3.0, 0.0, 1.0, 2.0]
    expected = 0.5 * np.array([4, 12, 6, 3]) / 25 + 0.5 * np.array([9, 0, 1, 4]) / 14  # staleness squared
    np.testing.assert_allclose(s2.probabilities(), expected)


def test_staleness_counts_draws_since_last_drawn():
    s = sampler([1.0, 1.0, 1.0, 1.0], seed=5)
    drawn = [s.sample() for _ in range(6)]
    last = {level: i for i, level in enumerate(drawn)}
    expected = [len(drawn) - 1 - last[level] if level in last else len(drawn) for level in LEVELS]
    np.testing.assert_array_equal(s.staleness, expected)


def test_unseen_levels_proportionate_schedule():
    s = sampler([2.0], staleness_coef=0.0)  # only "a" seen: f = 1/4
    np.testing.assert_allclose(s.probabilities(), [0.25, 0.25, 0.25, 0.25])  # 0.25 * [1,0,0,0] + 0.75 * [0,1/3,...]
    s = sampler([2.0, 1.0], temperature=1.0, staleness_coef=0.0)  # f = 1/2: P_replay = [2/3, 1/3, 0, 0]
    np.testing.assert_allclose(s.probabilities(), [1 / 3, 1 / 6, 1 / 4, 1 / 4])
    s = sampler([2.0], staleness_coef=0.0, rho=0.5)  # f = 1/4 < rho: only unseen levels
    np.testing.assert_allclose(s.probabilities(), [0, 1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(sampler().probabilities(), [0.25] * 4)  # nothing seen


def test_sampling_frequencies_follow_the_probabilities():
    s = sampler([0.5, 2.0, 1.0, 0.1], temperature=1.0, staleness_coef=0.0, seed=11)
    p = s.probabilities()
    draws = [s.sample() for _ in range(5000)]
    freq = np.array([draws.count(level) for level in LEVELS]) / len(draws)
    np.testing.assert_allclose(freq, p, atol=0.02)


def test_score_smoothing():
    s = sampler(score_alpha=0.5)
    s.update("a", 4.0)  # first score as is
    s.update("a", 2.0)
    assert s.scores[0] == pytest.approx(3.0)
    s.update_with_advantages("b", [-1.0, 1.0])
    assert s.scores[1] == pytest.approx(1.0)
    with pytest.raises(KeyError, match="unknown level"):
        s.update("z", 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        s.update("a", -1.0)


def test_same_seed_same_draws_and_state_round_trip():
    a, b = (sampler([0.5, 2.0, 1.0, 0.1], temperature=1.0, seed=3) for _ in range(2))
    assert [a.sample() for _ in range(20)] == [b.sample() for _ in range(20)]
    c = sampler(temperature=1.0, seed=99)
    c.restore(a.state())
    np.testing.assert_allclose(c.probabilities(), a.probabilities())
    assert [a.sample() for _ in range(20)] == [c.sample() for _ in range(20)]
    with pytest.raises(ValueError, match="levels"):
        LevelSampler(["x"]).restore(a.state())


def test_config_and_levels_are_checked():
    with pytest.raises(ConfigError, match="staleness_coef"):
        LevelSamplerConfig(staleness_coef=1.5)
    with pytest.raises(ValueError, match="distinct"):
        LevelSampler(["a", "a"])

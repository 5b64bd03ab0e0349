"""ifshm_ray.eval.aggregate: one policy's metrics over its training seeds (mean, population std, per-fault mean)."""
from __future__ import annotations

import math

import pytest

from ifshm_ray.eval.aggregate import SEED_METRICS, aggregate_seeds


def seed_metrics(mttr: float, success: float, lm_hit: float | None = None) -> dict:
    m = {"policy": "ppo", "fault_set": "known", "episodes": 4, "mttr_mean_s": mttr, "success_rate": success,
         "catalog_sha256": "abc", "per_fault": {"node_crash": {"mttr_mean_s": mttr, "episodes": 2},
                                                "dns_upstream_failure": {"mttr_mean_s": 2 * mttr, "episodes": 2}}}
    if lm_hit is not None:
        m["train_lm_hit_rate"] = lm_hit
    return m


def test_one_seed_is_returned_unchanged():
    m = seed_metrics(100.0, 0.5)
    out = aggregate_seeds([m])
    assert out == m and out is not m and "training_seeds" not in out and "mttr_mean_s_std" not in out


def test_several_seeds_mean_and_population_std():
    out = aggregate_seeds([seed_metrics(100.0, 0.5), seed_metrics(200.0, 1.0), seed_metrics(300.0, 0.0)])
    assert out["mttr_mean_s"] == pytest.approx(200.0)
    assert out["mttr_mean_s_std"] == pytest.approx(math.sqrt((100**2 + 0 + 100**2) / 3))  # ddof=0
    assert out["success_rate"] == pytest.approx(0.5) and out["success_rate_std"] == pytest.approx(math.sqrt(1 / 6))
    assert out["per_fault"] == {"node_crash": {"mttr_mean_s": 200.0, "episodes": 2.0},
                                "dns_upstream_failure": {"mttr_mean_s": 400.0, "episodes": 2.0}}
    assert out["training_seeds"] == 3
    assert out["policy"] == "ppo" and out["catalog_sha256"] == "abc"  # other keys: the first seed's
    # metrics the first seed lacks are not aggregated
    assert "mttr_p95_s" not in out and "train_lm_hit_rate" not in out and set(SEED_METRICS) >= {"mttr_mean_s"}


def test_a_seed_without_a_value_is_skipped():
    out = aggregate_seeds([seed_metrics(100.0, 1.0, lm_hit=0.9), seed_metrics(300.0, 1.0, lm_hit=None),
                           seed_metrics(200.0, 1.0, lm_hit=0.7)])
    assert out["train_lm_hit_rate"] == pytest.approx(0.8) and out["train_lm_hit_rate_std"] == pytest.approx(0.1)


def test_no_seed_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        aggregate_seeds([])


def test_bootstrap_intervals_of_single_seeds_are_kept_per_seed():
    """A seed's mttr_ci95 is the interval of its own episodes; over several seeds it is listed per seed, not
    averaged into an interval nobody computed."""
    a, b = seed_metrics(100.0, 1.0), seed_metrics(300.0, 0.5)
    a["mttr_ci95"], b["mttr_ci95"] = [80.0, 120.0], [250.0, 350.0]
    a["false_action_rate"], b["false_action_rate"] = 0.0, 0.5
    m = aggregate_seeds([a, b])
    assert m["mttr_ci95"] is None and m["mttr_ci95_per_seed"] == [[80.0, 120.0], [250.0, 350.0]]
    assert m["false_action_rate"] == 0.25 and m["false_action_rate_std"] == 0.25
    assert aggregate_seeds([a])["mttr_ci95"] == [80.0, 120.0]

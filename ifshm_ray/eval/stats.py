"""Bootstrap confidence intervals of evaluation metrics: of one policy's mean MTTR, and of the paired difference of
two policies' MTTR over the same incidents (every policy meets the same (fault, seed) episodes). Percentile
intervals from a seeded resampling: the same records always give the same interval."""
from __future__ import annotations

import math

import numpy as np

from ifshm_ray.eval.config import StatsConfig


def bootstrap_mean_ci(x, cfg: StatsConfig | None = None) -> list[float] | None:
    """[low, high] percentile bootstrap interval of the mean of ``x`` (NaNs dropped); None without values."""
    cfg = cfg or StatsConfig()
    x = np.asarray(x, np.float64)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return None
    rng = np.random.default_rng(cfg.bootstrap_seed)
    idx = rng.integers(0, len(x), size=(cfg.bootstrap_samples, len(x)))
    means = x[idx].mean(axis=1)
    a = (1.0 - cfg.confidence) / 2.0
    return [float(np.quantile(means, a)), float(np.quantile(means, 1.0 - a))]


def stratified_mean_ci(groups, cfg: StatsConfig | None = None) -> list[float] | None:
    """[low, high] percentile bootstrap interval of the mean over ``groups`` (e.g. splits) of each group's mean:
    episodes are resampled with replacement within each group (the estimator of a table that averages per-split
    means); NaNs dropped; None when a group has no value."""
    return nested_mean_ci([[g] for g in groups], cfg)


def nested_mean_ci(groups, cfg: StatsConfig | None = None) -> list[float] | None:
    """[low, high] percentile bootstrap interval of the mean over ``groups`` (splits) of each group's mean over its
    units (training seeds) of each unit's mean over its episodes: two-level resampling within each group, the units
    with replacement, then each unit's episodes with replacement (a unit drawn twice in one resample shares its
    episode resample), so the interval covers the spread between training seeds as well as between incidents.
    ``groups``: [[episodes of unit, ...] per group]; NaNs dropped; None when a unit or group has no value."""
    cfg = cfg or StatsConfig()
    n = cfg.bootstrap_samples
    rng = np.random.default_rng(cfg.bootstrap_seed)
    total = np.zeros(n)
    if not groups:
        return None
    for units in groups:
        arrs = [np.asarray(u, np.float64) for u in units]
        arrs = [a[~np.isnan(a)] for a in arrs]
        if not arrs or any(len(a) == 0 for a in arrs):
            return None
        unit_means = np.stack([a[rng.integers(0, len(a), size=(n, len(a)))].mean(axis=1) for a in arrs])  # [U, n]
        if len(arrs) == 1:
            total += unit_means[0]
        else:
            pick = rng.integers(0, len(arrs), size=(n, len(arrs)))                                        # [n, U]
            total += unit_means[pick, np.arange(n)[:, None]].mean(axis=1)
    total /= len(groups)
    q = (1.0 - cfg.confidence) / 2.0
    return [float(np.quantile(total, q)), float(np.quantile(total, 1.0 - q))]


def episode_key(r: dict) -> tuple:
    """What identifies an incident across policies: its fault label and episode seed."""
    return (r["fault"], int(r["seed"]))


def paired_difference(a: list[dict], b: list[dict], key: str = "mttr_s",
                      cfg: StatsConfig | None = None) -> dict | None:
    """Mean of ``a[key] - b[key]`` over the incidents both record lists hold (paired by :func:`episode_key`),
    with its bootstrap interval: ``{"mean", "ci95": [low, high], "pairs"}``; None when they share no incident with
    a value (fault-free episodes have no MTTR)."""
    bk = {episode_key(r): r.get(key) for r in b}
    d = [r[key] - bk[episode_key(r)] for r in a
         if episode_key(r) in bk and _num(r.get(key)) and _num(bk[episode_key(r)])]
    if not d:
        return None
    return {"mean": float(np.mean(d)), "ci95": bootstrap_mean_ci(d, cfg), "pairs": len(d)}


def _num(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))

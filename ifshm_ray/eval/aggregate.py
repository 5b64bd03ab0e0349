"""One trained policy's evaluation metrics over its training seeds: the mean, with the spread alongside.

A policy trained with several seeds is evaluated once per seed (:func:`ifshm_ray.eval.harness.summarise` gives one
metrics dict each); the report shows their mean and population standard deviation, so that a headline number says
how much it depends on the training seed.
"""
from __future__ import annotations

import numpy as np

SEED_METRICS = ("mttr_mean_s", "mttr_p50_s", "mttr_p95_s", "time_to_mitigate_mean_s", "detect_mean_s",
                "repair_mean_s", "success_rate", "harmful_action_rate", "escalation_rate", "timeout_rate",
                "false_action_rate", "recovered_rate", "mean_return", "train_env_steps", "train_wall_s",
                "train_lm_hit_rate")
"""Scalar metrics averaged over training seeds; each gets a ``<name>_std`` next to it."""


def aggregate_seeds(per_seed: list[dict]) -> dict:
    """The metrics of one policy over its training seeds (one :func:`~ifshm_ray.eval.harness.summarise` dict per
    seed, same policy, fault set and incidents).

    One seed: its metrics unchanged. Several: a copy of the first seed's metrics where every :data:`SEED_METRICS`
    entry the first seed has becomes the mean over seeds (NaN-aware: a seed without a value is skipped) with
    ``<name>_std`` (population standard deviation, ``ddof=0``) beside it, ``per_fault`` holds the mean of each
    per-fault metric, and ``training_seeds`` the number of seeds. ``mttr_ci95`` (one seed's episodes) becomes
    ``mttr_ci95_per_seed`` (the list) and ``mttr_ci95`` None: an interval over seeds needs the pooled episodes.
    Other keys (policy, fault_set, split, hashes, ...) are the first seed's.
    """
    if not per_seed:
        raise ValueError("aggregate_seeds needs the metrics of at least one training seed")
    m = dict(per_seed[0])
    if len(per_seed) == 1:
        return m
    for k in SEED_METRICS:
        if per_seed[0].get(k) is None:
            continue
        vals = np.array([x.get(k) for x in per_seed], float)
        m[k] = float(np.nanmean(vals))
        m[k + "_std"] = float(np.nanstd(vals))
    first = per_seed[0]["per_fault"]
    m["per_fault"] = {f: {k: float(np.nanmean([_nan(x["per_fault"][f][k]) for x in per_seed])) for k in first[f]}
                      for f in first}
    if "mttr_ci95" in m:
        m["mttr_ci95_per_seed"] = [x.get("mttr_ci95") for x in per_seed]
        m["mttr_ci95"] = None
    m["training_seeds"] = len(per_seed)
    return m


def _nan(x) -> float:
    return float("nan") if x is None else float(x)

#!/usr/bin/env python
"""How ambiguous are the simulator's incidents? The linear baseline's macro-F1 on the first symptomatic window.

    python benchmarks/ambiguity.py [--train-seeds 40] [--test-seeds 20] [--out ambiguity.png]

For every fault type of the catalog and every seed, two clusters run side by side with the same episode key and
only ``observe`` actions: one with the fault forced, one fault-free (fault "none"). The simulator draws all benign
randomness from the key alone (see :meth:`ifshm_ray.sim.core.BatchedSim.reset`), so the two runs differ only by
what the fault causes. The **first symptomatic window** is the first window in which anything in the telemetry
differs between the two: a metric as reported (rounded to ``METRIC_DECIMALS``), an alert (pending / firing, entity)
or the log-template counts. The classifier is the linear baseline of ``jobs/finetune_encoder.py``
(:class:`ifshm_ray.encoding.linear.LogisticRegression`, L2 1e-2) over the observation's log-template counts
(log1p) and alert flags (pending and firing per rule), trained on the episodes of the train seeds and tested on
disjoint seeds. Two inputs: (a) that first symptomatic window alone, (b) it and the next four windows (the
features averaged over the five). Prints one JSON object: per fault type F1 (and the windows from injection to the
first symptom, and what differed first: metrics, alerts, logs or several at once), overall macro-F1, and how the
types share log templates (``templates_by_types_sharing``: how many templates were seen in the five-window spans of
k fault types, for each k; ``template_types``: the shared ones with their k).

Works on older simulators too (before fault-free episodes existed, the fault-free twin is built by clearing the
forced fault's slots right after reset, which is what ``faults="none"`` does).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(v, "1")

import numpy as np  # noqa: E402

from ifshm_ray.config import SimConfig  # noqa: E402
from ifshm_ray.encoding.linear import LogisticRegression  # noqa: E402
from ifshm_ray.env.features import Featurizer  # noqa: E402
from ifshm_ray.sim.core import METRIC_DECIMALS, BatchedSim, SimError  # noqa: E402

NEXT_WINDOWS = 4  # (b): the first symptomatic window and this many more


def episode_key(seed: int, fault_ix: int) -> int:
    return int(np.random.SeedSequence([20261130, seed, fault_ix]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _reset_pairs(sim: BatchedSim, names: list[str], keys: list[int]) -> None:
    """Envs 2i (fault names[i]) and 2i+1 (fault-free) with key keys[i]."""
    n = len(names)
    idx = np.arange(2 * n)
    k2 = np.repeat(np.asarray(keys, np.uint64), 2)
    try:
        faults = [x for name in names for x in (name, "none")]
        sim.reset(idx, k2, faults=faults)
        return
    except SimError:  # (a simulator without fault-free episodes: clear the twin's fault slots after the reset)
        pass
    sim.reset(idx, k2, faults=[x for name in names for x in (name, name)])
    twin = idx[1::2]
    sim.f_id[twin] = sim.cc.F
    sim.f_active[twin] = False
    sim.f_t0[twin] = np.inf
    sim.f_eff_t0[twin] = np.inf
    sim._episode_tables(twin)
    sim._refresh_placement(twin)
    sim._observe(twin, dur=np.zeros(len(twin)), first=True)


def _telemetry_state(sim: BatchedSim) -> tuple[np.ndarray, ...]:
    """What the telemetry reports, per env: metrics (rounded), alerts (pending, firing, entity), template counts."""
    ent = np.where(sim.pending, sim.alarm_entity, -1)
    return (np.round(sim.obs_flat, METRIC_DECIMALS), np.concatenate([sim.pending, sim.firing, ent], axis=1),
            sim.tcounts)


def collect(seeds: list[int], names: list[str], cfg: SimConfig, max_steps: int) -> dict:
    """Per (seed, fault): features of the first symptomatic window and of the 5-window span, the steps from
    injection to it, and what differed first."""
    pairs = [(s, f) for s in seeds for f in range(len(names))]
    sim = BatchedSim(cfg, batch_size=2 * len(pairs))
    feat = Featurizer(sim)
    lay = feat.layout
    g0, g1 = lay["global_offset"], lay["slo_green"]  # alert flags (pending, firing) then log1p template counts
    _reset_pairs(sim, [names[f] for _, f in pairs], [episode_key(s, f) for s, f in pairs])
    n = len(pairs)
    first = np.full(n, -1)
    kind = np.full(n, "", dtype=object)
    acc = np.zeros((n, g1 - g0))
    seen = np.zeros(n, np.int64)
    x_first = np.zeros((n, g1 - g0))
    inj_step = np.full(n, -1)
    zero = np.zeros((2 * n, 3), np.int64)
    for step in range(1, max_steps + 1):
        sim.step(zero)
        inj = sim.f_t0[0::2].min(axis=1)
        inj_step = np.where((inj_step < 0) & (inj < sim.t[0::2]), step, inj_step)
        st = _telemetry_state(sim)
        diff = [~np.all(x[0::2] == x[1::2], axis=1) for x in st]
        anyd = diff[0] | diff[1] | diff[2]
        new = (first < 0) & anyd
        if new.any():
            first[new] = step
            for i in np.flatnonzero(new):
                kind[i] = "+".join(k for k, d in zip(("metrics", "alerts", "logs"), diff) if d[i])
        x = feat.features()[0::2, g0:g1]
        x_first[new] = x[new]
        take = (first >= 0) & (seen <= NEXT_WINDOWS)
        acc[take] += x[take]
        seen += take
        if (seen > NEXT_WINDOWS).all():
            break
    ok = seen > 0
    return {"n_alert_flags": lay["slo_green"] - lay["global_offset"] - sim.L, "fault": np.array([f for _, f in pairs]),
            "seed": np.array([s for s, _ in pairs]), "ok": ok,
            "x_first": x_first, "x_span": acc / np.maximum(seen, 1)[:, None], "first": first,
            "delay": first - inj_step, "kind": kind}


def f1_per_class(y: np.ndarray, p: np.ndarray, classes: list[int]) -> np.ndarray:
    out = []
    for c in classes:
        tp = float(((p == c) & (y == c)).sum())
        fp = float(((p == c) & (y != c)).sum())
        fn = float(((p != c) & (y == c)).sum())
        out.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return np.array(out)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-seeds", type=int, default=40)
    p.add_argument("--test-seeds", type=int, default=20)
    p.add_argument("--max-steps", type=int, default=60, help="windows to wait for the first symptom (x step_s)")
    p.add_argument("--out", type=Path, default=None, help="write a PNG of per-type F1 here")
    a = p.parse_args(argv)
    t0 = time.time()
    cfg = SimConfig(faults="all")  # (the fault of every episode is forced; defaults otherwise)
    sim0 = BatchedSim(cfg)
    names = sim0.catalog.names
    tr = collect(list(range(a.train_seeds)), names, cfg, a.max_steps)
    te = collect(list(range(10_000, 10_000 + a.test_seeds)), names, cfg, a.max_steps)
    classes = list(range(len(names)))
    res: dict = {"catalog_sha256": sim0.catalog.sha256, "train_seeds": a.train_seeds, "test_seeds": a.test_seeds,
                 "fault_types": len(names)}
    try:
        res["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        pass
    per = {}
    for which in ("x_first", "x_span"):
        m_tr, m_te = tr["ok"], te["ok"]
        clf = LogisticRegression(l2=1e-2).fit(tr[which][m_tr], tr["fault"][m_tr])
        pred = np.full(len(te["fault"]), -1)
        pred[m_te] = clf.predict(te[which][m_te])  # (never symptomatic: counted as a miss)
        f1 = f1_per_class(te["fault"], pred, classes)
        label = "first_window" if which == "x_first" else f"first_plus_{NEXT_WINDOWS}"
        res[f"macro_f1_{label}"] = round(float(f1.mean()), 4)
        for c, name in enumerate(names):
            per.setdefault(name, {})[f"f1_{label}"] = round(float(f1[c]), 4)
    allk = np.concatenate([tr["kind"][tr["ok"]], te["kind"][te["ok"]]])
    for c, name in enumerate(names):
        sel = np.concatenate([tr["fault"] == c, te["fault"] == c]) & np.concatenate([tr["ok"], te["ok"]])
        d = np.concatenate([tr["delay"], te["delay"]])[sel]
        kinds = np.concatenate([tr["kind"], te["kind"]])[sel]
        per[name]["windows_to_first_symptom_mean"] = round(float(d.mean()), 2) if len(d) else None
        per[name]["first_difference"] = {k: int(v) for k, v in zip(*np.unique(kinds.astype(str), return_counts=True))}
        per[name]["never_symptomatic"] = int((~np.concatenate([tr["ok"], te["ok"]])[
            np.concatenate([tr["fault"] == c, te["fault"] == c])]).sum())
    # which log templates the fault types share (over the 5-window spans of all episodes): a template seen in the
    # episodes of k types, for every k; and per template the number of types it was seen with
    lay_l = len(names)
    x_all = np.concatenate([tr["x_span"], te["x_span"]])[:, tr["n_alert_flags"]:]
    f_all = np.concatenate([tr["fault"], te["fault"]])
    seen = np.array([(x_all[f_all == c] > 0).any(axis=0) for c in range(lay_l)])  # [types, templates]
    n_types = seen.sum(axis=0)
    res["templates_by_types_sharing"] = {int(k): int((n_types == k).sum()) for k in np.unique(n_types) if k > 0}
    res["template_types"] = {sim0.catalog.templates[j].id: int(n_types[j]) for j in np.argsort(-n_types)
                             if n_types[j] > 1}
    res["first_difference_overall"] = {k: int(v) for k, v in zip(*np.unique(allk.astype(str), return_counts=True))}
    res["per_fault"] = per
    res["wall_s"] = round(time.time() - t0, 1)
    if a.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(12, 4.5))
        xs = np.arange(len(names))
        ax.bar(xs - 0.2, [per[n]["f1_first_window"] for n in names], 0.4, label="first symptomatic window")
        ax.bar(xs + 0.2, [per[n][f"f1_first_plus_{NEXT_WINDOWS}"] for n in names], 0.4,
               label=f"first + next {NEXT_WINDOWS} windows")
        ax.set_xticks(xs, names, rotation=75, ha="right", fontsize=7)
        ax.set_ylabel("F1 (linear baseline)")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"macro-F1: first window {res['macro_f1_first_window']}, "
                     f"5 windows {res[f'macro_f1_first_plus_{NEXT_WINDOWS}']}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(a.out, dpi=110)
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()

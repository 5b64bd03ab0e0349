#!/usr/bin/env python
"""Evaluate policies on several named known/unknown splits and tabulate them side by side.

    python jobs/evaluate_splits.py --splits all --faults unknown --episodes 3 --seed 0 --out results/eval_splits

For every split (ifshm_ray/sim/data/splits.yaml; ``all`` = every named split) it runs ``jobs/evaluate.py`` with the
same policies, fault sets, episodes and seed into OUT/<split>/ (each with its own report.md), then writes
OUT/splits.json, OUT/splits.md (per split and the mean over splits, for each fault set and policy: MTTR with its
bootstrap 95% interval, time to mitigate, success, escalations, time-outs, harmful and false-action rates) and
OUT/splits_mttr.png. Policies other than the references must be trained on the split (a bundle records its split and
evaluation refuses a mismatch), so this job takes the references only (``--policy``, default all of them).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ifshm_ray.baselines import BASELINES
from ifshm_ray.sim.catalog import CatalogError, load_catalog

KEYS = ("mttr_mean_s", "mttr_ci95", "time_to_mitigate_mean_s", "success_rate", "escalation_rate", "timeout_rate",
        "harmful_action_rate", "false_action_rate")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--splits", default="all", help="comma-separated split names, or 'all' (default)")
    p.add_argument("--policy", default=",".join(BASELINES), help="comma-separated reference policies (default: all)")
    p.add_argument("--faults", default="unknown", help="comma-separated fault sets (known, unknown, compound, "
                                                       "fault_free); default: unknown")
    p.add_argument("--episodes", type=int, default=3, help="episodes per fault type (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the incidents (default 0)")
    p.add_argument("--out", default="results/eval_splits", help="output directory")
    p.add_argument("--no-ray", action="store_true", help="run in this process instead of Ray tasks")
    return p.parse_args(argv)


def _cell(m: dict) -> dict:
    return {k: m.get(k) for k in KEYS}


def _fmt_s(x) -> str:
    return "-" if x is None or x != x else f"{x:,.0f}"


def _fmt_p(x) -> str:
    return "-" if x is None or x != x else f"{100 * x:.0f}%"


def write_tables(out: Path, table: dict, sets: list[str], policies: list[str], splits: list[str], command: str) -> str:
    """table[split][set][policy] = metrics subset. Returns the markdown."""
    lines = [f"# References on {len(splits)} splits", "", f"`{command}`", ""]
    for fs in sets:
        lines += [f"## {fs}: MTTR mean s [bootstrap 95% CI] per split; mean over splits", "",
                  "| policy | " + " | ".join(splits) + " | mean over splits |", "|---" * (len(splits) + 2) + "|"]
        for pol in policies:
            cells, means = [], []
            for sp in splits:
                m = table[sp][fs].get(pol, {})
                ci = m.get("mttr_ci95") or [None, None]
                cells.append(f"{_fmt_s(m.get('mttr_mean_s'))} [{_fmt_s(ci[0])}, {_fmt_s(ci[1])}]")
                means.append(m.get("mttr_mean_s"))
            vals = [v for v in means if v is not None and v == v]
            cells.append(_fmt_s(float(np.mean(vals))) if vals else "-")
            lines.append(f"| {pol} | " + " | ".join(cells) + " |")
        lines += ["", f"## {fs}: mean over splits", "",
                  "| policy | MTTR s | time to mitigate s | success | escalated | timed out | harmful | false actions |",
                  "|---|---|---|---|---|---|---|---|"]
        for pol in policies:
            def mean(key):
                v = [table[sp][fs].get(pol, {}).get(key) for sp in splits]
                v = [x for x in v if x is not None and x == x]
                return float(np.mean(v)) if v else None
            lines.append(f"| {pol} | {_fmt_s(mean('mttr_mean_s'))} | {_fmt_s(mean('time_to_mitigate_mean_s'))} | "
                         f"{_fmt_p(mean('success_rate'))} | {_fmt_p(mean('escalation_rate'))} | "
                         f"{_fmt_p(mean('timeout_rate'))} | {_fmt_p(mean('harmful_action_rate'))} | "
                         f"{_fmt_p(mean('false_action_rate'))} |")
        lines.append("")
    md = "\n".join(lines)
    (out / "splits.md").write_text(md)
    return md


def plot(out: Path, table: dict, sets: list[str], policies: list[str], splits: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(sets), 1, figsize=(max(8, 1.1 * len(splits) * len(policies) / 3), 3.6 * len(sets)),
                             squeeze=False)
    w = 0.8 / max(len(policies), 1)
    for ax, fs in zip(axes[:, 0], sets):
        for i, pol in enumerate(policies):
            ys, lo, hi = [], [], []
            for sp in splits:
                m = table[sp][fs].get(pol, {})
                y = m.get("mttr_mean_s")
                ci = m.get("mttr_ci95") or [y, y]
                y = np.nan if y is None else y
                ys.append(y)
                lo.append(0 if ci[0] is None or y != y else y - ci[0])
                hi.append(0 if ci[1] is None or y != y else ci[1] - y)
            x = np.arange(len(splits)) + (i - (len(policies) - 1) / 2) * w
            ax.bar(x, ys, w, yerr=[lo, hi], label=pol, capsize=2)
        ax.set_xticks(np.arange(len(splits)), splits, rotation=20, fontsize=8)
        ax.set_ylabel("MTTR (s)")
        ax.set_title(f"{fs} faults: mean MTTR per split (bootstrap 95% CI)")
    axes[0, 0].legend(fontsize=7, ncol=min(len(policies), 4))
    fig.tight_layout()
    fig.savefig(out / "splits_mttr.png", dpi=110)
    plt.close(fig)


def _evaluate_job():
    """jobs/evaluate.py as a module (the one evaluation job; this one only loops over splits)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ifshm_evaluate_job", Path(__file__).with_name("evaluate.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # (dataclasses look their module up there)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> dict:
    a = parse_args(argv)
    ev = _evaluate_job()

    try:
        cat = load_catalog()
        splits = list(cat.splits) if a.splits == "all" else [s.strip() for s in a.splits.split(",") if s.strip()]
        for s in splits:
            cat.check_split(s)
    except CatalogError as e:
        raise SystemExit(f"error: {e}")
    policies = [p.strip() for p in a.policy.split(",") if p.strip()]
    bad = [p for p in policies if p not in BASELINES]
    if bad:
        raise SystemExit(f"error: --policy {bad}: this job takes the references only ({', '.join(BASELINES)}); "
                         "evaluate a trained policy with jobs/evaluate.py --split of its bundle")
    sets = [s.strip() for s in a.faults.split(",") if s.strip()]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    table, t0 = {}, time.time()
    for k, sp in enumerate(splits):
        print(f"== split {sp} ({k + 1}/{len(splits)}, {time.time() - t0:.0f}s)", flush=True)
        argv_e = ["--split", sp, "--policy", ",".join(policies), "--faults", ",".join(sets), "--episodes",
                  str(a.episodes), "--seed", str(a.seed), "--out", str(out / sp)] + (["--no-ray"] if a.no_ray else [])
        res = ev.main(argv_e)
        if len(sets) == 1:  # evaluate.main returns {policy: m} for one set, {set: {policy: m}} for several
            res = {sets[0]: res}
        table[sp] = {fs: {pol: _cell(m) for pol, m in res[fs].items()} for fs in sets}
    command = " ".join(["python", "jobs/evaluate_splits.py"] + (argv if argv is not None else sys.argv[1:]))
    (out / "splits.json").write_text(json.dumps({"command": command, "splits": splits, "sets": sets,
                                                 "policies": policies, "episodes": a.episodes, "seed": a.seed,
                                                 "wall_s": time.time() - t0, "table": table}, indent=2))
    print(write_tables(out, table, sets, policies, splits, command))
    plot(out, table, sets, policies, splits)
    return table


if __name__ == "__main__":
    main()

"""Classical baselines on the real failure data, grouped cross-validation, bootstrap intervals: the bar the encoder
has to meet on real data (issue 14).

How to run (from the repo root; about 2-3 minutes on 2 cores for the whole development split)::

    # every real set under a folder (detects the layouts), or one set, or one campaign
    .venv/bin/python jobs/real_baselines.py --data ../shared/data
    .venv/bin/python jobs/real_baselines.py --data ../shared/data/openstack_failure_dataset_jss2021 --json
    .venv/bin/python jobs/real_baselines.py --data ../shared/data/openstack_failure_dataset_jss2021/NET --n-boot 200

``--data`` takes a folder in one of three layouts (``ifshm_ray.encoding.real_data.detect_layout``), or a folder
whose sub-folders are: Failure-Dataset-OpenStack (``openstack_failure_dataset_jss2021``, or one campaign folder of
it), the FSE 2019 fault-injection runs (``openstack_fault_injection_fse2019``), Nezha TrainTicket
(``nezha_trainticket_fse2023``). A malformed folder is reported (exit status 2) with what is wrong.

What it does (``ifshm_ray.encoding.real_eval``): per Failure-Dataset-OpenStack campaign, majority class, logistic
regression, random forest and gradient boosting on log1p event counts, in stratified 5-fold cross-validation
grouped by experiment (``--group-by experiment``) and, stricter, with identical count vectors kept in one group
(``vector``); on the FSE 2019 runs (label ``failure_mode``, service logs only), majority class and Drain templates
(mined per training fold) + TF-IDF + logistic regression / + random forest, leave-one-test-out (both rounds of a
test in one fold); on Nezha, an unsupervised root-cause ranking by metric shift and the fault-type majority class
(4 samples: context only). Hyperparameters are fixed (``real_eval.FIXED``, printed in the JSON), never tuned.
Deterministic under ``--seed``.

What to expect: a table of macro-F1 and accuracy with 95 % bootstrap intervals (over groups) and n per dataset and
baseline; with ``--json`` the last line is one JSON object: ``jss2021.<campaign>.<group_by>.baselines.<name>``,
``fse2019.baselines.<name>`` (each ``macro_f1``, ``macro_f1_ci``, ``accuracy``, ``accuracy_ci``, ``n``,
``per_class``), ``nezha``, and ``per_campaign: {DEPL|NET|STO: {<baseline>: {macro_f1, accuracy, n}}}`` (grouped by
experiment).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Args:
    data: list[str]
    """Folders: a real set in one of the three layouts, or a folder holding such sets."""
    json: bool = False
    """Print one JSON object as the last line instead of the table."""
    seed: int = 0
    """Seeds the folds, the forests / boosting and the bootstrap."""
    folds: int = 5
    """Folds for Failure-Dataset-OpenStack (FSE 2019 is always leave-one-test-out)."""
    n_boot: int = 1000
    """Bootstrap resamples (over groups) per interval."""
    group_by: tuple[str, ...] = ("experiment", "vector")
    """Failure-Dataset-OpenStack grouping(s): one experiment per group, and/or identical count vectors together."""
    max_lines: int = 4000
    """Service-log lines per FSE 2019 sample."""
    trees: int = 500
    """Trees of the random forests (500 is the measured setting; fewer only for quick smoke runs)."""


def parse_args(argv=None) -> Args:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", required=True, help="dataset folder (repeatable)")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--group-by", default="experiment,vector", help="experiment, vector or both (comma-separated)")
    ap.add_argument("--max-lines", type=int, default=4000)
    ap.add_argument("--trees", type=int, default=500, help="random-forest size (500 measured; less: smoke runs)")
    a = ap.parse_args(argv)
    group_by = tuple(g for g in a.group_by.split(",") if g)
    bad = [g for g in group_by if g not in ("experiment", "vector")]
    if bad or not group_by:
        ap.error(f"--group-by {a.group_by!r}: use 'experiment', 'vector' or 'experiment,vector'")
    if a.folds < 2 or a.n_boot < 1:
        ap.error("--folds must be >= 2 and --n-boot >= 1")
    return Args(data=a.data, json=a.json, seed=a.seed, folds=a.folds, n_boot=a.n_boot, group_by=group_by,
                max_lines=a.max_lines, trees=a.trees)


def find_sets(folders: list[str]) -> list[tuple[str, Path]]:
    """(layout, folder) for every real set: a folder itself, else its immediate sub-folders that have a layout."""
    from ifshm_ray.encoding.real_data import RealDataError, detect_layout

    found = []
    for f in map(Path, folders):
        try:
            found.append((detect_layout(f), f))
            continue
        except RealDataError:
            if not f.is_dir():
                raise
        subs = []
        for sub in sorted(p for p in f.iterdir() if p.is_dir()):
            try:
                subs.append((detect_layout(sub), sub))
            except RealDataError:  # not a data set (e.g. licenses/): skipped; none at all raises below
                pass
        if not subs:
            detect_layout(f)  # raises with the message that says what a folder must hold
        found += subs
    return found


def fmt(res: dict) -> str:
    lo, hi = res["macro_f1_ci"]
    alo, ahi = res["accuracy_ci"]
    return f"{res['macro_f1']:.3f} [{lo:.3f}, {hi:.3f}]  {res['accuracy']:.3f} [{alo:.3f}, {ahi:.3f}]  {res['n']:>4}"


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from ifshm_ray.encoding import real_eval
    from ifshm_ray.encoding.real_data import RealDataError, load_failure_dataset, load_nezha, load_samples

    # ---- inputs: every folder read and checked before anything is fitted -------------------------------------
    try:
        sets = [(layout, folder, {"jss2021": load_failure_dataset,
                                  "fse2019": lambda d: load_samples(d, max_lines=args.max_lines),
                                  "nezha": load_nezha}[layout](folder))
                for layout, folder in find_sets(args.data)]
    except (RealDataError, OSError) as exc:
        raise SystemExit(f"real_baselines.py: error: {exc}") from None

    # ---- baselines -----------------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    fixed = real_eval.with_trees(args.trees)
    out: dict = {"seed": args.seed, "folds": args.folds, "n_boot": args.n_boot, "fixed_hyperparameters": fixed,
                 "data": {}}
    for layout, folder, data in sets:
        out["data"][layout] = str(folder)
        if layout == "jss2021":
            for name, campaign in data.items():
                for g in args.group_by:
                    out.setdefault("jss2021", {}).setdefault(name, {})[g] = real_eval.evaluate_campaign(
                        campaign, n_splits=args.folds, n_boot=args.n_boot, seed=args.seed, group_by=g, fixed=fixed)
        elif layout == "fse2019":
            out["fse2019"] = real_eval.evaluate_fse(data, n_boot=args.n_boot, seed=args.seed, fixed=fixed)
        else:
            out["nezha"] = real_eval.evaluate_nezha(data)
    if "jss2021" in out:
        g = "experiment" if "experiment" in args.group_by else args.group_by[0]
        out["per_campaign"] = {c: {b: {k: v[k] for k in ("macro_f1", "accuracy", "n")}
                                   for b, v in r[g]["baselines"].items()} for c, r in out["jss2021"].items()}
    out["seconds"] = round(time.perf_counter() - t0, 1)

    # ---- report ----------------------------------------------------------------------------------------------------
    if args.json:
        print(json.dumps(out))
        return out
    print(f"{'dataset':<28}{'baseline':<20}{'macro-F1 [95% CI]':<24}{'accuracy [95% CI]':<23}{'n':>4}")
    for c, by in out.get("jss2021", {}).items():
        for g, r in by.items():
            for b, v in r["baselines"].items():
                print(f"{'JSS2021 ' + c + ' (' + g + ')':<28}{b:<20}{fmt(v)}")
    for b, v in out.get("fse2019", {}).get("baselines", {}).items():
        print(f"{'FSE2019 failure_mode':<28}{b:<20}{fmt(v)}")
    if "nezha" in out:
        nz = out["nezha"]
        rc, ft = nz["root_cause_metric_shift"], nz["fault_type_majority_loo"]
        print(f"Nezha (n={nz['n']}): root cause by metric shift top-1 {rc['top1']:.2f} {rc['top1_ci']}, "
              f"top-3 {rc['top3']:.2f} {rc['top3_ci']}; fault type majority {ft['accuracy']:.2f} {ft['accuracy_ci']}")
    print(f"({out['seconds']} s, seed {args.seed})")
    return out


if __name__ == "__main__":
    main()

"""The encoder on the real development data next to the classical baselines, in one run: grouped cross-validation,
ablations (numeric channel alone / text alone / both), bootstrap intervals, and the unknown score per class left out.

How to run (from the repo root; ``nice`` on the shared 2-core box)::

    # frozen MiniLM (no fine-tuning) on every real set under a folder
    .venv/bin/python jobs/real_eval.py --data ../shared/data --model minilm --json
    # a fine-tuned checkpoint (jobs/finetune_encoder.py --out results/encoder)
    .venv/bin/python jobs/real_eval.py --data ../shared/data/openstack_failure_dataset_jss2021 \
        --encoder-checkpoint results/encoder --json
    # quick smoke run on the repository's fixtures (tiny random model, 20 trees)
    .venv/bin/python jobs/real_eval.py --data tests/data/real_fixtures --model tiny-bert --trees 20 --n-boot 50

What it does (``ifshm_ray.encoding.real_encoder``): per Failure-Dataset-OpenStack campaign, the classical
baselines of ``jobs/real_baselines.py`` and the encoder's frozen states (each experiment read as the text
``counts_as_text`` renders, ``novaclient POST 500 x3``, never through Drain; with a checkpoint fine-tuned on real
data, only the rows its ``real_tasks.json`` held out, baselines included) under two fixed heads (logistic
regression, random forest) on the numeric channel alone (log1p counts), the text alone (pooled LM output) and both,
all on the same grouped folds (``--group-by``); the unknown score's AUROC for each class left out (prototypes fitted
on the other classes of each training fold). On the FSE 2019 runs: the raw-log baselines and a logistic head on the
encoder's pooled states of the service logs, leave-one-test-out. On Nezha: the unsupervised baselines (4 samples,
context only). Deterministic under ``--seed``.

With ``--json`` the last line is one JSON object: ``jss2021.<campaign>`` (``baselines``, ``encoder.heads.<head>:
<ablation>``, ``unknown_score.<text|both>.per_class.<class>.auroc``, ``summary``), ``fse2019``, ``nezha``, and
``per_campaign: {DEPL|NET|STO: {macro_f1, accuracy, n, head, best_baseline, best_baseline_macro_f1,
text_only_macro_f1}}`` (the best encoder head that reads the text: ``text`` or ``both``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "jobs"))


def evaluate_fse_encoder(encoder, samples, n_boot: int, seed: int, mode: str | None = None) -> dict:
    """Logistic head on the encoder's pooled states of the service logs, leave-one-test-out (both rounds of a
    test in one fold). The encoder's Drain templates: a checkpoint's (frozen), else mined on all samples'
    service logs without labels."""
    from ifshm_ray.encoding import real_encoder, real_eval
    from ifshm_ray.encoding.real_data import REAL_CLASSES

    y = np.asarray([REAL_CLASSES.index(s.label) for s in samples])
    groups = np.asarray([s.meta.get("test") or s.sample_id for s in samples])
    folds = real_eval.grouped_folds(y, groups, 0, seed)
    real_eval.check_folds(folds, groups)
    ctxs = [encoder.modal.encode(s.telemetry) for s in samples]
    X = real_encoder.text_states(encoder, ctxs, mode).astype(np.float64)
    names = {i: c for i, c in enumerate(REAL_CLASSES) if i in set(y.tolist())}
    pred = real_eval.out_of_fold(lambda: real_encoder.head_model("logreg", seed), X, y, folds)
    return {"logreg:text": real_eval.score(y, pred, groups, names, n_boot, seed)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", required=True, help="dataset folder (repeatable)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--encoder-checkpoint", help="folder written by jobs/finetune_encoder.py --out")
    src.add_argument("--model", default="minilm", help="backbone preset for a frozen encoder (default minilm)")
    ap.add_argument("--mode", choices=("templates", "context"), help="LM path (default: the encoder's)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--group-by", choices=("experiment", "vector"), default="experiment")
    ap.add_argument("--trees", type=int, default=500, help="random-forest size (500 measured; less: smoke runs)")
    ap.add_argument("--max-lines", type=int, default=4000)
    args = ap.parse_args(argv)
    if args.folds < 2 or args.n_boot < 1 or args.trees < 1:
        ap.error("--folds must be >= 2, --n-boot and --trees >= 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(1)
    from real_baselines import find_sets, fmt

    from ifshm_ray.encoding import real_encoder, real_eval
    from ifshm_ray.encoding.real_data import RealDataError, load_failure_dataset, load_nezha, load_samples

    try:
        sets = [(layout, folder, {"jss2021": load_failure_dataset,
                                  "fse2019": lambda d: load_samples(d, max_lines=args.max_lines),
                                  "nezha": load_nezha}[layout](folder))
                for layout, folder in find_sets(args.data)]
        encoder = real_encoder.load_encoder(args.encoder_checkpoint, args.model, args.seed)
    except (RealDataError, OSError, ValueError) as exc:
        ap.exit(2, f"real_eval.py: error: {exc}\n")

    t0 = time.perf_counter()
    fixed_b, fixed_h = real_eval.with_trees(args.trees), real_encoder.with_trees(args.trees)
    out: dict = {"seed": args.seed, "folds": args.folds, "n_boot": args.n_boot, "group_by": args.group_by,
                 "encoder": {"checkpoint": args.encoder_checkpoint, "model": encoder.config.model,
                             "mode": args.mode or encoder.config.mode},
                 "fixed_hyperparameters": {"baselines": fixed_b, "heads": fixed_h}, "data": {}}
    for layout, folder, data in sets:
        out["data"][layout] = str(folder)
        if layout == "jss2021":
            for name, campaign in data.items():
                campaign, restricted = real_encoder.holdout_campaign(campaign, args.encoder_checkpoint)
                r = real_encoder.evaluate_campaign_encoder(
                    encoder, campaign, n_splits=args.folds, n_boot=args.n_boot, seed=args.seed,
                    group_by=args.group_by, mode=args.mode, fixed_baselines=fixed_b, fixed_heads=fixed_h)
                r["summary"] = real_encoder.best_of(r)
                r["rows"] = "held out by the fine-tuning" if restricted else "all"
                out.setdefault("jss2021", {})[name] = r
        elif layout == "fse2019":
            r = real_eval.evaluate_fse(data, n_boot=args.n_boot, seed=args.seed, fixed=fixed_b)
            r["encoder"] = {"heads": evaluate_fse_encoder(encoder, data, args.n_boot, args.seed, args.mode)}
            out["fse2019"] = r
        else:
            out["nezha"] = real_eval.evaluate_nezha(data)
    if "jss2021" in out:
        out["per_campaign"] = {}
        for c, r in out["jss2021"].items():
            s = r["summary"]
            h = r["encoder"]["heads"][s["best_encoder"]]
            out["per_campaign"][c] = {"macro_f1": h["macro_f1"], "accuracy": h["accuracy"], "n": h["n"],
                                      "head": s["best_encoder"], "best_baseline": s["best_baseline"],
                                      "best_baseline_macro_f1": s["best_baseline_macro_f1"],
                                      "text_only_macro_f1": s["best_text_only_macro_f1"]}
    out["seconds"] = round(time.perf_counter() - t0, 1)

    if args.json:
        print(json.dumps(out))
        return out
    print(f"{'dataset':<22}{'model':<32}{'macro-F1 [95% CI]':<24}{'accuracy [95% CI]':<23}{'n':>4}")
    for c, r in out.get("jss2021", {}).items():
        for b, v in r["baselines"].items():
            print(f"{'JSS2021 ' + c:<22}{b:<32}{fmt(v)}")
        for h, v in r["encoder"]["heads"].items():
            print(f"{'JSS2021 ' + c:<22}{'encoder ' + h:<32}{fmt(v)}")
        for abl, u in r["unknown_score"].items():
            print(f"{'JSS2021 ' + c:<22}unknown-score AUROC ({abl}): " +
                  ", ".join(f"{k} {v['auroc']:.3f}" for k, v in u["per_class"].items()))
    if "fse2019" in out:
        for b, v in {**out["fse2019"]["baselines"], **out["fse2019"]["encoder"]["heads"]}.items():
            print(f"{'FSE2019 failure_mode':<22}{b:<32}{fmt(v)}")
    print(f"({out['seconds']} s, seed {args.seed})")
    return out


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""How well does the continual protocol's novelty gate tell a new fault type from a known one, where it decides?

    python benchmarks/gate_novelty.py [--policy results/sweep/runs/hier_alert/handpicked/seed0] [--split handpicked]
        [--decide-on action] [--unseen-weights 0,1] [--fit-windows 1,20]

The gate of ``jobs/continual.py`` with the numeric :class:`~ifshm_ray.meta.diagnose.FeatureDiagnoser`, built the way
the protocol builds it (:func:`~ifshm_ray.meta.diagnose.first_alarm_windows` with the policy acting until the gate's
window, the diagnoser fitted on ``--fit-seeds`` known incidents per type, its threshold calibrated on
``--calibration-seeds`` others to ``--target-fpr`` with :func:`~ifshm_ray.meta.novelty.calibrate`), then measured on
disjoint seeds: the false-positive rate on ``--test-seeds`` held-out known incidents per type and the recall on as
many incidents of every unknown type of the split (Wilson 95% intervals). One row per (fit windows, unseen weight).
Without ``--policy`` the windows are those under ``observe`` actions. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", default=None, help="A policy bundle (or a jobs/train.py --out folder holding one).")
    p.add_argument("--split", default="handpicked")
    p.add_argument("--decide-on", default="action", choices=["firing", "pending", "action"])
    p.add_argument("--fit-seeds", type=int, default=10)
    p.add_argument("--calibration-seeds", type=int, default=10)
    p.add_argument("--test-seeds", type=int, default=10)
    p.add_argument("--target-fpr", type=float, default=0.02)
    p.add_argument("--unseen-weights", default="0,1", help="Comma-separated FeatureDiagnoser unseen_weight values.")
    p.add_argument("--fit-windows", default="1,20", help="Comma-separated windows per fit incident.")
    p.add_argument("--seed-offset", type=int, default=700_000)
    p.add_argument("--encoder", default=None,
                   help="Also measure the fine-tuned encoder's unknown score (a jobs/finetune_encoder.py checkpoint, "
                        "e.g. results/encoder: the protocol's gate.encoder) on the same windows (one extra row).")
    args = p.parse_args(argv)

    from ifshm_ray.encoding.calibration import wilson_interval
    from ifshm_ray.meta.config import NoveltyConfig
    from ifshm_ray.meta.continual import ModulePolicy
    from ifshm_ray.meta.diagnose import FeatureDiagnoser, first_alarm_windows
    from ifshm_ray.meta.novelty import calibrate
    from ifshm_ray.sim.catalog import load_catalog

    t0 = time.time()
    cat = load_catalog()
    known, unknown = cat.known_in(args.split), cat.unknown_in(args.split)
    sim = {"split": args.split}
    policy = None
    if args.policy:
        from ifshm_ray.policy.bundle import load_policy_bundle

        policy = ModulePolicy(load_policy_bundle(args.policy))
    o = args.seed_offset
    fit_s = range(o, o + args.fit_seeds)
    cal_s = range(fit_s.stop, fit_s.stop + args.calibration_seeds)
    test_s = range(cal_s.stop + 100_000, cal_s.stop + 100_000 + args.test_seeds)

    def windows(types, seeds, n=1):
        return first_alarm_windows(sim, types, seeds, decide_on=args.decide_on, policy=policy, windows=n)

    cal_w, held_w, unk_w = windows(known, cal_s), windows(known, test_s), windows(unknown, test_s)
    rows = []
    for n in [int(x) for x in args.fit_windows.split(",")]:
        fit_w = windows(known, fit_s, n)
        for w in [float(x) for x in args.unseen_weights.split(",")]:
            d = FeatureDiagnoser.fit(sim, fit_w, 0.95, w)
            cal = calibrate([d(t)[0] for _, _, t in cal_w], config=NoveltyConfig(target_fpr=args.target_fpr))
            fp = [d(t)[0] > cal.threshold for _, _, t in held_w]
            per: dict[str, list[bool]] = {}
            for f, _, t in unk_w:
                per.setdefault(f, []).append(d(t)[0] > cal.threshold)
            hits = [x for v in per.values() for x in v]
            rows.append({"fit_windows": n, "unseen_weight": w, "threshold": cal.threshold,
                         "calibration_fpr": cal.calibration_fpr, "heldout_fpr": float(np.mean(fp)),
                         "heldout_fpr_ci95": wilson_interval(int(sum(fp)), len(fp)), "heldout_windows": len(fp),
                         "recall": float(np.mean(hits)), "recall_ci95": wilson_interval(int(sum(hits)), len(hits)),
                         "unknown_windows": len(hits),
                         "recall_per_type": {f: float(np.mean(v)) for f, v in sorted(per.items())}})
    if args.encoder:
        from ifshm_ray.meta.diagnose import EncoderDiagnoser

        diag = EncoderDiagnoser(args.encoder)

        def enc(t):  # a window the encoder gives no finite score for counts as not novel
            score, state = diag(t)
            return (-np.inf if score is None else score), state
        cal = calibrate([enc(t)[0] for _, _, t in cal_w], config=NoveltyConfig(target_fpr=args.target_fpr))
        fp = [enc(t)[0] > cal.threshold for _, _, t in held_w]
        per = {}
        for f, _, t in unk_w:
            per.setdefault(f, []).append(enc(t)[0] > cal.threshold)
        hits = [x for v in per.values() for x in v]
        rows.append({"encoder": args.encoder, "unscored_windows": unscored, "threshold": cal.threshold, "calibration_fpr": cal.calibration_fpr,
                     "heldout_fpr": float(np.mean(fp)), "heldout_fpr_ci95": wilson_interval(int(sum(fp)), len(fp)),
                     "heldout_windows": len(fp), "recall": float(np.mean(hits)),
                     "recall_ci95": wilson_interval(int(sum(hits)), len(hits)), "unknown_windows": len(hits),
                     "recall_per_type": {f: float(np.mean(v)) for f, v in sorted(per.items())}})
    out = {"benchmark": "gate_novelty", "split": args.split, "policy": args.policy, "decide_on": args.decide_on,
           "target_fpr": args.target_fpr, "known_types": len(known), "unknown_types": unknown,
           "calibration_windows": len(cal_w), "rows": rows, "wall_s": time.time() - t0}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()

"""Diagnose real incidents with a fine-tuned encoder: a folder of OpenStack fault-injection samples, or one window.

How to run (from the repo root)::

    # every sample of a folder in the layout of ../shared/data/openstack_fault_injection_fse2019
    DATA=../shared/data/openstack_fault_injection_fse2019
    .venv/bin/python jobs/diagnose.py --data $DATA --encoder-checkpoint results/encoder
    .venv/bin/python jobs/diagnose.py --data $DATA --encoder-checkpoint results/encoder --json   # one JSON object
    # one telemetry window (JSON file in the ifshm.telemetry/v1 schema)
    .venv/bin/python jobs/diagnose.py --telemetry window.json --encoder-checkpoint results/encoder

What it prints for a folder: accuracy and macro-F1 against the samples' ``failure_mode`` labels (``NO_FAILURE`` and
``NORMAL_FAULT_FREE_ROUND`` both count as ``HEALTHY``), a 95 % Wilson interval for the accuracy (there are few
samples), and the confusion matrix. Only the service logs are model input; the workload logs (which contain the
label) are never read. Two ways to turn the encoder's output into a failure mode (``--head``):

* ``map`` (default): the simulator fault the encoder diagnoses, through the documented map
  ``ifshm_ray.encoding.real_data.SIM_TO_FAILURE_MODE`` -- nothing of the real data is trained on;
* ``loo``: a linear head on the frozen semantic states, leave-one-out: each sample is scored by a head fitted on
  the other samples only.

``--json`` prints one JSON object with at least ``accuracy``, ``macro_f1`` and ``n``.
For one window it prints the diagnosed fault, its calibrated confidence, the unknown score and the top 3.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def diagnose_folder(encoder, data_dir: Path, head: str = "map", max_lines: int = 4000, mode: str | None = None
                    ) -> dict:
    from ifshm_ray.encoding.calibration import confusion_matrix, macro_f1, wilson_interval
    from ifshm_ray.encoding.linear import leave_one_out_predictions
    from ifshm_ray.encoding.real_data import REAL_CLASSES, load_samples, sim_to_failure_mode

    samples = load_samples(data_dir, max_lines=max_lines)
    if not samples:
        raise SystemExit(f"no samples in {data_dir}/samples.json")
    out = encoder.predict([s.telemetry for s in samples], mode=mode)
    y = np.asarray([REAL_CLASSES.index(s.label) for s in samples])
    if head == "map":
        pred = np.asarray([REAL_CLASSES.index(sim_to_failure_mode(f)) for f in out["fault"]])
    else:
        pred = leave_one_out_predictions(out["state"], y)
    k = int((pred == y).sum())
    lo, hi = wilson_interval(k, len(y))
    return {
        "n": len(y), "accuracy": k / len(y), "accuracy_ci95": [lo, hi],
        "macro_f1": macro_f1(y, pred), "head": head, "labels": list(REAL_CLASSES),
        "confusion_matrix": confusion_matrix(y, pred, len(REAL_CLASSES)).tolist(),
        "majority_class_accuracy": float(np.bincount(y).max() / len(y)),
        "predictions": [{"sample_id": s.sample_id, "label": s.label, "predicted": REAL_CLASSES[p],
                         "sim_fault": f, "confidence": float(c), "unknown_score": float(u)}
                        for s, p, f, c, u in zip(samples, pred, out["fault"], out["confidence"],
                                                 out["unknown_score"])],
    }


def diagnose_window(encoder, telemetry: dict, mode: str | None = None) -> dict:
    from ifshm_ray.encoding.real_data import sim_to_failure_mode
    from ifshm_ray.telemetry import validate_telemetry

    validate_telemetry(telemetry)
    out = encoder.predict([telemetry], mode=mode)
    probs = out["probs"][0]
    top = np.argsort(-probs)[:3]
    fault = out["fault"][0]
    return {"fault": fault, "confidence": float(out["confidence"][0]), "unknown_score": float(out["unknown_score"][0]),
            "openstack_failure_mode": sim_to_failure_mode(fault),
            "top3": [{"fault": encoder.fault_types[i], "p": float(probs[i])} for i in top]}


def print_report(res: dict) -> None:
    lo, hi = res["accuracy_ci95"]
    print(f"samples: {res['n']}   head: {res['head']}")
    print(f"accuracy: {res['accuracy']:.3f}  (95% CI {lo:.3f}-{hi:.3f}; majority class {res['majority_class_accuracy']:.3f})")
    print(f"macro-F1: {res['macro_f1']:.3f}")
    labels = res["labels"]
    short = [lb.replace("FAILURE_", "F_")[:14] for lb in labels]
    print("confusion matrix (rows: label, columns: predicted)")
    print(" " * 16 + " ".join(f"{s:>14}" for s in short))
    for s, row in zip(short, res["confusion_matrix"]):
        print(f"{s:>15} " + " ".join(f"{v:>14d}" for v in row))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="folder with samples.json (openstack_fault_injection_fse2019 layout)")
    src.add_argument("--telemetry", help="one telemetry window as a JSON file")
    ap.add_argument("--encoder-checkpoint", default=str(REPO / "results" / "encoder"),
                    help="checkpoint folder written by jobs/finetune_encoder.py --out (default: results/encoder)")
    ap.add_argument("--adapter", dest="encoder_checkpoint", default=argparse.SUPPRESS,
                    help=argparse.SUPPRESS)  # the old name of --encoder-checkpoint
    ap.add_argument("--head", choices=("map", "loo"), default="map")
    ap.add_argument("--mode", choices=("templates", "context"), help="LM path (default: the checkpoint's)")
    ap.add_argument("--max-lines", type=int, default=4000, help="service-log lines per sample")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING)

    from ifshm_ray.encoding.semantic import SemanticEncoder

    encoder = SemanticEncoder.load(args.encoder_checkpoint)
    encoder.modal.freeze()
    if args.data:
        res = diagnose_folder(encoder, Path(args.data), args.head, args.max_lines, args.mode)
        if args.json:
            print(json.dumps(res))
        else:
            print_report(res)
    else:
        res = diagnose_window(encoder, json.loads(Path(args.telemetry).read_text()), args.mode)
        if args.json:
            print(json.dumps(res))
        else:
            print(f"fault: {res['fault']}  confidence {res['confidence']:.3f}  unknown score "
                  f"{res['unknown_score']:.2f}  (OpenStack failure mode: {res['openstack_failure_mode']})")
            for t in res["top3"]:
                print(f"  {t['p']:.3f}  {t['fault']}")
    return res


if __name__ == "__main__":
    main()

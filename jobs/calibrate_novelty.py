"""Calibrate the novelty gate's threshold on the encoder's unknown score (issue 15) and measure what it achieves.

Known-fault windows of the split's known types (and the healthy windows before each injection: not novel either)
from calibration seeds set the threshold at the configured false-positive rate (``meta.novelty.target_fpr``,
default 2%); windows from other, held-out seeds measure the false-positive rate it achieves, and windows of the
split's unknown types (from the fault's visible symptoms on) measure the recall. Seeds default to ranges far from
``jobs/finetune_encoder.py``'s train / validation / test seeds. Windows come from
:func:`ifshm_ray.encoding.simdata.labelled_windows` (observe actions, so the fault stays active).

    .venv/bin/python jobs/calibrate_novelty.py --encoder results/encoder --out results/novelty_calibration.json

The JSON (a :class:`~ifshm_ray.meta.novelty.NoveltyCalibration` plus the run's settings) is what
``meta.calibration`` of a training config names.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _seeds(spec: str) -> list[int]:
    lo, _, hi = spec.partition(":")
    if not hi or int(hi) <= int(lo):
        raise argparse.ArgumentTypeError(f"seed range {spec!r}: give START:STOP with STOP > START")
    return list(range(int(lo), int(hi)))


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--encoder", required=True, help="Fine-tuned encoder checkpoint (jobs/finetune_encoder.py --out).")
    p.add_argument("--out", required=True, help="Where to write the calibration JSON.")
    p.add_argument("--split", default=None, help="Named split (default: the catalog's default split).")
    p.add_argument("--calibration-seeds", type=_seeds, default="1000:1010", help="START:STOP episode seeds.")
    p.add_argument("--heldout-seeds", type=_seeds, default="2000:2010", help="START:STOP episode seeds.")
    p.add_argument("--unknown-seeds", type=_seeds, default="3000:3010", help="START:STOP episode seeds.")
    p.add_argument("--windows-per-episode", type=int, default=4)
    p.add_argument("--target-fpr", type=float, default=None, help="Overrides meta.novelty.target_fpr.")
    return p


def scores(encoder, windows: list[dict], batch: int = 64) -> np.ndarray:
    out = []
    for i in range(0, len(windows), batch):
        out.append(encoder.predict([w["telemetry"] for w in windows[i:i + batch]])["unknown_score"])
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def main(argv: list[str] | None = None) -> dict:
    args = make_parser().parse_args(argv)
    from ifshm_ray.encoding.semantic import SemanticEncoder
    from ifshm_ray.encoding.simdata import HEALTHY, labelled_windows
    from ifshm_ray.meta.config import NoveltyConfig
    from ifshm_ray.meta.novelty import calibrate
    from ifshm_ray.sim.catalog import load_catalog

    t0 = time.time()
    cat = load_catalog()
    split = cat.check_split(args.split or cat.default_split)
    known, unknown = cat.known_in(split), cat.unknown_in(split)
    cfg = NoveltyConfig(**({"target_fpr": args.target_fpr} if args.target_fpr is not None else {}))
    encoder = SemanticEncoder.load(args.encoder)
    missing = [k for k in known if k not in encoder.fault_types]
    if missing:
        raise SystemExit(f"the encoder was not trained on known type(s) {missing} of split {split!r}: its "
                         f"prototypes cannot stand for them")
    wpe = args.windows_per_episode
    val = list(labelled_windows(args.calibration_seeds, known, windows_per_episode=wpe))
    held = list(labelled_windows(args.heldout_seeds, known, windows_per_episode=wpe))
    unk = [w for w in labelled_windows(args.unknown_seeds, unknown, windows_per_episode=wpe, healthy_per_seed=0)
           if w["label"] != HEALTHY]
    cal = calibrate(scores(encoder, val), scores(encoder, held), scores(encoder, unk), cfg)
    out = {**cal.to_dict(), "split": split, "encoder": str(Path(args.encoder).resolve()),
           "calibration_seeds": [args.calibration_seeds[0], args.calibration_seeds[-1] + 1],
           "heldout_seeds": [args.heldout_seeds[0], args.heldout_seeds[-1] + 1],
           "unknown_seeds": [args.unknown_seeds[0], args.unknown_seeds[-1] + 1],
           "windows_per_episode": wpe, "healthy_windows_in_known": sum(w["label"] == HEALTHY for w in val + held),
           "wall_s": round(time.time() - t0, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()

"""Attach a calibrated novelty gate to a trained policy bundle, for serving (``/v1/heal``) and live healing.

A phase-1 policy (``jobs/train.py``'s ``policy_bundle``) has no gate; ``jobs/continual.py`` calibrates one per
seed before its stream (the threshold on known-type windows, ``novelty_calibration.json``, and the feature
diagnoser whose unknown score it thresholds, ``diagnoser.json``). This writes a copy of the bundle with
``meta_state.json`` (a fresh meta-controller: that calibration, the given ``meta`` config, an empty trust table, so
every novel incident goes to ``trust.fallback`` until outcomes are recorded: the protocol's zero-shot gate) and the
diagnoser beside it, plus ``GATE_ATTACHED.json`` naming the sources:

    python -m ifshm_ray.meta.attach --bundle RUN/policy_bundle --calibration SEED/novelty_calibration.json \\
        --diagnoser SEED/full/diagnoser.json --meta-config configs/continual_entity_pilot.yaml --out DIR

``--meta-config`` is a YAML holding a ``meta:`` section (a continual config) or a meta config itself. Refused: a
diagnoser built for another observation (its feature count differs from the bundle's), a calibration without a
threshold, an existing ``--out``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ATTACHED_FILE = "GATE_ATTACHED.json"


def attach_gate(bundle: str | Path, calibration: str | Path, diagnoser: str | Path, meta_config: str | Path,
                out: str | Path) -> Path:
    """See the module doc; returns the new bundle folder."""
    import yaml

    from ifshm_ray.meta.config import MetaConfig
    from ifshm_ray.meta.controller import MetaController
    from ifshm_ray.meta.diagnose import FeatureDiagnoser, load_diagnoser
    from ifshm_ray.meta.novelty import NoveltyCalibration
    from ifshm_ray.policy.bundle import BUNDLE_DIRNAME, read_manifest

    bundle, out = Path(bundle), Path(out)
    if (bundle / BUNDLE_DIRNAME).is_dir():  # a run folder: its bundle
        bundle = bundle / BUNDLE_DIRNAME
    manifest = read_manifest(bundle)
    if out.exists():
        raise FileExistsError(f"--out {out} exists; give a new folder (nothing was written)")
    cal = NoveltyCalibration.load(calibration)
    if cal.threshold is None:
        raise ValueError(f"{calibration}: no threshold")
    diag = load_diagnoser(diagnoser)
    if not isinstance(diag, FeatureDiagnoser):
        raise ValueError(f"{diagnoser}: an encoder diagnoser; serving scores with the served encoder then: attach "
                         "only the meta state (serve that encoder checkpoint)")
    want = (manifest.get("spaces") or {}).get("num_features")
    if want is not None and diag.mean.size != want:
        raise ValueError(f"{diagnoser}: scores {diag.mean.size} features, the bundle's policy reads {want}: the "
                         "diagnoser was fitted for another simulator config")
    doc = yaml.safe_load(Path(meta_config).read_text()) or {}
    section = doc.get("meta", doc) if isinstance(doc, dict) else None
    if not isinstance(section, dict):
        raise ValueError(f"{meta_config}: expected a mapping with a 'meta:' section or a meta config")
    cfg = MetaConfig.from_dict({**section, "enabled": True}, source=f"{meta_config} meta")
    shutil.copytree(bundle, out)
    MetaController(cfg, cal).save(out)
    diag.save(out)
    (out / ATTACHED_FILE).write_text(json.dumps(
        {"bundle": str(bundle.resolve()), "calibration": str(Path(calibration).resolve()),
         "diagnoser": str(Path(diagnoser).resolve()), "meta_config": str(Path(meta_config).resolve()),
         "threshold": cal.threshold, "decide_on": cfg.decide_on, "fallback": cfg.trust.fallback}, indent=1))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="a policy bundle folder (jobs/train.py OUT/policy_bundle)")
    p.add_argument("--calibration", required=True, help="novelty_calibration.json (jobs/continual.py SEED folder)")
    p.add_argument("--diagnoser", required=True, help="diagnoser.json the calibration's score comes from")
    p.add_argument("--meta-config", required=True, help="YAML with a meta: section (a continual config)")
    p.add_argument("--out", required=True, help="new bundle folder to write")
    a = p.parse_args(argv)
    try:
        out = attach_gate(a.bundle, a.calibration, a.diagnoser, a.meta_config, a.out)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"gated bundle: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

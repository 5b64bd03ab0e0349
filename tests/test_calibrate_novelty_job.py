"""jobs/calibrate_novelty.py on a tiny untrained encoder with fitted prototypes: the threshold meets the target
rate on the calibration windows, and the held-out rate and the recall are measured and written."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import load_job


@pytest.mark.slow  # simulates ~700 windows and runs the tiny LM on them: ~25 s on 2 shared cores
@pytest.mark.timeout(400)
def test_calibrate_novelty_job(tmp_path):
    from ifshm_ray.encoding.config import EncoderConfig
    from ifshm_ray.encoding.semantic import SemanticEncoder
    from ifshm_ray.encoding.simdata import HEALTHY, labelled_windows
    from ifshm_ray.meta.novelty import NoveltyCalibration, flag_rate
    from ifshm_ray.sim.catalog import load_catalog

    cat = load_catalog()
    known = cat.known_in(cat.default_split)
    enc = SemanticEncoder.build(EncoderConfig(model="tiny-llama", state_dim=8, adapter="none"), [HEALTHY, *known])
    fit = list(labelled_windows([0], known, windows_per_episode=2))
    states = enc.predict([w["telemetry"] for w in fit])["state"]
    enc.fit_prototypes(states, [enc.fault_types.index(w["label"]) for w in fit])
    ckpt = enc.save(tmp_path / "enc")

    out = tmp_path / "cal.json"
    res = load_job("calibrate_novelty").main(["--encoder", str(ckpt), "--out", str(out), "--calibration-seeds", "10:12",
                                              "--heldout-seeds", "20:22", "--unknown-seeds", "30:32",
                                              "--windows-per-episode", "2"])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(res))
    cal = NoveltyCalibration.load(out)
    assert cal.calibration_fpr <= 0.02 and cal.calibration_windows >= 50
    assert cal.heldout_windows > 0 and 0.0 <= cal.heldout_fpr <= 1.0
    lo, hi = cal.heldout_fpr_ci95
    assert lo <= cal.heldout_fpr <= hi
    assert cal.unknown_windows > 0 and cal.recall is not None
    # the threshold is the one the calibration windows give
    val = list(labelled_windows([10, 11], known, windows_per_episode=2))
    scores = SemanticEncoder.load(ckpt).predict([w["telemetry"] for w in val])["unknown_score"]
    assert flag_rate(scores, cal.threshold) == pytest.approx(cal.calibration_fpr)
    assert np.isfinite(cal.threshold)

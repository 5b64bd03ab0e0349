"""Calibrating the novelty threshold: the encoder's unknown score (:func:`ifshm_ray.encoding.calibration.unknown_score`,
distance to the nearest known prototype in units of its radius) against a threshold chosen on known-fault validation
windows so that at most ``target_fpr`` of them are flagged novel; the rate it achieves on held-out known windows is
measured and reported (with a Wilson 95% interval), and, where windows of unknown types are given, the recall.

A window is flagged novel when ``score > threshold``. The threshold is the smallest validation score such that the
fraction of validation scores above it is at most ``target_fpr`` (ties count on the safe side: every window at the
threshold is not flagged). Windows with no score (NaN: an encoder without prototypes) are refused.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ifshm_ray.encoding.calibration import wilson_interval
from ifshm_ray.meta.config import NoveltyConfig


@dataclasses.dataclass(frozen=True)
class NoveltyCalibration:
    """A calibrated threshold and what it achieves."""

    threshold: float
    target_fpr: float
    calibration_windows: int
    calibration_fpr: float
    heldout_windows: int | None = None
    heldout_fpr: float | None = None
    heldout_fpr_ci95: tuple[float, float] | None = None
    unknown_windows: int | None = None
    recall: float | None = None
    recall_ci95: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "NoveltyCalibration":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no novelty calibration at {path} (write one with NoveltyCalibration.save)")
        return cls.from_dict(json.loads(path.read_text()))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NoveltyCalibration":
        names = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in names}  # a calibration job's extra keys (seeds, encoder)
        for k in ("heldout_fpr_ci95", "recall_ci95"):
            if data.get(k) is not None:
                data[k] = tuple(data[k])
        return cls(**data)


def _scores(x: Sequence[float], what: str) -> np.ndarray:
    a = np.asarray(x, np.float64).ravel()
    if a.size and not np.isfinite(a).all():
        raise ValueError(f"{what}: unknown scores must be finite (NaN: the encoder has no fault prototypes; fit "
                         "them first)")
    return a


def flag_rate(scores: Sequence[float], threshold: float) -> float:
    """Fraction of windows flagged novel (score > threshold)."""
    s = _scores(scores, "flag_rate")
    return float((s > threshold).mean()) if s.size else float("nan")


def calibrate_threshold(known_scores: Sequence[float], target_fpr: float) -> float:
    """The smallest threshold among the scores with at most ``target_fpr`` of ``known_scores`` above it."""
    s = np.sort(_scores(known_scores, "calibrate_threshold"))
    if s.size == 0:
        raise ValueError("calibrate_threshold needs at least one known-fault window score")
    n = s.size
    allowed = int(np.floor(target_fpr * n + 1e-9))  # windows that may lie above the threshold
    threshold = float(s[n - 1 - allowed]) if allowed < n else float(s[0])
    # windows tied at the threshold are not flagged (score > threshold), so the rate is <= target
    return threshold


def calibrate(known_val: Sequence[float], known_heldout: Sequence[float] | None = None,
              unknown: Sequence[float] | None = None, config: NoveltyConfig | None = None) -> NoveltyCalibration:
    """Calibrate on ``known_val`` and measure on ``known_heldout`` (false positives) and ``unknown`` (recall)."""
    config = config or NoveltyConfig()
    val = _scores(known_val, "known_val")
    if val.size < config.min_calibration_windows:
        raise ValueError(f"{val.size} known-fault validation windows; calibrating a {config.target_fpr:.0%} "
                         f"false-positive rate needs at least novelty.min_calibration_windows = "
                         f"{config.min_calibration_windows}")
    thr = calibrate_threshold(val, config.target_fpr)
    out: dict[str, Any] = dict(threshold=thr, target_fpr=config.target_fpr, calibration_windows=int(val.size),
                               calibration_fpr=flag_rate(val, thr))
    if known_heldout is not None:
        h = _scores(known_heldout, "known_heldout")
        fp = int((h > thr).sum())
        out.update(heldout_windows=int(h.size), heldout_fpr=fp / h.size if h.size else None,
                   heldout_fpr_ci95=wilson_interval(fp, int(h.size)))
    if unknown is not None:
        u = _scores(unknown, "unknown")
        tp = int((u > thr).sum())
        out.update(unknown_windows=int(u.size), recall=tp / u.size if u.size else None,
                   recall_ci95=wilson_interval(tp, int(u.size)))
    return NoveltyCalibration(**out)

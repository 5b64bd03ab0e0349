"""The model cache's layout, shared by the stack (which writes the bundled model at start) and the target app's
replicas (which load it): ``<cache>/models/<version>/weights.npy`` and the replicas' ``<cache>/scratch/``.
No Ray import here (the stack's driver process uses it)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

MODELS_SUBDIR, SCRATCH_SUBDIR = "models", "scratch"


def model_path(cache_dir: str | Path, version: str) -> Path:
    return Path(cache_dir) / MODELS_SUBDIR / version / "weights.npy"


def write_models(cache_dir: str | Path, versions: list[str], n_features: int, seed: int) -> list[Path]:
    """The bundled model's weights, one file per version, drawn from ``seed`` (deterministic)."""
    rng = np.random.default_rng(seed)
    out = []
    for v in versions:
        p = model_path(cache_dir, v)
        p.parent.mkdir(parents=True, exist_ok=True)
        np.save(p, rng.normal(size=n_features).astype(np.float32))
        out.append(p)
    return out



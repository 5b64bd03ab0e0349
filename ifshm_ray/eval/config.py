"""Configuration of the evaluation statistics."""
from __future__ import annotations

from pydantic import Field

from ifshm_ray.config import ConfigModel


class StatsConfig(ConfigModel):
    """Bootstrap confidence intervals of evaluation metrics (seeded: the same records give the same interval)."""

    bootstrap_samples: int = Field(10_000, ge=100)
    """Bootstrap resamples (episodes drawn with replacement)."""
    bootstrap_seed: int = Field(0, ge=0)
    """Seed of the resampling."""
    confidence: float = Field(0.95, gt=0.0, lt=1.0)
    """Coverage of the percentile interval."""

"""Configuration of the reference policies (no Ray imported here)."""
from __future__ import annotations

from pydantic import Field

from ifshm_ray.config import ConfigModel


class NearestKnownConfig(ConfigModel):
    """The ``nearest-known`` reference: prototypes of the split's known fault types from calibration episodes."""

    calibration_episodes: int = Field(20, ge=1)
    """Calibration episodes per known fault type (observe only) whose first symptomatic window is averaged into the
    type's prototype."""
    calibration_seed: int = Field(977_000_003, ge=0)
    """Seed of the calibration incidents (episode seeds as the evaluation harness derives them from (seed, fault,
    index)). The harness refuses an evaluation whose episode seeds meet a calibration seed."""
    cache_dir: str | None = None
    """Folder of the cached prototypes (one JSON per simulator config, split and calibration settings); None:
    ``~/.cache/ifshm_ray/nearest_known``."""

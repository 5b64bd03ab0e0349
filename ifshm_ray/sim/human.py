"""The paged human of the ``escalate`` action, drawn per page (``SimConfig.human.model: drawn``).

The default ``fixed`` model (``SimConfig.human_response_s + human_fix_s``, every fault that had started fixed) lives
in :meth:`ifshm_ray.sim.core.BatchedSim.step`. The ``drawn`` model replaces the page's duration by

    response + fix_1 (+ fix_2 when the first attempt fails)

with ``response`` and each ``fix`` lognormal (a median and a 90th percentile from ``data/human.yaml``, clipped), the
fix longer for fault types the on-call team has never met (held out in the split), and the first attempt failing
with a probability that also depends on that familiarity. After it the human clears every fault that had started
when paged, as in the fixed model. Familiarity is a property of the incident's fault types and the split, read only
by this simulated human: nothing of it reaches the observation.

Every draw is counter-based (:mod:`ifshm_ray.sim.rng`, a function of the episode key, the step and a purpose of its
own), so a seed reproduces an episode and B single simulators give the numbers one batched simulator gives.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

from ifshm_ray.config import ConfigError, HumanParams, LognormalTime, load_config
from ifshm_ray.sim import rng

DATA = Path(__file__).resolve().parent / "data" / "human.yaml"
P_HUMAN_Z, P_HUMAN_FAIL = 43, 44  # rng purposes: the normal draws (and 43 + 512, see rng.normal); the failure draw
Z90 = NormalDist().inv_cdf(0.9)   # standard normal 90th percentile: p90 = median * exp(sigma * Z90)


def load_human_params(path: str | Path | None = None) -> HumanParams:
    """The drawn model's parameters from ``path`` (None: the packaged ``data/human.yaml``); a bad file raises
    :class:`ifshm_ray.config.ConfigError` naming the key."""
    return load_config(HumanParams, path if path is not None else DATA)


@dataclass(frozen=True)
class _Lognormal:
    mu: float
    sigma: float
    lo: float
    hi: float

    @classmethod
    def of(cls, spec: LognormalTime) -> "_Lognormal":
        return cls(mu=math.log(spec.median_s), sigma=math.log(spec.p90_s / spec.median_s) / Z90,
                   lo=float(spec.clip_s[0]), hi=float(spec.clip_s[1]))

    def at(self, z: np.ndarray) -> np.ndarray:
        """The draws for standard normal numbers ``z`` (clipped)."""
        return np.clip(np.exp(self.mu + self.sigma * z), self.lo, self.hi)


class HumanModel:
    """Draws the duration of pages (see the module docstring)."""

    def __init__(self, params: HumanParams):
        self.params = params
        self.response = _Lognormal.of(params.response)
        self.fix_known = _Lognormal.of(params.fix_known)
        self.fix_unknown = _Lognormal.of(params.fix_unknown)
        self.fail_known = float(params.first_attempt_fail_prob.known)
        self.fail_unknown = float(params.first_attempt_fail_prob.unknown)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "HumanModel":
        try:
            return cls(load_human_params(path))
        except ConfigError as e:
            raise ConfigError(f"human model parameters: {e}") from None

    def draw(self, keys: np.ndarray, counter: np.ndarray, unfamiliar: np.ndarray) -> dict[str, np.ndarray]:
        """Per env (arrays [n]): ``response_s``, ``fix_s`` (every attempt together), ``attempts`` (1 or 2) and
        ``total_s`` = response + fix of pages sent at step ``counter`` of episodes ``keys``; ``unfamiliar`` [n] bool:
        a fault of a type held out in the split had started."""
        z = rng.normal(keys, counter, P_HUMAN_Z, 3)
        u = rng.uniform(keys, counter, P_HUMAN_FAIL, 1)[:, 0]
        response = self.response.at(z[:, 0])
        f1 = np.where(unfamiliar, self.fix_unknown.at(z[:, 1]), self.fix_known.at(z[:, 1]))
        f2 = np.where(unfamiliar, self.fix_unknown.at(z[:, 2]), self.fix_known.at(z[:, 2]))
        failed = u < np.where(unfamiliar, self.fail_unknown, self.fail_known)
        fix = f1 + np.where(failed, f2, 0.0)
        return {"response_s": response, "fix_s": fix, "attempts": 1 + failed.astype(np.int64),
                "total_s": response + fix}

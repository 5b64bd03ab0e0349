"""The wall-clock SLO probe: success rate and latency of real requests, judged by the simulator's SLO fields.

A reading (:class:`SloReading`) is ``requests`` sequential requests to one URL (bounded count and timeout). It is
green when the error rate is at most ``SimConfig.slo_error_rate``, the latency quantile at most
``SimConfig.slo_latency_factor`` x the steady-state value measured before injection (:meth:`HttpSloProbe.calibrate`)
and, when a replica check is given, every replica is healthy. :func:`slo_badness` turns a reading into one
number (0: green; larger: worse), the executor's probe. :class:`RecoveryWatch` says when the service has been green
for ``green_s`` consecutive seconds (the time to recover).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import httpx

from ifshm_ray.config import SimConfig
from ifshm_ray.live.config import SloProbeConfig
from ifshm_ray.live.net import check_loopback_url


@dataclass(frozen=True)
class SloReading:
    """One probe reading."""

    requests: int
    success_rate: float
    latency_ms: float
    """The configured latency quantile over the successful requests (inf when none succeeded)."""
    replicas_healthy: bool | None = None
    """None: not checked."""


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile of ``values`` (inf for an empty list)."""
    if not values:
        return math.inf
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def slo_badness(reading: SloReading, *, baseline_latency_ms: float, sim: SimConfig) -> float:
    """0 when every SLO holds; otherwise the sum of the relative violations (error rate over its bound, latency
    over ``slo_latency_factor`` x baseline) plus 1 when a replica is unhealthy."""
    error_rate = 1.0 - reading.success_rate
    bad = max(0.0, error_rate - sim.slo_error_rate) / sim.slo_error_rate
    limit = sim.slo_latency_factor * baseline_latency_ms
    bad += max(0.0, reading.latency_ms / limit - 1.0) if math.isfinite(reading.latency_ms) else 1.0
    if reading.replicas_healthy is False:
        bad += 1.0
    return bad


class HttpSloProbe:
    """Reads the SLOs of one URL on 127.0.0.1; calling it returns :func:`slo_badness` (the executor's probe)."""

    def __init__(self, url: str, cfg: SloProbeConfig, sim: SimConfig, *, baseline_latency_ms: float | None = None,
                 replicas_healthy: Callable[[], bool] | None = None):
        self.url = check_loopback_url(url, "SLO probe")
        self.cfg, self.sim = cfg, sim
        self.baseline_latency_ms = baseline_latency_ms
        self.replicas_healthy = replicas_healthy

    def read(self) -> SloReading:
        ok, latencies = 0, []
        with httpx.Client(trust_env=False, timeout=self.cfg.request_timeout_s) as client:
            for _ in range(self.cfg.requests):
                t0 = time.perf_counter()
                try:
                    r = client.get(self.url)
                except httpx.HTTPError:
                    continue
                if r.status_code < 500:
                    ok += 1
                    latencies.append((time.perf_counter() - t0) * 1000.0)
        healthy = self.replicas_healthy() if self.replicas_healthy is not None else None
        return SloReading(self.cfg.requests, ok / self.cfg.requests,
                          quantile(latencies, self.cfg.latency_quantile), healthy)

    def calibrate(self) -> SloReading:
        """Read the steady state and keep its latency as the baseline (before any injection)."""
        reading = self.read()
        if reading.success_rate < 1.0 - self.sim.slo_error_rate or not math.isfinite(reading.latency_ms):
            raise RuntimeError(f"not in a steady state at {self.url}: {reading}")
        self.baseline_latency_ms = reading.latency_ms
        return reading

    def badness(self, reading: SloReading) -> float:
        if self.baseline_latency_ms is None:
            raise RuntimeError("calibrate() the probe in the steady state first (no baseline latency)")
        return slo_badness(reading, baseline_latency_ms=self.baseline_latency_ms, sim=self.sim)

    def __call__(self) -> float:
        return self.badness(self.read())


class RecoveryWatch:
    """Feed it ``(time, green)`` readings; :attr:`recovered_at` is the start of the first green streak that
    lasted ``green_s`` seconds (None until then)."""

    def __init__(self, green_s: float):
        self.green_s = green_s
        self.streak_start: float | None = None
        self.recovered_at: float | None = None

    def update(self, t: float, green: bool) -> bool:
        """Record one reading; True once recovered."""
        if self.recovered_at is not None:
            return True
        if not green:
            self.streak_start = None
        elif self.streak_start is None:
            self.streak_start = t
        if self.streak_start is not None and t - self.streak_start >= self.green_s:
            self.recovered_at = self.streak_start
        return self.recovered_at is not None

"""A bounded loopback load generator: paced requests to one URL on 127.0.0.1, every outcome recorded.

``concurrency`` worker threads take send times from one :class:`Pacer` (``rate_rps``; :meth:`LoadGenerator.set_rate`
changes it while running, e.g. for a traffic surge, never above ``max_rate_rps``), send a GET each, and record
``(start time, status or error, latency)``. :meth:`LoadGenerator.window` summarises the records of a time window
(success rate, latency quantile). The generator stops by itself after ``max_duration_s``; :meth:`stop` ends it at
once (bounded joins).

Example::

    with LoadGenerator("http://127.0.0.1:8080/predict", LoadConfig(rate_rps=5, max_duration_s=600)) as load:
        ...
        stats = load.window(since=time.monotonic() - 10)
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Callable

import httpx

from ifshm_ray.config import ConfigError
from ifshm_ray.live.config import LoadConfig
from ifshm_ray.live.net import check_loopback_url
from ifshm_ray.live.slo import quantile


class Pacer:
    """Send times at a given rate: each :meth:`take` returns the next one (never in the past by more than one
    interval: after a stall the schedule restarts from now instead of bursting)."""

    def __init__(self, rate_rps: float, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._next = clock()
        self.rate_rps = rate_rps

    def set_rate(self, rate_rps: float) -> None:
        with self._lock:
            self.rate_rps = rate_rps

    def take(self) -> float:
        with self._lock:
            now = self.clock()
            interval = 1.0 / self.rate_rps
            due = max(self._next, now - interval)
            self._next = due + interval
            return due


@dataclass(frozen=True)
class RequestRecord:
    t: float
    """Monotonic start time."""
    status: int | None
    """HTTP status, or None when the request failed without one."""
    error: str | None
    latency_ms: float


@dataclass(frozen=True)
class WindowStats:
    requests: int
    success_rate: float
    """Share of requests answered below 500 (1.0 for an empty window)."""
    latency_ms: float
    """The quantile asked for, over the successful requests (inf when none)."""


class LoadGenerator:
    """See the module docstring."""

    def __init__(self, url: str, cfg: LoadConfig):
        self.url = check_loopback_url(url, "load generator")
        if cfg.max_duration_s is None:
            raise ConfigError("the load generator needs loadgen.max_duration_s (it stops by itself after it)")
        self.cfg = cfg
        self.pacer = Pacer(cfg.rate_rps)
        self.records: collections.deque[RequestRecord] = collections.deque(maxlen=cfg.max_records)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._deadline = 0.0

    @property
    def rate_rps(self) -> float:
        return self.pacer.rate_rps

    def set_rate(self, rate_rps: float) -> None:
        """Change the rate now; above ``max_rate_rps`` or not positive raises :class:`ConfigError`."""
        if not 0.0 < rate_rps <= self.cfg.max_rate_rps:
            raise ConfigError(f"rate {rate_rps} rps must be in (0, max_rate_rps = {self.cfg.max_rate_rps}]")
        self.pacer.set_rate(rate_rps)

    def start(self) -> "LoadGenerator":
        if self._threads:
            raise RuntimeError("the load generator is already running")
        self._stop.clear()
        self._deadline = time.monotonic() + self.cfg.max_duration_s
        self._threads = [threading.Thread(target=self._worker, name=f"loadgen-{i}", daemon=True)
                         for i in range(self.cfg.concurrency)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Stop every worker (each finishes its request in flight, at most ``request_timeout_s``)."""
        self._stop.set()
        for t in self._threads:
            t.join(self.cfg.request_timeout_s + 1.0)
        alive = [t.name for t in self._threads if t.is_alive()]
        self._threads = []
        if alive:
            raise TimeoutError(f"load generator threads {alive} did not stop")

    def __enter__(self) -> "LoadGenerator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def expired(self) -> bool:
        """True once ``max_duration_s`` has passed since :meth:`start` (the workers stop by themselves then)."""
        return bool(self._threads) and time.monotonic() >= self._deadline

    def _worker(self) -> None:
        with httpx.Client(trust_env=False, timeout=self.cfg.request_timeout_s) as client:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                due = self.pacer.take()
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                t0 = time.monotonic()
                status, error = None, None
                try:
                    status = client.get(self.url).status_code
                except httpx.HTTPError as e:
                    error = type(e).__name__
                self.records.append(RequestRecord(t0, status, error, (time.monotonic() - t0) * 1000.0))

    def window(self, since: float, until: float | None = None, q: float = 0.95) -> WindowStats:
        """Statistics of the requests started in ``[since, until)`` (monotonic times)."""
        until = time.monotonic() if until is None else until
        rows = [r for r in list(self.records) if since <= r.t < until]
        ok = [r for r in rows if r.status is not None and r.status < 500]
        return WindowStats(len(rows), len(ok) / len(rows) if rows else 1.0,
                           quantile([r.latency_ms for r in ok], q))

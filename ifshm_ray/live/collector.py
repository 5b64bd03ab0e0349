"""The live collector: one telemetry window (``ifshm.telemetry/v1``, the simulator's ``info["telemetry"]`` shape)
built from Prometheus and the stack's real log files, so the runbook, the encoder and the policy read live data
through the same schema.

* ``metrics``: for each simulator entity and metric of ``data/promql.yaml`` (filled in by the stack with the
  steady state measured before injection), a Prometheus **range query** over the window (``samples`` points);
  non-finite points (a ratio with no traffic) are left out, a metric with no point at all is left out.
* ``alarms``: Prometheus's pending and firing alerts (``/api/v1/alerts``) whose ``service`` / ``node`` label names
  a simulator entity: name, severity, entity, state, ``active_for_s`` since ``activeAt``, the summary.
* ``logs``: the warning and error lines of the window from nginx's error log, Redis's log and the Serve replica
  logs, rendered like the simulator's (``<ISO timestamp> <host> <source>: <body>``): the host is the simulator
  node bound to this machine (the binding's ``host`` component), the source is the simulator entity bound to the
  component that wrote the line (the component's own name where it has no binding, e.g. the Serve gateway).
  The body starts with the line's level as the word ``ERROR`` or ``WARNING`` (:data:`LEVEL_WORDS`), as the
  simulator's lines carry theirs in the body (``ERROR upstream ...``, ``WARN GC pause ...``, oslo's ``... WARNING
  ...``): the policy's log feature counts the lines that match no simulator template by those words, so a line
  whose level lived only in the program's own prefix (Serve's ``ERROR <time>``, nginx's ``[error]``, Redis's
  ``#``) would not count at all. Only the last ``max_log_bytes`` of each file are read.
"""
from __future__ import annotations

import logging
import math
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping, Sequence

import httpx

from ifshm_ray.live.binding import Binding
from ifshm_ray.live.net import check_loopback_url
from ifshm_ray.telemetry import SCHEMA, validate_telemetry

logger = logging.getLogger(__name__)

UNIT_INTERVAL_METRICS = frozenset({"error_rate", "ready_ratio", "node_filesystem_used_ratio", "node_cpu_utilisation",
                                   "node_memory_utilisation"})
"""Simulator metrics that are shares by definition (a live value outside [0, 1] is a mapping error). Not
``memory_util``: Redis's used / maxmemory passes 1 when maxmemory is set below what it holds (a real fault)."""
UNIT_SLACK = 1e-3  # rounding and the rate windows' edges

# one pattern per log format: (timestamp group, level group, body group); the level decides what is kept
_SERVE = re.compile(r"^(?P<level>INFO|DEBUG|WARNING|ERROR|CRITICAL) (?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "
                    r"(?P<body>.*)$")
_REDIS = re.compile(r"^\d+:[XCSM] (?P<ts>\d\d \w{3} \d{4} \d\d:\d\d:\d\d\.\d{3}) (?P<level>[.\-*#]) (?P<body>.*)$")
_NGINX = re.compile(r"^(?P<ts>\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[(?P<level>\w+)\] (?P<body>.*)$")
LEVEL_WORDS = {"serve": {"WARNING": "WARNING", "ERROR": "ERROR", "CRITICAL": "ERROR"},
               "redis": {"#": "WARNING"},  # (Redis's level marks: . debug, - verbose, * notice, # warning)
               "nginx": {"warn": "WARNING", "error": "ERROR", "crit": "ERROR", "alert": "ERROR", "emerg": "ERROR"}}
"""Level of each kept line (per format) -> the word the rendered body starts with (the simulator's level words);
lines of other levels are left out."""
_KEEP = {fmt: set(words) for fmt, words in LEVEL_WORDS.items()}
_TS_FORMATS = {"serve": "%Y-%m-%d %H:%M:%S,%f", "redis": "%d %b %Y %H:%M:%S.%f", "nginx": "%Y/%m/%d %H:%M:%S"}
_FORMAT_OF_KIND = {"serve_deployment": "serve", "redis": "redis", "nginx": "nginx"}
_PATTERNS = {"serve": _SERVE, "redis": _REDIS, "nginx": _NGINX}


def parse_log_line(fmt: str, line: str) -> tuple[float, str, str] | None:
    """``(unix time, level, body)`` of one line in format ``fmt`` (serve, redis, nginx), None when it does not
    parse (a continuation line, e.g. a traceback). Times are local time, as the programs write them."""
    m = _PATTERNS[fmt].match(line.rstrip("\n"))
    if not m:
        return None
    try:
        ts = datetime.strptime(m["ts"], _TS_FORMATS[fmt]).timestamp()
    except ValueError:
        return None
    return ts, m["level"], m["body"]


def parse_rfc3339(value: str) -> float:
    """Unix time of an RFC 3339 time as Prometheus writes it (nanoseconds, ``Z`` or an offset)."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", value)
    if not m:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    tz = "+00:00" if m[3] == "Z" else m[3]
    base = datetime.fromisoformat(m[1] + tz).timestamp()
    return base + (float("0." + m[2]) if m[2] else 0.0)


def tail_lines(path: Path, max_bytes: int) -> list[str]:
    """The last complete lines of ``path`` within ``max_bytes`` ([] when it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    lines = data.decode(errors="replace").splitlines()
    return lines[1:] if size > max_bytes else lines


class Collector:
    """See the module docstring. ``log_files()`` returns live component name -> its log files now."""

    def __init__(self, prometheus_url: str, queries: Mapping[str, Mapping[str, str]], binding: Binding,
                 log_files: Callable[[], Mapping[str, Sequence[Path]]], *, services: Sequence[str],
                 nodes: Sequence[str], samples: int = 10, max_log_lines: int = 200, max_log_bytes: int = 262144,
                 timeout_s: float = 10.0):
        self.url = check_loopback_url(prometheus_url, "Prometheus")
        self.queries, self.binding, self.log_files = queries, binding, log_files
        self.services, self.nodes = list(services), list(nodes)
        self.samples, self.max_log_lines, self.max_log_bytes = samples, max_log_lines, max_log_bytes
        self.timeout_s = timeout_s
        self.source_of = {comp: ent for ent, comp in binding.entities.items()}
        hosts = [ent for ent, comp in binding.entities.items() if binding.components[comp].kind == "host"]
        self.host = hosts[0] if hosts else "localhost"
        self.out_of_range: dict[str, int] = {}
        """'entity/metric' -> windows in which that share-by-definition metric read outside [0, 1]."""

    def _get(self, client: httpx.Client, path: str, **params) -> dict:
        r = client.get(self.url + path, params=params)
        r.raise_for_status()
        body = r.json()
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus {path} {params}: {body}")
        return body["data"]

    def metrics(self, client: httpx.Client, start: float, end: float) -> dict[str, dict[str, list[float]]]:
        step = max((end - start) / max(1, self.samples - 1), 0.001)
        out: dict[str, dict[str, list[float]]] = {}
        for ent, ms in self.queries.items():
            for metric, q in ms.items():
                data = self._get(client, "/api/v1/query_range", query=q, start=f"{start:.3f}", end=f"{end:.3f}",
                                 step=f"{step:.3f}")
                series = data.get("result") or []
                if not series:
                    continue
                vals = [float(v) for _, v in series[0]["values"]]
                vals = [round(v, 4) for v in vals if math.isfinite(v)]
                if vals:
                    out.setdefault(ent, {})[metric] = vals
                    self._check_bounded(ent, metric, vals, q)
        return out

    def _check_bounded(self, ent: str, metric: str, vals: Sequence[float], query: str) -> None:
        """A metric that is a share by definition (:data:`UNIT_INTERVAL_METRICS`) outside [0, 1] means its PromQL
        is wrong (as the model deployment's error ratio was: errors / successes, up to 44): counted per (entity,
        metric) in :attr:`out_of_range` and warned about once; the values are kept as read."""
        if metric not in UNIT_INTERVAL_METRICS or all(-UNIT_SLACK <= v <= 1.0 + UNIT_SLACK for v in vals):
            return
        key = f"{ent}/{metric}"
        if key not in self.out_of_range:
            logger.warning("%s read %s, outside [0, 1] where it is a share by definition: the PromQL mapping "
                           "(ifshm_ray/live/data/promql.yaml) is wrong: %s", key, max(vals, key=abs), query)
        self.out_of_range[key] = self.out_of_range.get(key, 0) + 1

    def alarms(self, client: httpx.Client, now: float) -> list[dict]:
        out = []
        for a in self._get(client, "/api/v1/alerts").get("alerts", []):
            labels = a.get("labels", {})
            ent = labels.get("service") if labels.get("service") in self.services else labels.get("node")
            if ent not in self.services and ent not in self.nodes:
                continue
            active = 0.0
            if a.get("activeAt"):
                active = max(0.0, now - parse_rfc3339(a["activeAt"]))
            sev = labels.get("severity", "warning")
            out.append({"name": labels.get("alertname", "?"), "severity": sev if sev in ("info", "warning",
                                                                                         "critical") else "warning",
                        "entity": ent, "state": "firing" if a.get("state") == "firing" else "pending",
                        "active_for_s": round(active, 3), "summary": a.get("annotations", {}).get("summary", "")})
        return out

    def logs(self, start: float, end: float) -> list[str]:
        rows: list[tuple[float, str]] = []
        for comp, paths in self.log_files().items():
            kind = self.binding.components[comp].kind if comp in self.binding.components else None
            fmt = _FORMAT_OF_KIND.get(kind) if kind else None
            fmt = fmt or {"gateway": "serve", "model": "serve"}.get(comp)
            if fmt is None:
                continue
            source = self.source_of.get(comp, comp)
            for p in paths:
                for line in tail_lines(Path(p), self.max_log_bytes):
                    parsed = parse_log_line(fmt, line)
                    if parsed is None:
                        continue
                    ts, level, body = parsed
                    if start <= ts < end and level in _KEEP[fmt]:
                        iso = datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
                        rows.append((ts, f"{iso} {self.host} {source}: {LEVEL_WORDS[fmt][level]} {body}"))
        rows.sort(key=lambda r: r[0])
        return [r[1] for r in rows[-self.max_log_lines:]]

    def window(self, window_s: float, *, now: float | None = None, t0: float | None = None) -> dict:
        """The telemetry window ending ``now`` (wall time) and covering ``window_s``; ``time_s`` counts from
        ``t0`` (the incident's start; default: the window's start), and log lines older than ``t0`` are left
        out (metrics keep their whole window: the steady state before the fault is part of the picture)."""
        now = time.time() if now is None else now
        start = now - window_s
        with httpx.Client(trust_env=False, timeout=self.timeout_s) as c:
            tel = {"schema": SCHEMA, "time_s": round(max(0.0, now - (start if t0 is None else t0)), 3),
                   "window_s": window_s, "topology": {"services": self.services, "nodes": self.nodes},
                   "metrics": self.metrics(c, start, now), "alarms": self.alarms(c, now),
                   # log lines from before the incident started belong to an earlier one (incidents follow each
                   # other within seconds here): only the incident's own lines
                   "logs": self.logs(start if t0 is None else max(start, t0), now)}
        validate_telemetry(tel)
        return tel

"""The one telemetry schema shared by the simulator, encoders, baselines, ``/v1/heal`` and ``jobs/diagnose.py``.

A telemetry window is a JSON-serialisable ``dict``::

    {
      "schema": "ifshm.telemetry/v1",
      "time_s": 930.0,               # seconds since the episode (or incident window) started
      "window_s": 30.0,              # length of the window the logs/metrics cover
      "topology": {                  # optional for external callers; the simulator always fills it
        "services": ["api-gateway", ...],
        "nodes": ["ctl-0", ...]
      },
      "logs": [                      # raw log lines, oldest first, as an operator would read them
        "2026-11-28 10:15:02.113 4211 ERROR oslo.messaging._drivers.impl_rabbit [req-...] AMQP server ...",
        "[rank0]:[E1128 10:15:03.000000000 ProcessGroupNCCL.cpp:607] [Rank 0] Watchdog caught ...",
        ...
      ],
      "metrics": {                   # entity -> metric name -> samples over the window (oldest first)
        "inference-server": {"latency_p99_ms": [112.0, 118.5, ...], "error_rate": [...], ...},
        "gpu-3": {"DCGM_FI_DEV_GPU_UTIL": [...], "node_memory_utilisation": [...], ...}
      },
      "alarms": [                    # Prometheus-style alerts, pending or firing
        {"name": "KubePodCrashLooping", "severity": "warning", "entity": "inference-server",
         "state": "firing", "active_for_s": 960.0, "summary": "Pod ... is in CrashLoopBackOff"}
      ]
    }

``logs``, ``metrics`` and ``alarms`` may each be empty; unknown extra keys are ignored.
:func:`validate_telemetry` checks the shape and raises :class:`TelemetryError` with a message that
says which field is wrong.
"""
from __future__ import annotations

import math
from typing import Any

SCHEMA = "ifshm.telemetry/v1"
ALARM_SEVERITIES = ("info", "warning", "critical")
ALARM_STATES = ("pending", "firing")


class TelemetryError(ValueError):
    """A telemetry window does not follow :data:`SCHEMA`."""


def validate_telemetry(t: Any, *, services: list[str] | None = None, nodes: list[str] | None = None) -> dict:
    """Check a telemetry dict; return it unchanged. With ``services``/``nodes`` given, every metric
    entity and alarm entity must name one of them (the error lists the valid names)."""
    if not isinstance(t, dict):
        raise TelemetryError(f"telemetry must be a JSON object, got {type(t).__name__}")
    logs = t.get("logs", [])
    if not isinstance(logs, list) or not all(isinstance(x, str) for x in logs):
        raise TelemetryError("'logs' must be a list of strings (raw log lines)")
    metrics = t.get("metrics", {})
    if not isinstance(metrics, dict):
        raise TelemetryError("'metrics' must be an object: entity -> metric name -> list of numbers")
    for ent, series in metrics.items():
        if not isinstance(series, dict):
            raise TelemetryError(f"metrics[{ent!r}] must be an object: metric name -> list of numbers")
        for name, vals in series.items():
            if not isinstance(vals, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vals
            ):
                raise TelemetryError(f"metrics[{ent!r}][{name!r}] must be a list of finite numbers")
    alarms = t.get("alarms", [])
    if not isinstance(alarms, list):
        raise TelemetryError("'alarms' must be a list of alarm objects")
    for i, a in enumerate(alarms):
        if not isinstance(a, dict) or not isinstance(a.get("name"), str):
            raise TelemetryError(f"alarms[{i}] must be an object with a string 'name'")
        sev = a.get("severity", "warning")
        if sev not in ALARM_SEVERITIES:
            raise TelemetryError(f"alarms[{i}].severity {sev!r} is not one of {list(ALARM_SEVERITIES)}")
        state = a.get("state", "firing")
        if state not in ALARM_STATES:
            raise TelemetryError(f"alarms[{i}].state {state!r} is not one of {list(ALARM_STATES)}")
    if services is not None or nodes is not None:
        valid = set(services or []) | set(nodes or [])
        names = sorted(valid)
        for ent in metrics:
            if ent not in valid:
                raise TelemetryError(f"unknown entity {ent!r} in metrics; valid services and nodes: {names}")
        for i, a in enumerate(alarms):
            ent = a.get("entity")
            if ent is not None and ent not in valid:
                raise TelemetryError(f"unknown entity {ent!r} in alarms[{i}]; valid services and nodes: {names}")
    return t

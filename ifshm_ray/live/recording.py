"""Recorded live incidents: every telemetry window the healer saw, with its answer and what the executor did, to
Parquet (pyarrow), so the decisions can be replayed through ``/v1/heal`` in unit tests and used for fine-tuning.

One row per window; the telemetry and the answer are stored as canonical JSON strings (the schema of
:mod:`ifshm_ray.telemetry`, checked before a row is added), with the telemetry's sha256 that the executor's audit
log also carries (:func:`ifshm_ray.live.executor.telemetry_hash`), so audit lines and windows join on it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from ifshm_ray.live.executor import telemetry_hash
from ifshm_ray.telemetry import validate_telemetry

# column names (constants, never bare strings at the call sites)
INCIDENT, FAULT, ARM, WINDOW, WALL_TIME = "incident", "fault", "arm", "window_index", "wall_time"
TELEMETRY, TELEMETRY_SHA256, ANSWER, OUTCOME = "telemetry_json", "telemetry_sha256", "answer_json", "outcome"
REQUEST = "request_json"
"""The ``/v1/heal`` request body sent for the window (telemetry, ``last_action``, ``history``): policy arm only."""
COLUMNS = (INCIDENT, FAULT, ARM, WINDOW, WALL_TIME, TELEMETRY, TELEMETRY_SHA256, ANSWER, OUTCOME, REQUEST)


class IncidentRecorder:
    """Collects windows in memory; :meth:`write` saves them all to one Parquet file (atomically)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []

    def add(self, *, incident: str, fault: str, arm: str, window_index: int, wall_time: float,
            telemetry: Mapping[str, Any], answer: Mapping[str, Any] | None = None,
            outcome: str | None = None, request: Mapping[str, Any] | None = None) -> dict:
        """Add one window (the telemetry is validated first: a malformed window is an error, not a silent row)."""
        validate_telemetry(dict(telemetry))
        row = {INCIDENT: incident, FAULT: fault, ARM: arm, WINDOW: int(window_index), WALL_TIME: float(wall_time),
               TELEMETRY: json.dumps(telemetry, sort_keys=True), TELEMETRY_SHA256: telemetry_hash(telemetry),
               ANSWER: None if answer is None else json.dumps(answer, sort_keys=True, default=str),
               OUTCOME: outcome,
               # the request without its telemetry (stored once, in TELEMETRY): last_action and history
               REQUEST: None if request is None else json.dumps({k: v for k, v in request.items()
                                                                  if k != "telemetry"}, sort_keys=True)}
        self.rows.append(row)
        return row

    def write(self) -> Path:
        """Write every row so far to :attr:`path` (via a temporary file and a rename)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([(INCIDENT, pa.string()), (FAULT, pa.string()), (ARM, pa.string()), (WINDOW, pa.int64()),
                            (WALL_TIME, pa.float64()), (TELEMETRY, pa.string()), (TELEMETRY_SHA256, pa.string()),
                            (ANSWER, pa.string()), (OUTCOME, pa.string()), (REQUEST, pa.string())])
        table = pa.Table.from_pylist(self.rows, schema=schema)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, self.path)
        return self.path


def read_windows(path: str | Path) -> list[dict[str, Any]]:
    """The recorded windows, oldest first, with ``telemetry``, ``answer`` and ``request`` (the full ``/v1/heal``
    body, telemetry included; None outside the policy arm) decoded back to dicts."""
    import pyarrow.parquet as pq

    out = []
    for row in pq.read_table(path).to_pylist():
        row["telemetry"] = json.loads(row.pop(TELEMETRY))
        answer = row.pop(ANSWER)
        row["answer"] = None if answer is None else json.loads(answer)
        request = row.pop(REQUEST, None)
        row["request"] = None if request is None else {**json.loads(request), "telemetry": row["telemetry"]}
        out.append(row)
    return out

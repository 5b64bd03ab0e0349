"""Recorded live windows: validated on the way in, written to Parquet, read back unchanged, joined to the audit
log by the telemetry hash."""
from __future__ import annotations

import pytest

from ifshm_ray.live.executor import telemetry_hash
from ifshm_ray.live.recording import TELEMETRY_SHA256, IncidentRecorder, read_windows
from ifshm_ray.telemetry import TelemetryError

pytestmark = pytest.mark.timeout(30)

WINDOW = {"schema": "ifshm.telemetry/v1", "time_s": 10.0, "window_s": 10.0,
          "logs": ["2026-11-30 02:50:00.000 nginx upstream timed out (110: Connection timed out)"],
          "metrics": {"inference-server": {"latency_p99_ms": [90.0, 240.0], "error_rate": [0.0, 0.2]}},
          "alarms": [{"name": "InferenceLatencyHigh", "severity": "warning", "entity": "inference-server",
                      "state": "firing", "active_for_s": 3.0, "summary": "p99 above SLO"}]}


def test_windows_round_trip_through_parquet(tmp_path):
    rec = IncidentRecorder(tmp_path / "incidents.parquet")
    answer = {"action": {"category": "reroute", "target": "api-gateway", "ratio": None}}
    rec.add(incident="inc-1", fault="path-latency", arm="healer", window_index=0, wall_time=1.5, telemetry=WINDOW,
            answer=answer, outcome="dry_run")
    rec.add(incident="inc-1", fault="path-latency", arm="none", window_index=1, wall_time=11.5, telemetry=WINDOW)
    rows = read_windows(rec.write())
    assert [r["window_index"] for r in rows] == [0, 1]
    assert rows[0]["telemetry"] == WINDOW and rows[0]["answer"] == answer and rows[0]["outcome"] == "dry_run"
    assert rows[1]["answer"] is None and rows[1]["arm"] == "none"
    assert rows[0][TELEMETRY_SHA256] == telemetry_hash(WINDOW)  # the executor's audit log carries the same hash
    assert not list(tmp_path.glob("*.tmp"))


def test_malformed_windows_are_refused(tmp_path):
    rec = IncidentRecorder(tmp_path / "x.parquet")
    with pytest.raises(TelemetryError):
        rec.add(incident="i", fault="f", arm="healer", window_index=0, wall_time=0.0,
                telemetry={"logs": "not a list"})
    assert rec.rows == []

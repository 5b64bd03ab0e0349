"""The README's main command (jobs/pipeline.py) end to end on a tiny budget."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(600)
def test_pipeline_smoke(ray_session, tmp_out):
    sys.path.insert(0, str(ROOT / "jobs"))
    import pipeline

    res = pipeline.main(["--config", "configs/pipeline.yaml", "--out", str(tmp_out), "--smoke", "--task-cpus", "0.5"])
    assert set(res) == {"known", "unknown"}
    for fs in ("known", "unknown"):
        for pol in ("oracle", "runbook", "runbook-instant", "random"):
            assert (tmp_out / f"eval_{fs}" / pol / "metrics.json").exists()
        assert res[fs]["oracle"]["mttr_mean_s"] <= res[fs]["random"]["mttr_mean_s"]
    summary = json.loads((tmp_out / "summary.json").read_text())
    assert "known" in summary
    report = (tmp_out / "report.md").read_text()
    assert "known faults" in report and "unknown faults" in report
    assert (tmp_out / "mttr_per_fault_known.png").exists()

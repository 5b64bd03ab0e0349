"""benchmarks/human_model.py: the harness's incidents under a chosen human model, with the first action recorded."""
from __future__ import annotations

import json

import pytest
from conftest import load_benchmark

from ifshm_ray.config import SimConfig
from ifshm_ray.eval.harness import evaluate, make_jobs
from ifshm_ray.sim.catalog import load_catalog



@pytest.mark.timeout(120)
def test_records_match_the_harness_and_first_actions_are_counted(tmp_path, capsys):
    mod = load_benchmark("human_model")
    res = mod.main(["--human", "drawn", "--faults", "unknown", "--episodes", "1", "--arm", "oracle",
                    "--arm", "escalate-first", "--arm", "ef=escalate-first", "--group", "g=escalate-first+ef",
                    "--pair", "g:oracle", "--pair", "oracle:escalate-first", "--out", str(tmp_path)])
    capsys.readouterr()
    ef, orc = res["arms"]["escalate-first"]["unknown"], res["arms"]["oracle"]["unknown"]
    assert ef["escalate_first_rate"] == 1.0 and ef["escalation_rate"] == 1.0 and ef["first_action"] == {"escalate": 1.0}
    assert orc["escalate_first_rate"] == 0.0 and orc["escalation_rate"] == 0.0
    assert res["groups"]["g"]["unknown"]["mttr_mean_s"] == pytest.approx(ef["mttr_mean_s"])
    d = res["pairs"]["oracle - escalate-first"]["unknown"]
    assert d["escalated"]["mean"] == -1.0 and d["mttr_s"]["mean"] < 0 and d["mttr_s"]["units"] == 1
    assert res["pairs"]["g - oracle"]["unknown"]["mttr_s"]["units"] == 2
    # the recorder passes actions through: the harness's own evaluation gives the same MTTRs on the same incidents
    cfg = SimConfig(human={"model": "drawn"})
    jobs = make_jobs("unknown", load_catalog(), cfg.split, 1, 0)
    ref = evaluate("escalate-first", [], 1, 0, cfg, use_ray=False, jobs=jobs)
    mine = json.loads((tmp_path / "unknown" / "escalate-first.json").read_text())
    assert [r["mttr_s"] for r in mine] == [r["mttr_s"] for r in ref]
    # the human model is what --human says: the fixed human answers every page in the same time
    fixed = mod.main(["--human", "fixed", "--faults", "unknown", "--episodes", "1", "--arm", "escalate-first",
                      "--out", str(tmp_path / "fixed")])
    capsys.readouterr()
    assert fixed["arms"]["escalate-first"]["unknown"]["mttr_mean_s"] < ef["mttr_mean_s"]


@pytest.mark.timeout(30)
def test_bad_input_is_refused(tmp_path):
    mod = load_benchmark("human_model")
    with pytest.raises(SystemExit, match="--pair"):
        mod.main(["--human", "drawn", "--arm", "oracle", "--pair", "oracle:nope", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--faults"):
        mod.main(["--human", "drawn", "--arm", "oracle", "--faults", "fault_free", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--arm"):
        mod.main(["--human", "drawn", "--arm", "checkpoint:/no/such/run", "--out", str(tmp_path)])

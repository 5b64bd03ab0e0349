"""jobs/sweep.py: the run plan, resumability and the report over seeds, on fake finished runs (no training)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(120)


def _sweep():
    spec = importlib.util.spec_from_file_location("ifshm_sweep_job", REPO / "jobs" / "sweep.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _cfg(sw, tmp_path, **kw):
    data = {"out": str(tmp_path / "sweep"), "iterations": 3, "references": [str(tmp_path / "refs")],
            "eval": {"faults": ["known", "unknown"], "episodes": 1, "seed": 0},
            "groups": [{"name": "hier", "config": "configs/tiny.yaml", "splits": ["handpicked", "random1"],
                        "seeds": [0, 1, 2]},
                       {"name": "flat", "config": "configs/tiny.yaml", "splits": ["handpicked"], "seeds": [0, 1]}]}
    data.update(kw)
    return sw.SweepConfig.model_validate(data)


def _fake_run(sw, cfg, group, split, seed, mttrs):
    d = sw.run_dir(cfg, group, split, seed) / "eval"
    for fs in cfg.eval.faults:
        (d / fs).mkdir(parents=True, exist_ok=True)
        eps = [{"fault": "x", "seed": i, "mttr_s": m} for i, m in enumerate(mttrs)]
        m = {"policy": group.name, "fault_set": fs, "split": split, "seed": 0, "mttr_mean_s": sum(mttrs) / len(mttrs),
             "success_rate": 0.5, "per_fault": {"x": {"mttr_mean_s": sum(mttrs) / len(mttrs)}}}
        (d / fs / "metrics.json").write_text(json.dumps(m))
        (d / fs / "episodes.json").write_text(json.dumps(eps))
    (d / "done.json").write_text("{}")


def _fake_ref(tmp_path, split, pol, episodes, fault_set="known"):
    """A reference's run on ``split``: metrics.json and ``episodes`` = [(episode seed, MTTR), ...] of fault "x"."""
    p = tmp_path / "refs" / split / fault_set / pol
    p.mkdir(parents=True)
    mttrs = [m for _, m in episodes]
    (p / "metrics.json").write_text(json.dumps({"policy": pol, "fault_set": fault_set, "split": split, "seed": 0,
                                                "mttr_mean_s": sum(mttrs) / len(mttrs)}))
    (p / "episodes.json").write_text(json.dumps([{"fault": "x", "seed": sd, "mttr_s": m} for sd, m in episodes]))


def test_plan_interleaves_seeds_so_a_stopped_sweep_covers_the_budget_evenly(tmp_path):
    sw = _sweep()
    cfg = _cfg(sw, tmp_path)
    runs = [(g.name, sp, s) for g, sp, s in sw.plan(cfg)]
    assert len(runs) == 3 * 2 + 2 * 1
    assert [r[2] for r in runs] == [0, 0, 0, 1, 1, 1, 2, 2]  # every group's seed 0 first, then seed 1, ...
    assert runs[:3] == [("hier", "handpicked", 0), ("hier", "random1", 0), ("flat", "handpicked", 0)]


def test_report_averages_over_the_finished_seeds_and_pools_episodes(tmp_path):
    sw = _sweep()
    cfg = _cfg(sw, tmp_path)
    hier = cfg.groups[0]
    _fake_run(sw, cfg, hier, "handpicked", 0, [100.0, 300.0])
    _fake_run(sw, cfg, hier, "handpicked", 1, [500.0, 700.0])
    assert sw.is_done(sw.run_dir(cfg, hier, "handpicked", 0))
    assert not sw.is_done(sw.run_dir(cfg, hier, "handpicked", 2))
    table = sw.collect(cfg)
    cell = table["hier"]["handpicked"]["known"]
    assert cell["seeds"] == [0, 1] and cell["episodes"] == 4
    assert cell["mttr_mean_s"] == pytest.approx(400.0) and cell["mttr_mean_s_std"] == pytest.approx(200.0)
    lo, hi = cell["mttr_ci95_pooled"]
    assert 100.0 <= lo < 400.0 < hi <= 700.0
    assert "random1" not in table["hier"] and "flat" not in table  # nothing finished there


def test_references_join_only_when_paired_and_for_the_sweeps_sets(tmp_path):
    sw = _sweep()
    cfg = _cfg(sw, tmp_path)
    refs = tmp_path / "refs"
    for pol, seed, fs in (("runbook", 0, "known"), ("oracle", 7, "known"), ("runbook", 0, "compound")):
        p = refs / "handpicked" / fs / pol
        p.mkdir(parents=True)
        (p / "metrics.json").write_text(json.dumps({"policy": pol, "fault_set": fs, "split": "handpicked",
                                                    "seed": seed, "mttr_mean_s": 1.0}))
    got = sw.references(cfg)
    assert set(got) == {"runbook"} and set(got["runbook"]["handpicked"]) == {"known"}  # seed 7: not paired
    text = sw.write_report(cfg, {}, got, "python jobs/sweep.py")
    assert "| runbook | handpicked | ref |" in text


def test_bad_sweep_config_is_a_clear_error(tmp_path):
    sw = _sweep()
    with pytest.raises(ValueError, match="not_a_split"):
        _cfg(sw, tmp_path, groups=[{"name": "h", "config": "configs/tiny.yaml", "splits": ["not_a_split"],
                                    "seeds": [0]}])
    with pytest.raises(ValueError, match="does not exist"):
        _cfg(sw, tmp_path, groups=[{"name": "h", "config": "configs/nope.yaml", "splits": ["handpicked"],
                                    "seeds": [0]}])
    with pytest.raises(ValueError, match="not fault sets"):
        _cfg(sw, tmp_path, eval={"faults": ["known", "everything"]})


def test_mean_over_splits_has_the_stratified_interval_and_json_keeps_no_episodes(tmp_path):
    from ifshm_ray.eval.stats import stratified_mean_ci

    sw = _sweep()
    cfg = _cfg(sw, tmp_path)
    hier = cfg.groups[0]
    _fake_run(sw, cfg, hier, "handpicked", 0, [100.0, 300.0])
    _fake_run(sw, cfg, hier, "random1", 0, [1000.0, 1000.0, 1200.0])
    _fake_ref(tmp_path, "handpicked", "runbook", [(0, 50.0), (1, 60.0)])
    _fake_ref(tmp_path, "random1", "runbook", [(0, 70.0), (1, 90.0)])
    table, got = sw.collect(cfg), sw.references(cfg)
    lines = sw.mean_over_splits(cfg, table, got, ["handpicked", "random1"])
    row = next(ln for ln in lines if ln.startswith("| hier |"))
    lo, hi = stratified_mean_ci([[100.0, 300.0], [1000.0, 1000.0, 1200.0]], cfg.stats)
    assert f"[{lo:,.0f}, {hi:,.0f}]" in row and "| 633 |" in row  # mean of the split means (200 + 1067) / 2
    assert lo >= (100 + 1000) / 2 and hi <= (300 + 1200) / 2 and lo < hi
    assert "[60, 75]" in next(ln for ln in lines if ln.startswith("| runbook |"))  # (50|60 + 70|90) / 2
    sw.main(["--config", str(_write(tmp_path, cfg)), "--report-only"])
    assert "_eps" not in (tmp_path / "sweep" / "sweep.json").read_text()


def _write(tmp_path, cfg):
    import yaml

    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(cfg.model_dump()))
    return p


def test_stratified_interval_resamples_within_groups():
    from ifshm_ray.eval.stats import stratified_mean_ci

    assert stratified_mean_ci([[1.0, 1.0], [3.0]]) == [2.0, 2.0]  # no spread inside a group: none in the mean
    assert stratified_mean_ci([[1.0], []]) is None
    lo, hi = stratified_mean_ci([[0.0, 10.0], [0.0, 10.0]])
    assert lo == 0.0 and hi == 10.0 and stratified_mean_ci([[0.0, 10.0], [0.0, 10.0]]) == [lo, hi]


def test_nested_interval_covers_the_spread_between_seeds():
    from ifshm_ray.eval.stats import nested_mean_ci, stratified_mean_ci

    # two seeds that disagree, each with no spread between its episodes: pooling the episodes as one sample gives a
    # narrow interval around 150; resampling the seeds lets the mean be either seed's
    seeds = [[100.0] * 20, [200.0] * 20]
    lo, hi = nested_mean_ci([seeds])
    assert lo == 100.0 and hi == 200.0
    plo, phi = stratified_mean_ci([seeds[0] + seeds[1]])
    assert 100.0 < plo < 150.0 < phi < 200.0 and phi - plo < hi - lo
    assert nested_mean_ci([[[5.0, 5.0]], [[7.0]]]) == [6.0, 6.0] and nested_mean_ci([[[1.0], []]]) is None


def test_paired_differences_pair_each_seed_with_the_reference_incident(tmp_path):
    sw = _sweep()
    cfg = _cfg(sw, tmp_path)
    hier = cfg.groups[0]
    _fake_run(sw, cfg, hier, "handpicked", 0, [100.0, 300.0])
    _fake_run(sw, cfg, hier, "handpicked", 1, [140.0, 340.0])
    # the reference's incidents in another order, plus one the trained runs did not meet
    _fake_ref(tmp_path, "handpicked", "runbook", [(1, 200.0), (0, 100.0), (9, 5000.0)])
    lines = sw.paired_over_splits(cfg, sw.collect(cfg), sw.references(cfg), ["handpicked", "random1"])
    row = next(ln for ln in lines if ln.startswith("| hier |"))
    # seed 0: (0, +100) -> +50; seed 1: (+40, +140) -> +90; mean +70; the seeds' spread is in the interval
    assert "| +70 [" in row and row.endswith("(1) |")
    lo, hi = (float(x) for x in row.split("[")[1].split("]")[0].replace("+", "").replace(",", "").split(" "))
    assert 0.0 <= lo < 70.0 < hi <= 140.0

"""Classical baselines on real data: grouped folds never split a group, scores and intervals are right and
deterministic under a seed, Drain is fitted on the training fold only, and jobs/real_baselines.py runs on every
fixture layout (and on ../shared/data's smallest set when present) and rejects a malformed folder."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ifshm_ray.encoding import real_eval
from ifshm_ray.encoding.real_data import load_failure_dataset, load_nezha, load_samples

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "data" / "real_fixtures"
SHARED = REPO.parent / "shared" / "data"
pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("n_splits", [0, 3])
def test_grouped_folds_keep_groups_together(n_splits):
    y = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 0, 1, 2])
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8])  # groups 0-2: the two rounds of one test
    folds = real_eval.grouped_folds(y, groups, n_splits, seed=3)
    real_eval.check_folds(folds, groups)
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])
    assert len(folds) == (9 if n_splits == 0 else 3)
    with pytest.raises(AssertionError, match="both sides"):
        real_eval.check_folds([(np.array([1, 2, 3]), np.array([0])), (np.array([0]), np.array([1, 2, 3]))],
                              np.array([0, 0, 1, 1]))
    with pytest.raises(AssertionError, match="exactly once"):
        real_eval.check_folds([(np.array([2, 3]), np.array([0, 1]))], np.array([0, 0, 1, 1]))


def test_macro_f1_matches_sklearn_and_bootstrap_brackets_it():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    y, pred = rng.integers(0, 4, 300), rng.integers(0, 5, 300)
    pred[:200] = y[:200]
    assert real_eval.macro_f1(y, pred) == pytest.approx(
        f1_score(y, pred, labels=np.unique(y), average="macro", zero_division=0))
    groups = np.arange(300) // 2
    lo, hi = real_eval.bootstrap_ci(y, pred, groups, real_eval.macro_f1, n_boot=300, seed=1)
    assert lo < real_eval.macro_f1(y, pred) < hi and hi - lo < 0.2
    assert real_eval.bootstrap_ci(y, pred, groups, real_eval.accuracy, 50, 7) == \
        real_eval.bootstrap_ci(y, pred, groups, real_eval.accuracy, 50, 7)


def test_campaign_baselines_deterministic_and_above_majority():
    c = load_failure_dataset(FIX / "openstack_failure_dataset_jss2021")["NET"]
    kw = dict(baselines=("majority", "logreg", "random_forest", "text_tfidf_logreg"), n_splits=3, n_boot=100, seed=5,
              fixed=real_eval.with_trees(50))
    a = real_eval.evaluate_campaign(c, **kw)
    assert a == real_eval.evaluate_campaign(c, **kw)
    res = a["baselines"]
    assert min(res[b]["macro_f1"] for b in ("random_forest", "logreg", "text_tfidf_logreg")) > 0.8
    assert res["majority"]["macro_f1"] < 0.3
    for r in res.values():
        assert r["n"] == 24 and r["macro_f1_ci"][0] <= r["macro_f1"] <= r["macro_f1_ci"][1]
        assert set(r["per_class"]) == set(c.label_names)
        assert sum(v["support"] for v in r["per_class"].values()) == 24
    v = real_eval.evaluate_campaign(c, **{**kw, "baselines": ("majority",)}, group_by="vector")
    assert v["group_by"] == "vector" and v["groups"] == v["distinct_vectors"]


def test_drain_templates_are_mined_on_the_training_fold_only():
    train = [["2018-09-28 21:29:20.100 9 INFO nova.compute.manager [req-x - - - - -] Took 3.2 seconds to build"]]
    test = [["2018-09-28 21:29:21.100 9 INFO nova.compute.manager [req-y - - - - -] Took 7.9 seconds to build",
             "2018-09-28 21:29:22.100 9 ERROR cinder.volume.manager [req-z - - - - -] Volume backend is gone"]]
    d = real_eval.DrainTemplates().fit(train)
    assert d.transform(test) == ["T1 UNSEEN"]
    assert real_eval.log_message(test[0][1]) == "ERROR cinder.volume.manager Volume backend is gone"


def test_fse_baselines_on_fixture():
    samples = load_samples(FIX / "openstack_fault_injection_fse2019")
    res = real_eval.evaluate_fse(samples, n_boot=50, seed=0, fixed=real_eval.with_trees(50))
    assert res == real_eval.evaluate_fse(samples, n_boot=50, seed=0, fixed=real_eval.with_trees(50))
    assert res["n"] == 8 and res["groups"] == 7 and res["folds"] == 7
    assert set(res["baselines"]) == set(real_eval.LOG_BASELINES)
    assert res["baselines"]["drain_counts_rf"]["accuracy"] >= 0.5


def test_nezha_metric_shift_finds_the_fixture_root_causes():
    res = real_eval.evaluate_nezha(load_nezha(FIX / "nezha_trainticket_fse2023"))
    assert res["n"] == 2 and res["root_cause_metric_shift"]["top1"] == 1.0
    assert res["root_cause_metric_shift"]["top1_ci"][0] < 1.0  # n = 2: a wide interval
    assert res["modalities"]["2023-01-29_100000_cpu_contention"] == ["metric", "trace"]


def run_job(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "jobs" / "real_baselines.py"), *args], capture_output=True,
                          text=True, timeout=110, cwd=REPO)


@pytest.mark.e2e
def test_job_on_every_fixture_layout():
    p = run_job("--data", str(FIX), "--json", "--n-boot", "50", "--folds", "3", "--trees", "20")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(out["per_campaign"]) == {"DEPL", "NET", "STO"}
    assert set(out["jss2021"]["NET"]) == {"experiment", "vector"}
    for c in out["per_campaign"].values():
        assert set(c) == set(real_eval.COUNT_BASELINES)
        assert all({"macro_f1", "accuracy", "n"} <= set(v) for v in c.values())
    assert out["fse2019"]["n"] == 8 and out["nezha"]["n"] == 2
    assert out["fixed_hyperparameters"]["random_forest"]["n_estimators"] == 20
    p = run_job("--data", str(FIX / "openstack_failure_dataset_jss2021" / "STO"), "--n-boot", "20",
                "--group-by", "experiment", "--trees", "20")
    assert p.returncode == 0 and "JSS2021 STO (experiment)" in p.stdout and "random_forest" in p.stdout


def test_job_rejects_a_malformed_folder(tmp_path):
    (tmp_path / "NET").mkdir()
    (tmp_path / "NET" / "SEQ.tsv").write_text("a\tb\n1\t2\n")
    p = run_job("--data", str(tmp_path / "NET"))
    assert p.returncode != 0 and "Failure_Labels.txt not found" in p.stderr
    p = run_job("--data", str(tmp_path / "nowhere"))
    assert p.returncode != 0 and "not a folder" in p.stderr


@pytest.mark.e2e
@pytest.mark.skipif(not (SHARED / "nezha_trainticket_fse2023" / "samples.json").is_file(),
                    reason="../shared/data is absent")
def test_job_on_shared_nezha():
    p = run_job("--data", str(SHARED / "nezha_trainticket_fse2023"), "--json")
    assert p.returncode == 0, p.stderr
    nz = json.loads(p.stdout.strip().splitlines()[-1])["nezha"]
    assert nz["n"] == 4 and set(nz["predicted_root_cause"]) == {
        "2023-01-29_095804_return", "2023-01-29_105645_exception", "2023-01-29_154200_cpu_contention",
        "2023-01-30_135220_network_delay"}

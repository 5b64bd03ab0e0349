"""The encoder on real data (issue 14): Failure-Dataset-OpenStack rows read as counts text, heads with the
ablations numeric / text / both on the baselines' own folds, the leave-one-class-out unknown-score AUROC, the
multi-task fine-tuning data and heads (config section, grouped training part, checkpoint round trip, the Ray Train +
DeepSpeed job on the fixtures), jobs/real_eval.py and jobs/diagnose.py on a Failure-Dataset-OpenStack folder.
Tiny random models; the fixtures under tests/data/real_fixtures; ../shared/data where present."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ifshm_ray.encoding import real_encoder, real_eval
from ifshm_ray.encoding.config import EncoderJobConfig, RealTrainConfig
from ifshm_ray.encoding.real_data import RealDataError, counts_as_text, load_failure_dataset

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "data" / "real_fixtures"
JSS_FIX = FIX / "openstack_failure_dataset_jss2021"
SHARED = REPO.parent / "shared" / "data"
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def tiny():
    return real_encoder.load_encoder(model="tiny-bert")


def test_campaign_rows_are_read_as_counts_text_not_through_drain(tiny):
    c = load_failure_dataset(JSS_FIX)["NET"]
    ctxs = real_encoder.campaign_contexts(c, tiny.modal.feature_dim)
    assert len(ctxs) == len(c.labels)
    for ctx, row in zip(ctxs, c.counts):
        assert ctx.prompt == counts_as_text(c.events, row)
        assert len(ctx.items) == np.count_nonzero(row) and list(ctx.counts) == [float(v) for v in row[row > 0]]
        assert not ctx.features.any()
    # the numbers reach the LM: two rows that differ only in a count get different text states
    a = c.counts[:1].copy()
    b = a.copy()
    j = int(np.flatnonzero(a[0])[0])
    b[0, j] += 7
    c2 = type(c)(name="NET", events=c.events, counts=np.concatenate([a, b, a]), labels=c.labels[:3],
                 label_names=c.label_names, row_index=np.arange(1, 4))
    s = real_encoder.text_states(tiny, real_encoder.campaign_contexts(c2, tiny.modal.feature_dim), mode="context")
    assert s.shape == (3, tiny.hidden_size)
    assert np.allclose(s[0], s[2]) and not np.allclose(s[0], s[1])


def test_roc_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 40).astype(float), rng.integers(0, 4, 60).astype(float)
    want = roc_auc_score(np.r_[np.ones(40), np.zeros(60)], np.r_[pos, neg])
    assert real_encoder.roc_auc(pos, neg) == pytest.approx(want)
    assert np.isnan(real_encoder.roc_auc([], neg))


def test_leave_class_out_auroc_flags_a_separate_cluster_and_not_an_overlapping_one():
    rng = np.random.default_rng(1)
    centres = np.array([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    X = np.concatenate([centres[k] + rng.normal(0, 0.3, (30, 3)) for k in range(3)])
    y = np.repeat([1, 2, 3], 30)
    folds = real_eval.grouped_folds(y, np.arange(len(y)), 3, 0)
    res = real_encoder.leave_class_out_auroc(X, y, folds, {1: "a", 2: "b", 3: "c"}, standardise=False)
    assert all(v["auroc"] > 0.95 for v in res["per_class"].values()), res
    assert all(v["n_unknown"] == 30 and v["n_known"] == 60 for v in res["per_class"].values())
    # class 3 drawn from the same cloud as class 1: leaving it out is not detectable
    X2 = X.copy()
    X2[y == 3] = centres[0] + rng.normal(0, 0.3, (30, 3))
    res2 = real_encoder.leave_class_out_auroc(X2, y, folds, {1: "a", 2: "b", 3: "c"}, standardise=False)
    assert res2["per_class"]["c"]["auroc"] < 0.8


def test_encoder_heads_share_the_baselines_folds_and_report_every_ablation(tiny):
    c = load_failure_dataset(JSS_FIX)["STO"]
    res = real_encoder.evaluate_campaign_encoder(tiny, c, n_splits=3, n_boot=50, seed=0,
                                                 baselines=("majority", "logreg"),
                                                 fixed_heads=real_encoder.with_trees(10))
    heads = res["encoder"]["heads"]
    assert set(heads) == {f"{h}:{a}" for h in real_encoder.HEADS for a in real_encoder.ABLATIONS}
    # the numeric logistic head is the logistic baseline on the same folds: identical scores
    assert heads["logreg:numeric"]["macro_f1"] == res["baselines"]["logreg"]["macro_f1"]
    for v in heads.values():
        lo, hi = v["macro_f1_ci"]
        assert lo <= v["macro_f1"] <= hi and v["n"] == len(c.labels)
    assert set(res["unknown_score"]) == {"text", "both"}
    assert set(res["unknown_score"]["both"]["per_class"]) == set(c.label_names)
    best = real_encoder.best_of(res)
    assert not best["best_encoder"].endswith(":numeric") and best["best_text_only"].endswith(":text")
    again = real_encoder.evaluate_campaign_encoder(tiny, c, n_splits=3, n_boot=50, seed=0,
                                                   baselines=("majority", "logreg"),
                                                   fixed_heads=real_encoder.with_trees(10))
    assert again["encoder"] == res["encoder"] and again["unknown_score"] == res["unknown_score"]


def test_grouped_training_part_never_splits_a_group_and_covers_every_label():
    y = np.array([1, 1, 1, 2, 2, 2, 3, 3, 1, 2])
    groups = np.array([0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
    m = real_encoder.grouped_train_mask(y, groups, 0.6, seed=3)
    for g in np.unique(groups):
        assert len(set(m[groups == g])) == 1
    assert set(y[m]) == {1, 2, 3} and set(y[~m]) == {1, 2, 3}
    assert (m == real_encoder.grouped_train_mask(y, groups, 0.6, seed=3)).all()


def test_real_config_section_missing_path_is_a_clear_error_or_skipped(tmp_path):
    cfg = RealTrainConfig(jss2021=str(tmp_path / "nope"), fse2019=None, if_missing="error")
    with pytest.raises(RealDataError, match="nope.*does not exist"):
        real_encoder.real_task_samples(cfg, REPO)
    rows, tasks, notes = real_encoder.real_task_samples(cfg.model_copy(update={"if_missing": "skip"}), REPO)
    assert rows == [] and tasks == {} and "absent" in notes[0]
    cfg = RealTrainConfig(jss2021=str(JSS_FIX), fse2019=str(FIX / "openstack_fault_injection_fse2019"),
                          campaigns=["NET", "STO"], if_missing="error")
    rows, tasks, _ = real_encoder.real_task_samples(cfg, REPO)
    assert set(tasks) == {"jss2021_NET", "jss2021_STO", "fse2019_failure_mode"}
    for t in tasks:
        parts = {r["part"] for r in rows if r["task"] == t}
        assert parts == {"train", "holdout"}, t
        tr = {r["group"] for r in rows if r["task"] == t and r["part"] == "train"}
        ho = {r["group"] for r in rows if r["task"] == t and r["part"] == "holdout"}
        assert not tr & ho
    # the workload logs never reach the FSE head (only service-log telemetry)
    assert all(r["telemetry"] is not None for r in rows if r["task"].startswith("fse2019"))
    # the dataclass default trains on the simulator only; the default fine-tuning config (configs/encoder.yaml:
    # jobs/finetune_encoder.py without --config, make demo) includes the real development data, skipped where absent,
    # without pulling the shared encoder (the simulator head is a simulator-only run's)
    from ifshm_ray.encoding.config import load_config

    assert EncoderJobConfig().real.jss2021 is None and EncoderJobConfig().real.fse2019 is None
    default = load_config(REPO / "configs" / "encoder.yaml")
    assert default.real.jss2021.endswith("openstack_failure_dataset_jss2021")
    assert default.real.fse2019.endswith("openstack_fault_injection_fse2019")
    assert default.real.if_missing == "skip" and default.real.shared_encoder_update is False
    assert load_config(REPO / "configs" / "encoder_real.yaml").real.jss2021.endswith("openstack_failure_dataset_jss2021")

    smoke = load_config(REPO / "configs" / "encoder_smoke.yaml")
    assert smoke.real.jss2021 is None and smoke.real.fse2019 is None
    assert load_config(REPO / "configs" / "encoder_real.yaml").real.if_missing == "error"


def test_task_heads_round_trip_through_the_checkpoint(tmp_path):
    import torch

    from ifshm_ray.encoding.config import EncoderConfig
    from ifshm_ray.encoding.semantic import SemanticEncoder

    cfg = EncoderConfig(model="tiny-bert", adapter="lora", state_dim=8)
    tasks = {"jss2021_NET": ["Instance", "Network", "SSH", "No Failure"]}
    enc = SemanticEncoder.build(cfg, ["healthy", "node_crash"], tasks=tasks)
    with torch.no_grad():
        enc.task_heads["jss2021_NET"].weight.add_(0.5)
    enc.save(tmp_path)
    back = SemanticEncoder.load(tmp_path)
    assert back.tasks == tasks
    assert torch.equal(back.task_heads["jss2021_NET"].weight, enc.task_heads["jss2021_NET"].weight)
    with pytest.raises(KeyError, match="no head for task"):
        back.task_logits(torch.zeros(1, 8), "jss2021_DEPL")


def _run(args, timeout=170):
    env = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def test_real_eval_job_on_the_fixtures():
    p = _run(["jobs/real_eval.py", "--data", str(FIX), "--model", "tiny-bert", "--trees", "10", "--n-boot", "30",
              "--folds", "3", "--json"])
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(out["per_campaign"]) == {"DEPL", "NET", "STO"}
    for c, v in out["per_campaign"].items():
        assert {"macro_f1", "accuracy", "n", "head", "best_baseline", "text_only_macro_f1"} <= set(v)
        assert not v["head"].endswith(":numeric")
        assert set(out["jss2021"][c]["baselines"]) == set(real_eval.COUNT_BASELINES)
    assert "logreg:text" in out["fse2019"]["encoder"]["heads"] and "nezha" in out
    bad = _run(["jobs/real_eval.py", "--data", str(REPO / "tests"), "--model", "tiny-bert"])
    assert bad.returncode == 2 and "error" in bad.stderr


def test_diagnose_reports_per_campaign_on_a_failure_dataset_folder(tmp_path):
    from ifshm_ray.encoding.config import EncoderConfig
    from ifshm_ray.encoding.semantic import SemanticEncoder

    # one campaign with a (untrained) task head, the others scored by the cross-validated head on frozen states
    enc = SemanticEncoder.build(EncoderConfig(model="tiny-bert", adapter="none", state_dim=8), ["healthy"],
                                tasks={"jss2021_NET": ["Instance", "Network", "SSH", "No Failure"]})
    enc.save(tmp_path / "ckpt")
    p = _run(["jobs/diagnose.py", "--data", str(JSS_FIX), "--adapter", str(tmp_path / "ckpt"), "--json",
              "--n-boot", "30"])
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    pc = out["per_campaign"]
    assert set(pc) == {"DEPL", "NET", "STO"}
    assert pc["NET"]["head"] == "task" and pc["DEPL"]["head"] == "cv_logreg:both"
    n = {c: len(v.labels) for c, v in load_failure_dataset(JSS_FIX).items()}
    for c, v in pc.items():
        assert v["n"] == n[c] and 0.0 <= v["macro_f1"] <= 1.0 and 0.0 <= v["accuracy"] <= 1.0
    bad = tmp_path / "DEPL"
    bad.mkdir()
    (bad / "SEQ.tsv").write_text("a_x\tb_y\n1\t2\n")
    (bad / "Failure_Labels.txt").write_text("9\n")
    p = _run(["jobs/diagnose.py", "--data", str(bad), "--adapter", str(tmp_path / "ckpt"), "--json"])
    assert p.returncode == 2 and "out of range" in p.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_multitask_finetune_on_the_fixtures(ray_session, tmp_path):
    """The Ray Train + DeepSpeed job with the real heads beside the simulator's: the checkpoint has one head per
    label set, their held-out scores and held-out rows, and the simulator head is still trained and scored."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("finetune_encoder", REPO / "jobs" / "finetune_encoder.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    from ifshm_ray.encoding.semantic import SemanticEncoder

    out = tmp_path / "enc"
    metrics = job.main(["--config", str(REPO / "configs" / "encoder_smoke.yaml"), "--out", str(out),
                        "--set", f"real.jss2021={JSS_FIX}", "--set", "real.campaigns=[NET]",
                        "--set", f"real.fse2019={FIX / 'openstack_fault_injection_fse2019'}",
                        "--set", "real.if_missing=error", "--set", "finetune.rl_probe_episodes=0"])
    assert set(metrics["real_tasks"]) == {"jss2021_NET", "fse2019_failure_mode"}
    # the default: real heads fitted on the frozen states only (no joint steps, so no jointly trained scores), and
    # the simulator head is exactly the simulator-only run's (same data set, same steps)
    assert metrics["real_shared_encoder_update"] is False and "real_tasks_joint" not in metrics
    sim_only = job.main(["--config", str(REPO / "configs" / "encoder_smoke.yaml"), "--out", str(tmp_path / "sim"),
                         "--set", "finetune.rl_probe_episodes=0"])
    for k in ("final_train_loss", "accuracy", "macro_f1", "temperature", "baseline_macro_f1"):
        assert metrics[k] == sim_only[k], k
    for v in metrics["real_tasks"].values():
        assert v["n"] > 0 and 0.0 <= v["macro_f1"] <= 1.0
    assert metrics["macro_f1"] is not None and metrics["n_test"] > 0
    enc = SemanticEncoder.load(out)
    assert set(enc.tasks) == {"jss2021_NET", "fse2019_failure_mode"}
    rt = json.loads((out / "real_tasks.json").read_text())
    assert len(rt["holdout_rows"]["jss2021_NET"]) == metrics["real_tasks"]["jss2021_NET"]["n"]
    with pytest.raises(SystemExit, match="does not exist"):
        job.main(["--config", str(REPO / "configs" / "encoder_smoke.yaml"), "--out", str(tmp_path / "x"),
                  "--set", f"real.jss2021={tmp_path / 'absent'}", "--set", "real.if_missing=error"])


@pytest.mark.skipif(not (SHARED / "openstack_failure_dataset_jss2021" / "NET" / "SEQ.tsv").is_file(),
                    reason="../shared/data/openstack_failure_dataset_jss2021 is absent")
def test_shared_net_encoder_heads_and_unknown_score():
    c = load_failure_dataset(SHARED / "openstack_failure_dataset_jss2021")["NET"]
    enc = real_encoder.load_encoder(model="tiny-bert")
    res = real_encoder.evaluate_campaign_encoder(enc, c, n_splits=5, n_boot=50, seed=0,
                                                 baselines=("majority", "logreg"), heads=("logreg",))
    maj = res["baselines"]["majority"]["macro_f1"]
    assert res["encoder"]["heads"]["logreg:both"]["macro_f1"] > maj + 0.3
    for abl in ("text", "both"):
        per = res["unknown_score"][abl]["per_class"]
        assert set(per) == set(c.label_names) and all(0.0 <= v["auroc"] <= 1.0 for v in per.values())


def test_checkpoint_cross_validation_uses_only_its_held_out_rows(tmp_path):
    c = load_failure_dataset(JSS_FIX)["NET"]
    keep = [str(r) for r in c.row_index[::3]]
    (tmp_path / "real_tasks.json").write_text(json.dumps({"holdout_rows": {"jss2021_NET": keep}}))
    sub, restricted = real_encoder.holdout_campaign(c, tmp_path)
    assert restricted and [str(r) for r in sub.row_index] == keep and len(sub.labels) == len(keep)
    assert sub.counts.shape == (len(keep), c.counts.shape[1])
    same, restricted = real_encoder.holdout_campaign(load_failure_dataset(JSS_FIX)["STO"], tmp_path)
    assert not restricted and len(same.labels) == 24


@pytest.mark.slow
def test_real_heads_leave_the_simulator_data_set_unchanged(tmp_path):
    """``real.shared_encoder_update: false`` (the default): the simulator's encoded windows and the template miner
    are exactly those of a simulator-only run (real logs are matched against the frozen templates, never mined),
    and every real row, training part included, is in real.parquet; ``true`` mines the real training logs."""
    import importlib.util

    import pyarrow.parquet as pq

    from ifshm_ray.encoding.config import EncoderJobConfig

    spec = importlib.util.spec_from_file_location("finetune_encoder", REPO / "jobs" / "finetune_encoder.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    real = {"real.jss2021": str(JSS_FIX), "real.campaigns": ["NET"], "real.if_missing": "error",
            "real.fse2019": str(FIX / "openstack_fault_injection_fse2019")}
    smoke = REPO / "configs" / "encoder_smoke.yaml"
    sim_cfg = EncoderJobConfig.load(smoke)
    cfg = EncoderJobConfig.load(smoke, real)
    assert cfg.real.shared_encoder_update is False
    rows = job.sim_windows(sim_cfg)
    real_rows, tasks, _ = real_encoder.real_task_samples(cfg.real, REPO)
    a, _ = job.encode_rows(rows, sim_cfg, tmp_path / "sim")
    b, _ = job.encode_rows(rows, cfg, tmp_path / "frozen", real_rows, tasks)
    assert pq.read_table(a).equals(pq.read_table(b))
    assert (tmp_path / "sim" / "miner.bin").read_bytes() == (tmp_path / "frozen" / "miner.bin").read_bytes()
    recs = pq.read_table(tmp_path / "frozen" / "real.parquet").to_pylist()
    assert len(recs) == len(real_rows) and {r["part"] for r in recs} == {"train", "holdout"}
    joint = EncoderJobConfig.load(smoke, {**real, "real.shared_encoder_update": True})
    job.encode_rows(rows, joint, tmp_path / "joint", real_rows, tasks)
    assert (tmp_path / "joint" / "miner.bin").read_bytes() != (tmp_path / "sim" / "miner.bin").read_bytes()
    with pytest.raises(Exception, match="leaves the real heads untrained"):
        EncoderJobConfig.load(smoke, {"real.refit_heads": False})

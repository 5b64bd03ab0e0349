"""The README's main command (jobs/pipeline.py) end to end on a tiny budget; its fault sets (the v2 benchmark's
known, unknown, compound and fault-free incidents, as jobs/evaluate.py makes them) and the start-up message with the
expected time of each stage, computed from the config and the measured rates (configs/stage_timings.yaml)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import load_job

from ifshm_ray.baselines import BASELINES
from ifshm_ray.config import SimConfig
from ifshm_ray.eval.harness import make_jobs
from ifshm_ray.sim.catalog import load_catalog

V2_SETS = ("known", "unknown", "compound", "fault_free")
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pipeline.yaml"


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_pipeline_smoke(ray_session, tmp_out):
    pipeline = load_job("pipeline")
    res = pipeline.main(["--config", "configs/pipeline.yaml", "--out", str(tmp_out), "--smoke", "--task-cpus", "0.5"])
    assert list(res) == list(V2_SETS)  # (configs/pipeline.yaml's sets, in its order)
    for fs in V2_SETS:
        for pol in (*BASELINES, "ppo"):
            m = json.loads((tmp_out / f"eval_{fs}" / pol / "metrics.json").read_text())
            assert m["fault_set"] == fs and m["split"] == "handpicked" and m["episodes"] == 3
            for key in ("false_action_rate", "time_to_mitigate_mean_s", "mttr_ci95", "escalation_rate",
                        "timeout_rate"):
                assert key in m
            assert len(json.loads((tmp_out / f"eval_{fs}" / pol / "episodes.json").read_text())) == 3
        if fs != "fault_free":
            assert res[fs]["oracle"]["mttr_mean_s"] <= res[fs]["random"]["mttr_mean_s"]
    ff = res["fault_free"]
    assert all(m["fault_free_episodes"] == 3 and m["mttr_mean_s"] is None for m in ff.values())
    assert ff["oracle"]["false_action_rate"] == 0.0 and ff["random"]["false_action_rate"] > 0.0
    assert all(len(r.split("+")) == 2 for r in res["compound"]["oracle"]["per_fault"])  # (two faults at once)
    summary = json.loads((tmp_out / "summary.json").read_text())
    assert summary["split"] == "handpicked"  # (configs/pipeline.yaml's split)
    assert summary["fault_free"]["random"]["false_action_rate"] == ff["random"]["false_action_rate"]
    assert summary["known"]["ppo"]["mttr_ci95"] == res["known"]["ppo"]["mttr_ci95"]
    assert set(summary["stages_s"]) == {"encoder_s", "train_s", "eval_s"}
    assert summary["expected_s"]["total_s"] > 0
    report = (tmp_out / "report.md").read_text()
    for fs in V2_SETS:
        assert f"## {fs} faults" in report
    assert "false actions" in report and "timed out" in report and "## Run time" in report
    assert "Paired MTTR difference" in report  # (each policy against each reference)
    assert (tmp_out / "mttr_per_fault_known.png").exists() and (tmp_out / "mttr_per_fault_compound.png").exists()


def test_pipeline_configs_run_every_reference_on_the_v2_sets():
    """configs/pipeline*.yaml evaluate every reference of BASELINES on known, unknown, compound and fault_free."""
    pipeline = load_job("pipeline")
    for path in sorted((pipeline.ROOT / "configs").glob("pipeline*.yaml")):
        cfg = pipeline.PipelineConfig.load(path)
        assert cfg.baselines == list(BASELINES), path
        assert set(cfg.fault_sets) == set(V2_SETS), path


def test_fault_sets_are_the_harness_sets_with_the_incidents_of_jobs_evaluate():
    pipeline = load_job("pipeline")
    cfg = pipeline.PipelineConfig.load(DEMO_CONFIG, ["fault_sets=[compound, fault_free, all]", "eval_episodes=2"])
    cat = load_catalog()
    jobs = pipeline.eval_jobs(cfg, cat, smoke=False)
    assert list(jobs) == ["compound", "fault_free", "all"]
    for fs, js in jobs.items():  # the same (fault, seed) episodes as jobs/evaluate.py --faults fs --episodes 2
        assert js == make_jobs(fs, cat, "handpicked", 2, cfg.eval_seed)
    assert len(jobs["fault_free"]) == 2 * len(cat.known_in("handpicked"))
    assert all(isinstance(f, tuple) and len(f) == 2 for f, _ in jobs["compound"])
    smoke = pipeline.eval_jobs(cfg, cat, smoke=True)
    assert {fs: len(js) for fs, js in smoke.items()} == {"compound": 3, "fault_free": 3, "all": 3}
    assert smoke["compound"] == make_jobs("compound", cat, "handpicked", 1, cfg.eval_seed)[:3]


def _timings(tmp_path: Path, **over) -> Path:
    """A timings file with round numbers (every reference and the trained policy: 1 CPU s per episode and per
    setup), so the test can compute the estimate by hand."""
    pols = [*BASELINES, "checkpoint"]
    data = {"cores": 2, "encoder": {"fixed_s": 100.0, "s_per_window_epoch": 0.5},
            "training": {"env_steps_per_s": 1000.0, "semantic_factor": 2.0, "startup_s": 20.0},
            "evaluation": {"startup_s": 4.0,
                           "cpu_s_per_episode": {p: {s: 1.0 for s in V2_SETS} for p in pols},
                           "setup_cpu_s": {p: 1.0 for p in pols}, "nearest_known_build_cpu_s": 50.0}}
    for k, v in over.items():
        data[k].update(v)
    path = tmp_path / "timings.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_estimate_is_computed_from_the_config_and_the_rates(tmp_path, monkeypatch):
    pipeline = load_job("pipeline")
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 2)
    enc = tmp_path / "encoder"
    cfg = pipeline.PipelineConfig.load(DEMO_CONFIG, {
        "timings": str(_timings(tmp_path)), "encoder_checkpoint": str(enc), "baselines": ["oracle", "random"],
        "fault_sets": ["known", "fault_free"], "eval_episodes": 2, "train_max_wall_s": 10_000})
    sim = SimConfig(split=cfg.split)
    cat = load_catalog()
    jobs = pipeline.eval_jobs(cfg, cat, smoke=False)
    est = pipeline.estimate(cfg, sim, jobs)
    k = len(cat.known_in("handpicked"))
    # encoder: configs/encoder.yaml fine-tunes 8 seeds x (k known + healthy) x 4 windows, 2 epochs
    assert est["encoder_s"] == pytest.approx(100.0 + 0.5 * 8 * (k + 1) * 4 * 2)
    # training: demo_semantic_counts.yaml (LLM state: half the rate), 400 iterations of 2,048 env steps, 1 run
    assert est["train_s"] == pytest.approx(20.0 + 400 * 2048 / 500.0)
    # evaluation: 3 policies x (2k known + 2k fault-free episodes) CPU s + 8 chunks per policy and set, on 2 cores
    n = 3 * 4 * k
    assert est["eval_episodes"] == n
    assert est["eval_s"] == pytest.approx(4.0 + (n + 3 * 2 * 8) / 2)
    assert est["total_s"] == pytest.approx(est["encoder_s"] + est["train_s"] + est["eval_s"])
    # the wall cap bounds a run; an encoder already there counts 0 (reused, or the pipeline stops)
    capped = pipeline.estimate(cfg.model_copy(update={"train_max_wall_s": 60.0}), sim, jobs)
    assert capped["train_s"] == capped["train_max_s"] == pytest.approx(80.0)
    enc.mkdir()
    (enc / "metrics.json").write_text("{}")
    assert pipeline.estimate(cfg, sim, jobs)["encoder_s"] == 0.0
    # nearest-known adds its prototypes' build when they are not cached yet
    from ifshm_ray.baselines.nearest import prototypes_path

    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 2)
    with_nk = cfg.model_copy(update={"baselines": ["oracle", "random", "nearest-known"]})
    nk = pipeline.estimate(with_nk, sim, jobs)["eval_s"]
    cached = prototypes_path(sim).is_file()
    assert nk == pytest.approx(est["eval_s"] + (4 * k + 2 * 8) / 2 + (0.0 if cached else 50.0))


def test_plan_prints_the_expected_time_of_each_stage_and_stops(tmp_path, capsys, monkeypatch):
    pipeline = load_job("pipeline")
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 2)
    out = tmp_path / "out"
    res = pipeline.main(["--config", "configs/pipeline.yaml", "--out", str(out), "--plan",
                         "--set", f"encoder_checkpoint={tmp_path / 'enc'}"])
    est = res["estimate"]
    line = capsys.readouterr().out.strip().splitlines()[-1]
    m = re.search(r"expected ~(\d+) min on 2 cores.*encoder ~(\d+) min .*training ~(\d+) min .*evaluation ~(\d+) "
                  r"min \((\d+) episodes: 7 references \+ 1 trained on known, unknown, compound, fault_free\)", line)
    assert m, line
    assert [int(x) for x in m.groups()[:4]] == [round(est[k] / 60) for k in ("total_s", "encoder_s", "train_s",
                                                                              "eval_s")]
    assert int(m.group(5)) == est["eval_episodes"] and "configs/stage_timings.yaml" in line
    assert not out.exists()  # (--plan writes nothing)
    # the message follows the config: twice the episodes, a longer evaluation
    pipeline.main(["--config", "configs/pipeline.yaml", "--out", str(out), "--plan", "--set", "eval_episodes=20",
                   "--set", f"encoder_checkpoint={tmp_path / 'enc'}"])
    assert f"({2 * est['eval_episodes']} episodes" in capsys.readouterr().out


def test_make_demo_is_expected_within_30_minutes_on_2_cores(tmp_path, monkeypatch):
    """configs/pipeline.yaml at the measured rates: fine-tuning the encoder, training to its wall cap, and the
    evaluation fit in 30 minutes on 2 cores (issue 12's `make demo` bound)."""
    pipeline = load_job("pipeline")
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 2)
    cfg = pipeline.PipelineConfig.load(DEMO_CONFIG, {"encoder_checkpoint": str(tmp_path / "none")})
    sim = SimConfig(split=cfg.split)
    monkeypatch.setattr("ifshm_ray.baselines.nearest.prototypes_path", lambda *a, **k: tmp_path / "none.json")
    est = pipeline.estimate(cfg, sim, pipeline.eval_jobs(cfg, load_catalog(), smoke=False))
    assert est["encoder_s"] > 0 and est["total_max_s"] <= 30 * 60, est


@pytest.mark.timeout(60)
def test_encoder_stage_reuses_runs_and_fails_clearly(tmp_path, monkeypatch):
    pipeline = load_job("pipeline")
    enc = tmp_path / "encoder"
    cfg = pipeline.PipelineConfig(encoder_config="configs/encoder.yaml", encoder_checkpoint=str(enc))
    calls = []

    from ifshm_ray.encoding.config import load_config

    want = load_config("configs/encoder.yaml").training_hash()
    assert want == load_config("configs/encoder.yaml", {"service.max_batch": 3}).training_hash()
    assert want != load_config("configs/encoder.yaml", {"encoder.lora_r": 4}).training_hash()

    def fake_run(cmd, cwd=None):  # stands in for the 16-minute fine-tuning job
        calls.append(cmd)
        Path(cmd[cmd.index("--out") + 1]).mkdir(parents=True, exist_ok=True)
        (enc / "metrics.json").write_text(json.dumps({"model": "tiny", "accuracy": 0.9, "macro_f1": 0.8,
                                                      "baseline_accuracy": 0.7, "baseline_macro_f1": 0.6,
                                                      "config_hash": want}))
        return type("R", (), {"returncode": 0})()

    monkeypatch.setattr(pipeline.subprocess, "run", fake_run)
    m = pipeline.finetune_encoder(cfg)  # missing: fine-tunes
    assert m["macro_f1"] == 0.8 and len(calls) == 1
    assert calls[0][calls[0].index("--config") + 1] == "configs/encoder.yaml"
    assert pipeline.finetune_encoder(cfg)["accuracy"] == 0.9 and len(calls) == 1  # there: reused, not rerun
    section = pipeline.encoder_section(m)
    assert "| fine-tuned encoder | 0.900 | 0.800 |" in section and "0.600" in section
    # an encoder fine-tuned with another configuration stops the pipeline; one without a hash (older) is reused
    (enc / "metrics.json").write_text(json.dumps({**m, "config_hash": "0123456789abcdef"}))
    with pytest.raises(SystemExit, match="another configuration"):
        pipeline.finetune_encoder(cfg)
    (enc / "metrics.json").write_text(json.dumps({k: v for k, v in m.items() if k != "config_hash"}))
    assert pipeline.finetune_encoder(cfg)["accuracy"] == 0.9 and len(calls) == 1
    with pytest.raises(SystemExit, match="before splits were recorded .*'handpicked'.*split is 'random1'"):
        pipeline.finetune_encoder(pipeline.PipelineConfig(encoder_config="configs/encoder.yaml",
                                                          encoder_checkpoint=str(enc), split="random1"))
    (enc / "metrics.json").write_text(json.dumps({**m, "config_hash": want}))  # handpicked's hash
    with pytest.raises(SystemExit, match="another configuration .* split 'random1'"):
        pipeline.finetune_encoder(pipeline.PipelineConfig(encoder_config="configs/encoder.yaml",
                                                          encoder_checkpoint=str(enc), split="random1"))

    (enc / "metrics.json").unlink()
    monkeypatch.setattr(pipeline.subprocess, "run", lambda cmd, cwd=None: type("R", (), {"returncode": 3})())
    with pytest.raises(SystemExit, match="encoder fine-tuning failed"):
        pipeline.finetune_encoder(cfg)
    with pytest.raises(pipeline.ConfigError, match="encoder_config"):
        pipeline.PipelineConfig(encoder_config="configs/nope.yaml").validate()
    with pytest.raises(pipeline.ConfigError, match="train_seeds_by_label"):
        pipeline.PipelineConfig(train_configs={"a": "configs/demo.yaml"}, train_seeds_by_label={"b": [0]}).validate()

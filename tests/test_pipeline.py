"""The README's main command (jobs/pipeline.py) end to end on a tiny budget."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_job


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_pipeline_smoke(ray_session, tmp_out):
    pipeline = load_job("pipeline")
    res = pipeline.main(["--config", "configs/pipeline.yaml", "--out", str(tmp_out), "--smoke", "--task-cpus", "0.5"])
    assert set(res) == {"known", "unknown"}
    for fs in ("known", "unknown"):
        for pol in ("oracle", "runbook", "runbook-instant", "random"):
            assert (tmp_out / f"eval_{fs}" / pol / "metrics.json").exists()
        assert res[fs]["oracle"]["mttr_mean_s"] <= res[fs]["random"]["mttr_mean_s"]
    summary = json.loads((tmp_out / "summary.json").read_text())
    assert "known" in summary and summary["split"] == "handpicked"  # (configs/pipeline.yaml's split)
    assert json.loads((tmp_out / "eval_unknown" / "ppo" / "metrics.json").read_text())["split"] == "handpicked"
    report = (tmp_out / "report.md").read_text()
    assert "known faults" in report and "unknown faults" in report
    assert (tmp_out / "mttr_per_fault_known.png").exists()


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

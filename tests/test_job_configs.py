"""Every pipeline and sweep config in configs/ loads, the renamed encoder key is refused with its new name, and the
shared ``--set KEY=VALUE`` option on the jobs' command lines: a bad override ends the job with exit code 2 and one
message that names the key and what is allowed (argparse's convention), before any Ray or model start-up."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_job

from ifshm_ray.config import ConfigError
from ifshm_ray.policy.tune import TuneJobConfig

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("pipeline*.yaml")), ids=lambda p: p.name)
def test_pipeline_configs_load(path):
    cfg = load_job("pipeline").PipelineConfig.load(path)
    assert cfg.train_configs and cfg.fault_sets and cfg.baselines


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("tune*.yaml")), ids=lambda p: p.name)
def test_tune_configs_load(path):
    cfg = TuneJobConfig.load(path)
    assert cfg.space and cfg.base["policy"]["kind"] == "hierarchical"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("sweep*.yaml")), ids=lambda p: p.name)
def test_sweep_configs_load_with_their_training_configs(path):
    from ifshm_ray.config import load_config
    from ifshm_ray.policy.config import load_train_config

    cfg = load_config(load_job("sweep").SweepConfig, path)
    assert cfg.groups
    for g in cfg.groups:
        train = load_train_config(REPO / g.config)
        assert train.policy.kind in ("hierarchical", "flat")
        if g.name.endswith("_alert"):  # the alert-triggered groups train with the trigger
            assert train.policy.act_on == "alert"


def test_pipeline_config_refuses_the_old_encoder_key_and_bad_values():
    PipelineConfig = load_job("pipeline").PipelineConfig
    with pytest.raises(ConfigError, match="key 'encoder_out' was renamed: use 'encoder_checkpoint'"):
        PipelineConfig.load(CONFIGS / "pipeline.yaml", {"encoder_out": "results/encoder"})
    with pytest.raises(ConfigError, match=r"fault_sets.0 = 'knwon': Input should be 'known', 'unknown', 'all', "
                                          r"'compound' or 'fault_free'"):
        PipelineConfig.load(CONFIGS / "pipeline.yaml", ["fault_sets=[knwon]"])
    with pytest.raises(ConfigError, match=r"a fault set is listed twice"):
        PipelineConfig.load(CONFIGS / "pipeline.yaml", ["fault_sets=[known, compound, known]"])
    with pytest.raises(ConfigError, match=r"timings: 'configs/nope.yaml' does not exist"):
        PipelineConfig.load(CONFIGS / "pipeline.yaml", ["timings=configs/nope.yaml"])
    assert PipelineConfig.load(CONFIGS / "pipeline.yaml", ["fault_sets=[compound, fault_free]"]).fault_sets == \
        ["compound", "fault_free"]
    with pytest.raises(ConfigError, match=r"unknown baseline\(s\) \['oracel'\]"):
        PipelineConfig.load(CONFIGS / "pipeline.yaml", ["baselines=[oracel]"])
    cfg = PipelineConfig.load(CONFIGS / "pipeline.yaml", ["eval_episodes=3", "train_seeds=[1, 2]"])
    assert cfg.eval_episodes == 3 and cfg.train_seeds == [1, 2]


@pytest.mark.parametrize("job, argv, message", [
    ("pipeline", ["--out", "OUT", "--set", "eval_episodes=0"], "eval_episodes = 0: Input should be greater than"),
    ("pipeline", ["--out", "OUT", "--set", "encoder_out=x"], "'encoder_out' was renamed: use 'encoder_checkpoint'"),
    ("pipeline", ["--out", "OUT", "--set", "eval_episodes"], "must look like section.key=value"),
    ("tune", ["--config", "configs/tune_tiny.yaml", "--out", "OUT", "--set", "tune.mode=maximum"],
     "tune.mode = 'maximum': Input should be 'max' or 'min'"),
    ("tune", ["--config", "configs/tune_tiny.yaml", "--out", "OUT", "--num-samples", "0"],
     "tune.num_samples = 0: Input should be greater than or equal to 1"),
    ("train", ["--config", "configs/tiny.yaml", "--out", "OUT", "--set", "ppo.lr=fast"], "lr"),
    ("train", ["--config", "configs/tiny.yaml", "--out", "OUT", "--set", "ppo.lrr=1e-3"], "lrr"),
    ("train", ["--config", "configs/nope.yaml", "--out", "OUT"], "does not exist"),
    ("finetune_encoder", ["--out", "OUT", "--set", "encoder.modle=minilm"], "modle"),
    ("serve", ["--checkpoint", "OUT", "--set", "max_log_lines=many"], "max_log_lines"),
    ("train", ["--config", "configs/tiny.yaml", "--out", "OUT", "--set", "env.config.split=nope"],
     "unknown split 'nope'; named splits: ["),
    ("pipeline", ["--out", "OUT", "--set", "split=nope"], "unknown split 'nope'"),
    ("finetune_encoder", ["--out", "OUT", "--set", "split=nope"], "unknown split 'nope'"),
])
def test_bad_override_exits_2_with_the_message(job, argv, message, tmp_path, capsys):
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        load_job(job).main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "error:" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.timeout(60)
def test_bad_override_from_the_shell_is_one_message(tmp_path):
    r = subprocess.run([sys.executable, "jobs/tune.py", "--config", "configs/tune_tiny.yaml", "--out",
                        str(tmp_path / "out"), "--set", "tune.metric=mttr"], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2, r.stderr
    assert "tune.metric = 'mttr': Input should be 'episode_return_mean', 'mttr_s'" in r.stderr
    assert "Traceback" not in r.stderr and "usage: tune.py" in r.stderr


def test_train_config_split_is_the_env_configs(tmp_path):
    from ifshm_ray.policy.config import load_train_config

    assert load_train_config(CONFIGS / "tiny.yaml").split == "handpicked"
    assert load_train_config(CONFIGS / "tiny.yaml", ["env.config.split=logo_application"]).split == "logo_application"


def test_pipeline_split_goes_to_every_stage_and_refuses_another(tmp_path, monkeypatch):
    pipeline = load_job("pipeline")
    cfg = pipeline.PipelineConfig.load(CONFIGS / "pipeline.yaml", ["split=random2"])
    calls = []
    monkeypatch.setattr(pipeline.subprocess, "run",
                        lambda cmd, cwd=None: calls.append(cmd) or type("R", (), {"returncode": 0})())
    pipeline.train("ppo", "configs/tiny.yaml", 0, tmp_path, cfg, smoke=False)
    i = calls[0].index("env.config.split=random2")  # (configs/pipeline.yaml also caps the wall time)
    assert calls[0][i - 1] == "--set"
    enc = tmp_path / "enc"
    cfg.encoder_checkpoint = str(enc)
    enc.mkdir()
    monkeypatch.setattr(pipeline.subprocess, "run", lambda cmd, cwd=None: calls.append(cmd) or (
        (enc / "metrics.json").write_text("{}"), type("R", (), {"returncode": 0})())[1])
    pipeline.finetune_encoder(cfg)
    assert calls[1][-2:] == ["--set", "split=random2"]
    other = tmp_path / "train.yaml"
    other.write_text((CONFIGS / "tiny.yaml").read_text().replace("config: {", "config: {split: random1, ", 1))
    assert "split: random1" in other.read_text()
    with pytest.raises(ConfigError, match="names split 'random1' \\(env.config.split\\), the pipeline's split is "
                                          "'random2'"):
        pipeline.PipelineConfig.load(CONFIGS / "pipeline.yaml", {"split": "random2", "train_configs": {"x": str(other)}})
    pipeline.PipelineConfig.load(CONFIGS / "pipeline.yaml", {"split": "random1", "train_configs": {"x": str(other)}})


@pytest.mark.timeout(60)
def test_pipeline_reuse_refuses_a_run_of_another_split(tmp_path):
    from ifshm_ray.serve.testing import untrained_policy_bundle

    pipeline = load_job("pipeline")
    untrained_policy_bundle(tmp_path / "train" / "ppo_seed0", env_config={"split": "random1"})
    cfg = pipeline.PipelineConfig.load(CONFIGS / "pipeline.yaml", ["split=random1"])
    assert pipeline.train("ppo", "configs/tiny.yaml", 0, tmp_path, cfg, smoke=False, reuse=True) == \
        tmp_path / "train" / "ppo_seed0"
    cfg = pipeline.PipelineConfig.load(CONFIGS / "pipeline.yaml", ["split=random2"])
    with pytest.raises(SystemExit, match="--reuse ppo seed 0: .*trained on split 'random1'"):
        pipeline.train("ppo", "configs/tiny.yaml", 0, tmp_path, cfg, smoke=False, reuse=True)

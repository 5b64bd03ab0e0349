"""jobs/tune.py and its library part (ifshm_ray.policy.tune): config validation, and a tiny-budget ASHA sweep (and
PBT) on the fault-injection env that writes the results table, the best checkpoint and a servable policy bundle."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from conftest import load_job

from ifshm_ray.config import ConfigError
from ifshm_ray.policy.tune import TuneJobConfig, apply_params

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tune_tiny.yaml"


@pytest.mark.timeout(30)
def test_tune_configs_load():
    for name in ("tune.yaml", "tune_tiny.yaml"):
        job = TuneJobConfig.load(REPO / "configs" / name)
        assert {"ppo.lr", "ppo.clip_param", "policy.entropy_coeff_high", "policy.entropy_coeff_low"} <= set(job.space)
    full = TuneJobConfig.load(REPO / "configs" / "tune.yaml")
    assert {"policy.encoder_hiddens", "policy.head_hiddens", "ppo.train_batch_size", "ppo.minibatch_size"} <= set(
        full.space)
    assert full.tune.scheduler == "asha"


@pytest.mark.timeout(30)
def test_tune_config_errors(tmp_path):
    def write(data):
        p = tmp_path / "t.yaml"
        p.write_text(yaml.safe_dump(data))
        return p

    base = yaml.safe_load(TINY.read_text())
    with pytest.raises(ConfigError, match="lrr"):
        TuneJobConfig.load(write({**base, "space": {"ppo.lrr": {"choice": [1e-3]}}}))
    with pytest.raises(ConfigError, match="space.ppo.lr.*'loguniform', 'uniform', 'choice', 'randint' or 'grid'"):
        TuneJobConfig.load(write({**base, "space": {"ppo.lr": {"normal": [0, 1]}}}))
    with pytest.raises(ConfigError, match="low < high"):
        TuneJobConfig.load(write({**base, "space": {"ppo.lr": {"loguniform": [1e-3, 1e-4]}}}))
    with pytest.raises(ConfigError, match="tune.scheduler = 'hyperband'.*'asha' or 'pbt'"):
        TuneJobConfig.load(write({**base, "tune": {"scheduler": "hyperband"}}))
    with pytest.raises(ConfigError, match="tune.metric = 'mttr'.*'mttr_s'"):
        TuneJobConfig.load(TINY, ["tune.metric=mttr"])
    with pytest.raises(ConfigError, match="grace_period"):
        TuneJobConfig.load(TINY, ["tune.grace_period=5"])
    with pytest.raises(ConfigError, match="section.key"):
        apply_params({}, {"lr": 0.1})
    assert TuneJobConfig.load(TINY, ["tune.reduction_factor=4", "tune.mode=min"]).tune.reduction_factor == 4.0
    out = apply_params(base["base"], {"ppo.lr": 0.01, "policy.head_hiddens": [8]})
    assert out["ppo"]["lr"] == 0.01 and out["policy"]["head_hiddens"] == [8] and base["base"]["ppo"].get("lr") is None


def check_outputs(out: Path, summary: dict, n: int) -> None:
    assert summary["trials"] == n and summary["errors"] == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == n and {"trial_id", "ppo.lr", "episode_return_mean", "iterations"} <= set(rows[0])
    md = (out / "results.md").read_text().splitlines()
    assert md[0].startswith("| trial_id") and len(md) == n + 2
    best = json.loads((out / "best.json").read_text())
    assert set(best["best_params"]) == set(TuneJobConfig.load(TINY).space)
    assert (out / "best_checkpoint" / "rllib_checkpoint.json").is_file()
    retrain = yaml.safe_load((out / "best_config.yaml").read_text())
    assert retrain["ppo"]["lr"] == pytest.approx(best["best_params"]["ppo.lr"])

    # the exported bundle is what the Serve app loads
    from ifshm_ray.env.fault_env import split_env_config
    from ifshm_ray.env.observation import TelemetryObserver
    from ifshm_ray.policy.bundle import load_policy_bundle
    from ifshm_ray.serve.testing import sample_windows

    policy = load_policy_bundle(out)
    sim_cfg, _ = split_env_config(policy.manifest["env"]["config"])
    c, t, r = policy.act(TelemetryObserver(sim_cfg).observe(sample_windows(1)[0]))
    assert 0 <= c < len(policy.categories)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_tune_tiny_asha(ray_session, tmp_path):
    out = tmp_path / "tune"
    summary = load_job("tune").main(["--config", str(TINY), "--out", str(out)])
    check_outputs(out, summary, 2)
    assert summary["scheduler"] == "asha"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_tune_tiny_pbt(ray_session, tmp_path):
    out = tmp_path / "tune"
    summary = load_job("tune").main(["--config", str(TINY), "--out", str(out), "--scheduler", "pbt",
                                     "--max-iterations", "2"])
    check_outputs(out, summary, 2)
    assert summary["scheduler"] == "pbt"

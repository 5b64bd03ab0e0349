"""jobs/tune.py: config validation, and a tiny-budget ASHA sweep (and PBT) on the fault-injection env that writes the
results table, the best checkpoint and a servable policy bundle."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "jobs"))

import tune as tune_job  # noqa: E402  (jobs/tune.py)

TINY = REPO / "configs" / "tune_tiny.yaml"


@pytest.mark.timeout(30)
def test_tune_configs_load():
    for name in ("tune.yaml", "tune_tiny.yaml"):
        job = tune_job.load_tune_config(REPO / "configs" / name)
        assert {"ppo.lr", "ppo.clip_param", "policy.entropy_coeff_high", "policy.entropy_coeff_low"} <= set(job.space)
    full = tune_job.load_tune_config(REPO / "configs" / "tune.yaml")
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
    with pytest.raises(ValueError, match="unknown key"):
        tune_job.load_tune_config(write({**base, "space": {"ppo.lrr": {"choice": [1e-3]}}}))
    with pytest.raises(ValueError, match="domain"):
        tune_job.load_tune_config(write({**base, "space": {"ppo.lr": {"normal": [0, 1]}}}))
    with pytest.raises(ValueError, match="tune.scheduler"):
        tune_job.load_tune_config(write({**base, "tune": {"scheduler": "hyperband"}}))
    with pytest.raises(ValueError, match="section.key"):
        tune_job.apply_params({}, {"lr": 0.1})
    out = tune_job.apply_params(base["base"], {"ppo.lr": 0.01, "policy.head_hiddens": [8]})
    assert out["ppo"]["lr"] == 0.01 and out["policy"]["head_hiddens"] == [8] and base["base"]["ppo"].get("lr") is None


def check_outputs(out: Path, summary: dict, n: int) -> None:
    assert summary["trials"] == n and summary["errors"] == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == n and {"trial_id", "ppo.lr", "episode_return_mean", "iterations"} <= set(rows[0])
    md = (out / "results.md").read_text().splitlines()
    assert md[0].startswith("| trial_id") and len(md) == n + 2
    best = json.loads((out / "best.json").read_text())
    assert set(best["best_params"]) == set(tune_job.load_tune_config(TINY).space)
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
    summary = tune_job.main(["--config", str(TINY), "--out", str(out)])
    check_outputs(out, summary, 2)
    assert summary["scheduler"] == "asha"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_tune_tiny_pbt(ray_session, tmp_path):
    out = tmp_path / "tune"
    summary = tune_job.main(["--config", str(TINY), "--out", str(out), "--scheduler", "pbt", "--max-iterations", "2"])
    check_outputs(out, summary, 2)
    assert summary["scheduler"] == "pbt"

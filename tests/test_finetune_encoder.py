"""jobs/finetune_encoder.py with a tiny budget: simulator data set as Parquet, baseline, LoRA fine-tuning through Ray
Train's TorchTrainer with DeepSpeed ZeRO on 2 gloo workers, checkpoint + metrics.json, real-data scoring; and its
data-set step alone (held-out seeds, templates mined on the training split only)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_job

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(60)
def test_dataset_splits_hold_out_seeds_and_mine_templates_on_train_only(tmp_path):
    import pyarrow.parquet as pq

    from ifshm_ray.encoding.config import load_config
    from ifshm_ray.encoding.modal import ModalEncoder

    job = load_job("finetune_encoder")
    cfg = load_config(REPO / "configs" / "encoder_smoke.yaml")  # 1 seed per split, 1 window per episode
    cfg.finetune.sim_kwargs = {"faults": "certificate_expiry,node_crash,gpu_xid79_fallen_off_bus"}  # 3 of 24: fast
    rows = job.sim_windows(cfg)
    assert {r["label"] for r in rows} == {"certificate_expiry", "node_crash", "gpu_xid79_fallen_off_bus", "healthy"}
    seeds = {s: {r["seed"] for r in rows if r["split"] == s} for s in ("train", "val", "test")}
    assert seeds == {"train": {0}, "val": {1}, "test": {2}}
    path, labels = job.encode_rows(rows, cfg, tmp_path)
    table = pq.read_table(path).to_pylist()
    assert [r["split"] for r in table] == sorted((r["split"] for r in table), key=["train", "val", "test"].index)
    assert labels == sorted({r["label"] for r in rows if r["split"] == "train"})
    assert all(r["label_id"] == labels.index(r["label"]) for r in table if r["label"] in labels)
    # the saved miner knows only the training split's templates: re-mining train alone gives the same state
    train_only = ModalEncoder(cfg.encoder)
    for r in rows:
        if r["split"] == "train":
            train_only.encode(r["telemetry"])
    assert (tmp_path / "miner.bin").read_bytes() == train_only.miner_state()


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_finetune_smoke_zero3_two_workers(ray_session, tmp_out):
    """ZeRO-3 (the smoke config says 2; stage 3 also covers partitioned weights and rank 0's gather)."""
    import pyarrow.parquet as pq

    job = load_job("finetune_encoder")
    from ifshm_ray.encoding.semantic import SemanticEncoder

    metrics = job.main(["--config", str(REPO / "configs" / "encoder_smoke.yaml"), "--out", str(tmp_out),
                        "--set", "finetune.zero_stage=3"])
    saved = json.loads((tmp_out / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "baseline_macro_f1", "baseline_accuracy", "temperature",
                "template_cache_hit_rate", "n_test"):
        assert key in saved, key
    assert saved["world_size"] == 2 and saved["zero_stage"] == 3 and saved["n_test"] > 0
    assert 0.0 <= saved["rl_probe_cache_hit_rate"] <= 1.0
    assert 0.0 <= saved["macro_f1"] <= 1.0 and metrics["accuracy"] == saved["accuracy"]
    # the data set: Parquet with held-out seeds per split, no seed in two splits
    table = pq.read_table(tmp_out / "dataset.parquet").to_pylist()
    seeds = {s: {r["seed"] for r in table if r["split"] == s} for s in ("train", "val", "test")}
    assert seeds["train"] and seeds["test"] and not (seeds["train"] & seeds["test"]) and not (seeds["val"] & seeds["test"])
    # the checkpoint loads back with its adapter, heads and templates
    assert (tmp_out / "adapter" / "adapter_config.json").is_file()
    enc = SemanticEncoder.load(tmp_out)
    out = enc.predict([json.loads(table[0]["telemetry"])])
    assert out["state"].shape == (1, 16) and enc.fault_types == saved["labels"]
    if (REPO.parent / "shared" / "data" / "openstack_fault_injection_fse2019" / "samples.json").is_file():
        assert saved["real_n"] > 0 and len(saved["real_loo_accuracy_ci95"]) == 2


@pytest.mark.timeout(60)
def test_encoder_job_split_is_validated_and_hashed():
    from ifshm_ray.config import ConfigError
    from ifshm_ray.encoding.config import load_config

    cfg = load_config(REPO / "configs" / "encoder_smoke.yaml", {"split": "logo_gpu"})
    assert cfg.split == "logo_gpu"
    assert cfg.training_hash() != load_config(REPO / "configs" / "encoder_smoke.yaml").training_hash()
    with pytest.raises(ConfigError, match="unknown split 'nope'"):
        load_config(REPO / "configs" / "encoder_smoke.yaml", {"split": "nope"})
    with pytest.raises(ConfigError, match=r"\['gpu_xid79_fallen_off_bus'\], not known fault types of split 'logo_gpu'"):
        load_config(REPO / "configs" / "encoder_smoke.yaml",
                    {"split": "logo_gpu", "encoder.fault_types": ["healthy", "node_crash", "gpu_xid79_fallen_off_bus"]})


@pytest.mark.timeout(60)
def test_finetuning_never_sees_a_held_out_type_of_its_split():
    from ifshm_ray.encoding.config import load_config
    from ifshm_ray.encoding.simdata import labelled_windows
    from ifshm_ray.sim.catalog import load_catalog

    job = load_job("finetune_encoder")
    cfg = load_config(REPO / "configs" / "encoder_smoke.yaml", {"split": "logo_network"})
    cfg.finetune.sim_kwargs = {"faults": "certificate_expiry,node_crash"}  # certificate_expiry: held out there
    with pytest.raises(SystemExit, match=r"\['certificate_expiry'\] are held out in split 'logo_network'"):
        job.sim_windows(cfg)
    with pytest.raises(SystemExit, match="held out in split 'random1'"):
        job.check_labels_known(["healthy", "node_crash", "process_crash_loop"], "random1", "--dataset x")
    # 'known' / 'unknown' of labelled_windows are the split's (here the unknown ones, six episodes)
    got = {w["label"] for w in labelled_windows([0], "unknown", windows_per_episode=1, split="random3")}
    assert got == set(load_catalog().unknown_in("random3")) | {"healthy"}
    with pytest.raises(ValueError, match="split 'random3' but the env config says split 'random1'"):
        next(labelled_windows([0], "known", env_config={"split": "random1"}, split="random3"))


@pytest.mark.timeout(120)
def test_encoder_checkpoint_records_its_split(tmp_path):
    import json as _json

    from ifshm_ray.encoding.config import EncoderConfig
    from ifshm_ray.encoding.rl_state import check_semantic_split
    from ifshm_ray.encoding.semantic import SemanticEncoder, check_checkpoint_split, checkpoint_split
    from ifshm_ray.sim.catalog import load_catalog

    known = load_catalog().known_in("random2")
    enc = SemanticEncoder.build(EncoderConfig(model="tiny-llama", adapter="none", state_dim=16), known[:3],
                                split="random2")
    enc.save(tmp_path / "ckpt")
    assert checkpoint_split(tmp_path / "ckpt") == "random2" and SemanticEncoder.load(tmp_path / "ckpt").split == "random2"
    assert check_checkpoint_split(tmp_path / "ckpt", "random2", "x") == "random2"
    with pytest.raises(ValueError, match="the training run .* uses split 'handpicked', but the encoder checkpoint .* "
                                         "fine-tuned on split 'random2'"):
        check_semantic_split(str(tmp_path / "ckpt"), None, "handpicked")
    check_semantic_split(str(tmp_path / "ckpt"), None, "random2")
    check_semantic_split("tiny-llama", None, "handpicked")  # a preset: un-tuned, knows no split's faults
    # jobs/train.py refuses the mix before it starts anything (exit 2, one message)
    with pytest.raises(SystemExit) as exit_info:
        load_job("train").main(["--config", str(REPO / "configs" / "tiny.yaml"), "--out", str(tmp_path / "out"),
                                "--set", f"policy.encoder_checkpoint={tmp_path / 'ckpt'}"])
    assert exit_info.value.code == 2 and not (tmp_path / "out").exists()
    meta = _json.loads((tmp_path / "ckpt" / "encoder.json").read_text())
    del meta["split"]  # a checkpoint from before splits were recorded
    (tmp_path / "ckpt" / "encoder.json").write_text(_json.dumps(meta))
    assert checkpoint_split(tmp_path / "ckpt") == "handpicked"
    assert SemanticEncoder.load(tmp_path / "ckpt").split == "handpicked"

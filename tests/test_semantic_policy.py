"""PPO with the LLM semantic state: the item table (LM embeddings of every log template / alarm text), the
policy's SemanticStateBlock, saving / loading, and jobs/train.py with ``policy.encoder_checkpoint``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ray.rllib.core.rl_module.rl_module import RLModule, RLModuleSpec

from ifshm_ray.encoding.rl_state import SemanticTableError, build_table, load_table
from ifshm_ray.env import FaultInjectionEnv
from ifshm_ray.policy.module import HierarchicalRecoveryModule

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"encoder_hiddens": [32], "head_hiddens": [32], "vf_hiddens": [32], "category_embed_dim": 8}


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    return build_table("tiny-llama", None, tmp_path_factory.mktemp("sem"))


def _module(env, table_path, **kw):
    t = load_table(table_path)
    shape = [*t["embeddings"].shape, len(t["drop_index"]), t["text_proj_w"].shape[0]]
    torch.manual_seed(0)
    return RLModuleSpec(module_class=HierarchicalRecoveryModule, observation_space=env.observation_space,
                        action_space=env.action_space,
                        model_config={**SMALL, "semantic_table": str(table_path), "semantic_shape": shape, **kw}).build()


def _batch(obs_list):
    return {k: torch.as_tensor(np.stack([o[k] for o in obs_list]), dtype=torch.float32) for k in obs_list[0]}


@pytest.mark.timeout(120)
def test_table_covers_every_template_and_alarm(table_path):
    env = FaultInjectionEnv({"render_telemetry": False})
    t = load_table(table_path, obs_dim=env.obs_layout["obs_dim"])
    A, L = len(env.sim.alerts), len(env.sim.catalog.templates)
    assert len(t["texts"]) == A + L and t["embeddings"].shape[0] == A + L
    assert list(t["kinds"]).count("alarm") == A
    # every log item points at its own log1p-count column, every alarm at its pending flag; counts are dropped
    layout = env.obs_layout
    counts0 = layout["global_offset"] + 2 * A
    assert list(t["count_index"][A:]) == list(range(counts0, counts0 + L))
    assert list(t["drop_index"]) == list(range(counts0, counts0 + L))
    assert all(x.startswith("ALARM ") for x in t["texts"][:A])
    assert any("Xid" in x for x in t["texts"][A:])
    assert t["meta"]["lm_passes"] <= len(set(t["texts"].tolist()))  # each distinct text through the LM once
    with pytest.raises(SemanticTableError, match="obs"):
        load_table(table_path, obs_dim=env.obs_layout["obs_dim"] + 1)


@pytest.mark.timeout(120)
def test_table_is_deterministic(table_path, tmp_path):
    """Same encoder -> the same table, bit for bit (training runs under a seed then see the same LLM state)."""
    again = load_table(build_table("tiny-llama", None, tmp_path))
    first = load_table(table_path)
    for key in ("texts", "embeddings", "count_index", "drop_index", "attn_key_w", "text_proj_w"):
        assert np.array_equal(first[key], again[key]), key


@pytest.mark.timeout(60)
def test_missing_table_gives_clear_error(tmp_path):
    with pytest.raises(SemanticTableError, match="does not exist.*rl_state"):
        load_table(tmp_path / "nope.npz")


@pytest.mark.timeout(120)
def test_semantic_state_reads_logs_through_the_lm(table_path):
    env = FaultInjectionEnv({"render_telemetry": False})
    m = _module(env, table_path)
    block = m._semantic
    t = load_table(table_path)
    obs, _ = env.reset(seed=3)
    x = torch.as_tensor(obs["obs"])[None]
    feats = block(x)
    assert feats.shape == (1, block.out_dim) and block.out_dim == env.obs_layout["obs_dim"] - len(t["drop_index"]) + 2 * 64
    # the raw count columns are gone: changing one only moves the semantic part, through the LM embedding
    col = int(t["drop_index"][17])
    x2 = x.clone()
    x2[0, col] += 1.0
    f2 = block(x2)
    keep = block.keep_index.numel()
    assert torch.equal(feats[:, :keep], f2[:, :keep])
    assert not torch.allclose(feats[:, keep:], f2[:, keep:])
    # two templates with identical embeddings are interchangeable for the policy (it sees text, not column ids)
    a, b = int(t["drop_index"][20]), int(t["drop_index"][21])
    with torch.no_grad():
        block.embeddings[len(t["texts"]) - len(t["drop_index"]) + 21] = block.embeddings[
            len(t["texts"]) - len(t["drop_index"]) + 20]
    xa, xb = x.clone(), x.clone()
    xa[0, a] += 1.0
    xb[0, b] += 1.0
    assert torch.allclose(block(xa), block(xb), atol=1e-6)


@pytest.mark.timeout(120)
def test_keep_counts_joins_the_raw_counts(table_path):
    env = FaultInjectionEnv({"render_telemetry": False})
    m = _module(env, table_path, semantic_keep_counts=True)
    obs, _ = env.reset(seed=1)
    x = torch.as_tensor(obs["obs"])[None]
    feats = m._semantic(x)
    assert feats.shape[1] == env.obs_layout["obs_dim"] + 2 * 64
    assert torch.equal(feats[:, :env.obs_layout["obs_dim"]], x)


@pytest.mark.timeout(180)
def test_semantic_module_acts_trains_and_reloads_without_the_table(table_path, tmp_path):
    env = FaultInjectionEnv({"render_telemetry": False})
    m = _module(env, table_path)
    obs_list = [env.reset(seed=s)[0] for s in range(4)]
    batch = {"obs": _batch(obs_list)}
    out = m.forward_exploration(batch)
    c, tgt, r = (a.numpy() for a in out["actions"])
    for i, o in enumerate(obs_list):  # masks still hold
        assert o["action_mask"][c[i] * env.topology.T + tgt[i]] > 0
    loss = m.compute_values(batch).sum()
    loss.backward()
    assert m._semantic.bag_proj.weight.grad is not None and torch.isfinite(m._semantic.bag_proj.weight.grad).all()
    assert m._semantic.embeddings.grad is None  # the LM table stays frozen
    # a saved module loads without the table file (buffers come from its state)
    m.save_to_path(str(tmp_path / "mod"))
    moved = tmp_path / "moved.npz"
    Path(table_path).rename(moved)
    try:
        m2 = RLModule.from_checkpoint(str(tmp_path / "mod"))
        a1 = m.forward_inference(batch)["actions"]
        a2 = m2.forward_inference(batch)["actions"]
        assert all(torch.equal(x, y) for x, y in zip(a1, a2))
    finally:
        moved.rename(table_path)


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_train_job_with_semantic_encoder(ray_session, tmp_path, capsys):
    """jobs/train.py builds the table with the configured encoder (a tiny preset here), trains and bundles."""
    import importlib.util
    import json

    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    cfg["policy"]["encoder_checkpoint"] = "tiny-llama"
    path = tmp_path / "tiny_semantic.yaml"
    path.write_text(yaml.safe_dump(cfg))
    spec = importlib.util.spec_from_file_location("train_job_sem", ROOT / "jobs" / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    out = tmp_path / "run"
    train.main(["--config", str(path), "--out", str(out), "--iterations", "1"])
    assert (out / "semantic_items.npz").is_file()
    manifest = json.loads((out / "policy_bundle" / "manifest.json").read_text())
    assert manifest["encoder"]["model"] == "tiny-llama"
    assert manifest["model_config"]["semantic_table"].endswith("semantic_items.npz")
    assert "LLM semantic state" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    cache = summary["semantic_cache"]
    assert cache["windows"] >= 256 and cache["item_lookups"] > cache["windows"]  # several items per window
    assert cache["hit_rate"] > 0.9  # the LM ran once per distinct text, every later window reused it

"""Semantic encoder with tiny models: presets and errors, template cache, both paths, heads, calibration, adapters,
DeepSpeed init_inference at world size 1."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ifshm_ray.encoding.adapters import AdapterNotFoundError, check_adapter_dir
from ifshm_ray.encoding.cache import LRUCache, text_key
from ifshm_ray.encoding.calibration import (expected_calibration_error, fit_prototypes, fit_temperature, macro_f1,
                                            nll, softmax, unknown_score, wilson_interval)
from ifshm_ray.encoding.config import EncoderConfig
from ifshm_ray.encoding.models import ModelNotFoundError, load_backbone, resolve_model
from ifshm_ray.encoding.semantic import SemanticEncoder, pool_hidden

FAULTS = ["disk_full", "oom", "healthy"]


def telemetry(kind: str, i: int = 0) -> dict:
    lines = {
        "disk_full": f"2026-11-28 10:00:0{i % 10}.0 1 ERROR cinder.volume.manager No space left on device ({i})",
        "oom": f"2026-11-28 10:00:0{i % 10}.0 2 ERROR inference.server CUDA out of memory. Tried {i} MiB",
        "healthy": f"2026-11-28 10:00:0{i % 10}.0 3 INFO api.gateway GET /v1/models 200 {i} ms",
    }[kind]
    return {"logs": [lines] * (1 + i % 3), "metrics": {"n": {"disk": [0.5, 0.5, 0.6, 0.99 if kind == "disk_full" else 0.5]}},
            "alarms": [{"name": "NodeFilesystemAlmostOutOfSpace", "severity": "critical"}] if kind == "disk_full" else []}


def build(model="tiny-llama", **kw) -> SemanticEncoder:
    return SemanticEncoder.build(EncoderConfig(model=model, state_dim=16, **kw), FAULTS)


@pytest.mark.timeout(30)
def test_wrong_model_name_lists_presets(tmp_path):
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model("no-such-org/no-such-model-xyz")
    assert "smollm2" in str(e.value) and "minilm" in str(e.value)
    with pytest.raises(ModelNotFoundError, match="config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="presets|Presets"):
        SemanticEncoder.build(EncoderConfig(model=str(tmp_path / "missing" / "x" / "y")), FAULTS)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("model", ["tiny-llama", "tiny-bert", "minilm"])
def test_presets_load_offline(model):
    backbone, tok = load_backbone(model)
    assert tok.pad_token is not None and backbone.config.hidden_size > 0


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_default_smollm2_loads_offline_and_caches(monkeypatch):
    """The embedded default: the first load dequantises the GGUF and caches safetensors; a later load reads them
    and never touches the GGUF again. (The load times are measured by ``benchmarks/bench_encoder.py --load-only``.)"""
    from ifshm_ray.encoding import models

    cached = models.smollm2_dir()  # dequantises and caches on the first call ever
    assert cached == models.default_cache_dir() / "smollm2-135m-instruct"
    assert (cached / "model.safetensors").is_file() and (cached / "tokenizer.json").is_file()

    def no_gguf(*_, **__):
        raise AssertionError("a cached SmolLM2 was dequantised from the GGUF again")

    monkeypatch.setattr(models, "_package_dir", no_gguf)
    backbone, tok = load_backbone("smollm2")
    assert backbone.config.hidden_size == 576
    with torch.no_grad():
        out = backbone(**tok(["ERROR nova.compute failed"], return_tensors="pt")).last_hidden_state
    assert out.shape[-1] == 576 and torch.isfinite(out).all()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("adapter", ["lora", "prompt_tuning"])
def test_adapter_init_is_the_same_in_every_run(adapter):
    """The adapter's random init comes from config.seed, not from whatever the global torch RNG holds (a pretrained
    backbone does not seed it): two builds after different RNG use give the same weights, so fine-tuning runs
    repeat bit for bit."""
    cfg = EncoderConfig(model="tiny-llama", adapter=adapter, seed=3)
    states = []
    for noise in (1, 7):
        backbone, tok = load_backbone("tiny-llama", seed=0)
        torch.manual_seed(1000 + noise)
        torch.rand(noise)  # (as if other code had used the RNG before)
        m = SemanticEncoder.build(cfg, ["a", "b"], backbone=backbone, tokenizer=tok)
        states.append({k: v.detach().clone() for k, v in m.state_dict().items()})
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def test_template_cache_hits_and_exact_text_key():
    enc = build(adapter="none")
    tel = [telemetry(k, i) for k in FAULTS for i in range(4)]
    first = enc.predict(tel)
    s1 = enc.cache_stats()
    # distinct templates: one per fault kind (the numbers are masked), each embedded once
    assert s1["entries"] == len({t for c in enc.encode_telemetry(tel) for t in c.items})
    assert s1["entries"] <= 4
    second = enc.predict(tel)
    s2 = enc.cache_stats()
    assert s2["misses"] == s1["misses"] and s2["hits"] > s1["hits"]
    np.testing.assert_allclose(first["state"], second["state"], atol=1e-5)
    text = enc.encode_telemetry([tel[0]])[0].items[0]
    assert text_key(text, enc._salt) in enc.embed_cache
    enc.clear_cache()
    assert len(enc.embed_cache) == 0


@pytest.mark.timeout(60)
def test_context_mode_and_training_bypasses_cache():
    enc = build(adapter="lora")
    ctxs = enc.encode_telemetry([telemetry("oom", 1), telemetry("disk_full", 2)])
    s_ctx = enc.predict(ctxs, mode="context")["state"]
    assert s_ctx.shape == (2, 16)
    assert text_key(ctxs[0].prompt, enc._salt) in enc.embed_cache
    enc.train()
    before = len(enc.embed_cache)
    states, logits = enc(ctxs, with_logits=True)
    logits.sum().backward()
    assert len(enc.embed_cache) == before  # LoRA trains: no stale cached embeddings
    lora = [p for n, p in enc.named_parameters() if "lora_" in n]
    assert lora and any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)


@pytest.mark.timeout(30)
def test_pooling():
    h = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.allclose(pool_hidden(h, mask, "mean")[0], h[0, :2].mean(0))
    assert torch.allclose(pool_hidden(h, mask, "last")[0], h[0, 1])
    assert torch.allclose(pool_hidden(h, mask, "cls")[1], h[1, 0])
    # soft-prompt positions in front count as real tokens
    h4 = torch.cat([torch.zeros(2, 1, 2), h], dim=1)
    assert torch.allclose(pool_hidden(h4, mask, "last")[0], h[0, 1])


@pytest.mark.timeout(30)
def test_temperature_scaling_calibrates():
    rng = np.random.default_rng(0)
    n, c = 600, 4
    y = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c))
    logits[np.arange(n), y] += 1.0
    logits *= 6.0  # an over-confident model
    t = fit_temperature(logits[:300], y[:300])
    assert t > 2.0
    p0, p1 = softmax(logits[300:]), softmax(logits[300:], t)
    assert nll(p1, y[300:]) < nll(p0, y[300:])
    assert expected_calibration_error(p1, y[300:]) < expected_calibration_error(p0, y[300:])
    assert (p0.argmax(1) == p1.argmax(1)).all()  # scaling never changes the decision


@pytest.mark.timeout(30)
def test_prototypes_and_unknown_score():
    rng = np.random.default_rng(1)
    centers = np.eye(3, 8) * 5
    y = np.repeat(np.arange(3), 50)
    x = centers[y] + rng.normal(0, 0.3, (150, 8))
    protos, radii = fit_prototypes(x, y, 3)
    score, nearest = unknown_score(x, protos, radii)
    assert (nearest == y).mean() > 0.95 and np.median(score) < 1.0
    far = np.zeros((1, 8))
    far[0, 7] = 5.0
    assert unknown_score(far, protos, radii)[0][0] > 1.0
    assert np.isnan(unknown_score(x[:2], np.zeros((3, 8)), np.ones(3))[0]).all()


@pytest.mark.timeout(10)
def test_metrics_helpers():
    assert macro_f1([0, 0, 1, 1], [0, 0, 1, 1]) == 1.0
    assert macro_f1([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx((2 / 3 + 0.8) / 2)
    lo, hi = wilson_interval(8, 10)
    assert 0.4 < lo < 0.8 < hi < 1.0
    cache = LRUCache(2)
    cache.put("a", 1), cache.put("b", 2), cache.get("a"), cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.stats()["entries"] == 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize("adapter", ["lora", "prompt_tuning"])
def test_adapter_save_load_roundtrip(tmp_path, adapter):
    enc = build(adapter=adapter)
    with torch.no_grad():
        for n, p in enc.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    tel = [telemetry("oom", 1), telemetry("healthy", 2)]
    states, logits = enc(enc.encode_telemetry(tel), with_logits=True)
    enc.fit_prototypes(states.detach().numpy(), [1, 2])
    enc.calibrate(logits.detach().numpy(), [1, 2])
    before = enc.predict(tel)
    enc.save(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "adapter" / "adapter_config.json").is_file()
    loaded = SemanticEncoder.load(tmp_path / "ckpt")
    after = loaded.predict(tel)
    np.testing.assert_allclose(before["state"], after["state"], atol=1e-5)
    np.testing.assert_allclose(before["probs"], after["probs"], atol=1e-5)
    assert loaded.temperature.item() == pytest.approx(enc.temperature.item())


@pytest.mark.timeout(30)
def test_missing_adapter_gives_clear_error(tmp_path):
    with pytest.raises(AdapterNotFoundError, match="does not exist"):
        SemanticEncoder.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterNotFoundError, match="encoder.json"):
        SemanticEncoder.load(tmp_path / "empty")
    with pytest.raises(AdapterNotFoundError, match="adapter_config.json"):
        check_adapter_dir(tmp_path / "empty")
    enc = build(adapter="lora")
    enc.save(tmp_path / "ckpt")
    import shutil

    shutil.rmtree(tmp_path / "ckpt" / "adapter")
    with pytest.raises(AdapterNotFoundError, match="adapter"):
        SemanticEncoder.load(tmp_path / "ckpt")


@pytest.mark.timeout(120)
def test_deepspeed_init_inference_world_size_1(monkeypatch):
    """DeepSpeed inference engine on CPU (world size 1, no kernel injection) gives the plain model's states."""
    from ifshm_ray.encoding.train import _deepspeed_cpu_setup

    for k, v in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517", "RANK": "0", "WORLD_SIZE": "1",
                 "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(k, v)
    _deepspeed_cpu_setup(use_shm_comm=False)
    enc = build(adapter="lora")
    tel = [telemetry("oom", 1), telemetry("disk_full", 3)]
    plain = enc.predict(tel)["state"]
    enc.enable_deepspeed_inference(tp_size=1, dtype=torch.float32)
    ds = enc.predict(tel)["state"]
    np.testing.assert_allclose(plain, ds, atol=1e-4)

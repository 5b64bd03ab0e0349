"""Encoder service: the one LRU cache, the plain worker (outputs equal the encoder's own, exact cache counts), the
Ray actor pool (2 actors: outputs equal the worker's, the RL table equals the in-process one), the tensor-parallel
gang (2 gloo ranks in a STRICT_PACK placement group, DeepSpeed AutoTP), the env wrapper."""
from __future__ import annotations

import numpy as np
import pytest

from ifshm_ray.encoding.adapters import AdapterNotFoundError
from ifshm_ray.encoding.cache import LRUCache, telemetry_key
from ifshm_ray.encoding.config import EncoderConfig, ServiceConfig
from ifshm_ray.encoding.models import ModelNotFoundError
from ifshm_ray.encoding.semantic import SemanticEncoder
from ifshm_ray.encoding.service import EncoderPool, EncoderWorker, SemanticStateWrapper

ENC = EncoderConfig(model="tiny-llama", state_dim=8, adapter="none")
SVC = ServiceConfig(num_actors=2, num_cpus=0.25, max_batch=4, lru_size=256)
FAULTS = ["a", "b"]
TOL = 1e-5  # the bound for "equal" through the pool; the measured differences are printed


def windows(n: int) -> list[dict]:
    return [{"logs": [f"2026-11-28 10:00:00.0 1 ERROR svc.mod{i % 3} failure number {i}"],
             "metrics": {"svc": {"lat": [1.0, 2.0, float(i)]}}, "alarms": []} for i in range(n)]


def max_diff(a: dict, b: dict) -> float:
    assert a["fault"] == b["fault"]
    return max(float(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)).max())
               for k in ("state", "probs", "confidence"))


@pytest.fixture(scope="module")
def worker() -> EncoderWorker:
    return EncoderWorker(ENC, SVC, FAULTS)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    enc = SemanticEncoder.build(EncoderConfig(model="tiny-llama", state_dim=8, adapter="lora", seed=3), FAULTS)
    return enc.save(tmp_path_factory.mktemp("ckpt") / "enc")


# ----------------------------------------------------------------------------------------------- no Ray (fast)
@pytest.mark.timeout(10)
def test_lru_cache_counts_and_evicts_exactly():
    c = LRUCache(2)
    c.put("a", 1), c.put("b", 2)
    assert c.get("a") == 1                 # a is now the most recent: b goes first
    c.put("c", 3)
    assert "b" not in c and c.get("b") is None and c.get("c") == 3
    assert c.stats() == {"hits": 2, "misses": 1, "hit_rate": 2 / 3, "entries": 2, "maxsize": 2}
    off = LRUCache(0)                      # 0: the cache is off
    off.put("a", 1)
    assert off.get("a") is None and len(off) == 0 and off.stats()["misses"] == 1
    with pytest.raises(ValueError, match=">= 0"):
        LRUCache(-1)
    w = windows(1)[0]
    assert telemetry_key(w) == telemetry_key({**w, "time_s": 5.0}) != telemetry_key(w, salt="context")


@pytest.mark.timeout(60)
def test_worker_outputs_equal_the_encoders_own(worker):
    direct = SemanticEncoder.build(ENC, FAULTS)
    direct.modal.freeze()
    want = direct.predict(windows(6))
    got = worker.encode(windows(6))
    assert got["state"].shape == (6, 8) and got["probs"].shape == (6, 2) and got["state"].dtype == np.float32
    assert max_diff(got, want) == 0.0  # the same class of model, the same batch: bit for bit
    assert worker.encode([None])["state"].shape == (1, 8)


@pytest.mark.timeout(60)
def test_worker_cache_counts_are_exact():
    w = EncoderWorker(ENC, SVC, FAULTS, result_cache_size=16)
    w.encode(windows(6))
    first = w.stats()
    distinct = first["entries"]
    assert 1 <= distinct <= 3  # three masked templates at most (Drain may merge some)
    assert (first["hits"], first["misses"], first["contexts"], first["batches"]) == (0, distinct, 6, 1)
    w.encode(windows(6))
    second = w.stats()
    assert (second["hits"], second["misses"], second["entries"]) == (distinct, distinct, distinct)
    d1 = w.diagnose(windows(3))
    d2 = w.diagnose(windows(3))
    assert d1 == d2 and w.info()["result_cache"]["hits"] == 3 and w.info()["result_cache"]["misses"] == 3
    assert w.stats()["contexts"] == 12 + 3  # the repeated windows never reached the encoder
    w.reset_stats()
    assert w.stats()["hits"] == w.stats()["contexts"] == 0


@pytest.mark.timeout(60)
def test_worker_loads_checkpoints_and_embeds_texts(worker, checkpoint, tmp_path):
    texts = ["ERROR disk <*> full", "ALARM critical HighLatency", "ERROR disk <*> full"]
    w = EncoderWorker(ENC, SVC, FAULTS)
    w.load_checkpoint(checkpoint)
    ref = SemanticEncoder.load(checkpoint)
    emb = w.embed_texts(texts)
    assert emb.shape == (3, 32) and np.array_equal(emb[0], emb[2])
    assert np.array_equal(emb, ref.embed_texts(texts, ref.config.max_template_tokens).detach().numpy())
    assert w.info()["trained"] and w.stats()["misses"] == 2  # each distinct text ran once
    with pytest.raises(AdapterNotFoundError, match="does not exist.*finetune_encoder.py"):
        w.load_checkpoint(tmp_path / "missing")


@pytest.mark.timeout(30)
def test_pool_refuses_bad_settings_before_ray(tmp_path):
    from ifshm_ray.encoding.config import ConfigError

    with pytest.raises(ConfigError, match="whole GPU"):
        EncoderPool(ENC, ServiceConfig(num_gpus=1, tensor_parallel=2), FAULTS)
    with pytest.raises(AdapterNotFoundError, match="no encoder checkpoint.*encoder.json"):
        EncoderPool(ENC, SVC, FAULTS, checkpoint=str(tmp_path))  # a folder, but no checkpoint


@pytest.mark.timeout(60)
def test_env_wrapper_adds_semantic_state(worker):
    from ifshm_ray.env.fault_env import FaultInjectionEnv

    env = SemanticStateWrapper(FaultInjectionEnv({}), worker.encode)
    obs, info = env.reset(seed=0)
    assert obs["semantic_state"].shape == (8,) and env.observation_space["semantic_state"].contains(
        obs["semantic_state"])
    obs, *_ = env.step((0, 0, 0))
    assert obs["fault_probs"].shape == (2,) and "obs" in obs


# ----------------------------------------------------------------------------------------------- Ray (slow)
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_pool_of_two_actors_equals_the_worker(ray_session, worker, checkpoint):
    with EncoderPool(ENC, SVC, FAULTS, name="test-enc-pool") as pool:
        out = pool.encode(windows(10))              # chunks of 4, 4, 2 over the two actors
        diff = max_diff(out, worker.encode(windows(10)))
        print(f"pool vs worker: max abs diff {diff:.3g}")
        assert diff <= TOL
        per = pool.stats()["replicas"]
        assert sum(p["contexts"] for p in per) == 10 and sum(p["batches"] for p in per) == 3
        assert all(p["batches"] >= 1 for p in per)  # ActorPool gave both actors work
        for got, want in zip(pool.diagnose(windows(2)), worker.diagnose(windows(2))):
            assert got["fault_mode"] == want["fault_mode"] and [t["fault"] for t in got["top"]] == [
                t["fault"] for t in want["top"]]
            assert got["confidence"] == pytest.approx(want["confidence"], abs=TOL)
        other = EncoderPool.connect("test-enc-pool")
        assert other.encode(windows(2))["state"].shape == (2, 8)
        texts = ["ERROR disk <*> full", "ALARM critical HighLatency"]
        re_embedded = pool.embed_texts(texts, checkpoint=checkpoint)  # re-embedding with another checkpoint
        assert pool.info()["checkpoint"] == str(checkpoint.resolve())
        ref = SemanticEncoder.load(checkpoint)
        np.testing.assert_allclose(re_embedded, ref.embed_texts(texts, 48).detach().numpy(), atol=TOL)
    with pytest.raises(AdapterNotFoundError, match="does not exist"):  # checked before any actor starts
        EncoderPool(ENC, SVC, FAULTS, checkpoint="/no/such/encoder")
    with pytest.raises(ModelNotFoundError, match="no-such-model"):     # raised in the actor, with its own type
        EncoderPool(EncoderConfig(model="no-such-model"), ServiceConfig(num_cpus=0.25), FAULTS)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_semantic_table_through_the_pool_equals_the_direct_one(ray_session, tmp_path, checkpoint):
    from ifshm_ray.encoding.rl_state import TABLE_KEYS, build_table, load_table

    lm = dict(encoder_config=EncoderConfig(model="tiny-llama", adapter="none"), fault_types=["x"])
    direct = load_table(build_table("tiny-llama", None, tmp_path / "direct", pool=EncoderWorker(**lm)))
    assert direct["meta"]["lm_actors"] == 0                                # in this process
    auto = load_table(build_table("tiny-llama", None, tmp_path / "auto"))  # Ray is up: a one-actor pool
    assert auto["meta"]["lm_actors"] == 1
    with EncoderPool(service_config=ServiceConfig(num_actors=2, num_cpus=0.25, max_batch=16), **lm) as pool:
        pooled = load_table(build_table("tiny-llama", None, tmp_path / "pool", pool=pool))
        assert pool.stats()["misses"] == direct["meta"]["distinct_texts"]  # each text once, over both actors
        assert all(r["misses"] > 0 for r in pool.stats()["replicas"])
        # re-embedding with another (e.g. prompt-tuned) checkpoint: the same pool loads it first
        tuned = load_table(build_table(str(checkpoint), None, tmp_path / "tuned", pool=pool))
    tuned_direct = load_table(build_table(str(checkpoint), None, tmp_path / "tuned_direct",
                                          pool=EncoderWorker(**lm)))
    assert tuned_direct["meta"]["adapter"] == tuned["meta"]["adapter"] == "lora"
    assert pooled["meta"]["lm_actors"] == 2
    assert not np.allclose(tuned["embeddings"], pooled["embeddings"], atol=1e-3)  # another encoder indeed
    for name, table, ref in (("one actor", auto, direct), ("two actors", pooled, direct),
                             ("two actors, checkpoint", tuned, tuned_direct)):
        for key in TABLE_KEYS[:-1]:
            a, b = ref[key], table[key]
            assert a.shape == b.shape and a.dtype == b.dtype, key
            if a.dtype.kind == "f":
                diff = float(np.abs(a - b).max())
                print(f"table through the pool ({name}) vs direct: {key} max abs diff {diff:.3g}")
                assert diff <= TOL, key
            else:
                assert np.array_equal(a, b), key


@pytest.mark.slow
@pytest.mark.timeout(280)
def test_tensor_parallel_gang_in_a_placement_group(ray_session, worker):
    """Two gloo ranks in a STRICT_PACK placement group, rendezvous named by rank 0, DeepSpeed AutoTP over them."""
    import ray
    from ray.util import placement_group_table

    svc = ServiceConfig(num_actors=1, num_cpus=0.25, tensor_parallel=2, max_batch=4)
    with EncoderPool(ENC, svc, FAULTS, name="test-tp-pool") as pool:
        (gang,) = pool.replicas
        assert ray.get([a.all_reduce_sum.remote(r + 1) for r, a in enumerate(gang)]) == [3.0, 3.0]
        (pg,) = pool._pgs
        table = placement_group_table(pg)
        assert table["strategy"] == "STRICT_PACK" and len(table["bundles"]) == 2
        infos = ray.get([a.info.remote() for a in gang])
        assert [i["rank"] for i in infos] == [0, 1] and all(i["tensor_parallel"] == 2 for i in infos)
        # DeepSpeed AutoTP sharded the backbone: o_proj and down_proj of both tiny-llama layers all-reduce
        assert [i["tp_layers"] for i in infos] == [4, 4]
        diff = max_diff(pool.encode(windows(6)), worker.encode(windows(6)))
        print(f"tensor parallel 2 vs one process: max abs diff {diff:.3g}")
        assert diff <= TOL
        with pytest.raises(ValueError, match="tensor parallel"):  # only the creating pool drives the ranks
            EncoderPool.connect("test-tp-pool")

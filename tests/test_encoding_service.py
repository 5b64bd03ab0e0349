"""Encoder service: plain worker, Ray actor pool (batching, LRU cache stats), env wrapper."""
from __future__ import annotations

import numpy as np
import pytest

from ifshm_ray.encoding.config import EncoderConfig, ServiceConfig
from ifshm_ray.encoding.service import EncoderPool, EncoderWorker, SemanticStateWrapper

ENC = EncoderConfig(model="tiny-llama", state_dim=8, adapter="none")
SVC = ServiceConfig(num_actors=1, num_cpus=0.5, max_batch=4, max_wait_ms=20.0, lru_size=256)
FAULTS = ["a", "b"]


def windows(n: int) -> list[dict]:
    return [{"logs": [f"2026-11-28 10:00:00.0 1 ERROR svc.mod{i % 3} failure number {i}"],
             "metrics": {"svc": {"lat": [1.0, 2.0, float(i)]}}, "alarms": []} for i in range(n)]


@pytest.mark.timeout(60)
def test_worker_cache_and_stats():
    w = EncoderWorker(ENC, SVC, FAULTS)
    out = w.encode(windows(6))
    assert out["state"].shape == (6, 8) and out["probs"].shape == (6, 2) and len(out["fault"]) == 6
    first = w.stats()
    assert 1 <= first["entries"] <= 3  # at most three distinct templates (numbers masked; Drain may merge some)
    w.encode(windows(6))
    s = w.stats()
    assert s["entries"] == first["entries"] and s["misses"] == first["misses"]  # second pass: only cache hits
    assert s["hits"] > first["hits"]
    assert s["contexts"] == 12 and s["contexts_per_s"] > 0
    empty = w.encode([None])
    assert empty["state"].shape == (1, 8)


@pytest.mark.timeout(120)
def test_actor_pool_batches_and_caches(ray_session):
    import ray

    pool = EncoderPool(ENC, SVC, FAULTS, name="test-enc-pool")
    try:
        out = pool.encode(windows(10))
        assert out["state"].shape == (10, 8)
        refs = [pool.submit(t) for t in windows(8)]
        singles = ray.get(refs)
        assert all(r["state"].shape == (8,) for r in singles)
        np.testing.assert_allclose(singles[3]["state"], out["state"][3], atol=1e-5)
        st = pool.stats()
        assert st["contexts"] == 18 and 1 <= st["entries"] <= 3 and st["hit_rate"] > 0.5
        assert st["replicas"][0]["batches"] < 18  # single requests were joined into batches
        other = EncoderPool.connect("test-enc-pool")
        assert other.encode(windows(2))["state"].shape == (2, 8)
    finally:
        pool.shutdown()


@pytest.mark.timeout(60)
def test_env_wrapper_adds_semantic_state():
    from ifshm_ray.env.fault_env import FaultInjectionEnv

    w = EncoderWorker(ENC, SVC, FAULTS)
    env = SemanticStateWrapper(FaultInjectionEnv({}), w.encode)
    obs, info = env.reset(seed=0)
    assert obs["semantic_state"].shape == (8,) and env.observation_space["semantic_state"].contains(
        obs["semantic_state"])
    obs, *_ = env.step((0, 0, 0))
    assert obs["fault_probs"].shape == (2,) and "obs" in obs

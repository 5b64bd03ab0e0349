"""The Serve encoder deployment runs the encoder actor pool's own class (EncoderWorker) behind ``@serve.batch``."""
from __future__ import annotations

import pytest

from ifshm_ray.encoding.service import EncoderWorker
from ifshm_ray.serve.service import serve_encoder

WINDOWS = [{"logs": [f"2026-11-28 10:00:00.0 1 ERROR svc.mod{i % 3} failure number {i}"],
            "metrics": {"svc": {"lat": [1.0, 2.0, float(i)]}}, "alarms": []} for i in range(8)]


@pytest.mark.timeout(60)
def test_serve_encoder_is_the_pool_worker():
    enc = serve_encoder(model="tiny-llama", cache_size=8)
    assert type(enc) is EncoderWorker
    info = enc.info()
    assert info["trained"] is False and info["fault_types"][0] == "healthy" and info["tensor_parallel"] == 1
    first = enc.diagnose(WINDOWS[:2])
    assert [d["fault_mode"] for d in first] == [enc.encode(WINDOWS[:2])["fault"][i] for i in range(2)]
    assert first[0]["unknown_score"] is None and len(first[0]["top"]) == 3  # untrained: no prototypes
    assert enc.diagnose(WINDOWS[:2]) == first and enc.info()["result_cache"]["hits"] == 2


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_encoder_deployment_batches_with_the_worker(ray_session, tmp_path):
    """Eight concurrent single windows reach the deployment's EncoderWorker as two @serve.batch calls of four, and
    its answers equal the in-process worker's."""
    import json

    from ray import serve

    from ifshm_ray.policy.bundle import MANIFEST
    from ifshm_ray.serve.app import ENCODER_DEPLOYMENT, EncoderDeployment

    # the encoder reads only the policy bundle's split from the checkpoint (its manifest), not the policy itself
    (tmp_path / MANIFEST).write_text(json.dumps({"split": "handpicked"}))
    conf = {"checkpoint": str(tmp_path), "model": "tiny-llama", "max_batch_size": "4",
            "batch_wait_timeout_s": "2.0", "encoder_num_cpus": "0.25"}
    local = serve_encoder(model="tiny-llama").diagnose(WINDOWS)
    try:
        serve.start(proxy_location="Disabled")
        handle = serve.run(EncoderDeployment.options(ray_actor_options={"num_cpus": 0.25}).bind(conf),
                           name="encoder-test", route_prefix=None)
        responses = [handle.diagnose.remote(w) for w in WINDOWS]
        served = [r.result(timeout_s=120) for r in responses]
        info = handle.info.remote().result(timeout_s=60)
        stats = handle.stats.remote().result(timeout_s=60)
    finally:
        serve.delete("encoder-test")
        serve.shutdown()
    assert info["model"] == "tiny-llama" and {"rank", "tensor_parallel", "result_cache"} <= set(info)
    assert (stats["contexts"], stats["batches"]) == (8, 2)
    for got, want in zip(served, local):
        assert got["fault_mode"] == want["fault_mode"]
        assert got["confidence"] == pytest.approx(want["confidence"], abs=1e-5)
    assert ENCODER_DEPLOYMENT == "IFSHMEncoder"

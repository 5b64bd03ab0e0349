"""The live target: a small AI inference platform as one Ray Serve application (``target``), deployed through the
dashboard's declarative API by :mod:`ifshm_ray.live.stack` (so the executor's config PUTs can change it).

``GET /?id=N`` -> ``Gateway``: reads the feature vector ``feat:<N mod K>`` from Redis, asks ``Model`` for a score,
stores the prediction in Redis (``SET pred:<id> ... EX``), answers JSON. ``Model`` runs a small bundled model (a
linear scorer whose weights are a file per version in the model cache folder) behind a fixed accelerator-like wait:
one request at a time per replica for ``service_ms``, as on a GPU, so a replica serves at most 1000 / service_ms
requests per second and adding replicas adds capacity even on 2 CPU cores. Per request the model also writes its
scratch file in the model cache (write + rename), which fails with ENOSPC when that volume is full.

``Model``'s ``user_config``: ``model_version`` (must exist in the model cache, else ``reconfigure`` fails: a bad
config push) and ``extra_latency_ms`` (a slower model build: a bad model deploy). Errors are logged to the Serve
replica logs (``logs/serve/replica_target_*.log`` in the Ray session folder), which the collector reads.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from ifshm_ray.live.handlers import RedisError, redis_command
from ifshm_ray.live.modelcache import SCRATCH_SUBDIR, model_path

log = logging.getLogger("ray.serve")

@serve.deployment(name="Model", max_ongoing_requests=64, health_check_period_s=2.0, health_check_timeout_s=5.0)
class Model:
    def __init__(self, cache_dir: str, service_ms: float, scratch_bytes: int):
        self.cache_dir, self.service_s, self.scratch_bytes = Path(cache_dir), service_ms / 1000.0, scratch_bytes
        self.accelerator = asyncio.Lock()  # one request on the "device" at a time
        self.weights: np.ndarray | None = None
        self.version, self.extra_s = None, 0.0
        self.scratch = self.cache_dir / SCRATCH_SUBDIR / f"replica-{os.getpid()}.bin"
        self.scratch.parent.mkdir(parents=True, exist_ok=True)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        version = str(user_config.get("model_version", "v1"))
        path = model_path(self.cache_dir, version)
        if not path.is_file():
            log.error("model version %r not found in the model cache (%s): reconfigure failed", version, path)
            raise FileNotFoundError(f"model version {version!r} not found at {path}")
        self.weights = np.load(path)
        self.version = version
        self.extra_s = float(user_config.get("extra_latency_ms", 0.0)) / 1000.0
        log.info("model %s loaded (extra latency %.0f ms)", version, self.extra_s * 1000)

    def _write_scratch(self) -> None:
        tmp = self.scratch.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(b"\0" * self.scratch_bytes)
        os.replace(tmp, self.scratch)

    async def __call__(self, features: list[float]) -> dict:
        try:
            await asyncio.to_thread(self._write_scratch)
        except OSError as e:
            log.error("model scratch write to %s failed: %s", self.scratch.parent, e)
            raise
        async with self.accelerator:
            await asyncio.sleep(self.service_s + self.extra_s)
        x = np.asarray(features, dtype=np.float32)
        score = float(1.0 / (1.0 + np.exp(-float(x @ self.weights))))
        return {"score": score, "version": self.version}


@serve.deployment(name="Gateway", max_ongoing_requests=256, health_check_period_s=2.0, health_check_timeout_s=5.0)
class Gateway:
    def __init__(self, model, redis_port: int, feature_keys: int, ttl_s: int, prediction_bytes: int):
        self.model, self.redis_port, self.keys = model, redis_port, feature_keys
        self.ttl_s, self.pad = ttl_s, "x" * prediction_bytes

    async def __call__(self, request: Request) -> JSONResponse:
        rid = request.query_params.get("id", "0")
        try:
            key = int(rid) % self.keys
        except ValueError:
            return JSONResponse({"error": f"id {rid!r} is not an integer"}, status_code=400)
        try:
            raw = await asyncio.to_thread(redis_command, self.redis_port, "GET", f"feat:{key}")
            if raw is None:
                log.error("feature lookup feat:%d: key missing in the feature store", key)
                return JSONResponse({"error": "feature missing"}, status_code=500)
            out = await self.model.remote(json.loads(raw))
            await asyncio.to_thread(redis_command, self.redis_port, "SET", f"pred:{rid}",
                                    json.dumps({**out, "pad": self.pad}), "EX", self.ttl_s)
        except RedisError as e:
            log.error("feature store error for request %s: %s", rid, e)
            return JSONResponse({"error": f"feature store: {e}"}, status_code=503)
        except OSError as e:
            log.error("feature store unreachable for request %s: %r", rid, e)
            return JSONResponse({"error": "feature store unreachable"}, status_code=503)
        except Exception as e:  # noqa: BLE001  (the model failed: a 500 with its reason, logged)
            log.error("inference failed for request %s: %r", rid, e)
            return JSONResponse({"error": f"inference failed: {type(e).__name__}"}, status_code=500)
        return JSONResponse({"id": rid, **out})


def app_builder(args: dict[str, Any]) -> serve.Application:
    """The application from the stack's arguments (``import_path: ifshm_ray.live.target_app:app_builder``)."""
    model = Model.bind(args["cache_dir"], float(args["service_ms"]), int(args["scratch_bytes"]))
    return Gateway.bind(model, int(args["redis_port"]), int(args["feature_keys"]), int(args["ttl_s"]),
                        int(args["prediction_bytes"]))

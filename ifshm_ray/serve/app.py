"""Ray Serve deployments and the app builder.

Two deployments, composed by a deployment handle:

* ``IFSHMEncoder`` (:class:`EncoderDeployment`): the semantic encoder (the encoder actor pool's
  :class:`~ifshm_ray.encoding.service.EncoderWorker`, see :func:`~ifshm_ray.serve.service.serve_encoder`) behind
  ``@serve.batch``: single windows sent by the ingress replicas are diagnosed together in batches of up to
  ``max_batch_size`` (waiting at most ``batch_wait_timeout_s``). On the GPU cluster it gets ``num_gpus: 1``
  (``configs/cluster_serve.yaml``).
* ``IFSHMIngress`` (:class:`IngressDeployment`): the FastAPI app (:func:`~ifshm_ray.serve.http.create_app`) with the
  policy bundle loaded through :func:`~ifshm_ray.policy.bundle.load_policy_bundle`; it calls the encoder's handle.

Start it with ``serve run ifshm_ray.serve.app:build_app checkpoint=PATH model=minilm``, ``serve deploy configs/serve.yaml``
or ``python jobs/serve.py --checkpoint PATH``. Builder args are the fields of :class:`~ifshm_ray.serve.config.ServeConfig`.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from ifshm_ray.serve.config import ServeConfig, serve_config_from_args

logger = logging.getLogger(__name__)

ENCODER_DEPLOYMENT = "IFSHMEncoder"
INGRESS_DEPLOYMENT = "IFSHMIngress"


def _offline_env() -> None:
    # Models come from PyPI packages on disk; never try to reach a hub from a replica.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@serve.deployment(name=ENCODER_DEPLOYMENT, max_ongoing_requests=128, ray_actor_options={"num_cpus": 0.5})
class EncoderDeployment:
    """The encoder as its own deployment: ``diagnose(window) -> dict``, batched with ``@serve.batch``.

    The LM runs in the encoder actor pool's own class (:func:`~ifshm_ray.serve.service.serve_encoder`): an
    ``EncoderWorker`` in this replica, or with ``encoder_tensor_parallel`` > 1 a one-replica ``EncoderPool`` whose ranks
    share a placement group. ``@serve.batch`` is the only micro-batcher: single windows from the ingress replicas
    become one ``diagnose`` call of up to ``max_batch_size`` windows."""

    def __init__(self, config: dict):
        _offline_env()
        import ray

        from ifshm_ray.policy.bundle import manifest_split, read_manifest
        from ifshm_ray.serve.service import serve_encoder

        cfg = serve_config_from_args(config)
        split, _ = manifest_split(read_manifest(cfg.checkpoint))  # the encoder knows the policy's known types
        tensor_parallel = cfg.encoder_tensor_parallel
        # tensor parallel: the ranks hold the GPUs (encoder_num_gpus split over them), this replica holds none
        gpus = cfg.encoder_num_gpus if tensor_parallel > 1 else float(len(ray.get_gpu_ids()))
        self.encoder = serve_encoder(model=cfg.model, encoder=cfg.encoder_checkpoint, mode=cfg.encoder_mode,
                                     cache_size=cfg.cache_size, torch_threads=cfg.torch_threads, num_gpus=gpus,
                                     tensor_parallel=tensor_parallel, split=split)
        self.diagnose.set_max_batch_size(cfg.max_batch_size)
        self.diagnose.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def diagnose(self, windows: list[dict]) -> list[dict]:
        # The model runs in a worker thread, so the replica keeps accepting (and batching) requests meanwhile.
        return await asyncio.to_thread(self.encoder.diagnose, windows)

    def info(self) -> dict:
        return self.encoder.info()

    def stats(self) -> dict:
        """The encoder's cache hit rate, contexts and batches (see ``EncoderWorker.stats``)."""
        return self.encoder.stats()


@serve.deployment(name=INGRESS_DEPLOYMENT, max_ongoing_requests=128, ray_actor_options={"num_cpus": 0.5})
@serve.ingress()
class IngressDeployment:
    """The HTTP ingress: FastAPI routes over a :class:`~ifshm_ray.serve.service.HealingService`."""

    def __init__(self, encoder: DeploymentHandle, config: dict):
        _offline_env()
        import torch

        from ifshm_ray.policy.bundle import load_policy_bundle
        from ifshm_ray.serve.service import HealingService

        cfg = serve_config_from_args(config)
        torch.set_num_threads(cfg.torch_threads)
        self.encoder = encoder

        async def diagnose_one(telemetry: dict) -> dict:
            return await self.encoder.diagnose.remote(telemetry)

        async def encoder_info() -> dict:
            return await self.encoder.info.remote()

        self.service = HealingService(load_policy_bundle(cfg.checkpoint), diagnose_one, cfg, encoder_info)

    def __serve_build_asgi_app__(self):
        from ifshm_ray.serve.http import create_app

        return create_app(self.service)


def build_app(args: dict[str, Any] | ServeConfig | None = None) -> serve.Application:
    """The Serve application (ingress bound to the encoder). ``args``: :class:`ServeConfig` fields, e.g.
    ``{"checkpoint": "results/train", "model": "minilm"}`` (strings are converted). ``encoder_tensor_parallel`` > 1:
    the encoder's LM is sharded over that many ranks (``encoder_num_gpus`` GPUs in all) on one node."""
    cfg = serve_config_from_args(args)
    conf = cfg.to_dict()
    encoder_gpus = cfg.encoder_num_gpus if cfg.encoder_tensor_parallel <= 1 else 0.0
    encoder = EncoderDeployment.options(
        ray_actor_options={"num_cpus": cfg.encoder_num_cpus, "num_gpus": encoder_gpus}).bind(conf)
    return IngressDeployment.options(ray_actor_options={"num_cpus": cfg.ingress_num_cpus}).bind(encoder, conf)

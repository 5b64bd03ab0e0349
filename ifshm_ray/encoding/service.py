"""Encoder service: a pool of Ray actors that turn telemetry windows into semantic states, with request batching and
an LRU cache of LM outputs keyed by a hash of exactly the text the model sees.

Interface for env runners (the contract the policy side plugs into PPO)
-----------------------------------------------------------------------
``encode_fn(telemetry: list[dict]) -> dict`` with numpy values, one row per window:

* ``"state"``: float32 ``[B, state_dim]`` -- the semantic state s_t,
* ``"probs"``: float32 ``[B, num_faults]`` -- calibrated fault-mode probabilities (``fault_types`` order),
* ``"unknown_score"``: float32 ``[B]`` -- distance to the nearest known-fault prototype / its radius (> 1: unknown),
* ``"fault"``: list of ``B`` fault names, ``"confidence"``: float32 ``[B]``.

:class:`EncoderWorker` (plain class, no Ray), :class:`EncoderPool` (``.encode`` is such an ``encode_fn``) and any
function with that signature work. :class:`SemanticStateWrapper` (a gymnasium wrapper) calls it on
``info["telemetry"]`` after every ``reset``/``step`` and adds ``obs["semantic_state"]`` (and
``obs["fault_probs"]``, ``obs["unknown_score"]``) to the env's Dict observation. In RLlib: wrap the env in the env
creator and give each env runner a pool handle found by name (:meth:`EncoderPool.connect`), e.g.::

    pool = EncoderPool(enc_cfg, svc_cfg, checkpoint="results/encoder", name="ifshm-encoder")   # on the driver
    def env_creator(cfg):                                                                       # on env runners
        return SemanticStateWrapper(FaultInjectionEnv(cfg), EncoderPool.connect("ifshm-encoder").encode)

In PPO training the LM does not run per window at all: :mod:`ifshm_ray.encoding.rl_state` embeds every log
template and alarm text of the simulator once, and the policy pools those embeddings per window
(``policy.semantic_encoder`` in a training config; measured: 99 LM passes, then only cache hits). The per-window
wrapper above is for envs with open-ended telemetry (real logs, new templates).

Actors
------
Each actor holds a :class:`~ifshm_ray.encoding.semantic.SemanticEncoder` (from a checkpoint, or untrained) with
``num_cpus`` / ``num_gpus`` from :class:`~ifshm_ray.encoding.config.ServiceConfig`. On CPU it runs plain torch;
with GPUs, DeepSpeed ``init_inference`` wraps the backbone (``tensor_parallel`` GPUs per replica: each replica is
then a gang of ``tensor_parallel`` actors in one process group that all receive the same batches; rank 0 answers).
Single requests (:meth:`EncoderPool.submit`) are joined into batches of up to ``max_batch`` (waiting at most
``max_wait_ms``); :meth:`EncoderPool.encode` sends whole lists, split across replicas.
``stats()`` reports the cache hit rate, the number of distinct cached entries and contexts/s.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

from ifshm_ray.encoding.config import ConfigError, EncoderConfig, ServiceConfig

logger = logging.getLogger(__name__)

EMPTY_TELEMETRY = {"logs": [], "metrics": {}, "alarms": []}


def _as(cls, value):
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    return cls(**value)


class EncoderWorker:
    """The encoding logic of one actor, usable without Ray.

    ``checkpoint``: folder of ``jobs/finetune_encoder.py --out`` (templates frozen); without it, an untrained
    encoder over ``fault_types`` is built from ``encoder_config``. ``deepspeed``: wrap the backbone in DeepSpeed
    ``init_inference`` (default: only when a GPU is visible)."""

    def __init__(self, encoder_config: EncoderConfig | dict | None = None,
                 service_config: ServiceConfig | dict | None = None, fault_types: Sequence[str] | None = None,
                 checkpoint: str | None = None, deepspeed: bool | None = None, tp_rank: int = 0):
        import torch

        from ifshm_ray.encoding.cache import LRUCache
        from ifshm_ray.encoding.semantic import SemanticEncoder

        self.service = _as(ServiceConfig, service_config).validate()
        enc_cfg = _as(EncoderConfig, encoder_config)
        if self.service.num_gpus <= 0 and self.service.num_cpus >= 1:
            torch.set_num_threads(max(1, int(self.service.num_cpus)))
        checkpoint = checkpoint or self.service.encoder_checkpoint
        if checkpoint:
            self.encoder = SemanticEncoder.load(checkpoint)
            self.encoder.modal.freeze()
        else:
            self.encoder = SemanticEncoder.build(enc_cfg, list(fault_types or ["unknown"]))
        self.encoder.eval()
        self.encoder.embed_cache = LRUCache(self.service.lru_size)
        use_gpu = torch.cuda.is_available() and self.service.num_gpus > 0
        if use_gpu:
            self.encoder.to("cuda")
        if deepspeed if deepspeed is not None else use_gpu:
            self.encoder.enable_deepspeed_inference(tp_size=self.service.tensor_parallel)
        self.tp_rank = tp_rank
        self.contexts = 0
        self.busy_s = 0.0
        self.batches = 0

    @property
    def fault_types(self) -> list[str]:
        return list(self.encoder.fault_types)

    def encode(self, telemetry: Sequence[dict | None], mode: str | None = None) -> dict:
        """Encode windows (``None`` counts as an empty window); see the module docstring for the result."""
        t0 = time.perf_counter()
        out = self.encoder.predict([t if t is not None else EMPTY_TELEMETRY for t in telemetry], mode=mode)
        self.busy_s += time.perf_counter() - t0
        self.contexts += len(telemetry)
        self.batches += 1
        return {"state": out["state"].astype(np.float32), "probs": out["probs"].astype(np.float32),
                "unknown_score": np.asarray(out["unknown_score"], np.float32), "fault": out["fault"],
                "confidence": np.asarray(out["confidence"], np.float32)}

    def stats(self) -> dict:
        c = self.encoder.cache_stats()
        return {"hit_rate": c["hit_rate"], "hits": c["hits"], "misses": c["misses"], "entries": c["entries"],
                "contexts": self.contexts, "batches": self.batches, "busy_s": self.busy_s,
                "contexts_per_s": self.contexts / self.busy_s if self.busy_s else 0.0}

    def reset_stats(self) -> None:
        self.encoder.embed_cache.reset_stats()
        self.contexts, self.busy_s, self.batches = 0, 0.0, 0

    def clear_cache(self) -> None:
        self.encoder.clear_cache()


class BatchingEncoderActor:
    """Actor body: an :class:`EncoderWorker` plus a micro-batcher for single requests (async actor; the model runs
    in one worker thread, so the event loop keeps accepting requests meanwhile)."""

    def __init__(self, encoder_config=None, service_config=None, fault_types=None, checkpoint=None,
                 deepspeed=None, dist: dict | None = None):
        if dist:  # a tensor-parallel gang: join its process group before DeepSpeed starts
            os.environ.update({k: str(v) for k, v in dist.items()})
        self.worker = EncoderWorker(encoder_config, service_config, fault_types, checkpoint, deepspeed,
                                    tp_rank=int((dist or {}).get("RANK", 0)))
        self.cfg = self.worker.service
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._queue: list[tuple[Any, asyncio.Future]] = []
        self._flush_task: asyncio.Task | None = None

    async def encode(self, telemetry: list, mode: str | None = None) -> dict:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.worker.encode, telemetry, mode)

    async def encode_one(self, telemetry: dict | None) -> dict:
        """One window; joined with concurrent requests into batches of up to ``max_batch``."""
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((telemetry, fut))
        if len(self._queue) >= self.cfg.max_batch:
            await self._flush()
        elif self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.ensure_future(self._flush_later())
        return await fut

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.cfg.max_wait_ms / 1000.0)
        await self._flush()

    async def _flush(self) -> None:
        batch, self._queue = self._queue[: self.cfg.max_batch], self._queue[self.cfg.max_batch:]
        if not batch:
            return
        try:
            out = await self.encode([t for t, _ in batch])
        except Exception as exc:  # hand the error to every waiting caller
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for i, (_, fut) in enumerate(batch):
            if not fut.done():
                fut.set_result({k: (v[i] if not isinstance(v, list) else v[i]) for k, v in out.items()})
        if self._queue:
            await self._flush()

    def stats(self) -> dict:
        return self.worker.stats()

    def reset_stats(self) -> None:
        self.worker.reset_stats()

    def fault_types(self) -> list[str]:
        return self.worker.fault_types

    def ready(self) -> bool:
        return True


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EncoderPool:
    """``num_actors`` encoder replicas (each ``tensor_parallel`` actors) as Ray actors; see the module docstring.

    ``name``: register the replicas as named actors (``{name}-{i}``, rank 0 of each) so env runners can
    :meth:`connect`."""

    def __init__(self, encoder_config: EncoderConfig | dict | None = None,
                 service_config: ServiceConfig | dict | None = None, fault_types: Sequence[str] | None = None,
                 checkpoint: str | None = None, deepspeed: bool | None = None, name: str | None = None,
                 _handles: list | None = None):
        import ray

        self.service = _as(ServiceConfig, service_config).validate()
        if _handles is not None:
            self.replicas = [[h] for h in _handles]
            self._rr = 0
            return
        tp = self.service.tensor_parallel
        if tp > 1 and self.service.num_gpus <= 0:
            raise ConfigError("service.tensor_parallel > 1 needs GPUs: set service.num_gpus >= 1 (one per rank)")
        enc = _as(EncoderConfig, encoder_config)
        svc = self.service
        remote = ray.remote(BatchingEncoderActor)
        self.replicas = []
        for i in range(svc.num_actors):
            gang = []
            port = _free_port() if tp > 1 else None
            for rank in range(tp):
                opts: dict = {"num_cpus": svc.num_cpus, "num_gpus": svc.num_gpus / tp if tp > 1 else svc.num_gpus,
                              "max_concurrency": 64}
                if name and rank == 0:
                    opts["name"] = f"{name}-{i}"
                dist = ({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "RANK": rank, "WORLD_SIZE": tp,
                         "LOCAL_RANK": rank} if tp > 1 else None)
                gang.append(remote.options(**opts).remote(enc, svc, fault_types, checkpoint, deepspeed, dist))
            self.replicas.append(gang)
        ray.get([a.ready.remote() for gang in self.replicas for a in gang])
        self._rr = 0

    @classmethod
    def connect(cls, name: str, num_actors: int | None = None) -> "EncoderPool":
        """Handles to a pool created elsewhere with ``name`` (e.g. from an env runner)."""
        import ray

        handles, i = [], 0
        while num_actors is None or i < num_actors:
            try:
                handles.append(ray.get_actor(f"{name}-{i}"))
            except ValueError:
                if num_actors is not None:
                    raise
                break
            i += 1
        if not handles:
            raise ValueError(f"no encoder actors named {name!r}-0.. found; create the EncoderPool with name={name!r}")
        return cls(service_config=ServiceConfig(num_actors=len(handles)), _handles=handles)

    def _call(self, gang, method: str, *args):
        refs = [getattr(a, method).remote(*args) for a in gang]
        return refs[0]  # every rank computes the same batch (tensor parallel); rank 0 answers

    def encode(self, telemetry: Sequence[dict | None], mode: str | None = None) -> dict:
        """Encode a list of windows, split into ``max_batch`` chunks over the replicas."""
        import ray

        telemetry = list(telemetry)
        if not telemetry:
            return {"state": np.zeros((0, 0), np.float32), "probs": np.zeros((0, 0), np.float32),
                    "unknown_score": np.zeros(0, np.float32), "fault": [], "confidence": np.zeros(0, np.float32)}
        step = self.service.max_batch
        refs = []
        for j, i in enumerate(range(0, len(telemetry), step)):
            gang = self.replicas[(self._rr + j) % len(self.replicas)]
            refs.append(self._call(gang, "encode", telemetry[i:i + step], mode))
        self._rr += len(refs)
        parts = ray.get(refs)
        return {k: (sum((p[k] for p in parts), []) if isinstance(parts[0][k], list)
                    else np.concatenate([p[k] for p in parts])) for k in parts[0]}

    def submit(self, telemetry: dict | None):
        """One window; returns an ObjectRef to its result (joined server-side into batches)."""
        gang = self.replicas[self._rr % len(self.replicas)]
        self._rr += 1
        return self._call(gang, "encode_one", telemetry)

    def stats(self) -> dict:
        """Pool totals: cache ``hit_rate``, distinct cached ``entries``, ``contexts``, ``contexts_per_s`` (contexts
        over the summed busy time of the replicas, i.e. per replica-second), and each replica's own numbers."""
        import ray

        per = ray.get([gang[0].stats.remote() for gang in self.replicas])
        hits = sum(p["hits"] for p in per)
        misses = sum(p["misses"] for p in per)
        busy = sum(p["busy_s"] for p in per)
        ctx = sum(p["contexts"] for p in per)
        return {"hit_rate": hits / (hits + misses) if hits + misses else 0.0, "entries": sum(p["entries"] for p in per),
                "contexts": ctx, "contexts_per_s": ctx / busy if busy else 0.0, "replicas": per}

    def reset_stats(self) -> None:
        import ray

        ray.get([a.reset_stats.remote() for gang in self.replicas for a in gang])

    def shutdown(self) -> None:
        import ray

        for gang in self.replicas:
            for a in gang:
                ray.kill(a)
        self.replicas = []


class SemanticStateWrapper:
    """Gymnasium wrapper: adds the semantic state of ``info["telemetry"]`` to a Dict observation.

    ``encode_fn``: see the module docstring (e.g. ``EncoderPool.encode`` or ``EncoderWorker.encode``).
    Adds ``semantic_state`` (Box[state_dim]), ``fault_probs`` (Box[num_faults]) and ``unknown_score`` (Box[1]).
    Built lazily as a subclass of ``gymnasium.Wrapper`` so importing this module does not import gymnasium."""

    def __new__(cls, env, encode_fn: Callable[[list], dict], state_dim: int | None = None,
                num_faults: int | None = None):
        import gymnasium as gym
        from gymnasium import spaces

        class _Wrapper(gym.Wrapper):
            def __init__(self, env, encode_fn):
                super().__init__(env)
                self.encode_fn = encode_fn
                probe = encode_fn([None])
                d = state_dim or probe["state"].shape[1]
                c = num_faults or probe["probs"].shape[1]
                base = env.observation_space
                if not isinstance(base, spaces.Dict):
                    raise TypeError("SemanticStateWrapper needs a Dict observation space")
                self.observation_space = spaces.Dict({
                    **base.spaces,
                    "semantic_state": spaces.Box(-np.inf, np.inf, (d,), np.float32),
                    "fault_probs": spaces.Box(0.0, 1.0, (c,), np.float32),
                    "unknown_score": spaces.Box(0.0, np.inf, (1,), np.float32),
                })

            def _augment(self, obs, info):
                out = self.encode_fn([info.get("telemetry")])
                unk = float(out["unknown_score"][0])
                return {**obs, "semantic_state": out["state"][0].astype(np.float32),
                        "fault_probs": out["probs"][0].astype(np.float32),
                        "unknown_score": np.asarray([unk if np.isfinite(unk) else 0.0], np.float32)}

            def reset(self, **kw):
                obs, info = self.env.reset(**kw)
                return self._augment(obs, info), info

            def step(self, action):
                obs, r, term, trunc, info = self.env.step(action)
                return self._augment(obs, info), r, term, trunc, info

        return _Wrapper(env, encode_fn)

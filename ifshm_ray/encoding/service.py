"""Encoder service: the one path to the language model outside fine-tuning.

:class:`EncoderWorker` holds a :class:`~ifshm_ray.encoding.semantic.SemanticEncoder` (a checkpoint of
``jobs/finetune_encoder.py``, or an untrained one over a preset) and answers every question asked of the LM:
``encode`` (semantic states + diagnoses as arrays), ``diagnose`` (JSON-ready diagnoses, with a result cache),
``embed_texts`` (pooled LM outputs of texts), ``item_texts`` / ``head_weights`` (what the RL semantic table needs)
and ``load_checkpoint`` (swap the encoder, e.g. to re-embed after prompt tuning). It is a plain class, so it tests
without Ray. Where the system is assembled it runs as a Ray actor (:class:`EncoderActor`: the same class with a
two-step start) in an :class:`EncoderPool`:

* the semantic table of PPO training (:func:`ifshm_ray.encoding.rl_state.build_table`, run by ``jobs/train.py``
  when ``policy.encoder_checkpoint`` is set) embeds its texts through a pool;
* ``jobs/diagnose.py`` diagnoses through a pool;
* the Serve encoder deployment (:mod:`ifshm_ray.serve.app`) holds an ``EncoderWorker`` in its replica (or a
  one-replica pool when it is tensor parallel) behind ``@serve.batch``.

Interface for env runners (the contract the policy side plugs into PPO)
-----------------------------------------------------------------------
``encode_fn(telemetry: list[dict]) -> dict`` with numpy values, one row per window:

* ``"state"``: float32 ``[B, state_dim]`` -- the semantic state s_t,
* ``"probs"``: float32 ``[B, num_faults]`` -- calibrated fault-mode probabilities (``fault_types`` order),
* ``"unknown_score"``: float32 ``[B]`` -- distance to the nearest known-fault prototype / its radius (> 1: unknown),
* ``"fault"``: list of ``B`` fault names, ``"confidence"``: float32 ``[B]``.

:meth:`EncoderWorker.encode`, :meth:`EncoderPool.encode` and any function with that signature work.
:class:`SemanticStateWrapper` (a gymnasium wrapper) calls it on ``info["telemetry"]`` after every
``reset``/``step`` and adds ``obs["semantic_state"]`` (and ``obs["fault_probs"]``, ``obs["unknown_score"]``) to the
env's Dict observation. In RLlib: wrap the env in the env creator and give each env runner a pool handle found by
name (:meth:`EncoderPool.connect`), e.g.::

    pool = EncoderPool(enc_cfg, svc_cfg, checkpoint="results/encoder", name="ifshm-encoder")   # on the driver
    def env_creator(cfg):                                                                       # on env runners
        return SemanticStateWrapper(FaultInjectionEnv(cfg), EncoderPool.connect("ifshm-encoder").encode)

In PPO training the LM does not run per window at all: :mod:`ifshm_ray.encoding.rl_state` embeds every log
template and alarm text of the simulator once, and the policy pools those embeddings per window
(``policy.encoder_checkpoint`` in a training config; measured: 99 LM passes, then only cache hits). The per-window
wrapper above is for envs with open-ended telemetry (real logs, new templates).

Actors, batching, tensor parallel
---------------------------------
``num_actors`` replicas (:class:`~ifshm_ray.encoding.config.ServiceConfig`; as before: ``num_cpus`` per actor,
``num_gpus`` per replica, split over the ranks of a tensor-parallel one). On CPU a replica runs plain torch; with GPUs, DeepSpeed
``init_inference`` wraps the backbone. With ``tensor_parallel`` = T > 1 a replica is a gang of T actors in one
placement group (``STRICT_PACK``: all ranks on one node); rank 0's actor names the rendezvous (its node's IP and a
port free there), every rank joins one ``torch.distributed`` group (NCCL on GPUs, gloo on CPU) and DeepSpeed shards
the backbone over it (AutoTP). Every rank receives the same batches; rank 0 answers.

:meth:`EncoderPool.encode` / :meth:`~EncoderPool.embed_texts` split a list into ``max_batch`` chunks and hand them
to the replicas through ``ray.util.ActorPool`` (ordered results; a replica gets the next chunk when it is free).
Joining *single* requests of many callers into batches is Serve's job (``@serve.batch`` in the encoder deployment).
``serve.batch`` cannot batch inside a plain actor (checked with Ray 2.60: its queue calls
``serve.get_replica_context()``, which raises ``RayServeException`` outside a Serve replica), so the pool has no
micro-batcher of its own. ``stats()`` reports the cache hit rate, the number
of distinct cached entries and contexts/s.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sys
import threading
import time
from typing import Callable, Sequence

import numpy as np

from ifshm_ray.encoding.config import ConfigError, EncoderConfig, ServiceConfig

logger = logging.getLogger(__name__)

EMPTY_TELEMETRY = {"logs": [], "metrics": {}, "alarms": []}
PLACEMENT_TIMEOUT_S = 120.0
"""How long a tensor-parallel replica waits for its placement group before the pool gives up with an error."""


def as_config(cls, value):
    """A config object from ``None`` (defaults), an instance or a dict; dataclass configs are validated here
    (pydantic models validate when they are built)."""
    if value is None:
        value = cls()
    elif not isinstance(value, cls):
        value = cls(**dict(value))
    if dataclasses.is_dataclass(value):
        value.validate()
    return value


def ray_running() -> bool:
    """Whether this process is connected to Ray (without importing Ray when nothing has)."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def load_encoder(checkpoint: str | None = None, encoder_config: EncoderConfig | dict | None = None,
                 fault_types: Sequence[str] | None = None, **overrides):
    """The :class:`~ifshm_ray.encoding.semantic.SemanticEncoder` of ``checkpoint`` (``overrides``: config fields
    that replace the saved ones), or without one an untrained encoder over ``fault_types`` built from
    ``encoder_config``. Its template miner is frozen: a result never depends on earlier requests."""
    from ifshm_ray.encoding.semantic import SemanticEncoder

    if checkpoint:
        enc = SemanticEncoder.load(checkpoint, **overrides)
    else:
        enc = SemanticEncoder.build(as_config(EncoderConfig, encoder_config), list(fault_types or ["unknown"]))
    enc.modal.freeze()
    enc.eval()
    return enc


def _diagnosis(pred: dict, j: int, fault_types: Sequence[str]) -> dict:
    probs = pred["probs"][j]
    unk = float(pred["unknown_score"][j])
    return {"fault_mode": pred["fault"][j], "confidence": float(pred["confidence"][j]),
            # no prototypes fitted (untrained encoder): the score is undefined
            "unknown_score": unk if np.isfinite(unk) else None,
            "top": [{"fault": fault_types[k], "prob": float(probs[k])} for k in np.argsort(-probs)[:3]]}


class EncoderWorker:
    """The LM work of one encoder replica (or one tensor-parallel rank of it), usable without Ray.

    ``checkpoint``: folder of ``jobs/finetune_encoder.py --out`` (default: ``service_config.encoder_checkpoint``); without it,
    an untrained encoder over ``fault_types`` is built from ``encoder_config``. ``overrides``: encoder config fields
    that replace a checkpoint's. ``deepspeed``: wrap the backbone in DeepSpeed ``init_inference`` (default: when a
    GPU is used or ``tensor_parallel`` > 1). ``mode``: the LM path when a call names none (default: the encoder's).
    ``result_cache_size``: LRU entries of :meth:`diagnose` results, keyed by window content (0: off)."""

    def __init__(self, encoder_config: EncoderConfig | dict | None = None,
                 service_config: ServiceConfig | dict | None = None, fault_types: Sequence[str] | None = None,
                 checkpoint: str | None = None, deepspeed: bool | None = None, tp_rank: int = 0,
                 mode: str | None = None, result_cache_size: int = 0, overrides: dict | None = None):
        import torch

        from ifshm_ray.encoding.cache import LRUCache

        self.service = as_config(ServiceConfig, service_config)
        if self.service.num_gpus <= 0 and self.service.num_cpus >= 1:
            torch.set_num_threads(max(1, int(self.service.num_cpus)))
        self._encoder_config, self._fault_types, self._overrides = encoder_config, fault_types, overrides or {}
        self.deepspeed = deepspeed
        self.tp_rank = tp_rank
        self.mode = mode
        self.results = LRUCache(result_cache_size)
        self.contexts = 0
        self.busy_s = 0.0
        self.batches = 0
        self.load_checkpoint(checkpoint or self.service.encoder_checkpoint)

    def load_checkpoint(self, checkpoint: str | None) -> None:
        """Serve the encoder of ``checkpoint`` from now on (None: the untrained one); drops cached results."""
        import torch

        from ifshm_ray.encoding.cache import LRUCache

        self.checkpoint = str(checkpoint) if checkpoint else None
        self.encoder = load_encoder(self.checkpoint, self._encoder_config, self._fault_types, **self._overrides)
        self.encoder.embed_cache = LRUCache(self.service.lru_size)
        use_gpu = torch.cuda.is_available() and self.service.num_gpus > 0
        if use_gpu:
            self.encoder.to("cuda")
        tp = self.service.tensor_parallel
        if self.deepspeed if self.deepspeed is not None else (use_gpu or tp > 1):
            self.encoder.enable_deepspeed_inference(tp_size=tp)
        self.results.clear()

    @property
    def fault_types(self) -> list[str]:
        return list(self.encoder.fault_types)

    def _predict(self, telemetry: Sequence[dict | None], mode: str | None) -> dict:
        t0 = time.perf_counter()
        out = self.encoder.predict([t if t is not None else EMPTY_TELEMETRY for t in telemetry],
                                   mode=mode or self.mode)
        self.busy_s += time.perf_counter() - t0
        self.contexts += len(telemetry)
        self.batches += 1
        return out

    def encode(self, telemetry: Sequence[dict | None], mode: str | None = None) -> dict:
        """Encode windows (``None`` counts as an empty window); see the module docstring for the result."""
        out = self._predict(telemetry, mode)
        return {"state": out["state"].astype(np.float32), "probs": out["probs"].astype(np.float32),
                "unknown_score": np.asarray(out["unknown_score"], np.float32), "fault": out["fault"],
                "confidence": np.asarray(out["confidence"], np.float32)}

    def diagnose(self, windows: Sequence[dict], mode: str | None = None) -> list[dict]:
        """``[{"fault_mode", "confidence", "unknown_score" (None when untrained), "top": [{"fault", "prob"}] x3}]``;
        a window seen before (same logs, metrics and alarms) comes from the result cache."""
        from ifshm_ray.encoding.cache import telemetry_key

        mode = mode or self.mode or self.encoder.config.mode
        keys = [telemetry_key(t, salt=mode) for t in windows]
        out: list[dict | None] = [self.results.get(k) for k in keys]
        todo = [i for i, o in enumerate(out) if o is None]
        if todo:
            pred = self._predict([windows[i] for i in todo], mode)
            for j, i in enumerate(todo):
                out[i] = _diagnosis(pred, j, self.encoder.fault_types)
                self.results.put(keys[i], out[i])
        return out  # type: ignore[return-value]

    def embed_texts(self, texts: Sequence[str], max_length: int | None = None) -> np.ndarray:
        """Pooled LM outputs float32 ``[N, hidden]`` of ``texts`` (default length: ``max_template_tokens``)."""
        import torch

        with torch.no_grad():
            emb = self.encoder.embed_texts(list(texts), max_length or self.encoder.config.max_template_tokens)
        return emb.cpu().numpy().astype(np.float32)

    def item_texts(self, sim_config: dict | None) -> dict:
        """The simulator's log-template and alarm texts as this encoder's miner sees them (see
        :func:`ifshm_ray.encoding.rl_state.item_texts`)."""
        from ifshm_ray.encoding.rl_state import item_texts

        return item_texts(sim_config, self.encoder.modal)

    def head_weights(self) -> dict[str, np.ndarray]:
        """Every non-backbone tensor of the encoder (pooling, projections, heads) as numpy arrays."""
        return {k: v.numpy() for k, v in self.encoder.head_state_dict().items()}

    def info(self) -> dict:
        """What this worker serves (model, checkpoint, mode, fault types, the named split they are the known types
        of: None for an untrained encoder), its tensor-parallel rank and size, how
        many backbone layers DeepSpeed replaced by tensor-parallel ones (``tp_layers``), and its cache stats."""
        cfg = self.encoder.config
        tp_layers = sum(1 for m in self.encoder.modules() if type(m).__name__ == "LinearAllreduce")
        return {"model": cfg.model, "adapter": cfg.adapter, "checkpoint": self.checkpoint,
                "trained": self.checkpoint is not None, "mode": self.mode or cfg.mode,
                "fault_types": self.fault_types, "split": self.encoder.split, "state_dim": int(cfg.state_dim),
                "hidden_size": int(self.encoder.hidden_size), "rank": self.tp_rank,
                "tensor_parallel": self.service.tensor_parallel, "tp_layers": tp_layers,
                "result_cache": self.results.stats(), "embedding_cache": self.encoder.cache_stats()}

    def stats(self) -> dict:
        c = self.encoder.cache_stats()
        return {"hit_rate": c["hit_rate"], "hits": c["hits"], "misses": c["misses"], "entries": c["entries"],
                "contexts": self.contexts, "batches": self.batches, "busy_s": self.busy_s,
                "contexts_per_s": self.contexts / self.busy_s if self.busy_s else 0.0}

    def reset_stats(self) -> None:
        self.encoder.embed_cache.reset_stats()
        self.results.reset_stats()
        self.contexts, self.busy_s, self.batches = 0, 0.0, 0

    def clear_cache(self) -> None:
        self.encoder.clear_cache()
        self.results.clear()


def free_port() -> int:
    """A TCP port free on every interface of this node now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def join_tp_group(master_addr: str, master_port: int, rank: int, world_size: int, timeout_s: float = 300.0) -> None:
    """Join a tensor-parallel ``torch.distributed`` group (NCCL on GPUs, gloo on CPU) at rank 0's rendezvous.

    On CPU, DeepSpeed's shared-memory all-reduce op is declared unavailable (its kernel segfaulted here in a 2-rank
    AutoTP forward); collectives then go through gloo."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    # Ray gives each rank its own device(s): the rank's GPU is cuda:0 inside its actor.
    os.environ.update({"MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port), "RANK": str(rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": "0"})
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "gloo":
        from ifshm_ray.encoding.train import _deepspeed_cpu_setup

        _deepspeed_cpu_setup(use_shm_comm=False)
    else:
        torch.cuda.set_device(0)
    dist.init_process_group(backend, init_method=f"tcp://{master_addr}:{master_port}", rank=rank,
                            world_size=world_size, timeout=timedelta(seconds=timeout_s))


class EncoderActor(EncoderWorker):
    """Ray actor body: an :class:`EncoderWorker` whose model is loaded by :meth:`start`, not by the constructor,
    so that rank 0 of a tensor-parallel gang can name the rendezvous (:meth:`rendezvous`) before every rank joins
    the group and loads its shard. Every other method is the worker's."""

    def __init__(self, **worker_kwargs):  # the worker itself is built in start()
        self._worker_kwargs = worker_kwargs

    def rendezvous(self) -> tuple[str, int]:
        """This actor's node IP and a port free there: the group's rendezvous when this actor is rank 0."""
        import ray

        return ray.util.get_node_ip_address(), free_port()

    def start(self, dist: dict | None = None) -> dict:
        """Join the tensor-parallel group ``dist`` (``master_addr``, ``master_port``, ``rank``, ``world_size``; None:
        none), then build the worker. Returns :meth:`info`."""
        if dist:
            join_tp_group(**dist)
        EncoderWorker.__init__(self, **self._worker_kwargs, tp_rank=int((dist or {}).get("rank", 0)))
        return self.info()

    def all_reduce_sum(self, value: float) -> float:
        """Sum of ``value`` over the ranks of this actor's group (a check of the rendezvous)."""
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(value)], device="cuda" if torch.cuda.is_available() else "cpu")
        dist.all_reduce(t)
        return float(t.item())


def _concat(parts: list[dict]) -> dict:
    return {k: (sum((p[k] for p in parts), []) if isinstance(parts[0][k], list)
                else np.concatenate([p[k] for p in parts])) for k in parts[0]}


class EncoderPool:
    """``num_actors`` encoder replicas (each ``tensor_parallel`` :class:`EncoderActor` ranks) as Ray actors.

    The arguments are :class:`EncoderWorker`'s. ``name``: register rank 0 of each replica as a named actor
    (``{name}-{i}``) so that other processes can :meth:`connect`. The ranks of a tensor-parallel gang must see the
    same calls in the same order, so only the pool that created them drives them (:meth:`connect` refuses such
    pools). A missing checkpoint is reported before any actor starts. Use as a context manager, or call
    :meth:`shutdown`."""

    def __init__(self, encoder_config: EncoderConfig | dict | None = None,
                 service_config: ServiceConfig | dict | None = None, fault_types: Sequence[str] | None = None,
                 checkpoint: str | None = None, deepspeed: bool | None = None, name: str | None = None,
                 mode: str | None = None, result_cache_size: int = 0, overrides: dict | None = None,
                 _handles: list | None = None):
        import ray
        from ray.util import ActorPool

        self.service = as_config(ServiceConfig, service_config)
        self._lock = threading.Lock()  # ActorPool is not thread-safe (the Serve deployment calls from threads)
        self._pgs: list = []
        self.replicas: list[list] = []
        if _handles is not None:
            self.replicas = [[h] for h in _handles]
            self._actors = ActorPool(self.replicas)
            return
        tp = self.service.tensor_parallel
        if tp > 1 and 0 < self.service.num_gpus < tp:
            raise ConfigError(f"service.num_gpus={self.service.num_gpus} for tensor_parallel={tp}: each rank needs a "
                              f"whole GPU of its own (NCCL refuses two ranks on one device); set num_gpus >= {tp}")
        checkpoint = checkpoint or self.service.encoder_checkpoint
        if checkpoint:
            from ifshm_ray.encoding.semantic import checkpoint_dir

            checkpoint = str(checkpoint_dir(checkpoint).resolve())
        kwargs = dict(encoder_config=as_config(EncoderConfig, encoder_config), service_config=self.service,
                      fault_types=list(fault_types) if fault_types else None, checkpoint=checkpoint,
                      deepspeed=deepspeed, mode=mode, result_cache_size=result_cache_size, overrides=overrides)
        remote = ray.remote(EncoderActor)
        try:
            for i in range(self.service.num_actors):
                self.replicas.append(self._create_gang(remote, kwargs, i, name))
            # errors of the workers' construction (e.g. a bad checkpoint) surface here with their own type
            ray.get([a.start.remote(dist) for gang in self.replicas for a, dist in self._gang_dist(gang)])
        except BaseException:
            self.shutdown()
            raise
        self._actors = ActorPool(self.replicas)

    def _create_gang(self, remote, kwargs: dict, i: int, name: str | None) -> list:
        """The ``tensor_parallel`` actors of replica ``i`` (in a STRICT_PACK placement group when more than one)."""
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        svc, tp = self.service, self.service.tensor_parallel
        per_rank = {"num_cpus": svc.num_cpus, "num_gpus": svc.num_gpus / tp}
        pg = None
        if tp > 1:
            bundle = {"CPU": per_rank["num_cpus"], **({"GPU": per_rank["num_gpus"]} if svc.num_gpus > 0 else {})}
            pg = placement_group([bundle] * tp, strategy="STRICT_PACK")
            self._pgs.append(pg)
            ready, _ = ray.wait([pg.ready()], timeout=PLACEMENT_TIMEOUT_S)
            if not ready:
                raise ConfigError(f"encoder replica {i}: no node has room for {tp} x {bundle} within "
                                  f"{PLACEMENT_TIMEOUT_S:.0f} s (the service.tensor_parallel={tp} ranks of a replica "
                                  f"share one node; cluster: {ray.cluster_resources()}): lower "
                                  "service.tensor_parallel, num_cpus or num_gpus")
        gang = []
        for rank in range(tp):
            opts = dict(per_rank)
            if pg is not None:
                opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=rank)
            if name and rank == 0:
                opts["name"] = f"{name}-{i}"
            gang.append(remote.options(**opts).remote(**kwargs))
        return gang

    @staticmethod
    def _gang_dist(gang: list) -> list[tuple]:
        """(actor, dist) of each rank of one replica; the group's rendezvous is named by rank 0 on its node."""
        import ray

        if len(gang) == 1:
            return [(gang[0], None)]
        addr, port = ray.get(gang[0].rendezvous.remote())
        return [(a, {"master_addr": addr, "master_port": port, "rank": r, "world_size": len(gang)})
                for r, a in enumerate(gang)]

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
        tp = ray.get(handles[0].info.remote())["tensor_parallel"]
        if tp > 1:
            raise ValueError(f"encoder pool {name!r} is tensor parallel ({tp} ranks per replica): only the "
                             "EncoderPool that created it can drive its ranks")
        return cls(service_config=ServiceConfig(num_actors=len(handles)), _handles=handles)

    # ----- calls ---------------------------------------------------------------------------------------------------
    def _map(self, method: str, chunks: list, *args) -> list:
        """``method(chunk, *args)`` on the replicas (every rank of a gang; rank 0 answers), in ``chunks`` order."""
        def call(gang, chunk):
            return [getattr(a, method).remote(chunk, *args) for a in gang]

        with self._lock:
            return [ranks[0] for ranks in self._actors.map(call, chunks)]

    def _chunks(self, items: list) -> list[list]:
        step = self.service.max_batch
        return [items[i:i + step] for i in range(0, len(items), step)]

    def _all(self, method: str, *args) -> None:
        """``method(*args)`` on every rank of every replica."""
        import ray

        with self._lock:
            ray.get([getattr(a, method).remote(*args) for gang in self.replicas for a in gang])

    def _first(self, method: str, *args):
        """A call that does not run the LM: rank 0 of the first replica answers."""
        import ray

        return ray.get(getattr(self.replicas[0][0], method).remote(*args))

    def encode(self, telemetry: Sequence[dict | None], mode: str | None = None) -> dict:
        """Encode a list of windows (``max_batch`` chunks over the replicas); see the module docstring."""
        telemetry = list(telemetry)
        if not telemetry:
            return {"state": np.zeros((0, 0), np.float32), "probs": np.zeros((0, 0), np.float32),
                    "unknown_score": np.zeros(0, np.float32), "fault": [], "confidence": np.zeros(0, np.float32)}
        return _concat(self._map("encode", self._chunks(telemetry), mode))

    def diagnose(self, windows: Sequence[dict], mode: str | None = None) -> list[dict]:
        """:meth:`EncoderWorker.diagnose` of a list of windows, over the replicas."""
        return [d for part in self._map("diagnose", self._chunks(list(windows)), mode) for d in part]

    def embed_texts(self, texts: Sequence[str], max_length: int | None = None,
                    checkpoint: str | None = None) -> np.ndarray:
        """Pooled LM outputs float32 ``[N, hidden]`` of ``texts``, each distinct text embedded once, over the
        replicas. ``checkpoint``: :meth:`load_checkpoint` it first (e.g. to re-embed after prompt tuning)."""
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
        texts = list(texts)
        uniq = list(dict.fromkeys(texts))
        if not uniq:
            return np.zeros((0, int(self.info()["hidden_size"])), np.float32)
        emb = np.concatenate(self._map("embed_texts", self._chunks(uniq), max_length))
        index = {t: i for i, t in enumerate(uniq)}
        return emb[[index[t] for t in texts]]

    def load_checkpoint(self, checkpoint: str | None) -> None:
        """Every replica serves the encoder of ``checkpoint`` from now on (checked here first)."""
        if checkpoint:
            from ifshm_ray.encoding.semantic import checkpoint_dir

            checkpoint = str(checkpoint_dir(checkpoint).resolve())
        self._all("load_checkpoint", checkpoint)

    def item_texts(self, sim_config: dict | None) -> dict:
        return self._first("item_texts", sim_config)

    def head_weights(self) -> dict[str, np.ndarray]:
        return self._first("head_weights")

    def info(self) -> dict:
        """Rank 0 of the first replica's :meth:`EncoderWorker.info`, plus the number of ``replicas``."""
        return {**self._first("info"), "replicas": len(self.replicas)}

    def stats(self) -> dict:
        """Pool totals: cache ``hit_rate``, ``hits``, ``misses``, distinct cached ``entries``, ``contexts``,
        ``contexts_per_s`` (contexts over the summed busy time of the replicas, i.e. per replica-second), and each
        replica's own numbers."""
        import ray

        per = ray.get([gang[0].stats.remote() for gang in self.replicas])
        hits = sum(p["hits"] for p in per)
        misses = sum(p["misses"] for p in per)
        busy = sum(p["busy_s"] for p in per)
        ctx = sum(p["contexts"] for p in per)
        return {"hit_rate": hits / (hits + misses) if hits + misses else 0.0, "hits": hits, "misses": misses,
                "entries": sum(p["entries"] for p in per), "contexts": ctx,
                "contexts_per_s": ctx / busy if busy else 0.0, "replicas": per}

    def reset_stats(self) -> None:
        self._all("reset_stats")

    def shutdown(self) -> None:
        """Kill the actors and remove the placement groups."""
        import ray
        from ray.util.placement_group import remove_placement_group

        for gang in self.replicas:
            for a in gang:
                ray.kill(a)
        for pg in self._pgs:
            remove_placement_group(pg)
        self.replicas, self._pgs = [], []

    def __enter__(self) -> "EncoderPool":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


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

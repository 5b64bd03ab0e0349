"""Typed configuration of the encoder, its fine-tuning job and its actor pool (``configs/encoder*.yaml``).

Three dataclasses, one per concern, joined in :class:`EncoderJobConfig` (the YAML file's top level has the
sections ``encoder:``, ``finetune:`` and ``service:``). Every field has a docstring; :meth:`validate` raises
:class:`ConfigError` with a message that says how to fix the value.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which one and how to fix it."""


POOLINGS = ("mean", "last", "cls")
MODES = ("templates", "context")
ADAPTERS = ("none", "lora", "prompt_tuning")


@dataclass
class EncoderConfig:
    """The modal-aware encoder and the LLM semantic encoder."""

    model: str = "smollm2"
    """Preset name (``smollm2`` -- the embedded default --, ``minilm`` -- fast --, ``tiny-llama``, ``tiny-bert``), a
    Hugging Face model name that is in the local cache, or a local directory."""
    cache_dir: str | None = None
    """Where dequantised GGUF models are cached as safetensors; default ``$IFSHM_CACHE_DIR`` or
    ``~/.cache/ifshm_ray/models``."""
    pooling: str = "auto"
    """How token states become one vector: ``mean`` (masked mean), ``last`` (last real token, for causal models),
    ``cls`` (first token), or ``auto`` (the preset's choice; ``mean`` otherwise)."""
    mode: str = "templates"
    """``templates``: the LM embeds each distinct log template / alarm text once (template-level cache) and a
    learned, count-weighted attention pooling joins them (the RL path). ``context``: one LM pass over the whole
    bounded prompt (diagnosis, serving, GPU)."""
    state_dim: int = 64
    """Size of the semantic state vector s_t."""
    max_prompt_tokens: int = 256
    """Token budget of the whole-context prompt (``context`` mode) and of the key-lines section."""
    max_template_tokens: int = 48
    """Truncation length of one template / alarm text in ``templates`` mode."""
    max_templates: int = 48
    """At most this many distinct templates / alarm texts per context (most informative first)."""
    max_key_lines: int = 4
    """Raw log lines quoted in the prompt (rare and severe first)."""
    max_metric_lines: int = 8
    """Lines of the textual metric summary in the prompt."""
    max_line_chars: int = 240
    """Raw lines are cut to this many characters before they reach the prompt."""
    metric_buckets: int = 32
    """Hash buckets for metric names in the numeric feature vector (fixed size across topologies)."""
    alarm_buckets: int = 16
    """Hash buckets for alarm names in the numeric feature vector."""
    drain_sim_th: float = 0.4
    """Drain3 similarity threshold (deterministic, in-memory miner)."""
    drain_depth: int = 4
    """Drain3 parse-tree depth."""
    drain_max_clusters: int = 2048
    """Drain3 keeps at most this many templates (least recently used are dropped)."""
    template_cache_size: int = 8192
    """LRU size of the LM-embedding cache (keyed by a hash of the exact text the model sees)."""
    embed_batch_size: int = 64
    """Texts per LM forward pass."""
    adapter: str = "lora"
    """``lora``, ``prompt_tuning`` or ``none`` (frozen backbone, only the projections and heads train)."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA alpha."""
    lora_dropout: float = 0.05
    """LoRA dropout."""
    lora_target_modules: list[str] | None = None
    """Module names LoRA wraps; None: peft's default for the model type (q/v projections)."""
    lora_layers: int | None = None
    """LoRA only on the last N transformer layers (None: all). Backpropagation then stops below them, which makes a
    training step of SmolLM2 about 1.5x cheaper with the top 8 of 30 layers."""
    num_virtual_tokens: int = 8
    """Soft-prompt length for ``prompt_tuning``."""
    fault_types: list[str] = field(default_factory=list)
    """Known fault types (the head's classes); empty: taken from the data set / checkpoint."""
    unknown_quantile: float = 0.95
    """A class's radius is this quantile of its training members' distances to its prototype; the unknown score
    is the distance to the nearest prototype divided by that prototype's radius (> 1: unlike every known fault)."""
    seed: int = 0
    """Seed of the random parts (tiny models, projections, heads)."""

    def validate(self) -> "EncoderConfig":
        if self.pooling not in POOLINGS + ("auto",):
            raise ConfigError(f"encoder.pooling={self.pooling!r}: use one of {list(POOLINGS) + ['auto']}")
        if self.mode not in MODES:
            raise ConfigError(f"encoder.mode={self.mode!r}: use 'templates' (RL path) or 'context' (whole prompt)")
        if self.adapter not in ADAPTERS:
            raise ConfigError(f"encoder.adapter={self.adapter!r}: use one of {list(ADAPTERS)}")
        for name in ("state_dim", "max_prompt_tokens", "max_template_tokens", "max_templates", "metric_buckets",
                     "alarm_buckets", "template_cache_size", "embed_batch_size", "lora_r", "num_virtual_tokens"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"encoder.{name}={getattr(self, name)!r}: must be a positive integer")
        if self.lora_layers is not None and int(self.lora_layers) < 1:
            raise ConfigError(f"encoder.lora_layers={self.lora_layers}: use a positive number of layers or null (all)")
        if self.max_prompt_tokens < 32:
            raise ConfigError(f"encoder.max_prompt_tokens={self.max_prompt_tokens}: use at least 32 tokens")
        if not 0.0 < self.drain_sim_th < 1.0:
            raise ConfigError(f"encoder.drain_sim_th={self.drain_sim_th}: must lie in (0, 1), e.g. 0.4")
        if not 0.5 <= self.unknown_quantile < 1.0:
            raise ConfigError(f"encoder.unknown_quantile={self.unknown_quantile}: use a value in [0.5, 1), e.g. 0.95")
        return self


@dataclass
class FinetuneConfig:
    """``jobs/finetune_encoder.py``: data set from the simulator, LoRA fine-tuning through Ray Train + DeepSpeed."""

    train_seeds: int = 24
    """Simulator episodes (seeds 0..n-1) whose windows form the training split."""
    val_seeds: int = 6
    """Next seeds: validation split (temperature scaling, prototypes' radii)."""
    test_seeds: int = 8
    """Next seeds after those: held-out test split (accuracy / macro-F1 reported)."""
    windows_per_episode: int = 4
    """Labelled telemetry windows taken from each episode (after the fault shows)."""
    epochs: int = 3
    """Passes over the training split."""
    batch_size: int = 16
    """Contexts per worker per step (DeepSpeed ``train_micro_batch_size_per_gpu``)."""
    lr: float = 2e-3
    """Learning rate of the heads and projections."""
    lora_lr: float = 5e-4
    """Learning rate of the adapter parameters."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage (0-3)."""
    num_workers: int = 2
    """Ray Train workers (processes; gloo on CPU, NCCL on GPU)."""
    cpus_per_worker: float = 1.0
    """CPUs each worker reserves."""
    use_gpu: bool = False
    """Train on GPU workers (one GPU each)."""
    torch_threads: int = 1
    """``torch.set_num_threads`` in each worker (keep workers x threads <= cores)."""
    deepspeed_shm_comm: bool = False
    """Let DeepSpeed build its shared-memory CPU collectives op (a ~50 s one-time JIT compile, only a speed-up);
    False: collectives go through plain torch.distributed (gloo on CPU, NCCL on GPU)."""
    real_data: str | None = "../shared/data/openstack_fault_injection_fse2019"
    """Real OpenStack fault-injection samples (relative to the repo root); skipped when absent or None."""
    real_max_lines: int = 4000
    """At most this many service-log lines per real sample (the window's lines, oldest first)."""
    rl_probe_episodes: int = 8
    """After training: env episodes (unseen seeds, random actions) encoded one step at a time with a fresh cache,
    to measure the template-cache hit rate as the RL loop sees it (0: skip)."""
    rl_probe_steps: int = 25
    """Steps per probe episode."""
    sim_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the simulator's data-set generator."""

    def validate(self) -> "FinetuneConfig":
        for name in ("train_seeds", "val_seeds", "test_seeds", "windows_per_episode", "epochs", "batch_size",
                     "num_workers", "torch_threads"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"finetune.{name}={getattr(self, name)!r}: must be a positive integer")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"finetune.zero_stage={self.zero_stage}: DeepSpeed ZeRO stages are 0, 1, 2, 3")
        if self.lr <= 0 or self.lora_lr <= 0:
            raise ConfigError("finetune.lr and finetune.lora_lr must be > 0, e.g. 2e-3 and 5e-4")
        if self.cpus_per_worker <= 0:
            raise ConfigError(f"finetune.cpus_per_worker={self.cpus_per_worker}: must be > 0 (fractions allowed)")
        return self


@dataclass
class ServiceConfig:
    """The encoder actor pool that serves semantic states to env runners."""

    num_actors: int = 1
    """Encoder actors in the pool."""
    num_cpus: float = 1.0
    """CPUs per actor (fractions allowed, e.g. 0.5 in tests)."""
    num_gpus: float = 0.0
    """GPUs per actor; > 0 uses DeepSpeed ``init_inference`` (tensor parallel over ``tensor_parallel`` GPUs)."""
    tensor_parallel: int = 1
    """DeepSpeed inference tensor-parallel degree (GPU only)."""
    max_batch: int = 32
    """Requests joined into one LM batch."""
    max_wait_ms: float = 5.0
    """How long an actor waits for more requests before it runs a partial batch."""
    lru_size: int = 65536
    """Entries of each actor's LRU cache of LM outputs."""
    adapter: str | None = None
    """Checkpoint directory written by ``jobs/finetune_encoder.py --out`` (adapter + heads); None: untrained."""

    def validate(self) -> "ServiceConfig":
        if self.num_actors < 1:
            raise ConfigError(f"service.num_actors={self.num_actors}: need at least one actor")
        if self.num_cpus <= 0 and self.num_gpus <= 0:
            raise ConfigError("service.num_cpus and service.num_gpus are both 0: give each actor some resource")
        if self.num_gpus < 0 or self.tensor_parallel < 1:
            raise ConfigError("service.num_gpus must be >= 0 and service.tensor_parallel >= 1")
        if self.max_batch < 1 or self.lru_size < 1:
            raise ConfigError("service.max_batch and service.lru_size must be positive integers")
        return self


@dataclass
class EncoderJobConfig:
    """Top level of ``configs/encoder*.yaml``."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)

    def validate(self) -> "EncoderJobConfig":
        self.encoder.validate()
        self.finetune.validate()
        self.service.validate()
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def training_hash(self) -> str:
        """Hash of what decides the fine-tuned encoder: the encoder and finetune sections and the fault catalog the
        training windows come from (the service section does not count). Written to the encoder's metrics.json, so
        a pipeline can tell a stale encoder from a matching one."""
        import hashlib
        import json

        from ifshm_ray.sim.catalog import load_catalog

        desc = {"encoder": dataclasses.asdict(self.encoder), "finetune": dataclasses.asdict(self.finetune),
                "catalog": load_catalog().sha256}
        return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _build(cls, data: dict | None, section: str):
    data = dict(data or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in section '{section}'; valid keys: {sorted(names)}")
    return cls(**data)


def config_from_dict(data: dict | None) -> EncoderJobConfig:
    """Build and validate an :class:`EncoderJobConfig` from a plain dict (the parsed YAML)."""
    data = dict(data or {})
    unknown = sorted(set(data) - {"encoder", "finetune", "service"})
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; valid sections: ['encoder', 'finetune', 'service']")
    cfg = EncoderJobConfig(
        encoder=_build(EncoderConfig, data.get("encoder"), "encoder"),
        finetune=_build(FinetuneConfig, data.get("finetune"), "finetune"),
        service=_build(ServiceConfig, data.get("service"), "service"),
    )
    return cfg.validate()


def load_config(path: str | Path, overrides: dict | None = None) -> EncoderJobConfig:
    """Read a YAML file (sections ``encoder``, ``finetune``, ``service``); ``overrides`` maps
    ``"section.key"`` to a value and wins over the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; see configs/encoder.yaml for an example")
    data = yaml.safe_load(path.read_text()) or {}
    for key, value in (overrides or {}).items():
        section, _, name = key.partition(".")
        if not name:
            raise ConfigError(f"override {key!r} must look like 'section.key', e.g. 'encoder.model'")
        data.setdefault(section, {})[name] = value
    return config_from_dict(data)

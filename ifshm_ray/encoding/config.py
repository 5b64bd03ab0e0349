"""Typed configuration of the encoder, its fine-tuning job and its actor pool (``configs/encoder*.yaml``).

Three :class:`~ifshm_ray.config.ConfigModel` sections, one per concern, joined in :class:`EncoderJobConfig` (the
YAML file's top level has the sections ``encoder:``, ``finetune:`` and ``service:``). Every field has a docstring;
a bad value raises :class:`~ifshm_ray.config.ConfigError` when the config is built, naming the YAML path and what
is allowed. Overrides use the shared dotted syntax: ``load_config(path, ["encoder.model=minilm"])``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

from pydantic import Field, model_validator

from ifshm_ray.config import ConfigError, ConfigModel
from ifshm_ray.config import load_config as _load_config

__all__ = ["ConfigError", "EncoderConfig", "FinetuneConfig", "RealTrainConfig", "ServiceConfig", "EncoderJobConfig", "config_from_dict",
           "load_config"]


class EncoderConfig(ConfigModel):
    """The modal-aware encoder and the LLM semantic encoder."""

    model: str = "smollm2"
    """Preset name (``smollm2`` -- the embedded default --, ``minilm`` -- fast --, ``tiny-llama``, ``tiny-bert``), a
    Hugging Face model name that is in the local cache, or a local directory."""
    cache_dir: str | None = None
    """Where dequantised GGUF models are cached as safetensors; default ``$IFSHM_CACHE_DIR`` or
    ``~/.cache/ifshm_ray/models``."""
    pooling: Literal["mean", "last", "cls", "auto"] = "auto"
    """How token states become one vector: ``mean`` (masked mean), ``last`` (last real token, for causal models),
    ``cls`` (first token), or ``auto`` (the preset's choice; ``mean`` otherwise)."""
    mode: Literal["templates", "context"] = "templates"
    """``templates``: the LM embeds each distinct log template / alarm text once (template-level cache) and a
    learned, count-weighted attention pooling joins them (the RL path). ``context``: one LM pass over the whole
    bounded prompt (diagnosis, serving, GPU)."""
    state_dim: int = Field(64, ge=1)
    """Size of the semantic state vector s_t."""
    max_prompt_tokens: int = Field(256, ge=32)
    """Token budget of the whole-context prompt (``context`` mode) and of the key-lines section."""
    max_template_tokens: int = Field(48, ge=1)
    """Truncation length of one template / alarm text in ``templates`` mode."""
    max_templates: int = Field(48, ge=1)
    """At most this many distinct templates / alarm texts per context (most informative first)."""
    max_key_lines: int = Field(4, ge=0)
    """Raw log lines quoted in the prompt (rare and severe first)."""
    max_metric_lines: int = Field(8, ge=0)
    """Lines of the textual metric summary in the prompt."""
    max_line_chars: int = Field(240, ge=1)
    """Raw lines are cut to this many characters before they reach the prompt."""
    metric_buckets: int = Field(32, ge=1)
    """Hash buckets for metric names in the numeric feature vector (fixed size across topologies)."""
    alarm_buckets: int = Field(16, ge=1)
    """Hash buckets for alarm names in the numeric feature vector."""
    drain_sim_th: float = Field(0.4, gt=0.0, lt=1.0)
    """Drain3 similarity threshold (deterministic, in-memory miner)."""
    drain_depth: int = Field(4, ge=3)
    """Drain3 parse-tree depth."""
    drain_max_clusters: int = Field(2048, ge=1)
    """Drain3 keeps at most this many templates (least recently used are dropped)."""
    template_cache_size: int = Field(8192, ge=1)
    """LRU size of the LM-embedding cache (keyed by a hash of the exact text the model sees)."""
    embed_batch_size: int = Field(64, ge=1)
    """Texts per LM forward pass."""
    adapter: Literal["none", "lora", "prompt_tuning"] = "lora"
    """``lora``, ``prompt_tuning`` or ``none`` (frozen backbone, only the projections and heads train)."""
    lora_r: int = Field(8, ge=1)
    """LoRA rank."""
    lora_alpha: int = Field(16, ge=1)
    """LoRA alpha."""
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    """LoRA dropout."""
    lora_target_modules: list[str] | None = None
    """Module names LoRA wraps; None: peft's default for the model type (q/v projections)."""
    lora_layers: int | None = Field(None, ge=1)
    """LoRA only on the last N transformer layers (None: all). Backpropagation then stops below them, which makes a
    training step of SmolLM2 about 1.5x cheaper with the top 8 of 30 layers."""
    num_virtual_tokens: int = Field(8, ge=1)
    """Soft-prompt length for ``prompt_tuning``."""
    fault_types: list[str] = Field(default_factory=list)
    """Known fault types (the head's classes); empty: taken from the data set / checkpoint."""
    unknown_quantile: float = Field(0.95, ge=0.5, lt=1.0)
    """A class's radius is this quantile of its training members' distances to its prototype; the unknown score
    is the distance to the nearest prototype divided by that prototype's radius (> 1: unlike every known fault)."""
    seed: int = Field(0, ge=0)
    """Seed of the random parts (tiny models, projections, heads)."""



class FinetuneConfig(ConfigModel):
    """``jobs/finetune_encoder.py``: data set from the simulator, LoRA fine-tuning through Ray Train + DeepSpeed."""

    train_seeds: int = Field(24, ge=1)
    """Simulator episodes (seeds 0..n-1) whose windows form the training split."""
    val_seeds: int = Field(6, ge=1)
    """Next seeds: validation split (temperature scaling, prototypes' radii)."""
    test_seeds: int = Field(8, ge=1)
    """Next seeds after those: held-out test split (accuracy / macro-F1 reported)."""
    windows_per_episode: int = Field(4, ge=1)
    """Labelled telemetry windows taken from each episode (after the fault shows)."""
    epochs: int = Field(3, ge=1)
    """Passes over the training split."""
    batch_size: int = Field(16, ge=1)
    """Contexts per worker per step (DeepSpeed ``train_micro_batch_size_per_gpu``)."""
    lr: float = Field(2e-3, gt=0.0)
    """Learning rate of the heads and projections."""
    lora_lr: float = Field(5e-4, gt=0.0)
    """Learning rate of the adapter parameters."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay."""
    zero_stage: Literal[0, 1, 2, 3] = 2
    """DeepSpeed ZeRO stage (0-3)."""
    num_workers: int = Field(2, ge=1)
    """Ray Train workers (processes; gloo on CPU, NCCL on GPU)."""
    cpus_per_worker: float = Field(1.0, gt=0.0)
    """CPUs each worker reserves."""
    use_gpu: bool = False
    """Train on GPU workers (one GPU each)."""
    torch_threads: int = Field(1, ge=1)
    """``torch.set_num_threads`` in each worker (keep workers x threads <= cores)."""
    deepspeed_shm_comm: bool = False
    """Let DeepSpeed build its shared-memory CPU collectives op (a ~50 s one-time JIT compile, only a speed-up);
    False: collectives go through plain torch.distributed (gloo on CPU, NCCL on GPU)."""
    real_data: str | None = "../shared/data/openstack_fault_injection_fse2019"
    """Real OpenStack fault-injection samples (relative to the repo root); skipped when absent or None."""
    real_max_lines: int = Field(4000, ge=1)
    """At most this many service-log lines per real sample (the window's lines, oldest first)."""
    rl_probe_episodes: int = Field(8, ge=0)
    """After training: env episodes (unseen seeds, random actions) encoded one step at a time with a fresh cache,
    to measure the template-cache hit rate as the RL loop sees it (0: skip)."""
    rl_probe_steps: int = Field(25, ge=1)
    """Steps per probe episode."""
    sim_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword arguments for the simulator's data-set generator."""


class RealTrainConfig(ConfigModel):
    """Real labelled data fine-tuned beside the simulator's windows (issue 14): one head per data set's label set on
    the shared (LoRA) encoder. Paths are relative to the repository root. A grouped training part of each set is
    trained on; the rest (recorded in the checkpoint's ``real_tasks.json``) is held out for reporting."""

    jss2021: str | None = None
    """Failure-Dataset-OpenStack folder (campaign sub-folders DEPL / NET / STO): one head per campaign, each
    experiment read as the counts text (``novaclient POST 500 x3``, one item per event type). None: not used."""
    campaigns: list[Literal["DEPL", "NET", "STO"]] = Field(default_factory=lambda: ["DEPL", "NET", "STO"])
    """Campaigns of ``jss2021`` that get a head."""
    fse2019: str | None = None
    """FSE 2019 fault-injection runs (service logs only): a ``failure_mode`` head. None: not used."""
    nezha: str | None = None
    """Nezha TrainTicket folder: a ``fault_type`` head (4 development samples, one per type: off by default)."""
    if_missing: Literal["skip", "error"] = "skip"
    """A configured path that does not exist: ``skip`` it (logged; the default config on a machine without the
    data), or stop with an error naming it (``configs/encoder_real.yaml``)."""
    train_fraction: float = Field(0.6, gt=0.0, lt=1.0)
    """Share of each set's groups (experiments; a test's two rounds) in the training part; stratified by label,
    chosen under ``seed``."""
    group_by: Literal["experiment", "vector"] = "experiment"
    """Failure-Dataset-OpenStack groups: one experiment each, or identical count vectors together."""
    shared_encoder_update: bool = False
    """Whether the real tasks' losses update the shared encoder (LoRA, pooling, projections). False (default): the
    shared encoder is fine-tuned by the simulator's fault-mode loss alone and every real head is fitted afterwards
    on the frozen states of its training part (``refit_heads``, required); the real logs are matched against the
    simulator's frozen templates (as at inference), never mined into them. The simulator head then does not depend
    on the real data at all: the issue's "must not get worse" holds by construction (measured: README). True: one
    batch per task in every training step through the shared encoder, weighted by ``loss_weight``; measured to cost
    the simulator head 0.07 (``loss_weight`` 0.25) to 0.21 (1.0) macro-F1 in a short run."""
    batch_size: int = Field(16, ge=1)
    """Real samples per task per training step (each worker; ``shared_encoder_update`` only)."""
    loss_weight: float = Field(0.25, ge=0.0)
    """Weight of each real task's cross-entropy beside the simulator's fault-mode loss
    (``shared_encoder_update`` only)."""
    max_lines: int = Field(2000, ge=1)
    """Service-log lines per FSE 2019 / Nezha sample."""
    refit_heads: bool = True
    """After fine-tuning, refit each task head by L2 logistic regression on the frozen states of its training
    part (the few joint steps a CPU budget allows leave the heads under-trained); False: keep the jointly trained
    heads."""
    head_l2: float = Field(1e-2, gt=0.0)
    """L2 penalty of that refit (on standardised states)."""
    seed: int = 0
    """Seeds the grouped training / held-out split."""

    @model_validator(mode="after")
    def _heads_are_trained(self) -> "RealTrainConfig":
        if not self.shared_encoder_update and not self.refit_heads:
            raise ValueError("refit_heads: false with shared_encoder_update: false leaves the real heads untrained "
                             "(they are fitted only by the refit on the frozen states); set refit_heads: true, or "
                             "shared_encoder_update: true to train them jointly")
        return self


class ServiceConfig(ConfigModel):
    """The encoder actor pool that serves semantic states to env runners."""

    renamed_keys: ClassVar[dict[str, str]] = {"adapter": "encoder_checkpoint",
                                               "max_wait_ms": "nothing (removed: Serve's @serve.batch joins requests)"}

    num_actors: int = Field(1, ge=1)
    """Encoder actors in the pool."""
    num_cpus: float = Field(1.0, ge=0.0)
    """CPUs per actor, i.e. per tensor-parallel rank (fractions allowed, e.g. 0.5 in tests)."""
    num_gpus: float = Field(0.0, ge=0.0)
    """GPUs per replica, split over its ``tensor_parallel`` ranks; > 0 uses DeepSpeed ``init_inference``."""
    tensor_parallel: int = Field(1, ge=1)
    """Ranks one replica's LM is sharded over (DeepSpeed inference tensor parallel, in a STRICT_PACK placement
    group on one node; NCCL on GPUs, gloo on CPU, where it works but is slower)."""
    max_batch: int = Field(32, ge=1)
    """Windows or texts per LM batch: a list is split into chunks of this size over the replicas."""
    lru_size: int = Field(65536, ge=1)
    """Entries of each actor's LRU cache of LM outputs."""
    encoder_checkpoint: str | None = None
    """Fine-tuned encoder checkpoint folder written by ``jobs/finetune_encoder.py --out`` (adapter + heads); None:
    the untrained ``encoder.model``. (Formerly ``adapter``.)"""

    @model_validator(mode="after")
    def _has_resources(self) -> "ServiceConfig":
        if self.num_cpus <= 0 and self.num_gpus <= 0:
            raise ValueError("num_cpus and num_gpus are both 0: give each actor some resource, e.g. num_cpus: 1")
        return self


class EncoderJobConfig(ConfigModel):
    """Top level of ``configs/encoder*.yaml``."""

    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    """The modal-aware encoder and the LLM semantic encoder."""
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    """The fine-tuning job."""
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    """The encoder actor pool."""
    real: RealTrainConfig = Field(default_factory=RealTrainConfig)
    """Real labelled data fine-tuned beside the simulator's (multi-task heads)."""
    split: str = "handpicked"
    """Named known/unknown split (``ifshm_ray/sim/data/splits.yaml``): the fault head's classes are its known types
    (+ healthy), and the checkpoint records it. A policy trained on another split refuses this encoder."""

    @model_validator(mode="after")
    def _split_and_classes(self) -> "EncoderJobConfig":
        from ifshm_ray.encoding.simdata import HEALTHY
        from ifshm_ray.sim.catalog import CatalogError, load_catalog

        try:
            known = load_catalog().known_in(self.split)
        except CatalogError as e:
            raise ValueError(str(e)) from None

        held = [f for f in self.encoder.fault_types if f not in known and f != HEALTHY]
        if held:
            raise ValueError(f"encoder.fault_types lists {held}, not known fault types of split {self.split!r} "
                             f"(known: {known} and {HEALTHY!r})")
        return self

    def training_hash(self) -> str:
        """Hash of what decides the fine-tuned encoder: the encoder and finetune sections, the split and the fault
        catalog the training windows come from (the service section does not count). Written to the encoder's
        metrics.json, so a pipeline can tell a stale encoder from a matching one."""
        import hashlib
        import json

        from ifshm_ray.sim.catalog import load_catalog

        desc = {"encoder": self.encoder.model_dump(), "finetune": self.finetune.model_dump(),
                "real": self.real.model_dump(),
                "catalog": load_catalog().sha256, "split": self.split}
        return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_from_dict(data: dict | None, *, source: str = "<dict>") -> EncoderJobConfig:
    """Validated :class:`EncoderJobConfig` from a plain dict (the parsed YAML); problems raise ``ConfigError``."""
    return EncoderJobConfig.from_dict(data, source=source)


def load_config(path: str | Path, overrides: Sequence[str] | dict | None = None) -> EncoderJobConfig:
    """A YAML file (sections ``encoder``, ``finetune``, ``service``) with ``overrides`` on top: dotted
    ``["encoder.model=minilm"]`` strings or a ``{"encoder.model": "minilm"}`` dict."""
    return _load_config(EncoderJobConfig, path, overrides)

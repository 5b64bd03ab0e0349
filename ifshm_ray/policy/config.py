"""Typed configuration of a policy-training job (``jobs/train.py``, ``benchmarks/bench_train.py``), from YAML.

A YAML file has up to seven sections, each a :class:`~ifshm_ray.config.ConfigModel` below; missing keys take the
defaults, unknown keys are refused with the list of allowed ones, and a bad value is refused when the file is
loaded, with its YAML path and what is allowed (one :class:`~ifshm_ray.config.ConfigError`)::

    env:        {entry_point: "ifshm_ray.env:FaultInjectionEnv", config: {faults: known, seed: 0}}
    policy:     {kind: hierarchical, encoder_hiddens: [128, 128], entropy_coeff_high: 0.01, ...}
    ppo:        {lr: 3.0e-4, train_batch_size: 2000, minibatch_size: 500, num_epochs: 4, ...}
    runners:    {num_env_runners: 1, num_envs_per_env_runner: 8, ...}
    fault_tolerance: {restart_failed_env_runners: true, ...}
    run:        {iterations: 30, max_wall_s: 840, checkpoint_every: 5, seed: 0}
    replay:     {enabled: false, buffer: {capacity: 50000}, sil: {weight: 1.0}, scenario_replay: true}

Overrides use the shared dotted syntax: ``load_train_config(path, overrides=["ppo.lr=1e-3"])``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Sequence

from pydantic import Field, field_validator, model_validator

from ifshm_ray.config import ConfigModel, SimConfig, load_config
from ifshm_ray.meta.config import MetaConfig
from ifshm_ray.replay.config import ReplaySection

Hiddens = list[Annotated[int, Field(ge=1)]]


class EnvSection(ConfigModel):
    """The environment every env runner builds."""

    entry_point: str = "ifshm_ray.env:make_vector_env"
    """``"package.module:callable"`` building the env from one ``config`` dict (a gymnasium Env class, or with
    ``runners.gym_env_vectorize_mode: vector_entry_point`` a factory of a whole VectorEnv such as
    ``ifshm_ray.env:make_vector_env``), or a name registered with ``ray.tune.register_env`` (names starting with
    ``ifshm-`` are registered by ``ifshm_ray.env.register()``)."""
    config: dict[str, Any] = Field(default_factory=lambda: {"faults": "known", "render_telemetry": False})
    """The env's config dict (``faults``, ``SimConfig`` options, ``render_telemetry``: off for training, the policy
    reads only the numeric observation). ``seed`` is filled from ``run.seed`` if absent. ``split``: the named
    known/unknown split (``ifshm_ray/sim/data/splits.yaml``) that ``faults: known`` trains on; the policy bundle
    records it."""

    @field_validator("config")
    @classmethod
    def _named_split(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "split" in value:
            from ifshm_ray.sim.catalog import CatalogError, load_catalog

            try:
                load_catalog(value.get("catalog")).check_split(value["split"])
            except CatalogError as e:
                raise ValueError(f"split: {e}") from None
        return value

    @property
    def split(self) -> str:
        """The named known/unknown split the env trains on (``config["split"]``, else ``SimConfig``'s default)."""
        return str(self.config.get("split", SimConfig.model_fields["split"].default))


class PolicySection(ConfigModel):
    """The RLModule: network sizes, entropy bonuses and the optional LLM semantic state."""

    renamed_keys: ClassVar[dict[str, str]] = {"semantic_encoder": "encoder_checkpoint"}

    kind: Literal["hierarchical", "flat"] = "hierarchical"
    """``hierarchical`` (pi_h(category) then pi_l(target, ratio | category)) or ``flat`` (one masked Discrete)."""
    encoder_hiddens: Hiddens = Field(default_factory=lambda: [256, 256])
    """Hidden sizes of the shared observation encoder MLP."""
    head_hiddens: Hiddens = Field(default_factory=lambda: [128])
    """Hidden sizes of each policy head (category, target, ratio; or the flat head)."""
    vf_hiddens: Hiddens = Field(default_factory=lambda: [256, 256])
    """Hidden sizes of the value MLP (ignored when ``vf_share_encoder``)."""
    activation: Literal["tanh", "relu"] = "tanh"
    """``tanh`` or ``relu``."""
    category_embed_dim: int = Field(16, ge=1)
    """Size of the category embedding that conditions the low-level heads."""
    vf_share_encoder: bool = False
    """Value head on the shared encoder (True) or a separate MLP on the raw features (False)."""
    low_entropy: Literal["expected", "sampled"] = "expected"
    """Low-level entropy: ``expected`` = E_c[H(t|c)+H(r|c)] exactly, ``sampled`` = at the stored category."""
    entropy_coeff_high: float = Field(0.01, ge=0.0)
    """Entropy bonus coefficient of the high level (category)."""
    entropy_coeff_low: float = Field(0.01, ge=0.0)
    """Entropy bonus coefficient of the low level (target and ratio given the category)."""
    encoder_checkpoint: str | None = None
    """PPO with the LLM semantic state: either a fine-tuned encoder checkpoint folder (``jobs/finetune_encoder.py
    --out``, e.g. ``results/encoder``) or a model preset name (``smollm2``, ``minilm``, ``tiny-llama``, ...; its
    fault head untrained). ``jobs/train.py`` embeds every log template and alarm text with it once
    (``<out>/semantic_items.npz``) and the policy pools those embeddings per window
    (:class:`ifshm_ray.policy.module.SemanticStateBlock`). None: numeric features only. (Formerly
    ``semantic_encoder``.)"""
    semantic_table: str | None = None
    """A prebuilt ``semantic_items.npz`` (``python -m ifshm_ray.encoding.rl_state``) instead of
    ``encoder_checkpoint``."""
    semantic_init_from_encoder: bool = True
    """Start the policy's attention pooling and projection from the fine-tuned encoder's weights."""
    semantic_keep_counts: bool = False
    """False: the LLM state replaces the raw log-template counts in the policy's input (logs are read only through
    the LM); True: it joins them (numeric features + LLM state)."""
    act_on: Literal["always", "alert"] = "always"
    """``always``: the policy may act in any state. ``alert``: it acts only while the telemetry shows an incident
    (an alert other than the runbook's info-level ones pending or firing, or an SLO broken) and observes otherwise,
    as an alert-triggered healer does; the trigger is part of the module (:mod:`ifshm_ray.policy.trigger`), so it
    holds in training, evaluation and Serve alike."""

    target_head: Literal["mlp", "entity"] = "mlp"
    """The hierarchical policy's target head: ``mlp`` (default, as before: one MLP from the shared encoding and the
    category embedding to one logit per target) or ``entity``: those logits plus a score per target from that
    target's own features with weights shared over the targets
    (:class:`~ifshm_ray.policy.module.EntityTargetHead`). Why: measured 2026-12-01 (README, "Demonstrations in the
    replay"), the trained policies heal 0-5% of the known fault types rooted on a node (the runbook 73%) against
    61-90% of those rooted on a service: picking the faulty node out of the flat observation is what they do not
    learn. Not for ``kind: flat``."""

    @model_validator(mode="after")
    def _check_target_head(self) -> "PolicySection":
        if self.target_head == "entity" and self.kind != "hierarchical":
            raise ValueError("policy.target_head: entity needs kind: hierarchical (the flat policy has no target head)")
        return self

    def rl_module_config(self, env_config: dict | None = None) -> dict:
        """The ``model_config`` dict for the RLModule (pydantic reserves the name ``model_config`` itself);
        ``env_config`` (the env the module acts in) is needed with ``act_on: alert``."""
        trigger = {}
        if self.act_on == "alert":
            if env_config is None:
                raise ValueError("policy.act_on: alert needs the env config to place the trigger's features")
            from ifshm_ray.policy.trigger import trigger_spec

            trigger = {"act_trigger": trigger_spec(env_config)}
        if self.target_head == "entity":
            from ifshm_ray.policy.trigger import entity_layout

            trigger["entity_layout"] = entity_layout(env_config)
        semantic = {}
        if self.semantic_table:
            from ifshm_ray.encoding.rl_state import load_table

            t = load_table(self.semantic_table)
            semantic = {"semantic_table": str(Path(self.semantic_table).expanduser().resolve()),
                        "semantic_shape": [*t["embeddings"].shape, len(t["drop_index"]), t["text_proj_w"].shape[0]],
                        "semantic_init_from_encoder": self.semantic_init_from_encoder,
                        "semantic_keep_counts": self.semantic_keep_counts}
        return {**semantic,
            "encoder_hiddens": list(self.encoder_hiddens),
            "head_hiddens": list(self.head_hiddens),
            "vf_hiddens": list(self.vf_hiddens),
            "activation": self.activation,
            "category_embed_dim": self.category_embed_dim,
            "vf_share_encoder": self.vf_share_encoder,
            "low_entropy": self.low_entropy,
            **trigger,
        }


class PPOSection(ConfigModel):
    """PPO's loss and SGD settings."""

    lr: float = Field(3e-4, gt=0.0)
    """Adam learning rate."""
    gamma: float = Field(0.99, ge=0.0, le=1.0)
    """Discount factor."""
    lambda_: float = Field(0.95, ge=0.0, le=1.0)
    """GAE lambda."""
    clip_param: float = Field(0.2, gt=0.0)
    """PPO ratio clip."""
    vf_loss_coeff: float = Field(0.5, ge=0.0)
    """Value-loss coefficient."""
    vf_clip_param: float = Field(10000.0, gt=0.0)
    """Clip of the squared value error (reward units squared). RLlib *clamps* the squared error, which zeroes its
    gradient beyond the clip; returns here reach -100, so keep it large (RLlib's default 10 stalls the critic)."""
    use_kl_loss: bool = False
    """Add PPO's adaptive KL penalty (``kl_coeff``, ``kl_target``)."""
    kl_coeff: float = Field(0.2, ge=0.0)
    """Initial KL coefficient (only with ``use_kl_loss``)."""
    grad_clip: float | None = Field(0.5, gt=0.0)
    """Global gradient-norm clip (None: off)."""
    train_batch_size: int = Field(2000, ge=1)
    """Env steps per training iteration (per learner)."""
    minibatch_size: int = Field(500, ge=1)
    """SGD minibatch size (<= ``train_batch_size``)."""
    num_epochs: int = Field(4, ge=1)
    """SGD passes over each train batch."""

    @model_validator(mode="after")
    def _minibatch_fits(self) -> "PPOSection":
        if self.minibatch_size > self.train_batch_size:
            raise ValueError(f"minibatch_size ({self.minibatch_size}) must be <= train_batch_size "
                             f"({self.train_batch_size})")
        return self


class RunnersSection(ConfigModel):
    """Env runners and learners (where sampling and SGD run)."""

    num_env_runners: int = Field(1, ge=0)
    """Remote env-runner actors (0: sample in the driver process)."""
    num_envs_per_env_runner: int = Field(8, ge=1)
    """Vectorised envs stepped together by each runner (one batched forward pass per step)."""
    gym_env_vectorize_mode: Literal["sync", "async", "vector_entry_point"] = "sync"
    """``sync`` (in-process gymnasium SyncVectorEnv), ``async`` (one subprocess per env) or ``vector_entry_point``
    (the env entry point builds the whole vector env itself, e.g. ``ifshm_ray.env:make_vector_env``: one batched
    simulator for all envs of a runner, much faster)."""
    rollout_fragment_length: int | Literal["auto"] = "auto"
    """Steps per env per sample() call (>= 1); ``auto`` = train_batch_size / (runners * envs)."""
    num_cpus_per_env_runner: float = Field(1.0, ge=0.0)
    """CPUs reserved per env runner (fractional is fine on a small box)."""
    num_learners: int = Field(0, ge=0)
    """Remote learner actors (0: learner in the driver)."""
    num_gpus_per_learner: float = Field(0.0, ge=0.0)
    """GPUs per learner (cluster)."""
    torch_threads: int = Field(0, ge=0)
    """torch.set_num_threads in the driver/learner (0: leave torch's default)."""

    @field_validator("rollout_fragment_length")
    @classmethod
    def _positive_fragment(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("use a number of steps >= 1, or 'auto'")
        return value


class FaultToleranceSection(ConfigModel):
    """What happens when an env runner or a sub-environment dies."""

    restart_failed_env_runners: bool = True
    """Replace an env runner that died (actor killed, node lost) and keep training."""
    max_num_env_runner_restarts: int = Field(1000, ge=0)
    """Restarts allowed over the whole run."""
    delay_between_env_runner_restarts_s: float = Field(1.0, ge=0.0)
    """Wait before restarting a failed env runner."""
    num_consecutive_env_runner_failures_tolerance: int = Field(100, ge=0)
    """Consecutive failed sample rounds tolerated before the run fails."""
    env_runner_health_probe_timeout_s: float = Field(30.0, gt=0.0)
    """Health-probe timeout for env runners."""
    restart_failed_sub_environments: bool = False
    """Recreate a crashed sub-env inside a runner instead of failing the runner."""


class RunSection(ConfigModel):
    """Budget, checkpoints and seed of the run."""

    iterations: int = Field(30, ge=1)
    """Training iterations (each = one train batch of env steps)."""
    max_wall_s: float = Field(840.0, gt=0.0)
    """Stop after this many wall seconds (whichever of the two limits comes first)."""
    checkpoint_every: int = Field(5, ge=1)
    """Save an algorithm checkpoint into ``--out/checkpoints/`` every N iterations (and at the end)."""
    keep_checkpoints: int = Field(2, ge=1)
    """Keep the N newest periodic checkpoints (>= 1; the latest checkpoint is always kept)."""
    seed: int = Field(0, ge=0)
    """Seed of torch, numpy, RLlib and the envs (overridden by ``--seed``)."""


class TrainConfig(ConfigModel):
    """Top level of ``configs/demo*.yaml``, ``configs/tiny.yaml``, ``configs/cluster_train.yaml``."""

    env: EnvSection = Field(default_factory=EnvSection)
    """The environment."""
    policy: PolicySection = Field(default_factory=PolicySection)
    """The policy's RLModule."""
    ppo: PPOSection = Field(default_factory=PPOSection)
    """PPO's loss and SGD."""
    runners: RunnersSection = Field(default_factory=RunnersSection)
    """Env runners and learners."""
    fault_tolerance: FaultToleranceSection = Field(default_factory=FaultToleranceSection)
    """Env-runner restarts."""
    run: RunSection = Field(default_factory=RunSection)
    """Budget, checkpoints, seed."""
    replay: ReplaySection = Field(default_factory=ReplaySection)
    """Trajectory replay (shared actor + self-imitation) and scenario replay (issue 15); off by default."""
    meta: MetaConfig = Field(default_factory=MetaConfig)
    """The meta-controller (issue 15; needs ``replay.enabled``): steers the replay mix and the scenario weights,
    its state is saved with every checkpoint and into the policy bundle (Serve's gate reads it)."""

    @model_validator(mode="after")
    def _replay_and_meta(self) -> "TrainConfig":
        if self.replay.enabled and abs(self.replay.buffer.gamma - self.ppo.gamma) > 0.0:
            raise ValueError(f"replay.buffer.gamma ({self.replay.buffer.gamma}) must equal ppo.gamma "
                             f"({self.ppo.gamma}): the stored returns-to-go are compared with the PPO value function")
        dd = (self.env.config.get("reward") or {}).get("duration_discount")
        if dd is not None and abs(float(dd) - self.ppo.gamma) > 0.0:
            raise ValueError(f"env.config.reward.duration_discount ({dd}) must equal ppo.gamma ({self.ppo.gamma}): it "
                             "discounts the time inside a step as the learner discounts the steps")
        if self.meta.enabled and not self.replay.enabled:
            raise ValueError("meta.enabled needs replay.enabled: the meta-controller steers the replay")
        if self.replay.known_types is not None:
            from ifshm_ray.sim.catalog import load_catalog

            split_known = load_catalog(self.env.config.get("catalog")).known_in(self.split)
            bad = sorted(set(self.replay.known_types) - set(split_known))
            if bad or not self.replay.known_types:
                raise ValueError(f"replay.known_types must be a non-empty subset of split {self.split!r}'s known "
                                 f"types; {bad or 'an empty list'} is not")
        if self.meta.enabled and self.meta.known_stratum != self.replay.buffer.known_stratum:
            raise ValueError(f"meta.known_stratum ({self.meta.known_stratum}) must equal replay.buffer.known_stratum "
                             f"({self.replay.buffer.known_stratum})")
        if self.meta.enabled and not self.meta.strata and self.replay.novel_stratum != self.replay.buffer.known_stratum:
            raise ValueError(f"meta.strata: false (one stratum) but replay.novel_stratum ({self.replay.novel_stratum}) "
                             f"differs from replay.buffer.known_stratum ({self.replay.buffer.known_stratum}): the env "
                             "runners would still fill a second stratum; set them equal")
        return self

    @property
    def split(self) -> str:
        """The named known/unknown split of the run (the env config's): what ``known`` means for training, the
        semantic table and the encoder checkpoint; recorded in the policy bundle."""
        return self.env.split


def train_config_from_dict(data: dict[str, Any] | None, *, source: str = "<dict>") -> TrainConfig:
    """Validated :class:`TrainConfig` from a plain dict (parsed YAML); problems raise ``ConfigError``."""
    return TrainConfig.from_dict(data, source=source)


def load_train_config(path: str | Path, overrides: Sequence[str] | dict | None = None) -> TrainConfig:
    """A YAML file into a validated :class:`TrainConfig`, with dotted ``overrides`` (``["ppo.lr=1e-3"]``) on top."""
    return load_config(TrainConfig, path, overrides)

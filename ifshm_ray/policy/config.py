"""Typed configuration of a policy-training job (``jobs/train.py``, ``benchmarks/bench_train.py``), from YAML.

A YAML file has up to six sections, each a dataclass below; missing keys take the defaults, unknown keys are
refused with the list of allowed ones::

    env:        {entry_point: "ifshm_ray.env:FaultInjectionEnv", config: {faults: known, seed: 0}}
    policy:     {kind: hierarchical, encoder_hiddens: [128, 128], entropy_coeff_high: 0.01, ...}
    ppo:        {lr: 3.0e-4, train_batch_size: 2000, minibatch_size: 500, num_epochs: 4, ...}
    runners:    {num_env_runners: 1, num_envs_per_env_runner: 8, ...}
    fault_tolerance: {restart_failed_env_runners: true, ...}
    run:        {iterations: 30, max_wall_s: 840, checkpoint_every: 5, seed: 0}
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class EnvSection:
    entry_point: str = "ifshm_ray.env:make_vector_env"
    """``"package.module:callable"`` building the env from one ``config`` dict (a gymnasium Env class, or with
    ``runners.gym_env_vectorize_mode: vector_entry_point`` a factory of a whole VectorEnv such as
    ``ifshm_ray.env:make_vector_env``), or a name registered with ``ray.tune.register_env`` (names starting with
    ``ifshm-`` are registered by ``ifshm_ray.env.register()``)."""
    config: dict = field(default_factory=lambda: {"faults": "known", "render_telemetry": False})
    """The env's config dict (``faults``, ``SimConfig`` options, ``render_telemetry``: off for training, the policy
    reads only the numeric observation). ``seed`` is filled from ``run.seed`` if absent."""


@dataclass
class PolicySection:
    kind: str = "hierarchical"
    """``hierarchical`` (pi_h(category) then pi_l(target, ratio | category)) or ``flat`` (one masked Discrete)."""
    encoder_hiddens: list = field(default_factory=lambda: [256, 256])
    """Hidden sizes of the shared observation encoder MLP."""
    head_hiddens: list = field(default_factory=lambda: [128])
    """Hidden sizes of each policy head (category, target, ratio; or the flat head)."""
    vf_hiddens: list = field(default_factory=lambda: [256, 256])
    """Hidden sizes of the value MLP (ignored when ``vf_share_encoder``)."""
    activation: str = "tanh"
    """``tanh`` or ``relu``."""
    category_embed_dim: int = 16
    """Size of the category embedding that conditions the low-level heads."""
    vf_share_encoder: bool = False
    """Value head on the shared encoder (True) or a separate MLP on the raw features (False)."""
    low_entropy: str = "expected"
    """Low-level entropy: ``expected`` = E_c[H(t|c)+H(r|c)] exactly, ``sampled`` = at the stored category."""
    entropy_coeff_high: float = 0.01
    """Entropy bonus coefficient of the high level (category)."""
    entropy_coeff_low: float = 0.01
    """Entropy bonus coefficient of the low level (target and ratio given the category)."""
    semantic_encoder: str | None = None
    """PPO with the LLM semantic state: an encoder checkpoint folder (``jobs/finetune_encoder.py --out``, e.g.
    ``results/encoder``) or a model preset. ``jobs/train.py`` embeds every log template and alarm text with it once
    (``<out>/semantic_items.npz``) and the policy pools those embeddings per window
    (:class:`ifshm_ray.policy.module.SemanticStateBlock`). None: numeric features only."""
    semantic_table: str | None = None
    """A prebuilt ``semantic_items.npz`` (``python -m ifshm_ray.encoding.rl_state``) instead of ``semantic_encoder``."""
    semantic_init_from_encoder: bool = True
    """Start the policy's attention pooling and projection from the fine-tuned encoder's weights."""
    semantic_keep_counts: bool = False
    """False: the LLM state replaces the raw log-template counts in the policy's input (logs are read only through
    the LM); True: it joins them (numeric features + LLM state)."""

    def model_config(self) -> dict:
        """The ``model_config`` dict for the RLModule."""
        semantic = {}
        if self.semantic_table:
            from ifshm_ray.encoding.rl_state import load_table

            t = load_table(self.semantic_table)
            semantic = {"semantic_table": str(Path(self.semantic_table).expanduser().resolve()),
                        "semantic_shape": [*t["embeddings"].shape, len(t["drop_index"]), t["text_proj_w"].shape[0]],
                        "semantic_init_from_encoder": bool(self.semantic_init_from_encoder),
                        "semantic_keep_counts": bool(self.semantic_keep_counts)}
        return {**semantic,
            "encoder_hiddens": list(self.encoder_hiddens),
            "head_hiddens": list(self.head_hiddens),
            "vf_hiddens": list(self.vf_hiddens),
            "activation": self.activation,
            "category_embed_dim": int(self.category_embed_dim),
            "vf_share_encoder": bool(self.vf_share_encoder),
            "low_entropy": self.low_entropy,
        }


@dataclass
class PPOSection:
    lr: float = 3e-4
    """Adam learning rate."""
    gamma: float = 0.99
    """Discount factor."""
    lambda_: float = 0.95
    """GAE lambda."""
    clip_param: float = 0.2
    """PPO ratio clip."""
    vf_loss_coeff: float = 0.5
    """Value-loss coefficient."""
    vf_clip_param: float = 10000.0
    """Clip of the squared value error (reward units squared). RLlib *clamps* the squared error, which zeroes its
    gradient beyond the clip; returns here reach -100, so keep it large (RLlib's default 10 stalls the critic)."""
    use_kl_loss: bool = False
    """Add PPO's adaptive KL penalty (``kl_coeff``, ``kl_target``)."""
    kl_coeff: float = 0.2
    """Initial KL coefficient (only with ``use_kl_loss``)."""
    grad_clip: float | None = 0.5
    """Global gradient-norm clip (None: off)."""
    train_batch_size: int = 2000
    """Env steps per training iteration (per learner)."""
    minibatch_size: int = 500
    """SGD minibatch size."""
    num_epochs: int = 4
    """SGD passes over each train batch."""


@dataclass
class RunnersSection:
    num_env_runners: int = 1
    """Remote env-runner actors (0: sample in the driver process)."""
    num_envs_per_env_runner: int = 8
    """Vectorised envs stepped together by each runner (one batched forward pass per step)."""
    gym_env_vectorize_mode: str = "sync"
    """``sync`` (in-process gymnasium SyncVectorEnv), ``async`` (one subprocess per env) or ``vector_entry_point``
    (the env entry point builds the whole vector env itself, e.g. ``ifshm_ray.env:make_vector_env``: one batched
    simulator for all envs of a runner, much faster)."""
    rollout_fragment_length: int | str = "auto"
    """Steps per env per sample() call; ``auto`` = train_batch_size / (runners * envs)."""
    num_cpus_per_env_runner: float = 1.0
    """CPUs reserved per env runner (fractional is fine on a small box)."""
    num_learners: int = 0
    """Remote learner actors (0: learner in the driver)."""
    num_gpus_per_learner: float = 0.0
    """GPUs per learner (cluster)."""
    torch_threads: int = 0
    """torch.set_num_threads in the driver/learner (0: leave torch's default)."""


@dataclass
class FaultToleranceSection:
    restart_failed_env_runners: bool = True
    """Replace an env runner that died (actor killed, node lost) and keep training."""
    max_num_env_runner_restarts: int = 1000
    """Restarts allowed over the whole run."""
    delay_between_env_runner_restarts_s: float = 1.0
    """Wait before restarting a failed env runner."""
    num_consecutive_env_runner_failures_tolerance: int = 100
    """Consecutive failed sample rounds tolerated before the run fails."""
    env_runner_health_probe_timeout_s: float = 30.0
    """Health-probe timeout for env runners."""
    restart_failed_sub_environments: bool = False
    """Recreate a crashed sub-env inside a runner instead of failing the runner."""


@dataclass
class RunSection:
    iterations: int = 30
    """Training iterations (each = one train batch of env steps)."""
    max_wall_s: float = 840.0
    """Stop after this many wall seconds (whichever of the two limits comes first)."""
    checkpoint_every: int = 5
    """Save an algorithm checkpoint into ``--out/checkpoints/`` every N iterations (and at the end)."""
    keep_checkpoints: int = 2
    """Keep the N newest periodic checkpoints."""
    seed: int = 0
    """Seed of torch, numpy, RLlib and the envs (overridden by ``--seed``)."""


@dataclass
class TrainConfig:
    env: EnvSection = field(default_factory=EnvSection)
    policy: PolicySection = field(default_factory=PolicySection)
    ppo: PPOSection = field(default_factory=PPOSection)
    runners: RunnersSection = field(default_factory=RunnersSection)
    fault_tolerance: FaultToleranceSection = field(default_factory=FaultToleranceSection)
    run: RunSection = field(default_factory=RunSection)

    def validate(self) -> "TrainConfig":
        """Checks values; raises ``ValueError`` saying what to change."""
        if self.policy.kind not in ("hierarchical", "flat"):
            raise ValueError(f"policy.kind must be 'hierarchical' or 'flat'; got {self.policy.kind!r}.")
        if self.ppo.minibatch_size > self.ppo.train_batch_size:
            raise ValueError(
                f"ppo.minibatch_size ({self.ppo.minibatch_size}) must be <= ppo.train_batch_size "
                f"({self.ppo.train_batch_size})."
            )
        if self.runners.num_envs_per_env_runner < 1:
            raise ValueError("runners.num_envs_per_env_runner must be >= 1.")
        if self.runners.num_env_runners < 0:
            raise ValueError("runners.num_env_runners must be >= 0.")
        if self.runners.gym_env_vectorize_mode not in ("sync", "async", "vector_entry_point"):
            raise ValueError("runners.gym_env_vectorize_mode must be 'sync', 'async' or 'vector_entry_point'.")
        if self.run.iterations < 1 or self.run.checkpoint_every < 1:
            raise ValueError("run.iterations and run.checkpoint_every must be >= 1.")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTION_CLASSES = {
    "env": EnvSection,
    "policy": PolicySection,
    "ppo": PPOSection,
    "runners": RunnersSection,
    "fault_tolerance": FaultToleranceSection,
    "run": RunSection,
}


def _coerce(cls: type, key: str, value: Any, source: str) -> Any:
    """YAML reads ``3e-4`` as a string; turn such values into the field's numeric type."""
    ftype = next(f.type for f in dataclasses.fields(cls) if f.name == key)
    if isinstance(value, str) and ftype in ("float", "float | None", "int"):
        try:
            return int(value) if ftype == "int" else float(value)
        except ValueError:
            raise ValueError(f"{source}: {cls.__name__}.{key} must be a number; got {value!r}.") from None
    return value


def train_config_from_dict(data: dict[str, Any] | None, *, source: str = "<dict>") -> TrainConfig:
    """Builds a validated :class:`TrainConfig`; unknown sections/keys raise ``ValueError`` naming the allowed ones."""
    data = dict(data or {})
    unknown = set(data) - set(_SECTION_CLASSES)
    if unknown:
        raise ValueError(f"{source}: unknown section(s) {sorted(unknown)}; allowed: {sorted(_SECTION_CLASSES)}.")
    sections = {}
    for name, cls in _SECTION_CLASSES.items():
        values = data.get(name) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{source}: section {name!r} must be a mapping; got {type(values).__name__}.")
        allowed = {f.name for f in dataclasses.fields(cls)}
        bad = set(values) - allowed
        if bad:
            raise ValueError(f"{source}: unknown key(s) {sorted(bad)} in {name!r}; allowed: {sorted(allowed)}.")
        sections[name] = cls(**{k: _coerce(cls, k, v, source) for k, v in values.items()})
    return TrainConfig(**sections).validate()


def load_train_config(path: str | Path) -> TrainConfig:
    """Reads a YAML file into a validated :class:`TrainConfig`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist (see configs/*.yaml).")
    with path.open() as fh:
        return train_config_from_dict(yaml.safe_load(fh), source=str(path))

"""The one typed configuration layer: pydantic v2 models with a docstring per field, loadable from YAML.

Every job owns one top-level config model; nested sections are models too. All of them derive from
:class:`ConfigModel`:

* unknown keys are refused (``extra="forbid"``) with the list of valid ones;
* values are read as their field's type where that is unambiguous (YAML reads ``2e-3`` as a string: it becomes
  0.002; ``"64"`` becomes 64 for an int field; ``"false"`` becomes False for a bool field) and rejected otherwise;
* every problem is one :class:`ConfigError` whose message names the file, the dotted YAML path, the bad value and
  what is allowed, e.g. ``configs/demo.yaml: policy.activation = 'gelu': Input should be 'tanh' or 'relu'``.

One override syntax serves every job's command line: ``--set section.key=value`` (repeatable; the value is read as
YAML, so ``--set ppo.lr=1e-3``, ``--set env.config.faults=[node_crash,dns_upstream_failure]``,
``--set policy.encoder_checkpoint=null``). :func:`add_override_arg` adds it to an ``argparse`` parser and
:func:`load_config` applies it on top of the YAML file.

This module also holds the simulator's own configuration (:class:`SimConfig`), which the environment, the
evaluation harness and every job share.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

T = TypeVar("T", bound="ConfigModel")
_UNSET = object()


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which one (file, dotted path, value) and how to fix it."""


class ConfigModel(BaseModel):
    """Base of every configuration section: strict about keys, lenient about YAML's number-as-string."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True,
                              validate_default=True, protected_namespaces=())

    renamed_keys: ClassVar[dict[str, str]] = {}
    """Keys of older versions -> their new name; a config that still uses one is refused with the new name."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_renamed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and cls.renamed_keys:
            old = [k for k in data if k in cls.renamed_keys]
            if old:
                raise ValueError("; ".join(f"key {k!r} was renamed: use {cls.renamed_keys[k]!r}" for k in old))
        return data

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """A section left empty in YAML (``fault_tolerance:`` with nothing under it) reads None: its defaults."""
        if isinstance(data, dict) and any(v is None for v in data.values()):
            return {k: {} if v is None and k in cls.model_fields and _is_section(cls.model_fields[k].annotation)
                    else v for k, v in data.items()}
        return data

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, type(self), type(self).__name__)) from None

    # pydantic calls a model's own __init__ for nested sections too (which would wrap errors twice); marked as the
    # base init, it is used only for direct construction (``SimConfig(step_s=-1)`` -> ConfigError).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def __setattr__(self, name: str, value: Any) -> None:
        old = self.__dict__.get(name, _UNSET)
        try:
            super().__setattr__(name, value)
        except ValidationError as e:
            if old is not _UNSET:  # a model-level check failed after pydantic stored the value: undo it
                self.__dict__[name] = old
            raise ConfigError(format_validation_error(e, type(self), type(self).__name__)) from None

    def validate(self: T) -> T:  # type: ignore[override]  (pydantic's deprecated classmethod of that name)
        """Check the whole model again and return it (models are already checked when built and on assignment;
        this catches in-place edits of nested lists and dicts)."""
        type(self).from_dict(self.model_dump(), source=type(self).__name__)
        return self

    @classmethod
    def from_dict(cls: type[T], data: dict | None, *, source: str = "<config>") -> T:
        """Validated instance from a plain ``dict`` (parsed YAML); problems raise :class:`ConfigError`."""
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"{source}: must be a mapping of {cls.__name__} fields, got {_short(data)}")
        try:
            return cls.model_validate(data or {})
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, cls, source)) from None

    @classmethod
    def load(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] | dict | None = None) -> T:
        """From a YAML file (None: the defaults) with overrides on top; see :func:`load_config`."""
        return load_config(cls, path, overrides)

    def to_dict(self) -> dict:
        """A plain (YAML/JSON-serialisable) dict of every field."""
        return self.model_dump(mode="json")


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, ConfigModel)


# ------------------------------------------------------------------------------------------------ errors
def _short(value: Any, limit: int = 80) -> str:
    s = repr(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _model_at(cls: type[BaseModel], loc: Sequence[Any]) -> type[BaseModel] | None:
    """The config model at ``loc`` inside ``cls`` (for listing valid keys), or None."""
    cur: Any = cls
    for part in loc:
        if not (isinstance(cur, type) and issubclass(cur, BaseModel)) or part not in cur.model_fields:
            return None
        ann = cur.model_fields[part].annotation
        cur = next((a for a in (ann, *getattr(ann, "__args__", ())) if isinstance(a, type)
                    and issubclass(a, BaseModel)), None)
    return cur if isinstance(cur, type) and issubclass(cur, BaseModel) else None


def format_validation_error(err: ValidationError, cls: type[BaseModel], source: str) -> str:
    """One readable line per problem: ``source: dotted.path = value: what is wrong / allowed``."""
    lines = []
    for e in err.errors(include_url=False):
        loc = [p for p in e["loc"] if isinstance(p, (str, int))]
        # a union's branch names ("str", "list[str]", "function-after[...]") are not YAML keys
        keys = [p for p in loc if not (isinstance(p, str) and ("[" in p or p in ("str", "int", "float", "bool")))]
        where = ".".join(str(p) for p in keys) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if e["type"] == "extra_forbidden":
            parent = _model_at(cls, [p for p in keys[:-1] if isinstance(p, str)])
            valid = sorted(parent.model_fields) if parent is not None else []
            lines.append(f"{where}: unknown config key; valid keys here: {valid}")
        elif e["type"] in ("value_error", "assertion_error") and not keys:
            lines.append(msg)
        elif isinstance(e.get("input"), dict):  # a whole section: its check failed, the message says why
            lines.append(f"{where}: {msg}")
        else:
            lines.append(f"{where} = {_short(e.get('input'))}: {msg}")
    head = f"{source}: " if len(lines) == 1 else f"{source}: {len(lines)} problems:\n  "
    return head + "\n  ".join(lines)


# ------------------------------------------------------------------------------------------------ loading
def parse_overrides(items: Sequence[str] | dict | None) -> dict:
    """``["a.b=1", "c=[x, y]"]`` -> ``{"a": {"b": 1}, "c": ["x", "y"]}`` (values read as YAML). A dict whose keys
    may be dotted (``{"a.b": 1}``) is nested the same way."""
    if not items:
        return {}
    pairs: list[tuple[str, Any]]
    if isinstance(items, dict):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items:
            key, sep, raw = str(item).partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"override {item!r} must look like section.key=value, e.g. ppo.lr=1e-3")
            try:
                value = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError as e:
                raise ConfigError(f"override {item!r}: the value is not valid YAML ({e})") from None
            pairs.append((key.strip(), value))
    out: dict = {}
    for key, value in pairs:
        parts = key.split(".")
        if any(not p for p in parts):
            raise ConfigError(f"override key {key!r} has an empty part; use section.key=value")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r} conflicts with another override of {p!r}")
        node[parts[-1]] = value
    return out


def merge(base: dict, top: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else in ``top`` replaces."""
    out = dict(base)
    for k, v in top.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path, what: str = "config file") -> dict:
    """A YAML file's top-level mapping; a missing file, bad YAML or a non-mapping raise :class:`ConfigError`."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r} does not exist (see configs/*.yaml for examples)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {str(p)!r} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {str(p)!r} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] | dict | None = None) -> T:
    """``cls`` from a YAML file (None: the defaults) with ``overrides`` (``["a.b=v", ...]`` or a dict) on top."""
    data = read_yaml(path) if path is not None else {}
    over = parse_overrides(overrides)
    source = str(path) if path is not None else "<defaults>"
    if over:
        source += " + overrides"
    return cls.from_dict(merge(data, over), source=source)


def add_override_arg(parser: argparse.ArgumentParser) -> None:
    """Adds the shared ``--set section.key=value`` option (repeatable) to a job's parser."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value by its dotted path, e.g. --set ppo.lr=1e-3 (repeatable; "
                             "the value is read as YAML)")


# ----------------------------------------------------------------------- backwards-compatible helpers
def from_dict(cls: type[T], data: dict | None, *, path: str = "") -> T:
    """``cls.from_dict(data)`` (kept for callers of the old dataclass layer)."""
    return cls.from_dict(data, source=path.rstrip(".") or "<config>")


def load_yaml(cls: type[T], path: str | Path | None, overrides: Sequence[str] | dict | None = None) -> T:
    """``load_config(cls, path, overrides)`` (kept for callers of the old dataclass layer)."""
    return load_config(cls, path, overrides)


def to_dict(obj: ConfigModel) -> dict:
    """A config model as a plain dict."""
    return obj.to_dict()


# ------------------------------------------------------------------------------------------------ simulator
class TopologyConfig(ConfigModel):
    """The simulated cloud AI cluster."""

    control_nodes: int = Field(2, ge=1)
    """Nodes hosting the control plane and stateful stores (CPU only)."""
    gpu_nodes: int = Field(6, ge=2)
    """GPU worker nodes hosting inference servers, training workers and per-node agents (>= 2: draining one must
    leave one)."""
    gpus_per_node: int = Field(4, ge=1)
    """GPUs on every GPU node."""
    inference_replicas: int = Field(8, ge=1)
    """Replicas of the model-inference server (1 GPU each). With ``training_workers`` the defaults use 20 of the 24
    GPUs, as on a busy cluster (running out of GPUs is a fault of its own, FAULTS.md §6 #14 `Insufficient
    nvidia.com/gpu`): the spare is one node's worth, so one careful drain fits and a careless second one does not."""
    training_workers: int = Field(12, ge=1)
    """Ranks of the distributed training job (1 GPU each)."""
    gateway_replicas: int = Field(2, ge=1)
    """Replicas of the API gateway."""

    @model_validator(mode="after")
    def _fits(self) -> "TopologyConfig":
        need = self.inference_replicas + self.training_workers
        cap = (self.gpu_nodes - 1) * self.gpus_per_node
        if need > cap:
            raise ValueError(f"inference_replicas + training_workers = {need} GPUs must fit on "
                             f"gpu_nodes-1 = {self.gpu_nodes - 1} nodes x {self.gpus_per_node} GPUs = {cap} "
                             "(so a node can be drained)")
        return self


class RewardConfig(ConfigModel):
    """Reward = -(unhealthy_weight * minutes unhealthy) - action cost - harm - invalid-action penalty."""

    unhealthy_weight: float = Field(1.0, ge=0.0)
    """Penalty per simulated minute during which any SLO is violated or the root cause is active, counted up to
    ``SimConfig.time_limit_s`` only (an action running past the limit is charged the time left before it)."""
    action_cost_scale: float = Field(1.0, ge=0.0)
    """Multiplier on the catalog's per-category action costs."""
    harm_penalty: float = Field(10.0, ge=0.0)
    """Penalty for each harmful action (data loss, outage, scaling a service away, ...)."""
    false_alarm_penalty: float = Field(1.0, ge=0.0)
    """Extra penalty for a non-observe action while no fault is active (acting on a false alarm)."""
    invalid_action_penalty: float = Field(1.0, ge=0.0)
    """Penalty for an action the observation's masks forbid (the env executes it as ``observe``; lenient mode)."""
    duration_discount: float | None = Field(None, gt=0.0, le=1.0)
    """Discount per ``SimConfig.step_s`` applied to the unhealthy time inside one step (semi-MDP discounting, Sutton,
    Precup and Singh 1999; Bradtke and Duff 1995): an action lasting n = duration / step_s decision intervals is
    charged its unhealthy time as sum_{k<n} gamma^k (for fractional n, (1 - gamma^n) / (1 - gamma)) intervals, and the
    wait after it is discounted by gamma^n. Set it to the learner's per-decision discount (``ppo.gamma``; training
    checks it): then a page that runs for hours costs what staying stuck for that long costs in the returns PPO
    optimises, instead of its whole duration undiscounted in one step (README, "The paged human": a drawn page cost
    54.6 units on average for known types, more than being stuck forever, 50). A plain step (no action duration) is
    charged exactly as without it; None (the default): no discount inside a step, as before. The value bootstrap
    after a long action still uses the learner's gamma per step (the env cannot change it); after a page the episode
    ends within a few steps, where that matters little."""


class LognormalTime(ConfigModel):
    """A duration drawn from a lognormal distribution given by its median and 90th percentile, then clipped."""

    median_s: float = Field(gt=0.0)
    """Median in seconds."""
    p90_s: float = Field(gt=0.0)
    """90th percentile in seconds (> median: the spread of the lognormal)."""
    clip_s: tuple[float, float]
    """[low, high] bounds in seconds that every draw is clipped to (low <= median <= p90 <= high)."""
    source: str = Field(min_length=1)
    """Where the numbers come from (a citation, or *(inference)* with the reasoning)."""

    @model_validator(mode="after")
    def _order(self) -> "LognormalTime":
        lo, hi = self.clip_s
        if not 0.0 <= lo <= self.median_s < self.p90_s <= hi:
            raise ValueError(f"need 0 <= clip low ({lo}) <= median_s ({self.median_s}) < p90_s ({self.p90_s}) <= "
                             f"clip high ({hi})")
        if not self.source.strip():
            raise ValueError("source must name where the numbers come from")
        return self


class FailProb(ConfigModel):
    """Probability that the human's first attempt does not mitigate, for known and for unknown fault types."""

    known: float = Field(ge=0.0, le=1.0)
    """When every fault that had started is of a known type of the split (the team has a runbook for it)."""
    unknown: float = Field(ge=0.0, le=1.0)
    """When a fault that had started is of a held-out type of the split (no runbook, never met)."""
    source: str = Field(min_length=1)
    """Where the numbers come from."""


class HumanParams(ConfigModel):
    """The drawn human model's parameters: ``ifshm_ray/sim/data/human.yaml`` (every block with its source)."""

    response: LognormalTime
    """Page -> a human hands-on."""
    fix_known: LognormalTime
    """Hands-on -> mitigated, one attempt, fault types known in the split."""
    fix_unknown: LognormalTime
    """Hands-on -> mitigated, one attempt, when a fault of a type held out in the split had started."""
    first_attempt_fail_prob: FailProb
    """Probability that the first attempt fails (a second attempt, a fresh fix draw, then mitigates)."""


class HumanConfig(ConfigModel):
    """The paged human of the ``escalate`` action."""

    model: Literal["fixed", "drawn"] = "fixed"
    """'fixed': every page takes ``SimConfig.human_response_s + human_fix_s`` and fixes every fault that had started
    (the behaviour of earlier versions, bit for bit). 'drawn': response and fix times drawn per page from the seeded
    simulator streams with the parameters of ``params`` (heavy-tailed, longer for fault types held out in the split,
    a first attempt that can fail); see :mod:`ifshm_ray.sim.human`."""
    params: str | None = None
    """Path to the drawn model's parameter YAML (:class:`HumanParams`); None uses ifshm_ray/sim/data/human.yaml."""

    @model_validator(mode="after")
    def _check(self) -> "HumanConfig":
        if self.params is not None:
            if self.model != "drawn":
                raise ValueError(f"human.params is read only with human.model: drawn (model is {self.model!r})")
            if not Path(self.params).is_file():
                raise ValueError(f"human.params {self.params!r}: no such file")
        return self


class SimConfig(ConfigModel):
    """The fault-injection simulator and its environment."""

    topology: TopologyConfig = Field(default_factory=TopologyConfig)
    """The simulated cluster."""
    reward: RewardConfig = Field(default_factory=RewardConfig)
    """Reward weights."""
    faults: str | list[str] = "known"
    """Fault types to inject: 'known', 'unknown', 'all' (of `split`), or a non-empty list of fault names from the
    catalog."""
    split: str = "handpicked"
    """Named known/unknown split (ifshm_ray/sim/data/splits.yaml) that 'known' and 'unknown' refer to."""
    step_s: float = Field(30.0, gt=0.0)
    """Seconds between two decisions (one scrape/alert-evaluation window)."""
    time_limit_s: float = 3600.0
    """Episode time limit in simulated seconds (truncated after it; >= 4 * step_s)."""
    healthy_steps: int = Field(3, ge=1)
    """K: recovery needs the root cause cleared and every SLO holding for K consecutive steps."""
    human_response_s: float = Field(900.0, ge=0.0)
    """Time for a paged human to respond after `escalate` (the `fixed` human model)."""
    human_fix_s: float = Field(300.0, ge=0.0)
    """Time the human needs to fix the incident after responding (the `fixed` human model)."""
    human: HumanConfig = Field(default_factory=HumanConfig)
    """The paged human: ``fixed`` (``human_response_s`` + ``human_fix_s``, the default) or ``drawn`` per page."""
    inject_max_delay_s: float = Field(60.0, ge=0.0)
    """The fault is injected uniformly in [0, this] seconds after the episode starts."""
    compound_prob: float = Field(0.0, ge=0.0, le=1.0)
    """Probability that a second fault is injected at the same time (compound incident)."""
    fault_free_prob: float = Field(0.1, ge=0.0, le=1.0)
    """Share of sampled episodes with no fault at all (fault name "none"), as training and evaluation must meet
    them: benign noise and false alarms still happen, any action other than observe is a false action, and the
    episode runs to the time limit (truncated). Episodes whose fault is forced at reset are unaffected."""
    false_alarm_prob: float = Field(0.15, ge=0.0, le=1.0)
    """Probability per episode of a benign transient (GC pause, load blip) that can raise a pending alert."""
    benign_log_rate: float = Field(10.0, ge=0.0)
    """Mean benign log lines per window across the platform."""
    window_samples: int = Field(6, ge=2)
    """Metric samples per window in the raw telemetry (one scrape every step_s / window_samples)."""
    metric_noise: float = Field(0.03, ge=0.0)
    """Relative noise on metrics."""
    load_amplitude: float = Field(0.25, ge=0.0)
    """Amplitude of the diurnal load curve (load = 1 + amplitude * sin(...))."""
    slo_latency_factor: float = Field(2.0, gt=1.0)
    """Latency SLO: p99 <= this x the service's baseline p99."""
    slo_error_rate: float = Field(0.02, gt=0.0)
    """Error-rate SLO for every service."""
    slo_throughput: float = Field(0.9, gt=0.0, le=1.0)
    """Throughput SLO: served / offered >= this."""
    memory_actions: int = Field(3, ge=0, le=32)
    """Incident memory in the observation: the category, target and steps ago of the last this-many actions other
    than observe taken in the episode (0: none)."""
    catalog: str | None = None
    """Path to a fault catalog YAML; None uses the one shipped in the package."""

    @model_validator(mode="after")
    def _check(self) -> "SimConfig":
        if self.time_limit_s < 4 * self.step_s:
            raise ValueError(f"time_limit_s must be >= 4 * step_s = {4 * self.step_s}, got {self.time_limit_s}")
        if isinstance(self.faults, list) and not self.faults:
            raise ValueError("faults must be 'known', 'unknown', 'all' or a non-empty list of fault names")
        return self


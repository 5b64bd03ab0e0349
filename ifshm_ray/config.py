"""Typed configuration shared by the jobs: dataclasses with a docstring per field, loadable from YAML.

Every job owns one top-level config object; nested sections are dataclasses too. :func:`from_dict`
builds a dataclass from a plain ``dict`` (e.g. parsed YAML) and rejects unknown keys and wrong types with
a :class:`ConfigError` that names the field and the valid choices.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which one and how to fix it."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass
class TopologyConfig:
    """The simulated cloud AI cluster."""

    control_nodes: int = 2
    """Nodes hosting the control plane and stateful stores (CPU only)."""
    gpu_nodes: int = 6
    """GPU worker nodes hosting inference servers, training workers and per-node agents."""
    gpus_per_node: int = 4
    """GPUs on every GPU node."""
    inference_replicas: int = 4
    """Replicas of the model-inference server (1 GPU each)."""
    training_workers: int = 4
    """Ranks of the distributed training job (1 GPU each)."""
    gateway_replicas: int = 2
    """Replicas of the API gateway."""

    def validate(self) -> None:
        _check(self.control_nodes >= 1, f"topology.control_nodes must be >= 1, got {self.control_nodes}")
        _check(self.gpu_nodes >= 2, f"topology.gpu_nodes must be >= 2 (draining one must leave one), got {self.gpu_nodes}")
        _check(self.gpus_per_node >= 1, f"topology.gpus_per_node must be >= 1, got {self.gpus_per_node}")
        for name in ("inference_replicas", "training_workers", "gateway_replicas"):
            _check(getattr(self, name) >= 1, f"topology.{name} must be >= 1, got {getattr(self, name)}")
        need = self.inference_replicas + self.training_workers
        cap = (self.gpu_nodes - 1) * self.gpus_per_node
        _check(need <= cap, f"topology: inference_replicas + training_workers = {need} GPUs must fit on "
               f"gpu_nodes-1 = {self.gpu_nodes - 1} nodes x {self.gpus_per_node} GPUs = {cap} (so a node can be drained)")


@dataclass
class RewardConfig:
    """Reward = -(unhealthy_weight * minutes unhealthy) - action cost - harm."""

    unhealthy_weight: float = 1.0
    """Penalty per simulated minute during which any SLO is violated or the root cause is active."""
    action_cost_scale: float = 1.0
    """Multiplier on the catalog's per-category action costs."""
    harm_penalty: float = 10.0
    """Penalty for each harmful action (data loss, outage, scaling a service away, ...)."""
    false_alarm_penalty: float = 1.0
    """Extra penalty for a non-observe action while no fault is active (acting on a false alarm)."""


@dataclass
class SimConfig:
    """The fault-injection simulator and its environment."""

    topology: TopologyConfig = field(default_factory=TopologyConfig)
    """The simulated cluster."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Reward weights."""
    faults: Any = "known"
    """Fault types to inject: 'known', 'unknown', 'all', or a list of fault names from the catalog."""
    step_s: float = 30.0
    """Seconds between two decisions (one scrape/alert-evaluation window)."""
    time_limit_s: float = 3600.0
    """Episode time limit in simulated seconds (truncated after it)."""
    healthy_steps: int = 3
    """K: recovery needs the root cause cleared and every SLO holding for K consecutive steps."""
    human_response_s: float = 900.0
    """Time for a paged human to respond after `escalate`."""
    human_fix_s: float = 300.0
    """Time the human needs to fix the incident after responding."""
    inject_max_delay_s: float = 60.0
    """The fault is injected uniformly in [0, this] seconds after the episode starts."""
    compound_prob: float = 0.0
    """Probability that a second fault is injected at the same time (compound incident)."""
    false_alarm_prob: float = 0.15
    """Probability per episode of a benign transient (GC pause, load blip) that can raise a pending alert."""
    benign_log_rate: float = 10.0
    """Mean benign log lines per window across the platform."""
    window_samples: int = 6
    """Metric samples per window in the raw telemetry (one scrape every step_s / window_samples)."""
    metric_noise: float = 0.03
    """Relative noise on metrics."""
    load_amplitude: float = 0.25
    """Amplitude of the diurnal load curve (load = 1 + amplitude * sin(...))."""
    slo_latency_factor: float = 2.0
    """Latency SLO: p99 <= this x the service's baseline p99."""
    slo_error_rate: float = 0.02
    """Error-rate SLO for every service."""
    slo_throughput: float = 0.9
    """Throughput SLO: served / offered >= this."""
    catalog: str | None = None
    """Path to a fault catalog YAML; None uses the one shipped in the package."""

    def validate(self) -> None:
        self.topology.validate()
        _check(self.step_s > 0, f"step_s must be > 0, got {self.step_s}")
        _check(self.time_limit_s >= 4 * self.step_s, f"time_limit_s must be >= 4 * step_s, got {self.time_limit_s}")
        _check(self.healthy_steps >= 1, f"healthy_steps must be >= 1, got {self.healthy_steps}")
        _check(0.0 <= self.compound_prob <= 1.0, f"compound_prob must be in [0, 1], got {self.compound_prob}")
        _check(0.0 <= self.false_alarm_prob <= 1.0, f"false_alarm_prob must be in [0, 1], got {self.false_alarm_prob}")
        _check(self.window_samples >= 2, f"window_samples must be >= 2, got {self.window_samples}")
        _check(self.human_response_s >= 0 and self.human_fix_s >= 0, "human_response_s and human_fix_s must be >= 0")
        _check(self.metric_noise >= 0, f"metric_noise must be >= 0, got {self.metric_noise}")
        _check(self.slo_latency_factor > 1.0, f"slo_latency_factor must be > 1, got {self.slo_latency_factor}")
        if not (isinstance(self.faults, str) or (isinstance(self.faults, (list, tuple)) and self.faults)):
            raise ConfigError("faults must be 'known', 'unknown', 'all' or a non-empty list of fault names")


def _resolve_type(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else Any
    return tp


def from_dict(cls: type[T], data: dict | None, *, path: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise :class:`ConfigError`."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {[path + k for k in unknown]}; valid keys: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        val = data[f.name]
        tp = _resolve_type(hints[f.name])
        where = path + f.name
        if dataclasses.is_dataclass(tp):
            if isinstance(val, tp):
                kwargs[f.name] = val
                continue
            if not isinstance(val, dict):
                raise ConfigError(f"{where} must be a mapping of {tp.__name__} fields, got {val!r}")
            kwargs[f.name] = from_dict(tp, val, path=where + ".")
            continue
        if val is not None and tp in (int, float, bool, str):
            if tp is float and isinstance(val, int) and not isinstance(val, bool):
                val = float(val)
            if not isinstance(val, tp) or (tp is int and isinstance(val, bool)):
                raise ConfigError(f"{where} must be of type {tp.__name__}, got {val!r}")
        kwargs[f.name] = val
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate) and not path:
        validate()
    return obj


def load_yaml(cls: type[T], path: str | Path | None, overrides: dict | None = None) -> T:
    """Load ``cls`` from a YAML file (None: defaults), applying ``overrides`` (nested dict) on top."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
        data = loaded
    if overrides:
        data = _merge(data, overrides)
    return from_dict(cls, data)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def to_dict(obj: Any) -> dict:
    """A dataclass config as a plain (YAML/JSON-serialisable) dict."""
    return dataclasses.asdict(obj)

"""Typed settings of the Serve application (``ifshm_ray.serve:build_app``), from builder args or a Serve config YAML.

``serve run ifshm_ray.serve:build_app checkpoint=PATH model=minilm`` passes every ``key=value`` as a string;
``configs/serve.yaml`` passes them under ``applications[].args`` (typed YAML). :func:`serve_config_from_args`
turns either into a validated :class:`ServeConfig` (strings are converted to the field's type; unknown keys are
refused with the list of valid ones).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Mapping


class ServeConfigError(ValueError):
    """A Serve setting is invalid; the message says which one and how to fix it."""


@dataclass
class ServeConfig:
    """Settings of the IFSHM Serve application (policy, encoder, limits, auth, escalation)."""

    checkpoint: str = ""
    """Policy bundle: the ``--out`` directory of ``jobs/train.py`` (or ``jobs/tune.py``), or its ``policy_bundle/``.
    Required. The topology the policy was trained on (from the bundle's manifest) defines the valid entity names."""
    model: str = "minilm"
    """Encoder backbone preset used when ``encoder`` is not given (``minilm``: fast, ``smollm2``: the paper-sized
    default, ``tiny-llama`` / ``tiny-bert``: tests). Without ``encoder`` the fault head is untrained (see
    ``/healthz``: ``encoder.trained``)."""
    encoder: str | None = None
    """Fine-tuned encoder checkpoint (the ``--out`` folder of ``jobs/finetune_encoder.py``). Recommended."""
    encoder_mode: str | None = None
    """Encoder path per request: ``templates`` (template-level cache, fast) or ``context`` (one pass over the whole
    prompt); None: the checkpoint's / preset's default."""
    auth_token: str | None = None
    """Bearer token required on ``/v1/*`` (prefer ``auth_token_env``: a token in a config file is readable by
    everyone who can read the file). None and an empty ``auth_token_env`` variable: auth off (the default)."""
    auth_token_env: str = "IFSHM_SERVE_TOKEN"
    """Environment variable that holds the bearer token (read on the replica). Unset or empty: auth off."""
    max_body_bytes: int = 1_048_576
    """Largest request body accepted (413 above)."""
    max_log_lines: int = 2000
    """Most log lines per telemetry window (413 above)."""
    max_line_chars: int = 8192
    """Longest log line, alarm summary or name (413 above)."""
    max_metric_series: int = 2000
    """Most (entity, metric) series per window (413 above)."""
    max_samples_per_series: int = 720
    """Most samples in one metric series (413 above)."""
    max_alarms: int = 500
    """Most alarms per window, and most alerts in one Alertmanager notification (413 above)."""
    top_k: int = 5
    """Alternatives returned by ``/v1/heal`` (the recommended action plus up to ``top_k - 1`` others)."""
    min_confidence: float = 0.5
    """``/v1/heal`` sets ``escalate`` when the diagnosis confidence is below this."""
    max_unknown_score: float = 1.0
    """``/v1/heal`` sets ``escalate`` when the encoder's unknown score is above this (> 1: unlike every known fault)."""
    max_batch_size: int = 16
    """``@serve.batch``: most telemetry windows the encoder deployment diagnoses in one forward pass."""
    batch_wait_timeout_s: float = 0.005
    """``@serve.batch``: how long the encoder waits for more requests before running a partial batch."""
    cache_size: int = 4096
    """Entries of the result caches (diagnosis by telemetry hash; policy output by observation bytes). 0: off."""
    torch_threads: int = 1
    """``torch.set_num_threads`` in each replica (1 keeps many replicas from fighting over the cores)."""
    ingress_num_cpus: float = 0.5
    """CPUs of each ingress replica (a Serve config YAML's ``ray_actor_options`` overrides it)."""
    encoder_num_cpus: float = 0.5
    """CPUs of each encoder replica (overridden by the Serve config YAML, e.g. on the GPU cluster)."""
    encoder_num_gpus: float = 0.0
    """GPUs of each encoder replica (``configs/cluster_serve.yaml`` sets 1 on the A100 workers)."""

    def validate(self) -> "ServeConfig":
        if not self.checkpoint:
            raise ServeConfigError(
                "checkpoint is required: the --out directory of jobs/train.py (or its policy_bundle/), e.g. "
                "`serve run ifshm_ray.serve:build_app checkpoint=results/train model=minilm`"
            )
        for name in ("max_body_bytes", "max_log_lines", "max_line_chars", "max_metric_series",
                     "max_samples_per_series", "max_alarms", "top_k", "max_batch_size", "torch_threads"):
            if int(getattr(self, name)) < 1:
                raise ServeConfigError(f"{name}={getattr(self, name)!r}: must be a positive integer")
        if self.cache_size < 0:
            raise ServeConfigError(f"cache_size={self.cache_size}: must be >= 0 (0 turns the caches off)")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ServeConfigError(f"min_confidence={self.min_confidence}: must lie in [0, 1], e.g. 0.5")
        if self.max_unknown_score <= 0:
            raise ServeConfigError(f"max_unknown_score={self.max_unknown_score}: must be > 0, e.g. 1.0")
        if self.batch_wait_timeout_s < 0:
            raise ServeConfigError(f"batch_wait_timeout_s={self.batch_wait_timeout_s}: must be >= 0")
        if self.encoder_mode not in (None, "templates", "context"):
            raise ServeConfigError(f"encoder_mode={self.encoder_mode!r}: use 'templates', 'context' or null")
        if min(self.ingress_num_cpus, self.encoder_num_cpus, self.encoder_num_gpus) < 0:
            raise ServeConfigError("ingress_num_cpus, encoder_num_cpus and encoder_num_gpus must be >= 0")
        return self

    def resolved_token(self) -> str | None:
        """The bearer token in force (``auth_token``, else ``$auth_token_env``), or None when auth is off."""
        token = self.auth_token or os.environ.get(self.auth_token_env or "", "")
        return token or None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, ftype: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    base = ftype.replace(" | None", "")
    if "None" in ftype and value.strip().lower() in ("", "none", "null"):
        return None
    try:
        if base == "int":
            return int(value)
        if base == "float":
            return float(value)
    except ValueError:
        raise ServeConfigError(f"{name}={value!r}: must be a number ({base})") from None
    if base == "bool":
        v = value.strip().lower()
        if v in _TRUE | _FALSE:
            return v in _TRUE
        raise ServeConfigError(f"{name}={value!r}: use true or false")
    return value


def serve_config_from_args(args: Mapping[str, Any] | ServeConfig | None) -> ServeConfig:
    """Validated :class:`ServeConfig` from builder args (strings from ``serve run``, typed values from YAML)."""
    if isinstance(args, ServeConfig):
        return args.validate()
    data = dict(args or {})
    fields = {f.name: f for f in dataclasses.fields(ServeConfig)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ServeConfigError(f"unknown Serve setting(s) {unknown}; valid settings: {sorted(fields)}")
    kwargs = {k: _coerce(k, str(fields[k].type), v) for k, v in data.items()}
    return ServeConfig(**kwargs).validate()

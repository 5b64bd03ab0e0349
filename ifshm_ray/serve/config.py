"""Typed settings of the Serve application (``ifshm_ray.serve.app:build_app``), from builder args or a Serve config YAML.

``serve run ifshm_ray.serve.app:build_app checkpoint=PATH model=minilm`` passes every ``key=value`` as a string;
``configs/serve.yaml`` passes them under ``applications[].args`` (typed YAML). :func:`serve_config_from_args`
turns either into a validated :class:`ServeConfig`: strings are read as the field's type (``"10"`` -> 10,
``"true"``/``"false"`` for a bool, ``"none"``/``"null"``/``""`` -> None for an optional field), unknown keys are
refused with the list of valid ones, and every problem is one :class:`~ifshm_ray.config.ConfigError`.
"""
from __future__ import annotations

import os
import types
from typing import Any, ClassVar, Literal, Mapping, Union, get_args, get_origin

from pydantic import Field, field_validator, model_validator

from ifshm_ray.config import ConfigModel

_NONE_STRINGS = ("", "none", "null")


class ServeConfig(ConfigModel):
    """Settings of the IFSHM Serve application (policy, encoder, limits, auth, escalation)."""

    renamed_keys: ClassVar[dict[str, str]] = {"encoder": "encoder_checkpoint"}

    checkpoint: str = ""
    """Policy bundle: the ``--out`` directory of ``jobs/train.py`` (or ``jobs/tune.py``), or its ``policy_bundle/``.
    Required. The topology the policy was trained on (from the bundle's manifest) defines the valid entity names."""
    model: str = "minilm"
    """Encoder backbone preset used when ``encoder_checkpoint`` is not given (``minilm``: fast, ``smollm2``: the
    paper-sized default, ``tiny-llama`` / ``tiny-bert``: tests). Without ``encoder_checkpoint`` the fault head is
    untrained (see ``/healthz``: ``encoder.trained``)."""
    encoder_checkpoint: str | None = None
    """Fine-tuned encoder checkpoint (the ``--out`` folder of ``jobs/finetune_encoder.py``). Recommended. (Formerly
    ``encoder``.)"""
    encoder_mode: Literal["templates", "context"] | None = None
    """Encoder path per request: ``templates`` (template-level cache, fast) or ``context`` (one pass over the whole
    prompt); None: the checkpoint's / preset's default."""
    auth_token: str | None = None
    """Bearer token required on ``/v1/*`` (prefer ``auth_token_env``: a token in a config file is readable by
    everyone who can read the file). None and an empty ``auth_token_env`` variable: auth off (the default)."""
    auth_token_env: str = "IFSHM_SERVE_TOKEN"
    """Environment variable that holds the bearer token (read on the replica). Unset or empty: auth off."""
    max_body_bytes: int = Field(1_048_576, ge=1)
    """Largest request body accepted (413 above)."""
    max_log_lines: int = Field(2000, ge=1)
    """Most log lines per telemetry window (413 above)."""
    max_line_chars: int = Field(8192, ge=1)
    """Longest log line, alarm summary or name (413 above)."""
    max_metric_series: int = Field(2000, ge=1)
    """Most (entity, metric) series per window (413 above)."""
    max_samples_per_series: int = Field(720, ge=1)
    """Most samples in one metric series (413 above)."""
    max_alarms: int = Field(500, ge=1)
    """Most alarms per window, and most alerts in one Alertmanager notification (413 above)."""
    top_k: int = Field(5, ge=1)
    """Alternatives returned by ``/v1/heal`` (the recommended action plus up to ``top_k - 1`` others)."""
    min_confidence: float = Field(0.5, ge=0.0, le=1.0)
    """``/v1/heal`` sets ``escalate`` when the diagnosis confidence is below this."""
    max_unknown_score: float = Field(1.0, gt=0.0)
    """``/v1/heal`` sets ``escalate`` when the encoder's unknown score is above this (> 1: unlike every known fault)."""
    missing_metrics: Literal["steady_state", "error", "zero"] = "steady_state"
    """What the policy reads for an (entity, metric) series the simulator reports in every window but a request does
    not (a live stack that binds only some entities; an Alertmanager notification, which carries no metrics):
    ``steady_state``: the simulator's fault-free reading of that series under the bundle's env config
    (:func:`~ifshm_ray.env.observation.steady_state_metrics`), listed in the answer's ``imputed_metrics`` and logged
    as a warning when the set changes; ``error``: refuse the request (422, naming the missing series); ``zero``: the
    earlier defaults (0 except throughput, readiness and latency), values the policy never saw in training."""
    steady_state_episodes: int = Field(8, ge=1)
    """``missing_metrics: steady_state``: fault-free simulator episodes the steady state is the median over."""
    steady_state_steps: int = Field(4, ge=1)
    """``missing_metrics: steady_state``: decision steps (windows) per episode."""
    steady_state_seed: int = 0
    """``missing_metrics: steady_state``: reset seed of the first episode (the steady state is a function of it)."""
    max_batch_size: int = Field(16, ge=1)
    """``@serve.batch``: most telemetry windows the encoder deployment diagnoses in one forward pass."""
    batch_wait_timeout_s: float = Field(0.005, ge=0.0)
    """``@serve.batch``: how long the encoder waits for more requests before running a partial batch."""
    cache_size: int = Field(4096, ge=0)
    """Entries of the result caches (diagnosis by telemetry hash; policy output by observation bytes). 0: off."""
    torch_threads: int = Field(1, ge=1)
    """``torch.set_num_threads`` in each replica (1 keeps many replicas from fighting over the cores)."""
    ingress_num_cpus: float = Field(0.5, ge=0.0)
    """CPUs of each ingress replica (a Serve config YAML's ``ray_actor_options`` overrides it)."""
    encoder_num_cpus: float = Field(0.5, ge=0.0)
    """CPUs of each encoder replica (overridden by the Serve config YAML, e.g. on the GPU cluster)."""
    encoder_num_gpus: float = Field(0.0, ge=0.0)
    """GPUs of each encoder replica (``configs/cluster_serve.yaml`` sets 1 on the A100 workers)."""
    encoder_tensor_parallel: int = Field(1, ge=1)
    """Ranks the encoder's LM is sharded over (DeepSpeed inference on one node, ``encoder_num_gpus`` GPUs in all,
    the ranks in one STRICT_PACK placement group). 1: the LM runs inside the encoder replica."""

    @model_validator(mode="before")
    @classmethod
    def _none_strings(cls, data: Any) -> Any:
        """``serve run ... encoder_checkpoint=none`` passes a string: "none", "null" and "" mean None for an
        optional field."""
        if not isinstance(data, dict):
            return data
        return {k: None if k in cls.model_fields and _optional(cls.model_fields[k].annotation)
                and isinstance(v, str) and v.strip().lower() in _NONE_STRINGS else v for k, v in data.items()}

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_given(cls, value: str) -> str:
        if not value:
            raise ValueError("checkpoint is required: the --out directory of jobs/train.py (or its policy_bundle/), "
                             "e.g. `serve run ifshm_ray.serve.app:build_app checkpoint=results/train model=minilm`")
        return value

    def resolved_token(self) -> str | None:
        """The bearer token in force (``auth_token``, else ``$auth_token_env``), or None when auth is off."""
        token = self.auth_token or os.environ.get(self.auth_token_env or "", "")
        return token or None


def _optional(annotation: Any) -> bool:
    """Whether a field's type admits None (``X | None``)."""
    return get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)


def serve_config_from_args(args: Mapping[str, Any] | ServeConfig | None) -> ServeConfig:
    """Validated :class:`ServeConfig` from builder args (strings from ``serve run``, typed values from YAML)."""
    if isinstance(args, ServeConfig):
        return args.validate()
    return ServeConfig.from_dict(dict(args or {}), source="Serve app args")

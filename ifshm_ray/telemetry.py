"""The one telemetry schema shared by the simulator, encoders, baselines, ``/v1/heal`` and ``jobs/diagnose.py``.

A telemetry window is a JSON-serialisable ``dict``::

    {
      "schema": "ifshm.telemetry/v1",
      "time_s": 930.0,               # seconds since the episode (or incident window) started
      "window_s": 30.0,              # length of the window the logs/metrics cover
      "topology": {                  # optional for external callers; the simulator always fills it
        "services": ["api-gateway", ...],
        "nodes": ["ctl-0", ...]
      },
      "logs": [                      # raw log lines, oldest first, as an operator would read them
        "2026-11-28 10:15:02.113 4211 ERROR oslo.messaging._drivers.impl_rabbit [req-...] AMQP server ...",
        "[rank0]:[E1128 10:15:03.000000000 ProcessGroupNCCL.cpp:607] [Rank 0] Watchdog caught ...",
        ...
      ],
      "metrics": {                   # entity -> metric name -> samples over the window (oldest first)
        "inference-server": {"latency_p99_ms": [112.0, 118.5, ...], "error_rate": [...], ...},
        "gpu-3": {"DCGM_FI_DEV_GPU_UTIL": [...], "node_memory_utilisation": [...], ...}
      },
      "alarms": [                    # Prometheus-style alerts, pending or firing
        {"name": "KubePodCrashLooping", "severity": "warning", "entity": "inference-server",
         "state": "firing", "active_for_s": 960.0, "summary": "Pod ... is in CrashLoopBackOff"}
      ]
    }

``logs``, ``metrics`` and ``alarms`` may each be empty; unknown extra keys (``topology`` among them) are ignored.

The schema is one set of pydantic models, used by every component and by the HTTP API's request schema
(:mod:`ifshm_ray.serve.schemas`): :class:`Telemetry` and :class:`Alarm`. :func:`telemetry_model` gives the same
model with the entity names of one topology as enums. :func:`validate_telemetry` checks a plain dict against them
and raises :class:`TelemetryError` with a message that names the wrong field, what it holds and what is allowed.
"""
from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, Sequence, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, create_model
from pydantic_core import PydanticCustomError

SCHEMA = "ifshm.telemetry/v1"
Severity = Literal["info", "warning", "critical"]
AlarmState = Literal["pending", "firing"]
ALARM_SEVERITIES, ALARM_STATES = get_args(Severity), get_args(AlarmState)

FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A JSON number that is finite: not NaN or infinite, not a string, not a boolean."""


class TelemetryError(ValueError):
    """A telemetry window does not follow :data:`SCHEMA`."""


class Alarm(BaseModel):
    """A Prometheus-style alert, pending or firing."""

    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, description="Alert rule name, e.g. KubePodCrashLooping.")
    severity: Severity = "warning"
    entity: str | None = Field(None, description="Service or node the alert is about (must be in the topology).")
    state: AlarmState = "firing"
    active_for_s: FiniteFloat = Field(0.0, ge=0.0, description="Seconds since the alert became active.")
    summary: str = ""


class Telemetry(BaseModel):
    """One telemetry window (schema ``ifshm.telemetry/v1``); unknown extra keys are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    schema_: str | None = Field(None, alias="schema", description=f"Optional; {SCHEMA!r}.")
    time_s: FiniteFloat = Field(0.0, ge=0.0, description="Seconds since the incident window started.")
    window_s: FiniteFloat = Field(30.0, gt=0.0, description="Length of the window the logs/metrics cover.")
    logs: list[str] = Field(default_factory=list, description="Raw log lines, oldest first.")
    metrics: dict[str, dict[str, list[FiniteFloat]]] = Field(
        default_factory=dict, description="entity -> metric name -> samples over the window (oldest first).")
    alarms: list[Alarm] = Field(default_factory=list)

    def to_telemetry(self) -> dict:
        """The plain telemetry dict every component accepts."""
        d = self.model_dump(by_alias=True, exclude={"schema_"})
        d["schema"] = self.schema_ or SCHEMA
        return d


def name_type(valid: Sequence[str], kind: str, plural: str) -> Any:
    """A string type that accepts only the names in ``valid`` (JSON schema: an enum); the error names the value and
    lists the valid ones: ``unknown {kind} 'db-7'; valid {plural}: [...]``."""
    allowed = list(dict.fromkeys(valid))
    allowed_set, shown = set(allowed), str(sorted(allowed))

    def check(name: str) -> str:
        if name not in allowed_set:
            raise PydanticCustomError("unknown_name", "unknown {kind} {name}; valid {plural}: {valid}",
                                      {"kind": kind, "name": repr(name), "plural": plural, "valid": shown})
        return name

    return Annotated[str, AfterValidator(check), WithJsonSchema({"type": "string", "enum": allowed})]


@functools.lru_cache(maxsize=16)
def telemetry_model(services: tuple[str, ...], nodes: tuple[str, ...]) -> type[Telemetry]:
    """:class:`Telemetry` whose metric entities and alarm entities must name one of ``services`` / ``nodes``
    (enums in its JSON schema, so a client generated from the HTTP API's OpenAPI document knows them)."""
    entity = name_type([*services, *nodes], "entity", "services and nodes")

    def field(model: type[BaseModel], name: str, annotation: Any) -> tuple:
        info = model.model_fields[name]
        return annotation, Field(default=info.default, default_factory=info.default_factory,
                                 description=info.description)

    alarm = create_model("Alarm", __base__=Alarm, __module__=__name__,
                         entity=field(Alarm, "entity", entity | None))
    return create_model("Telemetry", __base__=Telemetry, __module__=__name__,
                        metrics=field(Telemetry, "metrics", dict[entity, dict[str, list[FiniteFloat]]]),
                        alarms=field(Telemetry, "alarms", list[alarm]))


def error_path(loc: Sequence[str | int]) -> str:
    """A pydantic error location as a reader writes it: ``alarms[0].severity``, ``metrics['gpu-1']['temp'][2]``."""
    out, keys = "", 0  # keys: how many of the next string items are dict keys (metrics: entity, metric name)
    for item in loc:
        if item == "[key]":  # the error is about the key itself, already shown
            continue
        if isinstance(item, int):
            out += f"[{item}]"
        elif keys:
            out += f"[{item!r}]"
            keys -= 1
        else:
            out += ("." if out else "") + item
            keys = 2 if item == "metrics" else 0
    return out


def describe_errors(errors: Sequence[dict], limit: int = 5) -> str:
    """pydantic's error list as one line: ``where: what is wrong (got value)`` for the first ``limit`` errors."""
    parts = []
    for e in errors[:limit]:
        where, msg = error_path(e.get("loc", ())), e.get("msg", "invalid")
        got = e.get("input")
        shown = repr(got) if isinstance(got, (str, int, float, bool)) or got is None else type(got).__name__
        if e.get("type") != "unknown_name" and e.get("type") != "missing" and len(shown) <= 60:
            msg += f" (got {shown})"
        parts.append(f"{where}: {msg}" if where else msg)
    more = f" (+{len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more


def validate_telemetry(t: Any, *, services: Sequence[str] | None = None,
                       nodes: Sequence[str] | None = None) -> dict:
    """Check a telemetry dict against :class:`Telemetry`; return it unchanged. With ``services``/``nodes`` given,
    every metric entity and alarm entity must name one of them (the error lists the valid names)."""
    if not isinstance(t, dict):
        raise TelemetryError(f"telemetry must be a JSON object, got {type(t).__name__}")
    model = Telemetry if services is None and nodes is None else telemetry_model(tuple(services or ()),
                                                                                tuple(nodes or ()))
    try:
        model.model_validate(t)
    except ValidationError as exc:
        raise TelemetryError(f"invalid telemetry: {describe_errors(exc.errors())}") from None
    return t

"""Request and response models of the HTTP API (pydantic 2); they define the OpenAPI document at ``/openapi.json``.

Requests carry one telemetry window in the schema of :mod:`ifshm_ray.telemetry` (logs, metrics, alarms). The
models check shapes and types (numbers must be finite JSON numbers, not strings or booleans); the *sizes* (lines,
bytes, series) are checked against the configurable limits afterwards (413), and entity names against the served
policy's topology (422 naming the valid ones).
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Category = Literal["observe", "restart", "migrate", "scale", "rollback", "reallocate", "drain", "clear_storage",
                   "reroute", "escalate"]


class Alarm(BaseModel):
    """A Prometheus-style alert, pending or firing."""

    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, description="Alert rule name, e.g. KubePodCrashLooping.")
    severity: Literal["info", "warning", "critical"] = "warning"
    entity: str | None = Field(None, description="Service or node the alert is about (must be in the topology).")
    state: Literal["pending", "firing"] = "firing"
    active_for_s: FiniteFloat = Field(0.0, ge=0.0, description="Seconds since the alert became active.")
    summary: str = ""


class Telemetry(BaseModel):
    """One telemetry window (schema ``ifshm.telemetry/v1``); unknown extra keys are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    schema_: str | None = Field(None, alias="schema", description="Optional; 'ifshm.telemetry/v1'.")
    time_s: FiniteFloat = Field(0.0, ge=0.0, description="Seconds since the incident window started.")
    window_s: FiniteFloat = Field(30.0, gt=0.0, description="Length of the window the logs/metrics cover.")
    logs: list[str] = Field(default_factory=list, description="Raw log lines, oldest first.")
    metrics: dict[str, dict[str, list[FiniteFloat]]] = Field(
        default_factory=dict, description="entity -> metric name -> samples over the window (oldest first).")
    alarms: list[Alarm] = Field(default_factory=list)

    def to_telemetry(self) -> dict:
        """The plain telemetry dict every component accepts."""
        d = self.model_dump(by_alias=True, exclude={"schema_"})
        d["schema"] = self.schema_ or "ifshm.telemetry/v1"
        return d


class DiagnoseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    telemetry: Telemetry


class HealRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    telemetry: Telemetry
    last_action: Category = Field("observe", description="Category of the last recovery action already taken.")
    cordoned: list[str] = Field(default_factory=list, description="Nodes already cordoned (drained).")


# ------------------------------------------------------------------------------------------- Alertmanager webhook
class AlertmanagerAlert(BaseModel):
    """One alert of an Alertmanager webhook notification (``alerts[]``)."""

    model_config = ConfigDict(extra="ignore")
    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str = ""
    endsAt: str = ""
    generatorURL: str = ""
    fingerprint: str = ""


class AlertmanagerWebhook(BaseModel):
    """Prometheus Alertmanager's webhook payload, version "4" (``webhook_configs`` receiver)."""

    model_config = ConfigDict(extra="ignore")
    version: Literal["4"] = "4"
    groupKey: str = ""
    truncatedAlerts: int = Field(0, ge=0)
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[AlertmanagerAlert]


# ------------------------------------------------------------------------------------------------------ responses
class FaultProb(BaseModel):
    fault: str
    prob: float


class Diagnosis(BaseModel):
    fault_mode: str = Field(description="Most likely fault type (the encoder's classes; 'healthy' = no fault).")
    confidence: float = Field(description="Calibrated probability of fault_mode.")
    unknown_score: float | None = Field(description="Distance to the nearest known-fault prototype / its radius (> 1: "
                                                    "unlike every known fault type); null when the encoder has no "
                                                    "prototypes (untrained).")
    unknown: bool = Field(description="unknown_score > max_unknown_score.")
    top: list[FaultProb] = Field(description="The three most likely fault types.")
    explanation: str


class Action(BaseModel):
    category: str
    target: str | None
    ratio: float | None = Field(description="Scale/reallocate factor; null for categories that take none.")
    probability: float | None = Field(description="Probability of this (category, target, ratio) under the policy.")


class HealResponse(BaseModel):
    diagnosis: Diagnosis
    action: Action
    category_probability: float | None
    alternatives: list[Action]
    expected_recovery_s: float | None = Field(
        description="Catalog remedy duration of the recommended category for the diagnosed fault plus the SLO "
                    "verification time (healthy_steps x step_s); null when the catalog says the action does not "
                    "heal that fault (or the fault is not in the catalog).")
    expected_recovery_basis: str
    escalate: bool
    escalate_reasons: list[str]
    value: float | None = Field(description="The policy's value estimate V(s) (negative expected cost-to-go).")


class AlertmanagerResponse(HealResponse):
    groupKey: str
    alerts_used: int
    alerts_resolved: int


class ErrorResponse(BaseModel):
    detail: str

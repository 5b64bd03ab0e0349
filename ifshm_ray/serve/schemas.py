"""Request and response models of the HTTP API (pydantic 2); they define the OpenAPI document at ``/openapi.json``.

Requests carry one telemetry window in the schema of :mod:`ifshm_ray.telemetry`, whose models (:class:`Telemetry`,
:class:`Alarm`) are used here as they are: they check shapes and types (numbers must be finite JSON numbers, not
strings or booleans). :func:`request_models` binds the requests to the served topology: entity names (metric and
alarm entities, cordoned nodes, history targets) become enums, checked on input (422 naming the valid ones) and visible to a client
generated from the OpenAPI document. The *sizes* (lines, bytes, series) are checked against the configurable limits
afterwards (413).
"""
from __future__ import annotations

import functools
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from ifshm_ray.telemetry import Alarm, Telemetry, name_type, telemetry_model

__all__ = ["Alarm", "Telemetry", "DiagnoseRequest", "HistoryEntry", "HealRequest", "request_models", "AlertLabels",
           "AlertmanagerAlert", "AlertmanagerWebhook", "FaultProb", "Diagnosis", "Action", "HealResponse",
           "AlertmanagerResponse", "ErrorResponse"]

Category = Literal["observe", "restart", "migrate", "scale", "rollback", "reallocate", "drain", "clear_storage",
                   "reroute", "escalate"]


class DiagnoseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    telemetry: Telemetry


class HistoryEntry(BaseModel):
    """One action already taken in this incident (the policy's incident memory)."""

    model_config = ConfigDict(extra="forbid")
    category: Category
    target: str | None = Field(None, description="Service or node acted on; null for escalate (and observe).")
    steps_ago: int = Field(ge=1, strict=True, description="Decision steps ago (1: the last step).")


class HealRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    telemetry: Telemetry
    last_action: Category | None = Field(None, description="Category of the action taken at the last step (without "
                                                           "history: its only entry; with it: must agree with it).")
    cordoned: list[str] = Field(default_factory=list, description="Nodes already cordoned (drained) besides those "
                                                                  "drained in history.")
    history: list[HistoryEntry] | None = Field(None, description="Actions taken in this incident, any order (the "
                                                                 "policy remembers the most recent ones).")
    incident_gate: Literal["policy", "runbook", "escalate"] | None = Field(
        None, description="Who the meta-controller's gate chose at an earlier window of this incident (the `actor` of "
                          "the first answer whose gate had `decides_here`): the gate decides once per incident, as in "
                          "training and evaluation, so later windows keep that actor. Null: decide on this window.")


@functools.lru_cache(maxsize=16)
def request_models(services: tuple[str, ...], nodes: tuple[str, ...]) -> tuple[type[DiagnoseRequest],
                                                                                type[HealRequest]]:
    """``(DiagnoseRequest, HealRequest)`` for one topology: telemetry entities name ``services`` / ``nodes`` and
    ``cordoned`` names ``nodes``, a history target a service or node (enums in the OpenAPI document)."""
    telemetry = telemetry_model(services, nodes)
    node = name_type(nodes, "node", "nodes")
    entry = create_model("HistoryEntry", __base__=HistoryEntry, __module__=__name__,
                         target=(name_type([*services, *nodes], "target", "services and nodes") | None,
                                 Field(None, description=HistoryEntry.model_fields["target"].description)))
    diagnose = create_model("DiagnoseRequest", __base__=DiagnoseRequest, __module__=__name__,
                            telemetry=(telemetry, ...))
    heal = create_model("HealRequest", __base__=HealRequest, __module__=__name__, telemetry=(telemetry, ...),
                        cordoned=(list[node], Field(default_factory=list,
                                                    description=HealRequest.model_fields["cordoned"].description)),
                        history=(list[entry] | None, Field(None,
                                                           description=HealRequest.model_fields["history"].description)))
    return diagnose, heal


# ------------------------------------------------------------------------------------------- Alertmanager webhook
class AlertLabels(BaseModel):
    """An alert's labels: ``alertname`` (required, as Alertmanager always sends it) and any other string labels.
    ``severity``, ``service``, ``pod``, ``node`` and ``instance`` are read (see ``alertmanager_to_telemetry``)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, str] = Field(init=False)
    alertname: str = Field(min_length=1, description="Alert rule name; becomes the alarm name.")


class AlertmanagerAlert(BaseModel):
    """One alert of an Alertmanager webhook notification (``alerts[]``)."""

    model_config = ConfigDict(extra="ignore")
    status: Literal["firing", "resolved"]
    labels: AlertLabels
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


class Gate(BaseModel):
    """The meta-controller's novelty gate (issue 15), present when the policy bundle holds a meta-controller state
    (``meta_state.json``)."""

    actor: str = Field(description="Who should act: 'policy', 'runbook' (the blind runbook) or 'escalate' (a human).")
    deferred: bool = Field(description="True when a novel incident is taken away from the policy: then `action` is "
                                       "the policy's suggestion only, not to be executed.")
    novel: bool = Field(description="unknown_score above the meta-controller's calibrated threshold.")
    reason: str = Field(description="Why: the score against the threshold, the cluster, the trust table's "
                                    "comparison of the policy with the runbook, and of the runbook with escalation.")
    unknown_score: float | None
    threshold: float | None = Field(description="Calibrated on known-fault validation windows to the configured "
                                                "false-positive rate.")
    cluster: int | None = Field(description="Nearest novel cluster (null without a state vector in the diagnosis).")
    decides_here: bool = Field(False, description="Whether the gate decides the incident at this window (its "
                                                  "`decide_on`: the first firing alarm, any alarm, or the first window "
                                                  "the policy would act in); send `actor` back as `incident_gate` "
                                                  "with the incident's later windows.")
    applies: bool = Field(True, description="Whether the decision applies to this window (it `decides_here`, or "
                                            "`incident_gate` was sent): only then does a deferral escalate; before "
                                            "the gate has decided, the policy's own answer stands (as in training).")
    score_source: str = Field("encoder", description="What scored novelty: 'diagnoser' (the bundle's "
                                                     "diagnoser.json, the score the gate was calibrated on) or "
                                                     "'encoder' (the served encoder's unknown score).")


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
    gate: Gate | None = Field(None, description="The meta-controller's decision (null: no meta-controller in the "
                                                "bundle).")
    imputed_metrics: list[str] = Field(
        default_factory=list,
        description="The `entity/metric` series the simulator reports in every window that this request did not "
                    "send: the policy read them at the simulator's steady state (`missing_metrics: steady_state`, the "
                    "default) or as 0 (`zero`); with `error` such a request is refused (422).")


class AlertmanagerResponse(HealResponse):
    groupKey: str
    alerts_used: int
    alerts_resolved: int


class ErrorResponse(BaseModel):
    detail: str

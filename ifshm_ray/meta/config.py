"""Configuration of the meta-controller (no torch, no Ray imported here). Every number lives here."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ifshm_ray.config import ConfigModel


class NoveltyConfig(ConfigModel):
    """Novelty detection: the encoder's unknown score against a threshold calibrated on known-fault windows."""

    target_fpr: float = Field(0.02, gt=0.0, lt=1.0)
    """Largest false-positive rate (known-fault windows flagged novel) the threshold may have on the calibration
    windows (issue 15: at most 2%)."""
    min_calibration_windows: int = Field(50, ge=1)
    """Fewest known-fault validation windows a calibration accepts (with fewer, a 2% rate is not resolvable:
    one window is already more than 2% of 49)."""


class ClusterConfig(ConfigModel):
    """Online clustering of novel incidents (leader clustering on unit vectors, running-mean centroids)."""

    max_distance: float = Field(0.3, gt=0.0, le=2.0)
    """A novel incident joins the nearest cluster when its cosine distance to that centroid is at most this;
    otherwise it starts a new cluster."""
    max_clusters: int = Field(32, ge=1)
    """Most clusters kept; beyond that an incident joins the nearest cluster whatever its distance."""
    stratum_prefix: str = "novel-"
    """Replay stratum of cluster k: prefix + k."""


class TrustConfig(ConfigModel):
    """The trust table: per cluster and per actor (policy, runbook, escalate), rolling outcomes."""

    window: int = Field(20, ge=1)
    """Rolling window of outcomes kept per cluster and actor."""
    min_episodes: int = Field(5, ge=1)
    """Outcomes the policy and the runbook each need on a cluster before the policy can be trusted there."""
    prior_strength: float = Field(0.0, ge=0.0)
    """Pooled prior of the trust test, in outcomes (0: off, each cluster judged on its own outcomes only). With k > 0
    and both the policy and the runbook measured ``min_episodes`` times on novel incidents overall, a cluster's
    success rates and mean MTTRs are shrunk towards the pooled ones: (n * own + k * pooled) / (n + k) per actor, so a
    new cluster starts from what the policy has shown against the runbook on the other novel incidents and its own
    outcomes take over as they come (empirical Bayes; the pooled window holds that cluster's outcomes too). Why:
    with trust per cluster only, every new type is deferred until the policy has ``min_episodes`` outcomes on it,
    which come only from the paired evaluations; on the continual pilot of 2026-11-30 the gate deferred 29% of the
    new incidents to the blind runbook (2,188 s) although the phase-1 policy alone was faster on them (1,645 s)."""
    fallback: Literal["runbook", "escalate"] = "runbook"
    """What an untrusted novel incident goes to while neither the runbook nor escalation has been measured (on
    its cluster nor on novel incidents overall)."""


class SteeringConfig(ConfigModel):
    """How the meta-controller steers the replay mix and the scenario weights."""

    known_share: float = Field(0.5, ge=0.0, le=1.0)
    """Share of each replay sample drawn from the known stratum while novel clusters exist (rehearsal, CLEAR)."""
    min_cluster_incidents: int = Field(1, ge=1)
    """A novel cluster's stratum enters the replay mix once the cluster holds this many incidents (before that its
    recorded incidents are stored but not sampled; with no cluster that big the mix is as without clusters). With 1 (the
    default, as before) a cluster of one recorded incident gets its full part of every self-imitation sample, so
    each of its steps is imitated many times per update (measured in the continual pilots: clusters of 1-2
    runbook-handled incidents, the self-imitation loss up from 0.03 to 0.9-2.5 and the policy collapsing). 5 on the
    pilot of 2026-11-30 moved that collapse to when a cluster reached 5 incidents rather than removing it (README)."""
    ramp_incidents: int = Field(10, ge=1)
    """A novel cluster's part of the mix is scaled by min(1, incidents / ramp_incidents), and what it gives up goes to
    the known stratum, so a cluster's weight in every self-imitation sample grows with the evidence it holds. With
    1 (the default until 2026-12-01; the configs measured before then pin it) a cluster of one recorded incident gets
    its whole part at once. 10 (the default) was chosen on pseudo-unknown types and then measured on the hand-picked
    split: it helped or cost nothing on both (README, "ramp_incidents"). Why: in the continual
    pilots the known-type collapse followed the first recorded incident (even a healed one) alone in a new cluster,
    whose few steps then filled that cluster's whole part of every sample and were imitated many times per update;
    ``min_cluster_incidents`` only delays the full part and ``ReplayConfig.max_oversample`` caps by stored steps,
    neither removed it (README, continual adaptation)."""
    trusted_weight: float = Field(0.25, ge=0.0, le=1.0)
    """Weight of a trusted cluster in the novel part of the mix, relative to 1 for an untrusted one."""
    rehearsal_boost: float = Field(0.5, ge=0.0, le=1.0)
    """Scenario weights: mixing weight of the known types whose rolling MTTR regressed past their baseline
    (forgetting) against the level sampler's weights."""
    regression_tolerance: float = Field(0.05, ge=0.0)
    """A known type counts as regressed when its rolling MTTR exceeds its baseline by more than this fraction."""


class PromptTuningSection(ConfigModel):
    """Soft-prompt tuning of the encoder on a novel cluster (peft PromptTuning; the language model does not run
    inside PPO: after tuning, the semantic table is rebuilt). Loss = ``cluster_weight`` * supervised-contrastive
    clustering loss (windows of one incident together, different incidents apart; Khosla et al. 2020) +
    ``anchor_weight`` * mean cosine distance of known-fault windows to their known prototypes from before tuning."""

    min_episodes: int = Field(20, ge=2)
    """Incidents a novel cluster needs before its prompt tuning runs; in the continual protocol a cluster is tuned
    again each time it has gained this many more recorded incidents since its last tuning
    (:class:`~ifshm_ray.meta.prompt_tuning.ClusterPromptTuner`)."""
    windows_per_incident: int = Field(4, ge=2)
    """Telemetry windows per recorded novel incident that the clustering loss groups: the window the gate decided
    at and the ones after it (the loss needs incidents with two or more; an incident that ended sooner gives
    fewer)."""
    max_incidents: int = Field(40, ge=2)
    """A tuning uses at most this many of the cluster's recorded incidents, the most recent ones (bounds its cost:
    every step runs the LM over their windows' distinct texts with gradients)."""
    steps: int = Field(50, ge=1)
    """Optimizer steps per tuning."""
    lr: float = Field(1e-2, gt=0.0)
    """Adam learning rate of the soft-prompt vectors (prompt tuning uses large rates: Lester et al. 2021 use 0.3
    with Adafactor; 1e-2 with Adam is stable here)."""
    temperature: float = Field(0.1, gt=0.0)
    """Temperature of the contrastive clustering loss (0.1: Khosla et al. 2020)."""
    cluster_weight: float = Field(1.0, ge=0.0)
    """Weight of the clustering loss."""
    anchor_weight: float = Field(1.0, ge=0.0)
    """Weight of the anchor on the known prototypes (keeps the known types where the policy learned them)."""


class MetaConfig(ConfigModel):
    """The meta-controller (``meta:`` section of a continual-adaptation config)."""

    enabled: bool = False
    """Run the meta-controller (novelty gate, clustering, trust table, steering)."""
    novelty: NoveltyConfig = Field(default_factory=NoveltyConfig)
    """Novelty threshold calibration."""
    clusters: ClusterConfig = Field(default_factory=ClusterConfig)
    """Online clustering of novel incidents."""
    trust: TrustConfig = Field(default_factory=TrustConfig)
    """Trust table and the gate's fallback."""
    steering: SteeringConfig = Field(default_factory=SteeringConfig)
    """Replay mix and scenario weights."""
    prompt_tuning: PromptTuningSection = Field(default_factory=PromptTuningSection)
    """Soft-prompt tuning of the encoder per novel cluster."""
    calibration: str | None = None
    """A novelty calibration (JSON of :class:`~ifshm_ray.meta.novelty.NoveltyCalibration`, from
    :func:`~ifshm_ray.meta.novelty.calibrate` on the encoder's known-fault validation windows); None: no gate
    (nothing is novel) until one is set."""
    known_stratum: str = "known"
    """Replay stratum of the known fault types (ReplayConfig.known_stratum)."""
    strata: bool = True
    """Novel clusters get replay strata of their own (``clusters.stratum_prefix`` + k) and :meth:`replay_mix
    <ifshm_ray.meta.controller.MetaController.replay_mix>` weights them against the known stratum. False (the
    continual protocol's no-strata ablation): every incident's stratum is ``known_stratum`` and no mix is set, so
    the buffer holds one stratum and a surge of a new fault can evict the memory of the known ones."""
    decide_on: Literal["firing", "pending", "action"] = "firing"
    """When the gate (:class:`~ifshm_ray.meta.gate.GatedPolicy`) decides, once per incident: ``firing`` (default) at
    the first window with a firing alarm (the blind runbook acts on firing alarms too); ``pending`` at the first
    window with any alarm, pending or firing; ``action`` at the first window where the wrapped policy proposes
    anything but ``observe``, or has a firing alarm, whichever comes first. Use ``action`` for a policy that acts
    before alarms fire (``policy.act_on: alert`` acts on pending alerts and SLO breaches): with ``firing`` such a
    policy's first actions on a novel incident would pass the gate unchecked. With ``pending`` a benign transient's
    pending alert (``SimConfig.false_alarm_prob``) decides for most incidents, before the fault shows: measured on
    the tiny protocol, the first pending alarm of 10 incidents each of four fault types was the same benign
    ``GPUUtilizationDrop`` (same seed, same transient), so every type got the same score."""

    @model_validator(mode="after")
    def _check(self) -> "MetaConfig":
        if self.clusters.stratum_prefix == self.known_stratum or not self.clusters.stratum_prefix:
            raise ValueError("clusters.stratum_prefix must be non-empty and differ from known_stratum")
        return self

"""The continual-adaptation protocol of issue 15 (``jobs/continual.py``): configuration, the pieces, and the run.

Per seed:

1. **Phase 1**: PPO (``jobs/train.py``, the ``train_config``) on the split's known types (``known_types``: a seeded
   subset for tiny runs; None: all of them). One phase-1 policy per seed, shared by every arm.
2. **The gate's diagnoser and threshold**: a :class:`~ifshm_ray.meta.diagnose.FeatureDiagnoser` fitted on the first
   alarm windows of known-type incidents (``gate.fit_seeds`` per type), its threshold calibrated on other known-type
   windows (``gate.calibration_seeds`` per type) to ``meta.novelty.target_fpr``
   (:func:`~ifshm_ray.meta.novelty.calibrate`); or the encoder (``gate.encoder``), calibrated the same way.
3. **Phase 2**, per arm: the split's unknown types arrive one at a time (order drawn with the seed). Each stream
   incident is a new-type incident with probability ``stream.new_share``, else a known-type one (one seeded draw,
   the same stream for every arm). The arm's deployed policy (gated or not) handles it; the incident is recorded
   whoever acted (:func:`~ifshm_ray.meta.gate.record_incident`) and its time to recovery counts in the arm's
   cumulative unhealthy time. After every ``stream.block`` stream incidents, a learning arm pushes the recorded
   incidents into its replay (their strata: the gate's clusters) and trains ``stream.iterations_per_block`` PPO
   iterations (``jobs/train.py --resume``) on an env drawing the current new type with weight ``new_share`` and the
   known types with the rest (the same env-step budget for every learning arm; scenario replay only ever
   reweights the known types); then every arm gets a paired evaluation (on the schedule ``eval.every_blocks``).
4. **Paired evaluations**: the same incidents (``eval.episodes`` per type, seeds from the seed and the type) for every
   arm and reference, after phase 1 and after every block (``eval.every_blocks`` = N: after every N-th block of a
   type and its last: :func:`evaluate_after_block`): the policy ungated (its own skill) on the eval known
   types and on every unknown type, and, for a gated arm, gated. The ungated outcomes on unknown-type incidents that
   the gate flags novel go to the trust table as the policy's (the meta-controller's only source of them).

   With the LM's gate (``gate.encoder``), a gated arm with ``prompt_tuning`` then tunes the encoder's soft prompt on
   every novel cluster that is due (:class:`~ifshm_ray.meta.prompt_tuning.ClusterPromptTuner`: its rule, the
   windows, and the refitted prototypes, threshold and centroids), and the tuned encoder is the arm's diagnoser
   (unknown score and states) from then on, saved under ``<arm>/prompt_tuning/`` (``diagnoser.json`` names it). Only
   the gate's encoder changes: a policy whose LLM semantic state comes from the same encoder is refused (its table's
   embeddings are module weights that every ``--resume`` restores from the checkpoint, so a rebuilt table would
   not reach training), and one with its own encoder keeps its table.

Arms (``arms``): ``full`` (replay + self-imitation + scenario replay + meta-controller + gate, prompt tuning with
the LM's gate), ``finetune`` (PPO fine-tuning without replay, no gate), ``uniform`` (as full with uniform instead of
prioritized replay), ``gate_only`` (the phase-1 policy behind the gate; the trust table learns, the policy and the
encoder do not), ``frozen`` (the phase-1 policy). Ablations are arms with other switches (:class:`ArmConfig`:
``sil``, ``strata``, ``scenario_replay``, ``imitate_runbook``, ``deferred_healed_only``, ``prompt_tuning``;
``configs/continual_ablations.yaml``, ``configs/continual_prompt_tiny.yaml``). Metrics: :func:`summarise_protocol`.

Tuning (``pseudo_unknown``, ``configs/continual_pseudo.yaml``): whole families of the split's known types, drawn
with the seed, play the unknown types, and everything that is blind to the unknown types (phase 1, the gate, the
blind references, the replay's known stratum) is blind to them too; the split's real unknown types are never run,
so hyperparameters are never tuned on them (:func:`seed_plan` lists what a seed runs).
"""
from __future__ import annotations

import copy
import json
import math
import shutil
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import yaml
from pydantic import Field, field_validator, model_validator

from ifshm_ray.config import ConfigModel
from ifshm_ray.meta.config import MetaConfig


ROLE_ARMS = ("full", "finetune", "uniform", "gate_only", "frozen")
"""Arm names the metrics refer to by role (the issue's five arms)."""
REFERENCE_KEYS = {"runbook": "runbook_unknown_mttr_s", "runbook-full": "runbook_full_unknown_mttr_s",
                  "nearest-known": "nearest_known_unknown_mttr_s", "escalate-first": "escalate_first_unknown_mttr_s",
                  "oracle": "oracle_unknown_mttr_s"}
"""Reference policy -> its metrics.json key (unknown-type MTTR on the paired evaluation incidents)."""


# ============================================================================================ configuration
PHASE1_REFERENCE = "phase1"
"""``replay.clone.reference`` value that the protocol replaces by the seed's phase-1 policy bundle (cloning towards
the policy before phase 2 on the replayed known-type states: policy distillation against forgetting)."""


ARM_POLICY_KEYS = ("entropy_coeff_high", "entropy_coeff_low")
"""The ``policy.*`` keys an arm's ``train_overrides`` may set: loss weights, which leave the phase-1 network (and so
its checkpoint) as it is."""


class ArmConfig(ConfigModel):
    """One arm of the protocol."""

    name: str
    """Arm name (``full``, ``finetune``, ``uniform``, ``gate_only``, ``frozen`` are the roles metrics.json names)."""
    learn: bool = True
    """Train the policy during phase 2 (False: the phase-1 policy throughout)."""
    gate: bool = True
    """Deploy the policy behind the meta-controller's gate (stream and gated evaluations)."""
    replay: bool = True
    """Trajectory replay + self-imitation in training (``replay.enabled``), with the meta-controller steering it."""
    prioritized: bool = True
    """Prioritized replay (False: uniform, ``replay.buffer.alpha = 0``)."""
    sil: bool = True
    """The self-imitation term (False: ``replay.sil.weight = 0``)."""
    scenario_replay: bool = True
    """Prioritized level replay over the known types (rehearsal)."""
    push_stream: bool = True
    """Push the recorded stream incidents into the replay (their gate clusters' strata)."""
    imitate_runbook: bool = True
    """Keep the stream incidents the gate deferred (the runbook's or escalation's actions) in what is pushed
    (False: the arm without them, to measure how much adaptation came from imitating the runbook)."""
    deferred_healed_only: bool = False
    """Of the deferred incidents, push only those that ended in success (healed by the runbook's actions, without a
    page); False: every deferred incident that ended recovered (``ReplayConfig.recovered_only``), a human's fix after
    a page included. Why: self-imitation keeps a replayed step when its return beat the value estimate, which on a
    new fault type's states is poor; the runbook's failed incidents then get imitated too. Measured: the deferred
    incidents succeeded 96% of the time on the pseudo-unknown types (where imitating them is what adapted the
    policy) and 6% on the real hand-picked ones (pilot v6, where imitating them made the known types collapse).
    Measured on v6's seeds (README): it removes the collapse of the seed whose deferred incidents all failed, not
    those that follow a single healed one; stream -39 s per new incident [-131, +28] against full. Off by default.
    Needs ``imitate_runbook``."""
    strata: bool = True
    """A replay stratum per novel cluster beside the known stratum, under one capacity with the known stratum
    keeping at least half (False: the no-strata ablation: every recorded incident and every training episode goes
    into the known stratum, so a surge of a new fault can evict the memory of the known ones; reaches the
    protocol's pushes, ``replay.novel_stratum`` of the env runners and the meta-controller's replay mix
    (``meta.strata``) through the training config)."""
    prompt_tuning: bool | None = None
    """Soft-prompt tuning of the gate's encoder on the novel clusters during the stream (``meta.prompt_tuning``;
    :class:`~ifshm_ray.meta.prompt_tuning.ClusterPromptTuner`). None (default): on in a gated arm that learns when
    the LM's gate is used (``gate.encoder``), off otherwise (``gate_only`` learns nothing, the encoder included).
    True: asked explicitly, refused without a gate or without ``gate.encoder`` (the feature diagnoser has no soft
    prompt). False: the ablation without prompt tuning."""
    steering_overrides: list[str] = Field(default_factory=list)
    """``key=value`` overrides of this arm's ``meta.steering`` (the meta-controller's replay mix and scenario weights,
    :class:`~ifshm_ray.meta.config.SteeringConfig`), e.g. ``min_cluster_incidents=5``; needs ``replay``."""
    phase1_memory: int = Field(0, ge=0)
    """Incidents per known type that the phase-1 policy runs before the stream (seeds of their own, never the
    evaluation's or the stream's), pushed into the replay's known stratum with the first block's recorded
    incidents: the memory of phase 1, which trained without replay (otherwise the known stratum holds only what
    phase 2 met, and a cloning anchor, ``replay.clone``, has next to nothing to hold on to in the first block).
    0: none. Needs ``replay``."""
    train_overrides: list[str] = Field(default_factory=list)
    """``replay.key=value`` or ``ppo.key=value`` overrides of this arm's phase-2 training config, applied after the
    switches above (to compare settings paired on one stream, e.g. ``replay.sil.weight=0.3`` in tuning on
    pseudo-unknown types), and of the policy's loss weights that leave the network unchanged
    (:data:`ARM_POLICY_KEYS`: the entropy bonuses). ``ppo.train_batch_size`` is refused: every arm gets the same
    env-step budget."""

    @model_validator(mode="after")
    def _check(self) -> "ArmConfig":
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"arm name {self.name!r}: use letters, digits, '_' or '-'")
        if not self.learn and self.replay:
            raise ValueError(f"arm {self.name!r}: replay needs learn (set replay: false for an arm that does not "
                             "learn)")
        if self.steering_overrides and not self.replay:
            raise ValueError(f"arm {self.name!r}: steering_overrides steer the replay; the arm has replay: false")
        if self.deferred_healed_only and not self.imitate_runbook:
            raise ValueError(f"arm {self.name!r}: deferred_healed_only filters the deferred incidents that "
                             "imitate_runbook pushes; with imitate_runbook: false none is pushed")
        if self.phase1_memory and not self.replay:
            raise ValueError(f"arm {self.name!r}: phase1_memory fills the replay; the arm has replay: false")
        if not self.strata and not self.replay:
            raise ValueError(f"arm {self.name!r}: strata: false is an ablation of the replay; it needs replay")
        if self.prompt_tuning is True and not self.gate:
            raise ValueError(f"arm {self.name!r}: prompt_tuning tunes the gate's encoder; the arm has gate: false")
        from ifshm_ray.config import parse_overrides

        try:
            over = parse_overrides(self.train_overrides)
        except Exception as e:  # noqa: BLE001 - a malformed item: say which arm
            raise ValueError(f"arm {self.name!r}: train_overrides: {e}") from None
        bad = sorted(set(over) - {"replay", "ppo", "policy"})
        pol = over.get("policy", {})
        bad += [f"policy.{k}" for k in sorted(pol) if k not in ARM_POLICY_KEYS] if isinstance(pol, dict) else ["policy"]
        if bad:
            raise ValueError(f"arm {self.name!r}: train_overrides may set only replay.*, ppo.* and "
                             f"{', '.join('policy.' + k for k in ARM_POLICY_KEYS)} keys, not {bad} (the env, the "
                             "policy's network and the meta-controller are the protocol's, the same in every arm)")
        if not all(isinstance(over.get(k, {}), dict) for k in ("replay", "ppo")):
            raise ValueError(f"arm {self.name!r}: train_overrides: replay and ppo are sections; set their keys "
                             "(replay.sil.weight=0.3), not the sections themselves")
        rep = over.get("replay", {})
        derived = [k for k in ("enabled", "scenario_replay", "known_types", "novel_stratum") if k in rep]
        derived += [f"buffer.{k}" for k in ("gamma", "deterministic", "actor_name") if k in rep.get("buffer", {})]
        if "alpha" in rep.get("buffer", {}) and not self.prioritized:
            derived.append("buffer.alpha")
        if "weight" in rep.get("sil", {}) and not self.sil:
            derived.append("sil.weight")
        if derived:
            raise ValueError(f"arm {self.name!r}: train_overrides: replay.{derived} are set by the protocol from the "
                             "arm's switches (replay, scenario_replay, prioritized, sil, strata) or from ppo.gamma; "
                             "use the switches")
        if "train_batch_size" in over.get("ppo", {}):
            raise ValueError(f"arm {self.name!r}: train_overrides: ppo.train_batch_size would change the arm's "
                             "env-step budget (the same in every arm)")
        if over.get("replay") and not self.replay:
            raise ValueError(f"arm {self.name!r}: train_overrides sets replay.* but the arm has replay: false")
        return self


def default_arms() -> list[ArmConfig]:
    return [ArmConfig(name="full"),
            ArmConfig(name="finetune", gate=False, replay=False),
            ArmConfig(name="uniform", prioritized=False),
            ArmConfig(name="gate_only", learn=False, replay=False),
            ArmConfig(name="frozen", learn=False, gate=False, replay=False)]


class StreamSection(ConfigModel):
    """Phase 2's stream of incidents."""

    incidents_per_type: int = Field(200, ge=1)
    """New-type incidents per unknown type (the issue's cumulative unhealthy time is over the first 200)."""
    block: int = Field(20, ge=1)
    """New-type incidents between two learning steps (and paired evaluations)."""
    new_share: float = Field(0.9, gt=0.0, le=1.0)
    """Share of new-type incidents in the stream and in the learning env's draws (0.9: the issue's default; 1.0:
    the stress test)."""
    iterations_per_block: int = Field(2, ge=1)
    """PPO iterations (``ppo.train_batch_size`` env steps each) per block, for every learning arm."""
    seed_offset: int = Field(500_000, ge=0)
    """Stream incident seeds: from (seed + this, type, index); distinct from the evaluation's."""


class EvalSection(ConfigModel):
    """The paired evaluations."""

    episodes: int = Field(20, ge=1)
    """Incidents per fault type in each paired evaluation."""
    every_blocks: int = Field(1, ge=1)
    """Evaluate after phase 1, after every this-many-th block of a new type and always after a type's last block
    (:func:`evaluate_after_block`; 1: after every block). The evaluations are the protocol's main cost ((known +
    unknown types) x ``episodes`` incidents per arm, twice for a gated arm), but everything measured on them is then
    at this granularity: time to adapt counts the new-type episodes seen at the first of two consecutive
    evaluations at or below the runbook (a multiple of ``every_blocks * stream.block``, or the type's total), the
    learning curves have fewer points, and a gated arm's trust table hears of the policy's own (ungated) skill on
    novel clusters only at evaluations, so it can trust the policy later."""
    seed_offset: int = Field(900_000, ge=0)
    """Evaluation incident seeds: from (seed + this, type, index); the same for every arm and reference."""


class GateSection(ConfigModel):
    """The gate's diagnoser and threshold."""

    encoder: str | None = None
    """A fine-tuned encoder checkpoint (its unknown score and state); None: the numeric
    :class:`~ifshm_ray.meta.diagnose.FeatureDiagnoser` (no LM). With it, every gated arm with
    ``prompt_tuning`` tunes its own copy's soft prompt on the novel clusters (``meta.prompt_tuning``)."""
    fit_seeds: int = Field(10, ge=1)
    """Known-type incidents per type whose first-alarm windows fit the feature diagnoser's prototypes."""
    calibration_seeds: int = Field(10, ge=1)
    """Known-type incidents per type whose first-alarm windows calibrate the threshold (other seeds)."""
    seed_offset: int = Field(700_000, ge=0)
    """Fit seeds start here, calibration seeds follow them."""
    prototype_quantile: float = Field(0.95, gt=0.0, le=1.0)
    """Radius of a feature prototype: this quantile of its windows' cosine distances."""
    fit_windows: int = Field(1, ge=1)
    """Windows per fit incident for the feature diagnoser: the one the gate decides at and those after it (more of
    the known types' telemetry). The threshold is calibrated on the deciding windows only. 1 and 20 gave the same
    recall and false-positive rate in ``benchmarks/gate_novelty.py`` (see ``unseen_weight``)."""
    unseen_weight: float = Field(1.0, ge=0.0)
    """Weight of the never-seen evidence in the feature diagnoser's score (features constant on every fit window:
    a log template or alert no known incident showed; 0: prototype distance only). ``python
    benchmarks/gate_novelty.py --policy results/sweep/runs/hier_alert/handpicked/seed0`` (handpicked, ``decide_on:
    action``, threshold at 2% of 230 known incidents' deciding windows, 10 held-out incidents per type): recall on
    the 60 unknown-type incidents 3.3% without it, 10% [4.7, 20.1] with it (weights 0.5-2 alike); held-out
    false-positive rate 0.9% without, 2.2% [0.9, 5.0] with it."""


class BootstrapSection(ConfigModel):
    """Bootstrap confidence intervals of paired differences (over seeds, then incidents within each seed)."""

    samples: int = Field(2000, ge=100)
    """Bootstrap resamples."""
    seed: int = 0
    """Seed of the resampling."""


class ContinualConfig(ConfigModel):
    """Top level of ``configs/continual*.yaml``."""

    train_config: str = "configs/demo.yaml"
    """The training config (``jobs/train.py``'s YAML) of phase 1 and of every learning step; ``env``, ``replay``
    and ``meta`` are set by the protocol, the rest (policy, ppo, runners) is used as it is."""
    train_overrides: list[str] = Field(default_factory=list)
    """``section.key=value`` overrides of the training config."""
    split: str = "handpicked"
    """Named known/unknown split (``ifshm_ray/sim/data/splits.yaml``)."""
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4])
    """Protocol seeds (phase-1 training, stream order, incidents)."""
    known_types: int | None = Field(None, ge=2)
    """A seeded subset of this many known types for phase 1 and the evaluations (tiny runs); None: all."""
    novel_types: int | None = Field(None, ge=1)
    """The first this many unknown types of the seeded stream order (tiny runs); None: all."""
    pseudo_unknown: int | None = Field(None, ge=1)
    """Tuning mode (issue 15: tune on known families held out as pseudo-unknown, never on the real held-out
    types): this many catalog families, drawn with the seed among those with a type known in the split, have
    their known types play the unknown ones (:func:`pseudo_unknown_types`). Phase 1, the gate's fit and
    calibration, the known evaluations and the known stream incidents use the other known types; the pseudo-unknown
    types are the stream and the unknown evaluations; the blind references, the gate's runbook and the replay's
    known stratum know only the split's known types less them (:func:`blind_known_types`); the split's real unknown
    types are never run. Needs no LM (``gate.encoder``, the policy's ``encoder_checkpoint``: their encoders know
    every known type) and no ``phase1_from`` (trained on all known types). None: the real unknown types."""
    phase1_iterations: int = Field(30, ge=1)
    """PPO iterations of phase 1."""
    phase1_from: str | None = None
    """A finished ``jobs/train.py`` run to use as phase 1 instead of training it (a folder; ``{seed}`` is replaced
    by the protocol seed), for example a sweep's ``results/sweep/runs/hier_alert/handpicked/seed{seed}``. It must be
    trained on this split's known types (so ``known_types`` must be None) with the ``policy`` and ``ppo`` sections
    of ``train_config`` (checked; phase 2 resumes its newest checkpoint). ``phase1_iterations`` is then ignored:
    phase 2 counts on from that checkpoint's iteration."""
    stream: StreamSection = Field(default_factory=StreamSection)
    """Phase 2's stream."""
    eval: EvalSection = Field(default_factory=EvalSection)
    """The paired evaluations."""
    gate: GateSection = Field(default_factory=GateSection)
    """The gate's diagnoser and threshold."""
    meta: MetaConfig = Field(default_factory=lambda: MetaConfig(enabled=True))
    """The meta-controller (novelty target rate, clustering, trust, steering)."""
    arms: list[ArmConfig] = Field(default_factory=default_arms)
    """The arms (names unique)."""
    references: list[str] = Field(default_factory=lambda: list(REFERENCE_KEYS))
    """Reference policies evaluated on the same incidents; names this checkout does not have are reported as
    missing (null metrics), not run."""
    cumulative_window: int = Field(200, ge=1)
    """Cumulative unhealthy time counts the first this many new-type incidents of each type."""
    compare_with: list[str] = Field(default_factory=lambda: ["full", "finetune"])
    """The arms every other arm is paired against in ``metrics.json`` (``per_arm.<arm>.vs_<name>``); names not
    among the arms are skipped (a tuning run compares its settings with its own baseline arm)."""
    bootstrap: BootstrapSection = Field(default_factory=BootstrapSection)
    """Confidence intervals."""
    ray_num_cpus: int | None = Field(None, ge=1)
    """CPUs of the local Ray the job starts (None: all of this machine's; ignored when joining a cluster)."""

    @field_validator("split")
    @classmethod
    def _split(cls, value: str) -> str:
        from ifshm_ray.sim.catalog import CatalogError, load_catalog

        try:
            return load_catalog().check_split(value)
        except CatalogError as e:
            raise ValueError(str(e)) from None

    @model_validator(mode="after")
    def _check(self) -> "ContinualConfig":
        names = [a.name for a in self.arms]
        if not names:
            raise ValueError("arms: give at least one arm")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"arms: names must be unique, {dup} repeated")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds must be distinct integers >= 0, got {self.seeds}")
        asked = [a.name for a in self.arms if a.prompt_tuning is True]
        if asked and not self.gate.encoder:
            raise ValueError(f"arms {asked} set prompt_tuning: true, but prompt tuning tunes the LM gate's encoder and "
                             "gate.encoder is null (the feature diagnoser has no soft prompt); set gate.encoder to "
                             "a fine-tuned encoder checkpoint, or leave prompt_tuning unset")
        if self.stream.block > self.stream.incidents_per_type:
            raise ValueError(f"stream.block ({self.stream.block}) must be <= stream.incidents_per_type "
                             f"({self.stream.incidents_per_type})")
        from ifshm_ray.sim.catalog import load_catalog

        cat = load_catalog()
        if self.phase1_from is not None and self.known_types is not None:
            raise ValueError("phase1_from: an adopted phase-1 run was trained on all known types of the split; "
                             f"known_types must be null (got {self.known_types})")
        if self.pseudo_unknown is None:
            if self.known_types is not None and self.known_types > len(cat.known_in(self.split)):
                raise ValueError(f"known_types = {self.known_types} but split {self.split!r} has "
                                 f"{len(cat.known_in(self.split))} known types")
            if self.novel_types is not None and self.novel_types > len(cat.unknown_in(self.split)):
                raise ValueError(f"novel_types = {self.novel_types} but split {self.split!r} has "
                                 f"{len(cat.unknown_in(self.split))} unknown types")
            return self
        # pseudo-unknown tuning: the bounds must hold whichever families the seed draws
        if self.phase1_from is not None:
            raise ValueError("phase1_from: an adopted phase-1 run was trained on every known type of the split, the "
                             "pseudo-unknown ones included; pseudo_unknown needs phase 1 trained here")
        if self.gate.encoder:
            raise ValueError("pseudo_unknown: gate.encoder was fine-tuned on every known type of the split, the "
                             "pseudo-unknown ones included; use the feature diagnoser (gate.encoder: null)")
        sizes = sorted(len(v) for v in known_families(self.split).values())
        n = self.pseudo_unknown
        if n >= len(sizes):
            raise ValueError(f"pseudo_unknown = {n} families but split {self.split!r} has {len(sizes)} families with "
                             "known types; at least one must stay known")
        least_known = sum(sizes) - sum(sizes[-n:])
        if least_known < max(2, self.known_types or 2):
            raise ValueError(f"pseudo_unknown = {n}: holding out the {n} largest families leaves {least_known} "
                             f"known types; phase 1 and the gate need at least {max(2, self.known_types or 2)} "
                             "(known_types)")
        if self.novel_types is not None and self.novel_types > sum(sizes[:n]):
            raise ValueError(f"novel_types = {self.novel_types} but the {n} smallest families of split "
                             f"{self.split!r} have only {sum(sizes[:n])} known types to hold out as pseudo-unknown")
        return self


# ============================================================================================ small pieces
def incident_seed(seed: int, fault: str, i: int) -> int:
    """The seed of incident ``i`` of ``fault`` under protocol seed ``seed`` (as the evaluation harness)."""
    return (seed * 1_000_003 + zlib.crc32(fault.encode()) * 7919 + i) % (2**31 - 1)


def known_families(split: str) -> dict[str, list[str]]:
    """Catalog family -> its types known in ``split`` (families with at least one; sorted)."""
    from ifshm_ray.sim.catalog import load_catalog

    cat = load_catalog()
    out: dict[str, list[str]] = {}
    for name in cat.known_in(split):
        out.setdefault(cat.spec(name).family, []).append(name)
    return {f: sorted(v) for f, v in sorted(out.items())}


def pseudo_unknown_types(cfg: ContinualConfig, seed: int) -> list[str]:
    """The known types that play the unknown ones under ``cfg.pseudo_unknown`` (every known type of that many
    families drawn with the seed; sorted), or [] without it."""
    if cfg.pseudo_unknown is None:
        return []
    fams = known_families(cfg.split)
    names = list(fams)
    rng = np.random.default_rng([seed, 17])
    drawn = [names[i] for i in rng.choice(len(names), cfg.pseudo_unknown, replace=False)]
    return sorted(t for f in drawn for t in fams[f])


def blind_known_types(cfg: ContinualConfig, seed: int) -> list[str]:
    """What the blind references, the gate's runbook and the replay's known stratum may know: the split's known
    types, less the pseudo-unknown ones (catalog order)."""
    from ifshm_ray.sim.catalog import load_catalog

    pseudo = set(pseudo_unknown_types(cfg, seed))
    return [f for f in load_catalog().known_in(cfg.split) if f not in pseudo]


def draw_types(cfg: ContinualConfig, seed: int) -> tuple[list[str], list[str]]:
    """(known types used, unknown types in stream order) for one seed. With ``pseudo_unknown`` the unknown types
    are the pseudo-unknown known types and the known ones the rest of the split's known types (the split's real
    unknown types appear in neither)."""
    from ifshm_ray.sim.catalog import load_catalog

    cat = load_catalog()
    known, unknown = sorted(cat.known_in(cfg.split)), sorted(cat.unknown_in(cfg.split))
    if cfg.pseudo_unknown is not None:
        unknown = pseudo_unknown_types(cfg, seed)
        known = sorted(set(known) - set(unknown))
        if cfg.known_types is not None and cfg.known_types > len(known):
            raise ValueError(f"seed {seed}: known_types = {cfg.known_types} but {len(known)} known types remain "
                             f"after the pseudo-unknown {unknown}")
    rng = np.random.default_rng([seed, 15])
    order = [unknown[i] for i in rng.permutation(len(unknown))][: cfg.novel_types or len(unknown)]
    if cfg.known_types is not None:
        known = sorted(known[i] for i in rng.choice(len(known), cfg.known_types, replace=False))
    return known, order


def stream_plan(cfg: ContinualConfig, seed: int, known: Sequence[str],
                order: Sequence[str]) -> list[list[tuple[str, int, bool]]]:
    """Per new type, its stream: ``[(fault, incident seed, is_new), ...]`` with ``incidents_per_type`` new-type
    incidents and, between them, known-type ones at ``1 - new_share`` (one seeded draw, the same for every arm)."""
    rng = np.random.default_rng([seed, 16])
    s = cfg.stream
    plan = []
    for t, fault in enumerate(order):
        items, new, k = [], 0, 0
        while new < s.incidents_per_type:
            if rng.random() < s.new_share:
                items.append((fault, incident_seed(seed + s.seed_offset, fault, new), True))
                new += 1
            else:
                kf = known[int(rng.integers(len(known)))]
                items.append((kf, incident_seed(seed + s.seed_offset + 1, f"{fault}/{kf}", k), False))
                k += 1
        plan.append(items)
    return plan


def seed_plan(cfg: ContinualConfig, seed: int) -> dict[str, Any]:
    """Every fault type and incident one seed runs (pure: no simulator): ``known`` (phase 1, the gate's fit and
    calibration windows, the known evaluations and stream incidents), ``order`` (the new types in stream order),
    ``pseudo_unknown`` ([] without it), ``blind_known`` (what the blind references, the gate's runbook and the
    replay's known stratum may know; None: the split's known types), ``stream`` (:func:`stream_plan`) and
    ``incidents`` (the paired evaluation incidents, ``(fault, seed)``, the same for every arm and reference)."""
    from ifshm_ray.sim.catalog import load_catalog

    known, order = draw_types(cfg, seed)
    e = cfg.eval
    incidents = [(f, incident_seed(seed + e.seed_offset, f, i)) for f in [*known, *order] for i in range(e.episodes)]
    pseudo = pseudo_unknown_types(cfg, seed)
    return {"known": known, "order": order, "pseudo_unknown": pseudo,
            "blind_known": None if cfg.pseudo_unknown is None else [
                f for f in load_catalog().known_in(cfg.split) if f not in set(pseudo)],
            "stream": stream_plan(cfg, seed, known, order), "incidents": incidents}


def blocks(items: Sequence[tuple[str, int, bool]], block: int) -> list[list[tuple[str, int, bool]]]:
    """Cut a type's stream after every ``block`` new-type incidents (the known ones go with the block they are
    in)."""
    out, cur, new = [], [], 0
    for it in items:
        cur.append(it)
        new += it[2]
        if new == block:
            out.append(cur)
            cur, new = [], 0
    if cur:
        out.append(cur)
    return out


def evaluate_after_block(b: int, n_blocks: int, every_blocks: int) -> bool:
    """Whether the paired evaluation runs after block ``b`` (from 0) of a new type's ``n_blocks``: after every
    ``every_blocks``-th and always after the last (``eval.every_blocks``)."""
    return (b + 1) % every_blocks == 0 or b == n_blocks - 1


def evaluation_labels(order: Sequence[str], n_blocks: Sequence[int], every_blocks: int) -> list[str]:
    """The labels of one arm's paired evaluations, in order: ``phase1``, then ``<type>#<block from 1>`` for the
    blocks :func:`evaluate_after_block` selects (``n_blocks[t]``: the number of blocks of ``order[t]``)."""
    return ["phase1"] + [f"{fault}#{b + 1}" for fault, n in zip(order, n_blocks) for b in range(n)
                         if evaluate_after_block(b, n, every_blocks)]


def paired_bootstrap(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], samples: int, seed: int,
                     relative: bool = False) -> dict[str, Any]:
    """Mean difference mean(a) - mean(b) (``relative``: mean(a) / mean(b) - 1) of paired outcomes, grouped by seed
    (``a[s][i]`` and ``b[s][i]`` are the same incident), with a 95% percentile interval from resampling seeds, then
    incidents within each drawn seed. ``better`` (a lower than b) when the interval lies below 0."""
    A = [np.asarray(x, np.float64) for x in a]
    B = [np.asarray(x, np.float64) for x in b]
    if not A or len(A) != len(B) or any(x.shape != y.shape or x.size == 0 for x, y in zip(A, B)):
        raise ValueError("paired_bootstrap needs the same non-empty incidents per seed in both arms")

    def stat(xs, ys):
        ma, mb = np.mean(np.concatenate(xs)), np.mean(np.concatenate(ys))
        return (ma / mb - 1.0) if relative else (ma - mb)

    rng = np.random.default_rng(seed)
    point = float(stat(A, B))
    reps = np.empty(samples)
    for k in range(samples):
        ss = rng.integers(len(A), size=len(A))
        xs, ys = [], []
        for s in ss:
            idx = rng.integers(A[s].size, size=A[s].size)
            xs.append(A[s][idx])
            ys.append(B[s][idx])
        reps[k] = stat(xs, ys)
    lo, hi = (float(v) for v in np.percentile(reps, [2.5, 97.5]))
    return {"mean": point, "ci95": [lo, hi], "better": hi < 0.0, "worse": lo > 0.0,
            "seeds": len(A), "incidents": int(sum(x.size for x in A))}


def time_to_adapt(points: Sequence[tuple[int, float]], runbook_mttr: float, consecutive: int = 2) -> int | None:
    """New-type episodes seen until the type's MTTR is at or below the runbook's in ``consecutive`` consecutive
    paired evaluations: ``points`` = [(episodes seen, MTTR), ...] in order; the count at the first of them; None
    when it never happens (censored at the stream's end)."""
    run = 0
    for k, (n, m) in enumerate(points):
        run = run + 1 if m <= runbook_mttr else 0
        if run >= consecutive:
            return int(points[k - consecutive + 1][0])
    return None


def make_stream_env(config: dict | None = None):
    """Env entry point of phase 2's learning: :func:`ifshm_ray.env.make_vector_env` whose simulator draws the
    first fault with ``config["fault_weights"]`` (new type / known types) instead of the catalog frequencies."""
    from ifshm_ray.env import make_vector_env
    from ifshm_ray.policy.replay import simulators

    config = dict(config or {})
    weights = config.pop("fault_weights", None)
    env = make_vector_env(config)
    if weights:
        for sim in {id(s): s for s, _ in simulators(env)}.values():
            sim.set_fault_weights(weights)
    return env


# ============================================================================================ policies
class ModulePolicy:
    """A loaded policy bundle as a baselines ``Policy`` (deterministic)."""

    name = "ppo"

    def __init__(self, bundle) -> None:
        self.bundle = bundle

    def reset(self, env, episode_seed: int | None = None) -> None:
        pass

    def act(self, obs, info, env):
        return np.asarray(self.bundle.act(obs, deterministic=True), np.int64)


def reference_policy(name: str, sim_cfg: Any = None, known: Sequence[str] | None = None):
    """A reference by name for the simulator config ``sim_cfg`` (its split: the blind runbooks and nearest-known
    know only its known types, or only ``known``, a subset of them: :func:`blind_known_types`); None when this
    checkout has no such baseline."""
    from ifshm_ray.baselines import BASELINES, make_baseline

    return make_baseline(name, 0, sim_cfg, known=known) if name in BASELINES else None


def run_incidents(env, policy, incidents: Sequence[tuple[str, int]]) -> list[dict]:
    """One :func:`~ifshm_ray.eval.harness.run_episode` record per ``(fault, seed)``."""
    from ifshm_ray.eval.harness import run_episode

    return [run_episode(env, policy, f, s) for f, s in incidents]


def mean_mttr(records: Sequence[dict], faults: Sequence[str] | None = None) -> float | None:
    xs = [r["mttr_s"] for r in records if faults is None or r["fault"] in faults]
    return float(np.mean(xs)) if xs else None


def pushes_incident(arm: ArmConfig, deferred: bool, success: bool) -> bool:
    """Whether an arm stores a recorded stream incident in its replay: its own incidents always (with
    ``push_stream``); a deferred one (the runbook acted, or a page) with ``imitate_runbook``, and then, with
    ``deferred_healed_only``, only when it ended in success."""
    if not arm.push_stream:
        return False
    if not deferred:
        return True
    return arm.imitate_runbook and (success or not arm.deferred_healed_only)


def push_stratum(incident, arm: ArmConfig, known_stratum: str, novel_stratum: str = "novel") -> str:
    """The replay stratum a recorded stream incident is pushed into: its gate cluster's
    (:func:`~ifshm_ray.meta.gate.incident_stratum`), or the known stratum for every incident of an arm without
    ``strata``."""
    from ifshm_ray.meta.gate import incident_stratum

    return incident_stratum(incident, known_stratum, novel_stratum) if arm.strata else known_stratum


# ============================================================================================ the run
_TRAIN_JOB = None


def _train_job():
    """``jobs/train.py`` as a module (imported by path: ``jobs/`` is not a package)."""
    global _TRAIN_JOB
    if _TRAIN_JOB is None:
        import importlib.util

        path = Path(__file__).resolve().parents[2] / "jobs" / "train.py"
        spec = importlib.util.spec_from_file_location("ifshm_jobs_train", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules.setdefault("ifshm_jobs_train", mod)
        spec.loader.exec_module(mod)
        _TRAIN_JOB = mod
    return _TRAIN_JOB


class Protocol:
    """One protocol run into ``out`` (see the module doc). ``progress``: a line per step."""

    def __init__(self, cfg: ContinualConfig, out: str | Path, progress: Callable[[str], None] = print) -> None:
        from ifshm_ray.config import load_config
        from ifshm_ray.policy.config import TrainConfig

        self.cfg = cfg
        self.out = Path(out).resolve()
        self.progress = progress
        self.t0 = time.time()
        path = Path(cfg.train_config)
        if not path.is_file():
            raise FileNotFoundError(f"train_config {cfg.train_config!r} does not exist")
        self.base_train = load_config(TrainConfig, path, cfg.train_overrides).to_dict()
        env_cfg = dict(self.base_train["env"]["config"])
        env_cfg.pop("faults", None)
        env_cfg.pop("seed", None)
        env_cfg["split"] = cfg.split
        self.sim_config = {k: v for k, v in env_cfg.items() if k not in ("render_telemetry", "mine_logs")}
        if cfg.pseudo_unknown is not None and self.base_train["policy"].get("encoder_checkpoint"):
            raise ValueError(f"pseudo_unknown: train_config {cfg.train_config!r} gives the policy an LLM semantic "
                             "state (policy.encoder_checkpoint), whose encoder and semantic table know every known "
                             "type of the split, the pseudo-unknown ones included; tune without it")
        act_on = self.base_train["policy"].get("act_on", "always")
        if cfg.meta.decide_on == "action" and act_on != "alert":
            raise ValueError(f"meta.decide_on: action with train_config {cfg.train_config!r}'s policy.act_on "
                             f"{act_on!r}: such a policy acts in calm windows, so the gate would decide before the "
                             "fault shows; use policy.act_on: alert or decide_on: firing")
        if act_on == "alert" and cfg.meta.decide_on != "action":
            raise ValueError(f"train_config {cfg.train_config!r} has policy.act_on: alert, which acts on pending "
                             f"alerts: with meta.decide_on {cfg.meta.decide_on!r} its first actions on a novel "
                             "incident would pass before the gate decides; use meta.decide_on: action")
        if any(self.prompt_tunes(a) for a in cfg.arms):
            self._check_prompt_tuning_encoder()
        human = (env_cfg.get("human") or {}).get("model", "fixed") if isinstance(env_cfg.get("human"), dict) else \
            "fixed"
        if cfg.pseudo_unknown is not None and human == "drawn":
            raise ValueError("pseudo_unknown with human.model: drawn: the simulated human's familiarity follows the "
                             "split's held-out types, so pseudo-unknown incidents would get the known-type page")
        self.blind_known: list[str] | None = None  # set per seed (run_seed): None, the split's known types
        self._tuning_windows = None  # prompt tuning's (fit, calibration) windows, set per seed (run_seed)
        self._check_arm_training_configs()
        self._gate_encoder = cfg.gate.encoder  # per seed: the encoder with refitted prototypes when arms tune

    def _check_arm_training_configs(self) -> None:
        """Every learning arm's phase-2 training config (its switches and ``train_overrides`` on ``train_config``)
        is valid, checked before anything runs (a bad override would otherwise stop the run hours in)."""
        from ifshm_ray.config import ConfigError
        from ifshm_ray.policy.config import TrainConfig
        from ifshm_ray.sim.catalog import load_catalog

        known = load_catalog().known_in(self.cfg.split)[:2]
        unknown = load_catalog().unknown_in(self.cfg.split)[:1] or known[:1]
        had = getattr(self, "calibration_path", None), self.blind_known
        self.calibration_path = "<the seed's novelty calibration>"  # (both set per seed; not read by the check)
        self.blind_known = known
        try:
            for arm in self.cfg.arms:
                if not arm.learn:
                    continue
                d = self._train_dict([*unknown, *known], 1, 0, arm, {unknown[0]: 0.9, known[0]: 0.1})
                try:
                    TrainConfig.from_dict(d, source=f"arm {arm.name!r}'s phase-2 training config")
                except ConfigError as e:
                    raise ValueError(str(e)) from None
        finally:
            self.calibration_path, self.blind_known = had

    def prompt_tunes(self, arm: ArmConfig) -> bool:
        """Whether ``arm`` tunes the gate's encoder: a gated arm with ``gate.encoder`` and ``arm.prompt_tuning``
        (None: when the arm learns)."""
        wanted = arm.learn if arm.prompt_tuning is None else arm.prompt_tuning
        return bool(wanted and arm.gate and self.cfg.gate.encoder)

    def _check_prompt_tuning_encoder(self) -> None:
        """The gate's encoder is a checkpoint, and the policy's LLM semantic state (if any) is not built from it
        (see the module doc)."""
        from ifshm_ray.encoding.semantic import checkpoint_dir

        gate = checkpoint_dir(self.cfg.gate.encoder).resolve()
        pol = self.base_train["policy"]
        mine = None
        if pol.get("semantic_table") and Path(pol["semantic_table"]).expanduser().exists():
            from ifshm_ray.encoding.rl_state import load_table

            mine = load_table(pol["semantic_table"])["meta"].get("encoder")
        elif pol.get("encoder_checkpoint"):
            mine = pol["encoder_checkpoint"]
        if mine and Path(mine).expanduser().exists() and Path(mine).expanduser().resolve() in (gate, gate / "adapter"):
            raise ValueError(f"prompt tuning tunes gate.encoder {self.cfg.gate.encoder!r}, from which train_config "
                             f"{self.cfg.train_config!r}'s policy also takes its LLM semantic state: the policy's "
                             "table of item embeddings is module weights that every jobs/train.py --resume restores "
                             "from the checkpoint, so a table rebuilt with the tuned encoder would not reach "
                             "training. Set prompt_tuning: false on the arms, or give the policy no semantic state")

    def reference(self, name: str):
        """A reference policy of this seed, blind to the types :func:`blind_known_types` leaves out."""
        return reference_policy(name, self.env.sim_cfg, self.blind_known)

    def runbook(self):
        """The blind runbook of the protocol's split (and of the seed's pseudo-unknown types): where the gate
        defers to."""
        return self.reference("runbook")

    def log(self, msg: str) -> None:
        self.progress(f"[continual {time.time() - self.t0:6.0f}s] {msg}")

    # ---------------------------------------------------------------- training through jobs/train.py
    def _train_dict(self, faults: list[str], iterations: int, seed: int, arm: ArmConfig | None,
                    weights: dict[str, float] | None) -> dict:
        """The training config (a dict for :class:`~ifshm_ray.policy.config.TrainConfig`) of one training call."""
        d = copy.deepcopy(self.base_train)
        d["env"]["config"] = {**d["env"]["config"], "faults": list(faults), "split": self.cfg.split}
        if weights:
            d["env"]["entry_point"] = "ifshm_ray.meta.continual:make_stream_env"
            d["env"]["config"]["fault_weights"] = dict(weights)
            d["runners"]["gym_env_vectorize_mode"] = "vector_entry_point"
        d["run"].update(iterations=int(iterations), seed=int(seed), checkpoint_every=10**6, keep_checkpoints=1,
                        max_wall_s=1e9)
        # demonstrations (replay.demonstrations of train_config) belong to phase 1, which then trains with the replay
        # (without the meta-controller); phase 2 resumes with them in the replay state and records none
        demos = (d["replay"].get("demonstrations") or {}).get("policy")
        replay = bool(arm.replay) if arm is not None else bool(demos)
        if arm is not None and demos:
            d["replay"]["demonstrations"] = {**d["replay"]["demonstrations"], "policy": None}
        d["replay"]["enabled"] = replay
        d["meta"] = {**(self.arm_meta(arm) if arm is not None else self.cfg.meta).to_dict(),
                     "enabled": replay and arm is not None}
        if self.cfg.pseudo_unknown is not None:  # the pseudo-unknown types are novel to the replay too
            d["replay"]["known_types"] = list(self.blind_known)
        if replay:
            d["replay"]["buffer"]["gamma"] = d["ppo"]["gamma"]
        if replay and arm is not None:
            if not arm.prioritized:
                d["replay"]["buffer"]["alpha"] = 0.0
            if not arm.sil:
                d["replay"]["sil"]["weight"] = 0.0
            d["replay"]["scenario_replay"] = arm.scenario_replay
            d["meta"]["known_stratum"] = d["replay"]["buffer"]["known_stratum"]
            d["meta"]["calibration"] = str(self.calibration_path)
            if not arm.strata:  # one stratum: the env runners' unknown-type episodes and the mix too
                d["replay"]["novel_stratum"] = d["replay"]["buffer"]["known_stratum"]
                d["meta"]["strata"] = False
        if arm is not None and arm.train_overrides:
            from ifshm_ray.config import merge, parse_overrides

            d = merge(d, parse_overrides(arm.train_overrides))
            if replay:  # returns-to-go with the PPO discount the arm trains with
                d["replay"]["buffer"]["gamma"] = d["ppo"]["gamma"]
        clone = d["replay"].get("clone") or {}
        if replay and clone.get("reference") == PHASE1_REFERENCE:  # the teacher of the cloning term: phase 1
            clone["reference"] = str(self.out / f"seed_{seed}" / "phase1" / "policy_bundle")
        return d

    def arm_meta(self, arm: ArmConfig):
        """The meta-controller's config of one arm: the protocol's ``meta``, one stratum without ``strata``, and the
        arm's ``steering_overrides``."""
        from ifshm_ray.config import ConfigError, merge, parse_overrides
        from ifshm_ray.meta.config import MetaConfig

        meta = self.cfg.meta if arm.strata else self.cfg.meta.model_copy(update={"strata": False})
        if not arm.steering_overrides:
            return meta
        try:
            over = parse_overrides(arm.steering_overrides)
            return MetaConfig.from_dict(merge(meta.to_dict(), {"steering": over}),
                                        source=f"arm {arm.name} steering_overrides")
        except (ConfigError, ValueError) as e:
            raise ValueError(f"arm {arm.name!r}: steering_overrides: {e}") from None

    def _train(self, out: Path, d: dict, resume: bool) -> dict:
        """``jobs/train.py --config OUT/train_config.yaml --out OUT [--resume OUT]`` in this process."""
        from ifshm_ray.config import ConfigError
        from ifshm_ray.policy.config import TrainConfig

        try:
            TrainConfig.from_dict(d, source="continual training config")
        except ConfigError as e:
            raise ValueError(str(e)) from None
        out.mkdir(parents=True, exist_ok=True)
        path = out / "train_config.yaml"
        path.write_text(yaml.safe_dump(d, sort_keys=False))
        argv = ["--config", str(path), "--out", str(out)] + (["--resume", str(out)] if resume else [])
        return _train_job().main(argv)

    def _newest_checkpoint(self, out: Path) -> Path:
        ckpts = sorted(p for p in (out / "checkpoints").glob("iter_*") if (p / "rllib_checkpoint.json").is_file())
        if not ckpts:
            raise FileNotFoundError(f"no checkpoint under {out / 'checkpoints'}")
        return ckpts[-1]

    def _adopt_phase1(self, src: Path, p1: Path, seed: int) -> int:
        """Copy a finished training run (``phase1_from``) into ``p1`` as this seed's phase 1, after checking that it
        is one: a policy bundle and a checkpoint, trained on this split's known types with ``train_config``'s
        ``policy`` and ``ppo`` sections. Returns its checkpoint's iteration."""
        from ifshm_ray.config import ConfigError, load_config
        from ifshm_ray.policy.config import TrainConfig

        where = f"phase1_from {str(src)!r}"
        if not (src / "policy_bundle").is_dir():
            raise FileNotFoundError(f"{where}: no policy_bundle/ there (a finished jobs/train.py --out folder?)")
        ckpt = self._newest_checkpoint(src)
        if not (src / "config.yaml").is_file():
            raise FileNotFoundError(f"{where}: no config.yaml (the training config jobs/train.py writes)")
        try:
            theirs = load_config(TrainConfig, src / "config.yaml").to_dict()
        except ConfigError as e:
            raise ValueError(f"{where}: its config.yaml does not load: {e}") from None
        env = theirs["env"]["config"]
        if env.get("split") != self.cfg.split or env.get("faults") != "known":
            raise ValueError(f"{where}: trained on split {env.get('split')!r} with faults {env.get('faults')!r}; "
                             f"phase 1 needs split {self.cfg.split!r} with faults 'known'")
        for section in ("policy", "ppo"):
            diff = sorted(k for k in set(theirs[section]) | set(self.base_train[section])
                          if theirs[section].get(k) != self.base_train[section].get(k))
            if diff:
                raise ValueError(f"{where}: its {section} section differs from train_config "
                                 f"{self.cfg.train_config!r} in {diff}; phase 2 would resume a different model")
        ours = self.base_train["env"]["config"]
        skip = {"faults", "seed", "split", "num_envs", "render_telemetry", "mine_logs"}
        diff = sorted(k for k in (set(env) | set(ours)) - skip if env.get(k) != ours.get(k))
        if diff:
            raise ValueError(f"{where}: its env config differs from train_config {self.cfg.train_config!r} in "
                             f"{diff} (theirs {[env.get(k) for k in diff]}, ours {[ours.get(k) for k in diff]}): "
                             "phase 1 and phase 2 would meet different simulators")
        if theirs["run"].get("seed") != seed:
            raise ValueError(f"{where}: trained with run.seed {theirs['run'].get('seed')}, but it is phase 1 of "
                             f"protocol seed {seed} (put {{seed}} in phase1_from)")
        shutil.rmtree(p1, ignore_errors=True)
        (p1 / "checkpoints").mkdir(parents=True)
        shutil.copytree(ckpt, p1 / "checkpoints" / ckpt.name)
        shutil.copytree(src / "policy_bundle", p1 / "policy_bundle")
        for name in ("config.yaml", "metrics.jsonl", "summary.json"):
            if (src / name).is_file():
                shutil.copy2(src / name, p1 / name)
        (p1 / "ADOPTED_FROM").write_text(f"{src.resolve()}\n{ckpt.name}\n")
        return int(ckpt.name.rsplit("_", 1)[-1])

    def _push_stream(self, out: Path, d: dict, episodes: list[tuple[str, Any]], levels: list[str]) -> int:
        """Push recorded stream incidents into the arm's replay state (the newest checkpoint's), so that the next
        ``jobs/train.py --resume`` starts with them."""
        import ray

        from ifshm_ray.policy.config import TrainConfig
        from ifshm_ray.replay.actor import get_or_create_replay_actor

        if not episodes:
            return 0
        tc = TrainConfig.from_dict(d, source="continual training config")
        buf = tc.replay.buffer
        ckpt = self._newest_checkpoint(out)
        from ifshm_ray.replay.actor import STATE_FILE

        has_state = (ckpt / STATE_FILE).is_file()  # none yet right after phase 1 (trained without replay)
        actor = get_or_create_replay_actor(buf, state_dir=str(out / "replay"),
                                           restore_from=str(ckpt) if has_state else None,
                                           levels=levels or None, level_config=tc.replay.level_sampler)
        groups: dict[str, list] = {}
        for stratum, ep in episodes:
            groups.setdefault(stratum, []).append(ep)
        ray.get(actor.push_many.remote(sorted(groups.items()), source=0))
        stored = ray.get(actor.flush.remote()) if buf.deterministic else len(episodes)
        ray.get(actor.save.remote(str(ckpt)))
        ray.kill(actor, no_restart=True)
        deadline = time.time() + 60
        while time.time() < deadline:  # the name must be free before jobs/train.py gets-or-creates it
            try:
                ray.get_actor(buf.actor_name)
                time.sleep(0.2)
            except ValueError:
                break
        return int(stored)

    def run_seed(self, seed: int) -> dict:
        from ifshm_ray.env import FaultInjectionEnv
        from ifshm_ray.meta.diagnose import EncoderDiagnoser, FeatureDiagnoser, first_alarm_windows
        from ifshm_ray.meta.novelty import calibrate
        from ifshm_ray.policy.bundle import load_policy_bundle

        cfg = self.cfg
        root = self.out / f"seed_{seed}"
        sp = seed_plan(cfg, seed)
        known, order, incidents, plan = sp["known"], sp["order"], sp["incidents"], sp["stream"]
        self.blind_known = sp["blind_known"]
        self.log(f"seed {seed}: {len(known)} known types, stream order {order}" + (
            f" (pseudo-unknown: {sp['pseudo_unknown']}; the split's unknown types are not run)"
            if cfg.pseudo_unknown is not None else ""))
        self.env = FaultInjectionEnv({**self.sim_config, "render_telemetry": True, "faults": "all"})

        # ---- phase 1
        p1 = root / "phase1"
        if cfg.phase1_from:
            src = Path(cfg.phase1_from.format(seed=seed))
            self.phase1_iterations = self._adopt_phase1(src, p1, seed)
            self.log(f"seed {seed}: phase 1 adopted from {src} (iteration {self.phase1_iterations})")
        else:
            self.log(f"seed {seed}: phase 1, {cfg.phase1_iterations} PPO iterations on the known types")
            self._train(p1, self._train_dict(known, cfg.phase1_iterations, seed, None, None), resume=False)
            self.phase1_iterations = cfg.phase1_iterations

        # ---- the gate's diagnoser and threshold, on the windows the gate will see: the phase-1 policy acts until
        # the gate's window (meta.decide_on). (Measured before the decide_on/unseen changes, tiny run with
        # decide_on firing: calibrated under observe actions 7 of 8 known and 3 of 4 unknown evaluation incidents
        # were flagged novel; with the policy acting 0 of 8 and 0 of 4.)
        phase1_bundle = load_policy_bundle(p1)
        phase1_policy = ModulePolicy(phase1_bundle)
        g = cfg.gate
        fit_seeds = range(seed * 10_000 + g.seed_offset, seed * 10_000 + g.seed_offset + g.fit_seeds)
        cal_seeds = range(fit_seeds.stop, fit_seeds.stop + g.calibration_seeds)
        self._tuning_windows, self._gate_encoder = None, g.encoder
        if g.encoder and any(self.prompt_tunes(a) for a in cfg.arms):
            # prompt tuning refits the encoder's known prototypes on the fit windows after every tuning; so that an
            # arm with it and one without differ only by the soft prompt, every arm starts from the encoder with
            # its prototypes refitted on the same windows (a tuning of zero steps), saved under seed_N/gate_encoder
            from ifshm_ray.encoding.semantic import SemanticEncoder

            fit = first_alarm_windows(self.sim_config, known, fit_seeds, decide_on=cfg.meta.decide_on,
                                      policy=phase1_policy, windows=g.fit_windows)
            enc = SemanticEncoder.load(g.encoder)
            enc.modal.freeze()
            missing = sorted(set(known) - set(enc.fault_types))
            if missing:
                raise ValueError(f"gate.encoder {g.encoder!r} does not know the known types {missing} (its fault "
                                 "head's classes): prompt tuning cannot anchor them")
            enc.fit_prototypes(enc.predict([t for _, _, t in fit])["state"],
                               [enc.fault_types.index(f) for f, _, _ in fit])
            self._gate_encoder = str(enc.save(root / "gate_encoder"))
            diagnose = EncoderDiagnoser(self._gate_encoder, enc)
            self.log(f"seed {seed}: the gate's encoder with its known prototypes refitted on {len(fit)} fit windows "
                     f"({self._gate_encoder})")
        elif g.encoder:
            diagnose = EncoderDiagnoser(g.encoder)
        else:
            diagnose = FeatureDiagnoser.fit(self.sim_config, first_alarm_windows(
                self.sim_config, known, fit_seeds, decide_on=cfg.meta.decide_on, policy=phase1_policy,
                windows=g.fit_windows), g.prototype_quantile, g.unseen_weight)
        cal_windows = first_alarm_windows(self.sim_config, known, cal_seeds, decide_on=cfg.meta.decide_on,
                                          policy=phase1_policy)
        calibration = calibrate([diagnose(t)[0] for _, _, t in cal_windows], config=cfg.meta.novelty)
        if g.encoder and any(self.prompt_tunes(a) for a in cfg.arms):  # prompt tuning's labelled known windows
            self._tuning_windows = (fit, cal_windows)
        self.calibration_path = calibration.save(root / "novelty_calibration.json")
        self.log(f"seed {seed}: gate threshold {calibration.threshold:.3f} on {len(cal_windows)} known windows "
                 f"(false-positive rate there {calibration.calibration_fpr:.3f})")

        # ---- references on the paired evaluation incidents
        refs: dict[str, list[dict] | None] = {}
        if "nearest-known" in cfg.references:  # its calibration incidents must not be evaluation incidents
            from ifshm_ray.baselines.config import NearestKnownConfig
            from ifshm_ray.baselines.nearest import calibration_seeds
            from ifshm_ray.sim.catalog import load_catalog

            # (its prototypes are built from every known type of the split, then restricted to blind_known)
            clash = sorted({s for _, s in incidents}
                           & calibration_seeds(NearestKnownConfig(), load_catalog().known_in(cfg.split)))
            if clash:
                raise ValueError(f"evaluation incident seeds {clash[:5]} are nearest-known calibration seeds; "
                                 "change eval.seed_offset")
        for name in cfg.references:
            pol = self.reference(name)
            refs[name] = run_incidents(self.env, pol, incidents) if pol is not None else None
            self.log(f"seed {seed}: reference {name}: " + ("not in this checkout (null)" if pol is None else
                     f"unknown-type MTTR {mean_mttr(refs[name], order):.0f} s"))

        self._phase1_ungated = run_incidents(self.env, ModulePolicy(phase1_bundle), incidents)
        arms: dict[str, dict] = {}
        for arm in cfg.arms:
            arms[arm.name] = self._run_arm(arm, seed, root, p1, known, order, plan, incidents, calibration,
                                           diagnose, phase1_bundle)
        self.env.close()
        return {"seed": seed, "known": known, "order": order, "pseudo_unknown": sp["pseudo_unknown"],
                "blind_known": self.blind_known, "incidents": incidents, "references": refs,
                "calibration": calibration.to_dict(), "arms": arms}

    def _run_arm(self, arm: ArmConfig, seed: int, root: Path, p1: Path, known: list[str], order: list[str],
                 plan: list, incidents: list, calibration, diagnose, phase1_bundle) -> dict:
        """Phase 2 of one arm (see the module doc): its stream, learning steps and paired evaluations."""
        from ifshm_ray.meta.controller import MetaController
        from ifshm_ray.meta.gate import GatedPolicy, record_incident
        from ifshm_ray.policy.bundle import load_policy_bundle

        cfg = self.cfg
        out = root / arm.name
        if arm.learn:
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(p1, out)
        else:  # the phase-1 bundle beside its gate, so that `jobs/evaluate.py --policy gated:OUT` works here too
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(p1 / "policy_bundle", out / "policy_bundle")
        meta = MetaController(self.arm_meta(arm), calibration)
        diagnose.save(out)
        if self.blind_known is not None:  # `jobs/evaluate.py --policy gated:OUT`'s runbook: blind to the pseudo types
            from ifshm_ray.eval.gated import BLIND_KNOWN_FILE

            (out / BLIND_KNOWN_FILE).write_text(json.dumps({"known": list(self.blind_known)}))
        tuner = self._prompt_tuner(arm, out)
        keep = cfg.meta.prompt_tuning.windows_per_incident if tuner is not None else 1
        bundle = phase1_bundle
        policy = ModulePolicy(bundle)
        iterations = self.phase1_iterations
        evals, stream_recs = [], []
        cache = {"ungated": self._phase1_ungated}  # the phase-1 policy's ungated records (shared by the arms)

        def evaluate(seen: dict[str, int], label: str) -> None:
            ev = self._evaluate_arm(policy, meta if arm.gate else None, diagnose, incidents, known,
                                    cache["ungated"])
            cache["ungated"] = ev["ungated"]
            evals.append({"label": label, "seen": dict(seen), **ev})
            unk = mean_mttr(ev["ungated"], order)
            kn = mean_mttr(ev["ungated"], known)
            gated = f", gated unknown {mean_mttr(ev['gated'], order):.0f} s" if "gated" in ev else ""
            self.log(f"seed {seed} arm {arm.name} [{label}]: known MTTR {kn:.0f} s, unknown {unk:.0f} s{gated}")

        seen = {f: 0 for f in order}
        evaluate(seen, "phase1")
        meta.set_known_baseline({f: mean_mttr(evals[0]["ungated"], [f]) for f in known})
        memory = []  # the phase-1 policy's own known-type incidents, into the known stratum with the first block
        phase1_policy = ModulePolicy(phase1_bundle)
        for f in known if arm.phase1_memory else []:
            for i in range(arm.phase1_memory):
                rec = record_incident(self.env, phase1_policy, f,
                                      incident_seed(seed + cfg.stream.seed_offset + 2, f"phase1/{f}", i))
                memory.append((cfg.meta.known_stratum, rec.episode))
        if memory:
            self.log(f"seed {seed} arm {arm.name}: {len(memory)} phase-1 incidents of the known types recorded for "
                     "the replay")
        for t, fault in enumerate(order):
            type_blocks = blocks(plan[t], cfg.stream.block)
            for b, items in enumerate(type_blocks):
                deployed = GatedPolicy(policy, self.runbook(), meta, diagnose, update=True,
                                       keep_windows=keep) if arm.gate else policy
                pushed, memory = memory, []
                for f, s, is_new in items:
                    rec = record_incident(self.env, deployed, f, s)
                    info = rec.info
                    if arm.gate:
                        deployed.record_outcome(bool(info["success"]), float(info["mttr_s"]))
                    if tuner is not None:
                        tuner.record(rec.decision, deployed.windows)
                    if not is_new:
                        meta.record_known(f, float(info["mttr_s"]))
                    stream_recs.append({"fault": f, "seed": s, "new": is_new, "mttr_s": float(info["mttr_s"]),
                                        "success": bool(info["success"]), "type_index": t,
                                        "actor": rec.decision.actor if rec.decision else "policy",
                                        "deferred": rec.deferred})
                    seen[fault] += is_new
                    if pushes_incident(arm, rec.deferred, bool(info["success"])):
                        pushed.append((push_stratum(rec, arm, cfg.meta.known_stratum), rec.episode))
                if arm.learn:
                    weights = {fault: cfg.stream.new_share}
                    if cfg.stream.new_share < 1.0:
                        weights.update({k: (1.0 - cfg.stream.new_share) / len(known) for k in known})
                    faults = [fault, *known] if cfg.stream.new_share < 1.0 else [fault]
                    ckpt = self._newest_checkpoint(out)
                    meta.save(ckpt)
                    n_pushed = 0
                    iterations += cfg.stream.iterations_per_block
                    d = self._train_dict(faults, iterations, seed, arm, weights)
                    if arm.replay:
                        levels = [k for k in faults if k in known] if arm.scenario_replay else []
                        n_pushed = self._push_stream(out, d, pushed, levels)
                    self._train(out, d, resume=True)
                    if arm.replay:
                        meta = MetaController.load(self._newest_checkpoint(out))
                    bundle = load_policy_bundle(out)
                    policy = ModulePolicy(bundle)
                    cache["ungated"] = None  # a new policy: run its ungated evaluation
                    self.log(f"seed {seed} arm {arm.name}: {fault} block {b + 1}: trained to iteration {iterations}"
                             f" ({n_pushed} recorded incidents stored in the replay)")
                if tuner is not None:  # after the learning step (which reloads the meta-controller)
                    tuned = tuner.step(meta, label=f"{fault}#{b + 1}")
                    if tuned is not None:
                        diagnose = tuned
                        diagnose.save(out)
                        self.log(f"seed {seed} arm {arm.name}: {fault} block {b + 1}: prompt-tuned encoder "
                                 f"{tuned.checkpoint} is the gate's diagnoser (threshold "
                                 f"{meta.threshold:.3f})")
                if evaluate_after_block(b, len(type_blocks), cfg.eval.every_blocks):
                    evaluate(seen, f"{fault}#{b + 1}")
        meta.save(out)
        if arm.learn:  # the bundle serves its gate by itself: the state and the diagnoser its threshold is for
            meta.save(out / "policy_bundle")
            diagnose.save(out / "policy_bundle")
        return {"evals": evals, "stream": stream_recs, "meta": meta.stats(), "dir": str(out),
                "prompt_tuning": list(tuner.log) if tuner is not None else []}

    def _prompt_tuner(self, arm: ArmConfig, out: Path):
        """The arm's :class:`~ifshm_ray.meta.prompt_tuning.ClusterPromptTuner` (writing under
        ``out/prompt_tuning``), or None when the arm does not tune (:meth:`prompt_tunes`). Its known windows are the
        gate's fit windows of this seed's known types (labelled, never an unknown type), its calibration windows the
        gate's (both from :meth:`run_seed`)."""
        if not self.prompt_tunes(arm):
            return None
        from ifshm_ray.meta.prompt_tuning import ClusterPromptTuner

        if self._tuning_windows is None:
            raise RuntimeError("the prompt tuner's windows are set per seed by run_seed")
        known_windows, cal_windows = self._tuning_windows
        return ClusterPromptTuner(self._gate_encoder, known_windows, cal_windows, self.cfg.meta,
                                  out / "prompt_tuning", progress=lambda m: self.log(f"arm {arm.name}: {m}"))

    def _evaluate_arm(self, policy, meta, diagnose, incidents, known, ungated: list[dict] | None = None) -> dict:
        """The paired evaluation of one arm: ungated (``ungated``: the records of the same policy on the same
        incidents, when already run: the policy is deterministic) and, with ``meta``, gated."""
        from ifshm_ray.meta.gate import GatedPolicy

        out = {"ungated": ungated if ungated is not None else run_incidents(self.env, policy, incidents)}
        if meta is not None:
            gp = GatedPolicy(policy, self.runbook(), meta, diagnose, update=False)
            recs = []
            for (f, s), u in zip(incidents, out["ungated"]):
                r = run_incidents(self.env, gp, [(f, s)])[0]
                r["cluster"] = gp.decision.cluster if gp.decision is not None else None
                recs.append(r)
                if f not in known and r.get("novel"):  # the policy's own skill on that cluster, measured ungated
                    meta.record(r["cluster"], "policy", bool(u["success"]), float(u["mttr_s"]))
            out["gated"] = recs
        return out


# ============================================================================================ metrics
PAIRED_RUN_KEYS = ("seed", "known", "order", "pseudo_unknown", "blind_known", "incidents", "references",
                   "calibration")
"""What two runs of one seed must have in common for their arms to be paired: the types, the stream's order, the
evaluation incidents, the references' outcomes on them and the gate's calibration (phase 1 included, which they
all depend on)."""


def merge_runs(configs: Sequence[dict], runs_lists: Sequence[list[dict]]) -> tuple[dict, list[dict]]:
    """Join the arms of finished protocol runs that met the same seeds, streams and evaluations (the protocol is
    deterministic under its seed: an arm run later on its own is paired with the arms of an earlier run) into one
    ``(config dict, runs)``. ``configs`` are the runs' resolved ``config.yaml`` dicts: they must be equal but for
    their arms; ``runs_lists`` their ``runs.json``. Refuses an arm name twice, different seeds, or a seed whose
    :data:`PAIRED_RUN_KEYS` differ (the arms would not be paired)."""
    if len(configs) != len(runs_lists) or len(configs) < 2:
        raise ValueError("merge needs two or more runs, each with its config and its runs")
    base = {k: v for k, v in configs[0].items() if k != "arms"}
    for i, c in enumerate(configs[1:], 1):
        other = {k: v for k, v in c.items() if k != "arms"}
        diff = sorted(k for k in set(base) | set(other) if base.get(k) != other.get(k))
        if diff:
            raise ValueError(f"run {i}'s config differs from run 0's in {diff}: its arms met another protocol")
    arms, seen = [], set()
    for c in configs:
        for a in c["arms"]:
            if a["name"] in seen:
                raise ValueError(f"arm {a['name']!r} is in more than one run; rename it in one of them")
            seen.add(a["name"])
            arms.append(a)
    seeds = [[r["seed"] for r in runs] for runs in runs_lists]
    if any(s != seeds[0] for s in seeds):
        raise ValueError(f"the runs have different seeds: {seeds}")
    merged = []
    for per_seed in zip(*runs_lists):
        first = per_seed[0]
        for i, r in enumerate(per_seed[1:], 1):
            diff = [k for k in PAIRED_RUN_KEYS if r.get(k) != first.get(k)]
            if diff:
                raise ValueError(f"seed {first['seed']}: run {i} differs from run 0 in {diff}: its arms are not "
                                 "paired with run 0's (another phase 1, stream or evaluation)")
        joined = {k: v for k, v in first.items() if k != "arms"}
        joined["arms"] = {name: arm for r in per_seed for name, arm in r["arms"].items()}
        merged.append(joined)
    return {**configs[0], "arms": arms}, merged


def summarise_protocol(cfg: ContinualConfig, runs: list[dict]) -> dict:
    """metrics.json from the per-seed runs (see the module doc and issue 15's list)."""
    bs = cfg.bootstrap
    names = [a.name for a in cfg.arms]
    gated_arms = {a.name for a in cfg.arms if a.gate}

    def per_seed(arm: str, which: str, label: str | int, faults_of: Callable[[dict], list[str]]):
        out = []
        for run in runs:
            ev = run["arms"][arm]["evals"]
            e = ev[label] if isinstance(label, int) else next(x for x in ev if x["label"] == label)
            fs = set(faults_of(run))
            out.append([r["mttr_s"] for r in e[which] if r["fault"] in fs])
        return out

    unk = lambda run: run["order"]  # noqa: E731
    kn = lambda run: run["known"]  # noqa: E731

    def ref_seed(name: str, faults_of) -> list[list[float]] | None:
        if any(run["references"].get(name) is None for run in runs):
            return None
        return [[r["mttr_s"] for r in run["references"][name] if r["fault"] in set(faults_of(run))] for run in runs]

    def mean(xs) -> float | None:
        return None if xs is None else float(np.mean(np.concatenate([np.asarray(x, float) for x in xs])))

    def cmp(a, b, relative=False):
        return None if a is None or b is None else paired_bootstrap(a, b, bs.samples, bs.seed, relative)

    m: dict[str, Any] = {"seeds": [r["seed"] for r in runs], "split": cfg.split, "arms": names,
                         "eval_every_blocks": cfg.eval.every_blocks}
    if cfg.pseudo_unknown is not None:  # a tuning run: its "unknown" types are known families held out
        m["pseudo_unknown"] = {str(run["seed"]): run["pseudo_unknown"] for run in runs}
    rb_unk, rb_kn = ref_seed("runbook", unk), ref_seed("runbook", kn)
    for name, key in REFERENCE_KEYS.items():
        m[key] = mean(ref_seed(name, unk)) if name in cfg.references else None
    m["missing_references"] = [n for n in cfg.references if ref_seed(n, unk) is None]
    arm_metrics = {}
    for a in cfg.arms:
        am: dict[str, Any] = {}
        am["unknown_mttr_before_s"] = mean(per_seed(a.name, "ungated", 0, unk))
        am["unknown_mttr_after_s"] = mean(per_seed(a.name, "ungated", -1, unk))
        am["known_mttr_phase1_s"] = mean(per_seed(a.name, "ungated", 0, kn))
        am["known_mttr_phase2_s"] = mean(per_seed(a.name, "ungated", -1, kn))
        am["forgetting"] = cmp(per_seed(a.name, "ungated", -1, kn), per_seed(a.name, "ungated", 0, kn), True)
        # the worst moment for the known types during phase 2 (forgetting compares the ends only; a collapse that
        # recovers by the end is what operators live through in between): per seed, the largest known-type mean
        # MTTR over the arm's evaluations after phase 1, then the mean over seeds
        worst = [max(mean_mttr(e["ungated"], run["known"]) for e in run["arms"][a.name]["evals"][1:])
                 for run in runs if len(run["arms"][a.name]["evals"]) > 1]
        am["known_mttr_worst_s"] = float(np.mean(worst)) if worst else None
        am["known_mttr_worst_per_seed_s"] = worst
        if a.name in gated_arms:
            am["unknown_mttr_before_gated_s"] = mean(per_seed(a.name, "gated", 0, unk))
            am["unknown_mttr_after_gated_s"] = mean(per_seed(a.name, "gated", -1, unk))
            am["known_mttr_after_gated_s"] = mean(per_seed(a.name, "gated", -1, kn))
        new = [[s["mttr_s"] for s in run["arms"][a.name]["stream"] if s["new"]
                and _rank_in_type(run["arms"][a.name]["stream"], s) < cfg.cumulative_window] for run in runs]
        am["cumulative_unhealthy_s"] = float(np.mean([np.sum(x) for x in new]))
        am["stream_deferral_rate"] = float(np.mean([s["deferred"] for run in runs
                                                    for s in run["arms"][a.name]["stream"] if s["new"]]))
        tunings = [{"seed": run["seed"], **e} for run in runs for e in run["arms"][a.name].get("prompt_tuning", [])]
        am["prompt_tunings"] = sum(1 for e in tunings if not e.get("skipped"))
        am["prompt_tuning"] = [{k: e.get(k) for k in ("seed", "label", "cluster", "incidents", "windows", "steps",
                                                      "loss_before", "loss_after", "wall_s", "threshold_before",
                                                      "threshold_after", "skipped")} for e in tunings]
        if rb_unk is not None:
            am["after_vs_runbook_unknown"] = cmp(per_seed(a.name, "gated" if a.name in gated_arms else "ungated", -1,
                                                          unk), rb_unk, True)
            am["time_to_adapt_episodes"] = _time_to_adapt(runs, a.name)
        arm_metrics[a.name] = am
    # every arm against the full system and against fine-tuning without replay (tuning and ablation arms), paired:
    # the policy's own skill after phase 2 (ungated), its known types after phase 2, and the stream's new incidents
    def stream_new(arm):
        return [[s["mttr_s"] for s in run["arms"][arm]["stream"] if s["new"]] for run in runs]

    for a in cfg.arms:
        for b in cfg.compare_with:
            if b in arm_metrics and b != a.name:
                arm_metrics[a.name][f"vs_{b}"] = {
                    "after_unknown_ungated": cmp(per_seed(a.name, "ungated", -1, unk),
                                                 per_seed(b, "ungated", -1, unk)),
                    "after_known_ungated": cmp(per_seed(a.name, "ungated", -1, kn), per_seed(b, "ungated", -1, kn)),
                    "cumulative_unhealthy": cmp(stream_new(a.name), stream_new(b))}
    m["per_arm"] = arm_metrics

    def role(arm, key):
        return arm_metrics.get(arm, {}).get(key)

    m["unknown_mttr_before_s"] = role("frozen", "unknown_mttr_before_s") or role("full", "unknown_mttr_before_s")
    m["unknown_mttr_after_s"] = role("full", "unknown_mttr_after_gated_s") or role("full", "unknown_mttr_after_s")
    m["unknown_mttr_after_ungated_s"] = role("full", "unknown_mttr_after_s")
    m["unknown_mttr_zero_shot_gated_s"] = role("gate_only", "unknown_mttr_before_gated_s") or role(
        "full", "unknown_mttr_before_gated_s")
    m["no_meta_unknown_mttr_s"] = role("finetune", "unknown_mttr_after_s")
    m["known_mttr_phase1_s"] = role("full", "known_mttr_phase1_s")
    m["known_mttr_phase2_s"] = role("full", "known_mttr_phase2_s")
    m["time_to_adapt_episodes"] = role("full", "time_to_adapt_episodes")
    m["cumulative_unhealthy_s"] = role("full", "cumulative_unhealthy_s")
    m["no_meta_cumulative_unhealthy_s"] = role("finetune", "cumulative_unhealthy_s")
    gate_arm = "full" if "full" in gated_arms else next(iter(sorted(gated_arms)), None)
    if gate_arm is not None:
        first = [(run, r) for run in runs for r in run["arms"][gate_arm]["evals"][0]["gated"]]
        recs = [r for _, r in first]
        known_recs = [r for run, r in first if r["fault"] in run["known"]]
        unk_recs = [r for run, r in first if r["fault"] in run["order"]]
        m["gate_false_positive_rate"] = float(np.mean([r["novel"] for r in known_recs])) if known_recs else None
        m["gate_recall"] = float(np.mean([r["novel"] for r in unk_recs])) if unk_recs else None
        m["gate_measured_on"] = f"arm {gate_arm}'s phase-1 gated evaluation ({len(recs)} incidents)"
        # the threshold stays the phase-1 calibration's while a learning arm's policy changes (and with decide_on
        # action so do the windows the gate decides at): the rates at the arm's last gated evaluation
        last = [(run, r) for run in runs for r in run["arms"][gate_arm]["evals"][-1]["gated"]]
        kl = [r for run, r in last if r["fault"] in run["known"]]
        ul = [r for run, r in last if r["fault"] in run["order"]]
        m["gate_false_positive_rate_after"] = float(np.mean([r["novel"] for r in kl])) if kl else None
        m["gate_recall_after"] = float(np.mean([r["novel"] for r in ul])) if ul else None
    else:
        m["gate_false_positive_rate"] = m["gate_recall"] = None
        m["gate_false_positive_rate_after"] = m["gate_recall_after"] = None
    # the comparisons (paired, bootstrap 95% intervals over seeds and incidents)
    comps: dict[str, Any] = {}
    if "gate_only" in arm_metrics and rb_unk is not None:
        comps["zero_shot_gated_vs_runbook_unknown_rel"] = cmp(per_seed("gate_only", "gated", 0, unk), rb_unk, True)
        esc = ref_seed("escalate-first", unk)
        comps["zero_shot_gated_vs_escalate_first_unknown"] = cmp(per_seed("gate_only", "gated", 0, unk), esc)
        comps["zero_shot_gated_vs_ungated_known_rel"] = cmp(per_seed("gate_only", "gated", 0, kn),
                                                            per_seed("gate_only", "ungated", 0, kn), True)
    if "full" in arm_metrics and "finetune" in arm_metrics:
        full_unk = per_seed("full", "gated" if "full" in gated_arms else "ungated", -1, unk)
        comps["after_full_vs_finetune_unknown"] = cmp(full_unk, per_seed("finetune", "ungated", -1, unk))
        comps["cumulative_unhealthy_full_vs_finetune"] = cmp(
            [[s["mttr_s"] for s in run["arms"]["full"]["stream"] if s["new"]] for run in runs],
            [[s["mttr_s"] for s in run["arms"]["finetune"]["stream"] if s["new"]] for run in runs])
        if rb_unk is not None:
            comps["after_full_vs_runbook_unknown_rel"] = cmp(full_unk, rb_unk, True)
        nk = ref_seed("nearest-known", unk)
        comps["after_full_vs_nearest_known_unknown"] = cmp(full_unk, nk)
    m["comparisons"] = comps
    m["note"] = ("comparisons: paired over the same incidents; 'mean' is the difference (or relative difference "
                 "for *_rel) of the first minus the second, 'ci95' a bootstrap interval over seeds then incidents; "
                 "'better' when it lies below 0. Null: an arm or reference not run.")
    return m


def _rank_in_type(stream: list[dict], item: dict) -> int:
    same = [s for s in stream if s["new"] and s["fault"] == item["fault"]]
    return next(i for i, s in enumerate(same) if s is item)


def _time_to_adapt(runs: list[dict], arm: str) -> dict[str, Any]:
    """Per new type (over seeds): episodes until its ungated MTTR is at or below the runbook's in two
    consecutive paired evaluations (at the evaluation schedule's granularity, ``eval.every_blocks``)."""
    out: dict[str, list] = {}
    for run in runs:
        evals = run["arms"][arm]["evals"]
        for fault in run["order"]:
            rb = mean_mttr(run["references"]["runbook"], [fault])
            pts = [(e["seen"].get(fault, 0), mean_mttr(e["ungated"], [fault])) for e in evals]
            # the evaluations from just before the type's stream on
            first = max([i for i, (n, _) in enumerate(pts) if n == 0] or [0])
            out.setdefault(fault, []).append(time_to_adapt(pts[first:], rb))
    return {f: {"per_seed": v, "adapted_seeds": sum(x is not None for x in v)} for f, v in out.items()}


def learning_curves(runs: list[dict], arms: Sequence[str]) -> dict[str, dict[str, list]]:
    """Per arm: x = new-type stream episodes seen (all types), unknown / known MTTR (ungated and gated), mean over
    seeds (evaluation points are the same across seeds)."""
    out = {}
    for a in arms:
        n_points = min(len(run["arms"][a]["evals"]) for run in runs)
        xs, unk, kn, unk_g = [], [], [], []
        for k in range(n_points):
            xs.append(float(np.mean([sum(run["arms"][a]["evals"][k]["seen"].values()) for run in runs])))
            unk.append(float(np.mean([mean_mttr(run["arms"][a]["evals"][k]["ungated"], run["order"]) for run in runs])))
            kn.append(float(np.mean([mean_mttr(run["arms"][a]["evals"][k]["ungated"], run["known"]) for run in runs])))
            if "gated" in runs[0]["arms"][a]["evals"][k]:
                unk_g.append(float(np.mean([mean_mttr(run["arms"][a]["evals"][k]["gated"], run["order"])
                                            for run in runs])))
        out[a] = {"episodes": xs, "unknown_mttr_s": unk, "known_mttr_s": kn, "unknown_mttr_gated_s": unk_g}
    return out


def jsonable(x: Any) -> Any:
    """Floats NaN/inf as None; numpy scalars as Python numbers."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x

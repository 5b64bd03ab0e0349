"""The meta-controller: novelty detection, online clustering, trust table, steering and the gate.

For each incident (one telemetry window's encoder output: the unknown score and, where available, the semantic
state vector) :meth:`MetaController.observe` says who acts:

* **known** (score <= the calibrated threshold): the policy;
* **novel**, in a cluster where the policy is **trusted** (its rolling success rate is at least the blind
  runbook's and its rolling mean MTTR below it, each over at least ``trust.min_episodes`` outcomes; with
  ``trust.prior_strength`` > 0, both shrunk towards the pooled novel outcomes, :meth:`TrustTable.shrunk`): the policy;
* **novel and untrusted**: deferred to the blind runbook or escalated to a human, whichever has the lower rolling
  mean MTTR on that cluster (ties: the higher success rate, then the runbook); while either is unmeasured there,
  the same comparison over all novel incidents; while that too is unmeasured, ``trust.fallback``.

Outcomes come back through :meth:`MetaController.record` (whoever acted: a gated incident is still recorded, and
the policy's own skill on a cluster is recorded from ungated paired evaluations). Novel incidents without a state
vector (Serve's diagnosis has none) get no cluster and are judged on the pooled novel outcomes.

Steering: :meth:`replay_mix` gives the replay actor's stratum weights (the known stratum ``steering.known_share``,
untrusted clusters weight 1 and trusted ones ``steering.trusted_weight`` in the rest, each scaled by
min(1, incidents / ``steering.ramp_incidents``), what a cluster gives up going to the known stratum); :meth:`scenario_weights`
moves the level sampler's weights towards known types whose rolling MTTR regressed past their phase-1 baseline.

The whole state is JSON (:meth:`state`, :meth:`save`, :meth:`load`): it is saved with the training checkpoints
and goes into the policy bundle as ``meta_state.json`` (:data:`STATE_FILE`), which Serve's ``/v1/heal`` reads.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections import deque
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ifshm_ray.meta.config import ClusterConfig, MetaConfig, TrustConfig
from ifshm_ray.meta.novelty import NoveltyCalibration

STATE_FILE = "meta_state.json"
"""File name of the meta-controller's state in a checkpoint folder or a policy bundle."""
STATE_VERSION = 1
ACTORS = ("policy", "runbook", "escalate")
"""Who can act on an incident."""
POOLED = "*"
"""Trust-table key of the pooled outcomes of all novel incidents."""


def _unit(x: Sequence[float]) -> np.ndarray:
    v = np.asarray(x, np.float64).ravel()
    n = float(np.linalg.norm(v))
    if not np.isfinite(v).all() or n == 0.0:
        raise ValueError("a state vector must be finite and non-zero")
    return v / n


class OnlineClusterer:
    """Leader clustering of unit vectors by cosine distance, centroids as running means (deterministic: the
    result depends only on the order of the incidents)."""

    def __init__(self, config: ClusterConfig | None = None) -> None:
        self.config = config or ClusterConfig()
        self.sums: list[np.ndarray] = []
        self.counts: list[int] = []

    def __len__(self) -> int:
        return len(self.sums)

    def centroid(self, k: int) -> np.ndarray:
        return self.sums[k] / max(float(np.linalg.norm(self.sums[k])), 1e-12)

    def nearest(self, vec: Sequence[float]) -> tuple[int | None, float]:
        """(nearest cluster, its cosine distance); (None, inf) with no clusters."""
        if not self.sums:
            return None, math.inf
        v = _unit(vec)
        d = [1.0 - float(self.centroid(k) @ v) for k in range(len(self.sums))]
        k = int(np.argmin(d))
        return k, d[k]

    def assign(self, vec: Sequence[float]) -> tuple[int, bool, float]:
        """Put a novel incident into the nearest cluster within ``max_distance`` (or the nearest one once
        ``max_clusters`` exist), else a new one. Returns (cluster, created, distance to its old centroid)."""
        v = _unit(vec)
        k, d = self.nearest(v)
        if k is None or (d > self.config.max_distance and len(self.sums) < self.config.max_clusters):
            self.sums.append(v.copy())
            self.counts.append(1)
            return len(self.sums) - 1, True, 0.0 if k is None else d
        self.sums[k] = self.sums[k] + v
        self.counts[k] += 1
        return k, False, d

    def reembed(self, k: int, vectors: Sequence[Sequence[float]]) -> None:
        """Recompute cluster ``k``'s centroid from its members' vectors under a changed encoder (after prompt
        tuning): one vector per member incident, so their number must be the cluster's count."""
        if not 0 <= k < len(self.sums):
            raise ValueError(f"no cluster {k} (there are {len(self.sums)})")
        if len(vectors) != self.counts[k]:
            raise ValueError(f"cluster {k} has {self.counts[k]} incidents but {len(vectors)} vectors were given")
        self.sums[k] = np.sum([_unit(v) for v in vectors], axis=0)

    def state(self) -> dict[str, Any]:
        return {"sums": [s.tolist() for s in self.sums], "counts": list(self.counts)}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.sums = [np.asarray(s, np.float64) for s in state["sums"]]
        self.counts = [int(c) for c in state["counts"]]


@dataclasses.dataclass(frozen=True)
class ActorStats:
    """Rolling outcomes of one actor on one cluster."""

    n: int
    success_rate: float | None
    mttr_mean_s: float | None


class TrustTable:
    """Per cluster (and pooled over novel incidents) and per actor, the last ``window`` outcomes."""

    def __init__(self, config: TrustConfig | None = None) -> None:
        self.config = config or TrustConfig()
        self.records: dict[str, dict[str, deque]] = {}

    def record(self, cluster: int | None, actor: str, success: bool, mttr_s: float) -> None:
        if actor not in ACTORS:
            raise ValueError(f"actor {actor!r}; one of {ACTORS}")
        if not math.isfinite(float(mttr_s)) or float(mttr_s) < 0:
            raise ValueError(f"mttr_s must be finite and >= 0, got {mttr_s}")
        keys = [POOLED] if cluster is None else [str(int(cluster)), POOLED]
        for key in keys:
            per = self.records.setdefault(key, {})
            per.setdefault(actor, deque(maxlen=self.config.window)).append((bool(success), float(mttr_s)))

    def stats(self, cluster: int | None, actor: str) -> ActorStats:
        rec = self.records.get(POOLED if cluster is None else str(int(cluster)), {}).get(actor, ())
        if not rec:
            return ActorStats(0, None, None)
        succ = [s for s, _ in rec]
        return ActorStats(len(rec), float(np.mean(succ)), float(np.mean([m for _, m in rec])))

    def shrunk(self, cluster: int, actor: str) -> ActorStats | None:
        """``actor``'s outcomes on ``cluster`` shrunk towards its pooled ones (``trust.prior_strength`` pseudo
        outcomes; ``n`` stays the cluster's own count); None without a prior or with fewer than ``min_episodes``
        pooled outcomes."""
        k, own, pool = self.config.prior_strength, self.stats(cluster, actor), self.stats(None, actor)
        if k <= 0 or pool.n < self.config.min_episodes:
            return None
        if not own.n:
            return ActorStats(0, pool.success_rate, pool.mttr_mean_s)
        return ActorStats(own.n, (own.n * own.success_rate + k * pool.success_rate) / (own.n + k),
                          (own.n * own.mttr_mean_s + k * pool.mttr_mean_s) / (own.n + k))

    def trusted(self, cluster: int | None) -> tuple[bool, str]:
        """Whether the policy beats the blind runbook on ``cluster`` (both measured enough, or shrunk towards the
        pooled outcomes with ``trust.prior_strength``), and why."""
        p, r = self.stats(cluster, "policy"), self.stats(cluster, "runbook")
        need = self.config.min_episodes
        where = "novel incidents overall" if cluster is None else f"cluster {cluster}"
        if cluster is not None:
            sp, sr = self.shrunk(cluster, "policy"), self.shrunk(cluster, "runbook")
            if sp is not None and sr is not None:
                p, r, need = sp, sr, 0
                where = (f"cluster {cluster} ({p.n} policy and {r.n} runbook outcomes of its own, shrunk towards the "
                         f"novel incidents overall with prior strength {self.config.prior_strength:g})")
        if p.n < need or r.n < need:
            return False, (f"on {where} the policy has {p.n} and the runbook {r.n} outcomes "
                           f"(trust needs {need} each)")
        if p.success_rate >= r.success_rate and p.mttr_mean_s < r.mttr_mean_s:
            return True, (f"on {where} the policy's success {p.success_rate:.2f} >= the runbook's "
                          f"{r.success_rate:.2f} and its MTTR {p.mttr_mean_s:.0f} s < {r.mttr_mean_s:.0f} s")
        return False, (f"on {where} the policy (success {p.success_rate:.2f}, MTTR {p.mttr_mean_s:.0f} s) does not "
                       f"beat the runbook (success {r.success_rate:.2f}, MTTR {r.mttr_mean_s:.0f} s)")

    def better_fallback(self, cluster: int | None) -> tuple[str, str]:
        """``runbook`` or ``escalate``, whichever measured better (see the module doc), and why."""
        places = ([(cluster, f"cluster {cluster}")] if cluster is not None else []) + [(None, "novel incidents overall")]
        for key, where in places:
            r, e = self.stats(key, "runbook"), self.stats(key, "escalate")
            if r.n and e.n:
                better = "runbook" if (r.mttr_mean_s, -r.success_rate) <= (e.mttr_mean_s, -e.success_rate) \
                    else "escalate"
                return better, (f"on {where} the runbook's MTTR is {r.mttr_mean_s:.0f} s (success "
                                f"{r.success_rate:.2f}, {r.n} outcomes) and escalation's {e.mttr_mean_s:.0f} s "
                                f"(success {e.success_rate:.2f}, {e.n} outcomes)")
        return self.config.fallback, (f"neither the runbook nor escalation is measured on novel incidents yet: "
                                      f"the configured fallback ({self.config.fallback})")

    def state(self) -> dict[str, Any]:
        return {key: {actor: [list(x) for x in rec] for actor, rec in per.items()}
                for key, per in self.records.items()}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.records = {key: {actor: deque([(bool(s), float(m)) for s, m in rec], maxlen=self.config.window)
                              for actor, rec in per.items()} for key, per in state.items()}


@dataclasses.dataclass(frozen=True)
class GateDecision:
    """Who acts on an incident, and why. ``deferred``: a novel incident taken away from the policy."""

    actor: str
    novel: bool
    deferred: bool
    reason: str
    unknown_score: float | None
    threshold: float | None
    cluster: int | None = None
    stratum: str | None = None
    new_cluster: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class MetaController:
    """See the module doc."""

    def __init__(self, config: MetaConfig | Mapping[str, Any] | None = None,
                 calibration: NoveltyCalibration | None = None) -> None:
        if not isinstance(config, MetaConfig):
            config = MetaConfig.from_dict(dict(config or {}), source="meta")
        self.config = config
        self.calibration = calibration
        self.clusters = OnlineClusterer(config.clusters)
        self.trust = TrustTable(config.trust)
        self.known_baseline: dict[str, float] = {}
        self.known_recent: dict[str, deque] = {}
        self.num_observed = 0
        self.num_novel = 0
        self.num_deferred = {"runbook": 0, "escalate": 0}
        self.num_known_recorded = 0
        self.prompt_tunings: list[dict[str, Any]] = []
        """One entry per prompt tuning of the encoder on a novel cluster (:meth:`record_prompt_tuning`)."""

    # ------------------------------------------------------------------ detection and the gate
    @property
    def threshold(self) -> float | None:
        return self.calibration.threshold if self.calibration is not None else None

    def is_novel(self, unknown_score: float | None) -> bool:
        """Score above the calibrated threshold. Without a calibration nothing is novel; without a score
        (an untrained encoder) neither."""
        if self.calibration is None or unknown_score is None or not math.isfinite(float(unknown_score)):
            return False
        return float(unknown_score) > self.calibration.threshold

    def stratum(self, cluster: int | None) -> str:
        """The replay stratum of a cluster (the known stratum for None, and for every cluster without
        ``config.strata``)."""
        if cluster is None or not self.config.strata:
            return self.config.known_stratum
        return f"{self.config.clusters.stratum_prefix}{cluster}"

    def observe(self, unknown_score: float | None, state: Sequence[float] | None = None,
                update: bool = True) -> GateDecision:
        """Detect, cluster (``update``: a novel incident with a state vector joins or starts a cluster; False:
        only the nearest cluster is looked up, as in serving) and gate one incident."""
        score = None if unknown_score is None else float(unknown_score)
        self.num_observed += update
        if self.calibration is None:
            return GateDecision("policy", False, False, "no novelty calibration: every incident goes to the policy",
                                score, None, stratum=self.config.known_stratum)
        if not self.is_novel(score):
            why = ("no unknown score (the encoder has no prototypes)" if score is None or not math.isfinite(score)
                   else f"unknown score {score:.2f} <= threshold {self.threshold:.2f} (a known fault type)")
            return GateDecision("policy", False, False, why, score, self.threshold,
                                stratum=self.config.known_stratum)
        self.num_novel += update
        cluster, created = None, False
        if state is not None:
            if update:
                cluster, created, _ = self.clusters.assign(state)
            else:
                cluster, _ = self.clusters.nearest(state)
        head = f"unknown score {score:.2f} > threshold {self.threshold:.2f} (novel"
        head += f", cluster {cluster}{' (new)' if created else ''})" if cluster is not None else ", no state vector)"
        trusted, why = self.trust.trusted(cluster)
        if trusted:
            return GateDecision("policy", True, False, f"{head}; trusted: {why}", score, self.threshold, cluster,
                                self.stratum(cluster), created)
        actor, fb = self.trust.better_fallback(cluster)
        if update:
            self.num_deferred[actor] += 1
        return GateDecision(actor, True, True, f"{head}; policy not trusted: {why}; deferred to {actor}: {fb}",
                            score, self.threshold, cluster,
                            self.stratum(cluster) if cluster is not None or not self.config.strata else None,
                            created)

    def record(self, cluster: int | None, actor: str, success: bool, mttr_s: float) -> None:
        """The outcome of a novel incident (whoever acted)."""
        self.trust.record(cluster, actor, success, mttr_s)

    # ------------------------------------------------------------------ steering
    def replay_mix(self) -> dict[str, float] | None:
        """Stratum weights for the replay actor's ``set_mix`` (None while there is no novel cluster of at least
        ``steering.min_cluster_incidents`` incidents, and always without ``config.strata``: one stratum, nothing to
        mix)."""
        if not len(self.clusters) or not self.config.strata:
            return None
        s = self.config.steering
        eligible = [k for k in range(len(self.clusters)) if self.clusters.counts[k] >= s.min_cluster_incidents]
        if not eligible:  # no cluster big enough to imitate yet: as without clusters
            return None
        need = {k: (s.trusted_weight if self.trust.trusted(k)[0] else 1.0) for k in eligible}
        total = sum(need.values())
        part = {k: (1.0 - s.known_share) * (w / total if total > 0 else 1.0 / len(need)) for k, w in need.items()}
        ramp = {k: min(1.0, self.clusters.counts[k] / s.ramp_incidents) for k in need}
        # the known stratum gets its own share and what clusters still ramping up give up (0 with ramp_incidents 1)
        given_up = sum(part[k] * (1.0 - ramp[k]) for k in need)
        return {self.config.known_stratum: s.known_share + given_up,
                **{self.stratum(k): part[k] * ramp[k] for k in need}}

    def set_known_baseline(self, mttr_by_type: Mapping[str, float]) -> None:
        """The known types' MTTR after phase 1 (what forgetting is measured against)."""
        self.known_baseline = {k: float(v) for k, v in mttr_by_type.items()}

    def record_known(self, fault_type: str, mttr_s: float) -> None:
        """The MTTR of a known-type incident (rolling, ``trust.window``)."""
        self.known_recent.setdefault(fault_type, deque(maxlen=self.config.trust.window)).append(float(mttr_s))
        self.num_known_recorded += 1

    def regression(self) -> dict[str, float]:
        """Per known type with a baseline and recent outcomes: relative MTTR increase past the tolerance (> 0)."""
        tol = self.config.steering.regression_tolerance
        out = {}
        for k, base in self.known_baseline.items():
            rec = self.known_recent.get(k)
            if rec and base > 0:
                excess = float(np.mean(rec)) / base - 1.0 - tol
                if excess > 0:
                    out[k] = excess
        return out

    def scenario_weights(self, level_weights: Mapping[str, float]) -> dict[str, float]:
        """The level sampler's weights moved towards regressed known types (``steering.rehearsal_boost``)."""
        w = {k: float(v) for k, v in level_weights.items()}
        reg = {k: v for k, v in self.regression().items() if k in w}
        if not reg or not w:
            return w
        b, total, rsum = self.config.steering.rehearsal_boost, sum(w.values()), sum(reg.values())
        return {k: (1.0 - b) * v / total + b * reg.get(k, 0.0) / rsum for k, v in w.items()}

    def record_prompt_tuning(self, entry: Mapping[str, Any]) -> None:
        """Log one prompt tuning of the encoder (cluster, incidents, steps, losses, wall seconds: see
        :class:`~ifshm_ray.meta.prompt_tuning.ClusterPromptTuner`); kept in the state."""
        self.prompt_tunings.append(json.loads(json.dumps(dict(entry))))

    # ------------------------------------------------------------------ state
    def stats(self) -> dict[str, Any]:
        return {"observed": self.num_observed, "novel": self.num_novel, "deferred": dict(self.num_deferred),
                "known_recorded": self.num_known_recorded,
                "prompt_tunings": sum(1 for e in self.prompt_tunings if not e.get("skipped")),
                "clusters": [{"cluster": k, "incidents": c, "trusted": self.trust.trusted(k)[0],
                              **{a: dataclasses.asdict(self.trust.stats(k, a)) for a in ACTORS}}
                             for k, c in enumerate(self.clusters.counts)],
                "threshold": self.threshold}

    def state(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "config": self.config.to_dict(),
                "calibration": self.calibration.to_dict() if self.calibration is not None else None,
                "clusters": self.clusters.state(), "trust": self.trust.state(),
                "known_baseline": dict(self.known_baseline),
                "known_recent": {k: list(v) for k, v in self.known_recent.items()},
                "counters": {"observed": self.num_observed, "novel": self.num_novel,
                             "deferred": dict(self.num_deferred), "known_recorded": self.num_known_recorded},
                "prompt_tunings": list(self.prompt_tunings)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "MetaController":
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"meta-controller state version {state.get('version')!r}, this code reads "
                             f"{STATE_VERSION}")
        cal = NoveltyCalibration.from_dict(state["calibration"]) if state.get("calibration") else None
        m = cls(state["config"], cal)
        m.clusters.restore(state["clusters"])
        m.trust.restore(state["trust"])
        m.known_baseline = {k: float(v) for k, v in state["known_baseline"].items()}
        m.known_recent = {k: deque(v, maxlen=m.config.trust.window) for k, v in state["known_recent"].items()}
        c = state["counters"]
        m.num_observed, m.num_novel, m.num_deferred = int(c["observed"]), int(c["novel"]), dict(c["deferred"])
        m.num_known_recorded = int(c.get("known_recorded", 0))
        m.prompt_tunings = list(state.get("prompt_tunings", []))  # (absent from states saved before it existed)
        return m

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``folder/meta_state.json`` atomically; returns its path."""
        path = Path(folder) / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{STATE_FILE}.")
        with os.fdopen(fd, "w") as f:
            json.dump(self.state(), f)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MetaController":
        """From a ``meta_state.json`` or the folder holding it."""
        path = Path(path)
        if path.is_dir():
            path = path / STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no meta-controller state at {path}: pass a folder MetaController.save wrote")
        return cls.from_state(json.loads(path.read_text()))

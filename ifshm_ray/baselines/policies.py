"""Baseline policies. A policy maps (observation, telemetry) to an action triple; ``reset()`` starts an episode."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from ifshm_ray.sim.actions import CATEGORIES, CATEGORY_TARGET_KIND, NUM_RATIOS, RATIO_LEVELS

RUNBOOK_PATH = Path(__file__).parent / "data" / "runbook.yaml"
BASELINES = ("oracle", "runbook", "runbook-full", "runbook-instant", "nearest-known", "escalate-first", "random")
"""Reference policies. ``runbook`` and ``runbook-instant`` are blind (only the rules written for the split's known
fault types, plus the generic ones); ``runbook-full`` keeps every rule (an SRE team with industry knowledge)."""


class Policy:
    """Interface: ``reset(env)`` at episode start, ``act(obs, info, env) -> (category, target, ratio)``."""

    name = "policy"

    def reset(self, env, episode_seed: int | None = None) -> None:  # noqa: D401 - interface
        """Start of an episode (``episode_seed``: the episode's seed, for policies that draw random numbers)."""

    def act(self, obs: dict, info: dict, env) -> np.ndarray:
        raise NotImplementedError


class RandomPolicy(Policy):
    """Uniform over valid (category, target) pairs, then a valid ratio level."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def reset(self, env, episode_seed: int | None = None) -> None:
        # one stream per (policy seed, episode): the episode's actions do not depend on which other episodes the
        # same policy object ran before it (the harness groups episodes into Ray tasks by the free CPUs)
        if episode_seed is not None:
            self.rng = np.random.default_rng([self.seed, episode_seed])

    def act(self, obs, info, env):
        C = len(CATEGORIES)
        tm = obs["action_mask"].reshape(C, -1)
        pairs = np.argwhere(tm > 0)
        c, t = pairs[self.rng.integers(len(pairs))]
        levels = np.flatnonzero(obs["ratio_mask"].reshape(C, NUM_RATIOS)[c])
        return np.array([c, t, self.rng.choice(levels)], np.int64)


class OraclePolicy(Policy):
    """Knows the injected fault(s) and applies the catalog's fastest healing remedy as soon as the first symptom is
    visible (never earlier). The reference for the best achievable MTTR."""

    name = "oracle"

    def act(self, obs, info, env):
        return env.unwrapped.oracle_action()


@dataclass
class _Rule:
    alerts: tuple[str, ...]
    action: str
    target: str
    ratio: float | None
    log: re.Pattern | None
    xid_in: tuple[int, ...] | None
    written_for: tuple[str, ...] = ()
    generic: bool = False


def load_runbook(path: str | Path = RUNBOOK_PATH, fault_names: Sequence[str] | None = None) -> tuple[dict, list[_Rule]]:
    """The runbook's settings and its rules, validated: a rule names a valid action and is either ``generic: true``
    or ``written_for`` one or more fault types (catalog names, checked against ``fault_names`` when given); a rule
    written for fault types covers one pattern (at most one Xid code, a log pattern without ``|``), so that blinding
    removes exactly what was written for the held-out types."""
    spec = yaml.safe_load(Path(path).read_text())
    rules = []
    names = set(fault_names) if fault_names is not None else None
    for i, r in enumerate(spec["rules"]):
        where = f"runbook {path} rule {i + 1}"
        if r["action"] not in CATEGORIES:
            raise ValueError(f"{where}: action {r['action']!r} is not one of {list(CATEGORIES)}")
        wf, generic = tuple(r.get("written_for") or ()), bool(r.get("generic", False))
        if generic == bool(wf):
            raise ValueError(f"{where}: needs exactly one of 'generic: true' or a non-empty 'written_for' list")
        if names is not None and (bad := [f for f in wf if f not in names]):
            raise ValueError(f"{where}: written_for names unknown fault type(s) {bad}")
        if wf and (len(r.get("xid_in") or ()) > 1 or "|" in (r.get("log") or "")):
            raise ValueError(f"{where}: a rule written for fault types covers one pattern (one Xid code, one log "
                             "pattern without '|'); split it")
        rules.append(_Rule(tuple(r["alerts"]), r["action"], r["target"], r.get("ratio"),
                           re.compile(r["log"]) if r.get("log") else None,
                           tuple(r["xid_in"]) if r.get("xid_in") else None, wf, generic))
    return spec, rules


def blind_rules(rules: list[_Rule], known: Sequence[str] | None) -> list[_Rule]:
    """The rules kept for a split whose known fault types are ``known`` (None: every rule): the generic ones and
    those written for at least one known type, in runbook order."""
    if known is None:
        return list(rules)
    k = set(known)
    return [r for r in rules if r.generic or any(f in k for f in r.written_for)]


def runbook_sha256(path: Path = RUNBOOK_PATH) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class RunbookPolicy(Policy):
    """Alert -> action rules read from ``data/runbook.yaml`` (see its header). ``instant=True`` treats pending alerts
    as firing (acts at the first threshold crossing), separating detection speed from repair skill. ``known``: the
    split's known fault types; the policy then keeps only the generic rules and those written for a known type
    (blind); None keeps every rule (``runbook-full``)."""

    def __init__(self, instant: bool = False, path: str | Path = RUNBOOK_PATH, known: Sequence[str] | None = None,
                 name: str | None = None, fault_names: Sequence[str] | None = None):
        self.instant = instant
        self.name = name or ("runbook-instant" if instant else "runbook")
        spec, rules = load_runbook(path, fault_names)
        self.verify_steps = int(spec["verify_steps"])
        self.max_attempts = int(spec["max_attempts"])
        self.ignore = set(spec.get("ignore_alerts", []))
        self.all_rules = rules
        self.rules = blind_rules(rules, known)
        self.known = None if known is None else tuple(known)
        self.sha256 = runbook_sha256(Path(path))
        self.reset(None)

    def reset(self, env, episode_seed: int | None = None) -> None:
        self.tried: set[tuple[int, int, int]] = set()
        self.wait = 0
        self.attempts = 0
        self.log_memory: list[str] = []
        self.escalated = False

    def act(self, obs, info, env):
        if self.escalated:  # a human owns the incident now
            return np.zeros(3, np.int64)
        topo = env.unwrapped.topology
        tel = info.get("telemetry") or {}
        alarms = [a for a in tel.get("alarms", []) if a["name"] not in self.ignore
                  and (a["state"] == "firing" or self.instant)]
        # an SRE reads the recent log history, not only the last 30 s
        self.log_memory = (self.log_memory + tel.get("logs", []))[-400:]
        if self.wait > 0:
            self.wait -= 1
            return np.zeros(3, np.int64)
        if not alarms:
            return np.zeros(3, np.int64)
        if self.attempts >= self.max_attempts:
            self.escalated = True
            return np.array([CATEGORIES.index("escalate"), 0, 0], np.int64)
        active = {}
        for a in alarms:
            active.setdefault(a["name"], a)
        for rule in self.rules:
            hit = [active[n] for n in rule.alerts if n in active]
            if not hit:
                continue
            alarm = hit[0]
            if rule.xid_in is not None:
                xid = _last(tel, alarm["entity"], "DCGM_FI_DEV_XID_ERRORS")
                if xid is None or int(round(xid)) not in rule.xid_in:
                    continue
            m_line = None
            if rule.log is not None:
                for line in reversed(self.log_memory):
                    m = rule.log.search(line)
                    if m:
                        m_line = (line, m)
                        break
                if m_line is None:
                    continue
            target = self._target(rule, alarm, m_line, tel, topo)
            if target is None:
                continue
            a = self._encode(rule, target, topo)
            if a is None or tuple(a) in self.tried:
                continue
            self.tried.add(tuple(a))
            self.attempts += 1
            self.wait = self.verify_steps
            return a
        return np.zeros(3, np.int64)

    def _target(self, rule, alarm, m_line, tel, topo):
        t = rule.target
        if t == "alert_entity":
            return alarm["entity"]
        if t in topo.services:
            return t
        if t in ("log_service", "log_host", "log_group"):
            line, m = m_line
            parts = line.split(" ", 3)
            if t == "log_host":
                return parts[1]
            if t == "log_group":
                g = m.group(1) if m.groups() else None
                return g if g in topo.services else None
            src = parts[2].rstrip(":")
            return src if src in topo.services else None
        if t == "straggler_node":
            best, score = None, -1.0
            for n in topo.nodes:
                met = tel.get("metrics", {}).get(n, {})
                if "DCGM_FI_DEV_GPU_UTIL" not in met:
                    continue
                s = (_lastv(met, "node_cpu_utilisation") + 10 * _lastv(met, "node_network_receive_errs_ratio")
                     + (1.0 if _lastv(met, "DCGM_FI_DEV_XID_ERRORS") > 0 else 0.0))
                if s > score:
                    best, score = n, s
            return best
        if t == "top_memory_service":
            node = alarm["entity"]
            ni = topo.nodes.index(node) if node in topo.nodes else -1
            cand = [s for s in topo.services if ni >= 0 and topo.placement0[topo.services.index(s), ni] > 0]
            if not cand:
                return None
            return max(cand, key=lambda s: _last(tel, s, "memory_util") or 0.0)
        return None

    def _encode(self, rule, target, topo):
        c = CATEGORIES.index(rule.action)
        kind = CATEGORY_TARGET_KIND[rule.action]
        if kind == "node" and target not in topo.nodes:
            return None
        if kind == "service" and target not in topo.services:
            return None
        t = topo.targets.index(target) if kind != "none" else 0
        r = RATIO_LEVELS.index(rule.ratio) if rule.ratio is not None else 0
        return np.array([c, t, r], np.int64)


def ignored_alerts(path: str | Path = RUNBOOK_PATH) -> set[str]:
    """The runbook's info-level ``ignore_alerts``: alerts that do not open an incident alone (runbook-instant's,
    escalate-first's, nearest-known's and the alert-triggered policy's trigger leave them out)."""
    return set(yaml.safe_load(Path(path).read_text()).get("ignore_alerts", []))


def runbook_trigger(tel: dict, ignore: set[str]) -> bool:
    """runbook-instant's trigger: an alert other than the ignored ones is pending or firing (the first threshold
    crossing, before the rule's ``for:`` delay)."""
    return any(a["name"] not in ignore for a in tel.get("alarms", []))


class EscalateFirstPolicy(Policy):
    """Pages a human at runbook-instant's trigger (a pending or firing alert other than the runbook's ignored
    info-level ones) and otherwise only observes: what paging at the first symptom costs. A page is handled (the
    human responds and fixes what had started) before the next decision; if the trigger holds again after that (a
    page for a benign transient finds nothing, and the fault shows later), it pages again."""

    name = "escalate-first"

    def __init__(self, path: str | Path = RUNBOOK_PATH):
        self.ignore = ignored_alerts(path)

    def act(self, obs, info, env):
        if runbook_trigger(info.get("telemetry") or {}, self.ignore):
            return np.array([CATEGORIES.index("escalate"), 0, 0], np.int64)
        return np.zeros(3, np.int64)


def _lastv(series: dict, name: str) -> float:
    v = series.get(name)
    return float(v[-1]) if v else 0.0


def _last(tel: dict, entity: str, metric: str) -> float | None:
    v = tel.get("metrics", {}).get(entity, {}).get(metric)
    return float(v[-1]) if v else None


def make_baseline(name: str, seed: int = 0, sim_cfg=None, nearest_cfg=None,
                  known: Sequence[str] | None = None) -> Policy:
    """Build a baseline policy by name (one of :data:`BASELINES`) for the simulator config ``sim_cfg``
    (:class:`~ifshm_ray.config.SimConfig`; default config when None): the blind runbooks and nearest-known use its
    split's known fault types (``SimConfig.split``), or ``known`` when given: a subset of them, to blind the
    references to more types (the continual protocol's pseudo-unknown tuning holds known families out). ``nearest_cfg``:
    :class:`~ifshm_ray.baselines.config.NearestKnownConfig` (default when None)."""
    from ifshm_ray.config import SimConfig
    from ifshm_ray.sim.catalog import load_catalog

    if name not in BASELINES:
        raise ValueError(f"unknown baseline policy {name!r}; valid: {list(BASELINES)} or checkpoint:PATH")
    if name == "oracle":
        return OraclePolicy()
    if name == "random":
        return RandomPolicy(seed)
    sim_cfg = sim_cfg if sim_cfg is not None else SimConfig()
    cat = load_catalog(sim_cfg.catalog)
    split_known = cat.known_in(sim_cfg.split)
    if known is None:
        known = split_known
    else:
        bad = sorted(set(known) - set(split_known))
        if bad or not known:
            raise ValueError(f"known = {list(known)}: a blind reference may know only a non-empty subset of split "
                             f"{sim_cfg.split!r}'s known types; {bad or 'nothing'} is not one")
        known = [f for f in split_known if f in set(known)]
    if name == "runbook":
        return RunbookPolicy(instant=False, known=known, fault_names=cat.names)
    if name == "runbook-full":
        return RunbookPolicy(instant=False, known=None, name="runbook-full", fault_names=cat.names)
    if name == "runbook-instant":
        return RunbookPolicy(instant=True, known=known, fault_names=cat.names)
    if name == "escalate-first":
        return EscalateFirstPolicy()
    from ifshm_ray.baselines.nearest import NearestKnownPolicy, load_prototypes, restrict_prototypes

    return NearestKnownPolicy(restrict_prototypes(load_prototypes(sim_cfg, nearest_cfg), known), sim_cfg)

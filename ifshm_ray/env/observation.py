"""Rebuild the policy's observation from raw telemetry and the agent's own actions (what a served policy receives).

:class:`TelemetryObserver` turns a telemetry dict (schema of :mod:`ifshm_ray.telemetry`) into the same
``Dict(obs, action_mask, ratio_mask)`` observation the environment produces: metric features from the last sample
of each window, alert flags and the oldest alert's age from the alarms, log-template counts mined from the log
lines. What the telemetry cannot carry comes from the agent's own actions: the incident memory (``history``: the
actions other than observe taken in this incident, with how many steps ago) and the cordoned nodes (given, and
every node drained in the history). On simulator telemetry and the env's executed actions it reproduces the env's
observation exactly (``tests/test_no_hidden_state.py``); nothing else of the simulator is read.

**Series a window does not report.** The simulator reports the same (entity, metric) series in every window
(every metric of every service and node; the GPU metrics on GPU nodes only), so a policy never met a missing one.
A window from elsewhere (the live stack binds only some entities and metrics; an Alertmanager notification carries
none) leaves some out. Given ``fill`` (:func:`steady_state_metrics`: the simulator's own fault-free readings of the
same config), the observer reads each series the simulator reports but the window lacks at its steady-state value,
so the policy sees a healthy entity as it saw healthy entities in training, and lists those series in
``last_imputed``. Without ``fill`` (the earlier behaviour) a missing series reads 0 except throughput, readiness and
latency (healthy values), which puts values the policy never saw into its input (e.g. a GPU temperature of 0 C, a
CPU at 0) and is kept only for callers that must reproduce old observations.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ifshm_ray.config import SimConfig
from ifshm_ray.env.features import Featurizer
from ifshm_ray.sim.actions import CATEGORIES, CATEGORY_TARGET_KIND
from ifshm_ray.sim.core import METRIC_DECIMALS, NODE_METRICS, SVC_METRICS, BatchedSim
from ifshm_ray.sim.render import TemplateMiner
from ifshm_ray.telemetry import validate_telemetry


def incident_history(actions: Sequence[Any]) -> list[dict]:
    """The history ``[{category, target, steps_ago}]`` (most recent first) of an incident's executed actions, one per
    decision step, oldest first, each an :class:`~ifshm_ray.sim.actions.Action` or a ``{category, target}`` dict
    (observe steps count for ``steps_ago`` but are not entries; an action the masks refused was executed as observe).
    """
    out = []
    n = len(actions)
    for i, a in enumerate(actions):
        cat, target = (a["category"], a.get("target")) if isinstance(a, Mapping) else (a.category, a.target)
        if cat != "observe":
            out.append({"category": cat, "target": target if CATEGORY_TARGET_KIND[cat] != "none" else None,
                        "steps_ago": n - i})
    return out[::-1]


def steady_state_metrics(sim_cfg: SimConfig | dict | None = None, *, episodes: int, steps: int,
                         seed: int) -> dict[str, dict[str, float]]:
    """The simulator's steady state: for every (entity, metric) series its rendered telemetry reports, the median of
    the last sample of each window over ``episodes`` fault-free episodes (reset seeds ``seed``, ``seed + 1``, ...) of
    ``steps`` observe steps each, under ``sim_cfg`` (the policy bundle's env config: its topology, load and noise).
    Deterministic for a seed. ``{entity: {metric: value}}``, the series set every simulator window has."""
    from ifshm_ray.env.fault_env import FaultInjectionEnv
    from ifshm_ray.sim.catalog import FAULT_FREE

    if episodes < 1 or steps < 1:
        raise ValueError(f"steady_state_metrics needs episodes >= 1 and steps >= 1, got {episodes}, {steps}")
    cfg = {"sim": sim_cfg} if isinstance(sim_cfg, SimConfig) else dict(sim_cfg or {})
    env = FaultInjectionEnv({**cfg, "render_telemetry": True, "mine_logs": False})
    samples: dict[tuple[str, str], list[float]] = {}
    for ep in range(episodes):
        _, info = env.reset(seed=seed + ep, options={"faults": FAULT_FREE})
        for _ in range(steps):
            _, _, term, trunc, info = env.step((0, 0, 0))
            for ent, series in info["telemetry"]["metrics"].items():
                for m, v in series.items():
                    samples.setdefault((ent, m), []).append(v[-1])
            if term or trunc:
                break
    out: dict[str, dict[str, float]] = {}
    for (ent, m), v in samples.items():
        out.setdefault(ent, {})[m] = round(float(np.median(v)), METRIC_DECIMALS)  # (as windows report them)
    return out


def missing_series(telemetry: dict, series: Mapping[str, Iterable[str]]) -> list[str]:
    """The ``entity/metric`` names of ``series`` (``{entity: metrics}``, e.g. a :func:`steady_state_metrics`) that
    ``telemetry`` does not report (absent, or an empty list), in ``series``' order."""
    metrics = telemetry.get("metrics", {})
    return [f"{e}/{m}" for e, ms in series.items() for m in ms if not metrics.get(e, {}).get(m)]


class TelemetryObserver:
    """See the module docstring. ``fill``: the values of series a window does not report
    (:func:`steady_state_metrics`), or None for the earlier defaults."""

    def __init__(self, sim_cfg: SimConfig | None = None, fill: Mapping[str, Mapping[str, float]] | None = None):
        self.sim = BatchedSim(sim_cfg or SimConfig(), batch_size=1)
        self.sim.reset([0], [0])
        self.featurizer = Featurizer(self.sim)
        self.topology = self.sim.topo
        self.miner = TemplateMiner(self.sim)
        self.alert_index = {a.name: i for i, a in enumerate(self.sim.alerts)}
        self.fill = None
        if fill is not None:
            known = {**{s: SVC_METRICS for s in self.topology.services}, **{n: NODE_METRICS for n in self.topology.nodes}}
            bad = [f"{e}/{m}" for e, ms in fill.items() for m in ms if m not in known.get(e, ())]
            if bad:
                raise ValueError(f"fill names series outside this topology's entities and metrics: {bad[:10]}")
            self.fill = {e: {m: float(v) for m, v in ms.items()} for e, ms in fill.items()}
        self.last_imputed: list[str] = []
        """The ``entity/metric`` series the last :meth:`observe` read from ``fill`` (reported but not sent)."""

    def missing(self, telemetry: dict) -> list[str]:
        """The series of ``fill`` that ``telemetry`` does not report (:func:`missing_series`); [] without ``fill``."""
        return missing_series(telemetry, self.fill or {})

    def memory(self, history: Sequence[Mapping] | None = None, last_action: str | None = None,
               cordoned: Sequence[str] | None = None) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], list[str]]:
        """(incident memory (category, target, steps ago [1, M]) as :meth:`BatchedSim.action_memory` gives it,
        cordoned nodes) of an action history; a ValueError says what is wrong with it.

        ``history``: ``[{category, target, steps_ago}]`` in any order (observe entries are ignored);
        ``last_action``: the category taken at the last step (without ``history``, the only entry, with no target;
        with it, it must agree with the entry at steps_ago 1); ``cordoned``: nodes cordoned besides those drained in
        ``history``."""
        topo, M = self.topology, self.sim.cfg.memory_actions
        if last_action is not None and last_action not in CATEGORIES:
            raise ValueError(f"last_action {last_action!r} is not one of {list(CATEGORIES)}")
        entries = []
        for i, h in enumerate(history or ()):
            cat, target, ago = h.get("category"), h.get("target"), h.get("steps_ago")
            if cat not in CATEGORIES:
                raise ValueError(f"history[{i}].category {cat!r} is not one of {list(CATEGORIES)}")
            if isinstance(ago, bool) or not isinstance(ago, int) or ago < 1:
                raise ValueError(f"history[{i}].steps_ago must be an integer >= 1 (1: the last step), got {ago!r}")
            kind = CATEGORY_TARGET_KIND[cat]
            valid = {"service": topo.services, "node": topo.nodes, "none": [None]}[kind]
            if target not in valid:
                raise ValueError(f"history[{i}].target {target!r}: {cat} takes "
                                 + ("no target (null)" if kind == "none" else f"a {kind}, one of {list(valid)}"))
            if cat != "observe":
                entries.append((ago, cat, target))
        steps = [e[0] for e in entries]
        if len(set(steps)) != len(steps):
            raise ValueError(f"history has two actions with the same steps_ago {sorted(steps)}: one action a step")
        entries.sort()
        if last_action is not None:
            last = entries[0][1] if entries and entries[0][0] == 1 else "observe"
            if history is None and last_action != "observe":
                entries = [(1, last_action, None)]
            elif history is not None and last != last_action:
                raise ValueError(f"last_action {last_action!r} disagrees with history, whose action at steps_ago 1 "
                                 f"is {last!r}: send one of them, or both alike")
        cat = np.full((1, M), -1, np.int64)
        tgt = np.full((1, M), -1, np.int64)
        ago = np.zeros((1, M), np.int64)
        for k, (a, c, t) in enumerate(entries[:M]):
            cat[0, k], ago[0, k] = CATEGORIES.index(c), a
            tgt[0, k] = -1 if t is None else topo.targets.index(t)
        drained = {t for _, c, t in entries if c == "drain"}
        return (cat, tgt, ago), [n for n in topo.nodes if n in drained or n in (cordoned or ())]

    def observe(self, telemetry: dict, last_action: str | None = None, cordoned: Sequence[str] | None = None,
                history: Sequence[Mapping] | None = None) -> dict:
        """Observation dict for ``telemetry`` and the incident's actions (see :meth:`memory`); unknown entities
        raise ``TelemetryError`` naming the valid ones, a bad history a ValueError."""
        topo, sim = self.topology, self.sim
        validate_telemetry(telemetry, services=topo.services, nodes=topo.nodes)
        memory, cordoned = self.memory(history, last_action, cordoned)
        svc = np.zeros((1, topo.S, len(SVC_METRICS)))
        # metrics not reported default to a healthy service (full throughput and readiness, base latency)
        svc[0, :, SVC_METRICS.index("throughput_ratio")] = 1.0
        svc[0, :, SVC_METRICS.index("ready_ratio")] = 1.0
        svc[0, :, SVC_METRICS.index("latency_p99_ms")] = topo.base_latency
        svc[0, :, SVC_METRICS.index("latency_slo_ratio")] = 1.0 / sim.cfg.slo_latency_factor
        node = np.zeros((1, topo.N, len(NODE_METRICS)))
        node[0, :, NODE_METRICS.index("kube_node_status_ready")] = 1.0
        if self.fill is not None:  # the simulator's steady state where the window says nothing
            for ents, block, names in ((topo.services, svc, SVC_METRICS), (topo.nodes, node, NODE_METRICS)):
                for i, e in enumerate(ents):
                    for m, v in self.fill.get(e, {}).items():
                        block[0, i, names.index(m)] = v
        self.last_imputed = self.missing(telemetry)
        metrics = telemetry.get("metrics", {})
        for i, s in enumerate(topo.services):
            for j, m in enumerate(SVC_METRICS):
                v = metrics.get(s, {}).get(m)
                if v:
                    svc[0, i, j] = v[-1]
        for i, n in enumerate(topo.nodes):
            for j, m in enumerate(NODE_METRICS):
                v = metrics.get(n, {}).get(m)
                if v:
                    node[0, i, j] = v[-1]
        pending = np.zeros((1, sim.A), bool)
        firing = np.zeros((1, sim.A), bool)
        ent_p = np.zeros((1, topo.T))
        ent_f = np.zeros((1, topo.T))
        targets = {n: i for i, n in enumerate(topo.targets)}
        alarms = telemetry.get("alarms", [])
        for a in alarms:
            is_firing = a.get("state", "firing") == "firing"
            t = targets.get(a.get("entity"))
            if t is not None:
                ent_p[0, t] += 1
                ent_f[0, t] += is_firing
            k = self.alert_index.get(a["name"])
            if k is None:
                continue  # alerts from outside the rule set carry no flag feature
            pending[0, k] = True
            firing[0, k] |= is_firing
        age = max((float(a.get("active_for_s", 0.0)) for a in alarms), default=0.0)
        counts, svc_lines, node_lines, _ = self.miner.mine(telemetry.get("logs", []))
        sim.svc_obs[:] = svc
        sim.node_obs[:] = node
        sim.pending[:] = pending
        sim.firing[:] = firing
        sim.ent_pending[:] = ent_p
        sim.ent_firing[:] = ent_f
        sim.cordoned[0] = [n in cordoned for n in topo.nodes]
        tm, rm = sim.action_masks()
        x = self.featurizer.features(counts[None], svc_lines[None], node_lines[None], alert_age=np.array([age]),
                                     memory=memory)[0]
        return {"obs": x, "action_mask": tm[0].astype(np.float32), "ratio_mask": rm.astype(np.float32)}

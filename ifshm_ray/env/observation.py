"""Rebuild the policy's observation from raw telemetry alone (what a served policy receives).

:class:`TelemetryObserver` turns a telemetry dict (schema of :mod:`ifshm_ray.telemetry`) into the same
``Dict(obs, action_mask, ratio_mask)`` observation the environment produces: metric features from the last sample
of each window, alert flags from the alarms, log-template counts mined from the log lines. Fields the telemetry
cannot carry (last action, healthy streak, cordoned nodes) come from optional arguments and default to a fresh
incident. On simulator telemetry it reproduces the env's observation up to the 4-decimal rounding of metrics.
"""
from __future__ import annotations

import numpy as np

from ifshm_ray.config import SimConfig
from ifshm_ray.env.features import Featurizer
from ifshm_ray.sim.actions import CATEGORIES
from ifshm_ray.sim.core import NODE_METRICS, SVC_METRICS, BatchedSim
from ifshm_ray.sim.render import TemplateMiner
from ifshm_ray.telemetry import validate_telemetry


class TelemetryObserver:
    def __init__(self, sim_cfg: SimConfig | None = None):
        self.sim = BatchedSim(sim_cfg or SimConfig(), batch_size=1)
        self.sim.reset([0], [0])
        self.featurizer = Featurizer(self.sim)
        self.topology = self.sim.topo
        self.miner = TemplateMiner(self.sim)
        self.alert_index = {a.name: i for i, a in enumerate(self.sim.alerts)}

    def observe(self, telemetry: dict, last_action: str = "observe", cordoned: list[str] | None = None) -> dict:
        """Observation dict for ``telemetry``; unknown entities raise ``TelemetryError`` naming the valid ones."""
        topo, sim = self.topology, self.sim
        validate_telemetry(telemetry, services=topo.services, nodes=topo.nodes)
        if last_action not in CATEGORIES:
            raise ValueError(f"last_action {last_action!r} is not one of {list(CATEGORIES)}")
        svc = np.zeros((1, topo.S, len(SVC_METRICS)))
        # metrics not reported default to a healthy service (full throughput and readiness, base latency)
        svc[0, :, SVC_METRICS.index("throughput_ratio")] = 1.0
        svc[0, :, SVC_METRICS.index("ready_ratio")] = 1.0
        svc[0, :, SVC_METRICS.index("latency_p99_ms")] = topo.base_latency
        svc[0, :, SVC_METRICS.index("latency_slo_ratio")] = 1.0 / sim.cfg.slo_latency_factor
        node = np.zeros((1, topo.N, len(NODE_METRICS)))
        node[0, :, NODE_METRICS.index("kube_node_status_ready")] = 1.0
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
        for a in telemetry.get("alarms", []):
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
        counts, svc_lines, node_lines, _ = self.miner.mine(telemetry.get("logs", []))
        sim.svc_obs[:] = svc
        sim.node_obs[:] = node
        sim.pending[:] = pending
        sim.firing[:] = firing
        sim.ent_pending[:] = ent_p
        sim.ent_firing[:] = ent_f
        sim.t[0] = float(telemetry.get("time_s", 0.0))
        sim.last_cat[0] = CATEGORIES.index(last_action)
        sim.streak[0] = 0
        sim.cordoned[0] = [n in (cordoned or []) for n in topo.nodes]
        tm, rm = sim.action_masks()
        x = self.featurizer.features(counts[None], svc_lines[None], node_lines[None])[0]
        return {"obs": x, "action_mask": tm[0].astype(np.float32), "ratio_mask": rm.astype(np.float32)}

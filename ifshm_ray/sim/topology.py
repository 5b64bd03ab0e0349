"""The simulated cluster: nodes, the AI platform and OpenStack-like control plane services, their placement
and dependency graph. Pure data + numpy; built from :class:`~ifshm_ray.config.TopologyConfig`."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ifshm_ray.config import TopologyConfig
from ifshm_ray.sim.actions import CATEGORIES, CATEGORY_TARGET_KIND, NUM_RATIOS, RATIO_CATEGORIES


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    role: str                 # "control" (control nodes) or "gpu" (GPU nodes)
    replicas: int             # desired replicas (a daemonset has one per node of its role)
    stateful: bool = False    # restarting it mid-write loses data
    gpus: int = 0             # GPUs per replica
    daemonset: bool = False   # one replica on every node of its role
    deps: tuple[str, ...] = ()
    latency_ms: float = 50.0  # baseline p99 latency
    client_error: str = "upstream_503"  # log template its clients emit when it is impaired
    # PodDisruptionBudget maxUnavailable (None: no PDB): a drain evicts at most this many replicas that cannot be
    # rescheduled at once; the others stay on the node ("Cannot evict pod as it would violate the pod's disruption
    # budget", retried every 5 s, FAULTS.md §3 Drain / §4 cordon + drain [K6])
    pdb_max_unavailable: int | None = None


def default_services(cfg: TopologyConfig) -> list[ServiceSpec]:
    """The AI platform (gateway, inference, training, stores, queue, scheduler, DNS) and the cloud control plane
    modelled on OpenStack (nova, cinder, neutron)."""
    return [
        ServiceSpec("api-gateway", "control", cfg.gateway_replicas,
                    deps=("inference-server", "coredns"), latency_ms=120.0),
        ServiceSpec("inference-server", "gpu", cfg.inference_replicas, gpus=1,
                    deps=("feature-store", "object-storage", "coredns", "neutron-agent"), latency_ms=90.0,
                    client_error="upstream_503", pdb_max_unavailable=1),  # (maxUnavailable 1: inference)
        ServiceSpec("training-worker", "gpu", cfg.training_workers, gpus=1,
                    deps=("object-storage", "cinder-volume", "feature-store", "coredns"), latency_ms=400.0,
                    client_error="nccl_error", pdb_max_unavailable=1),
        ServiceSpec("feature-store", "control", 1, stateful=True, deps=(), latency_ms=8.0,
                    client_error="redis_conn_error"),
        ServiceSpec("message-queue", "control", 1, stateful=True, deps=(), latency_ms=10.0,
                    client_error="amqp_unreachable"),
        ServiceSpec("object-storage", "control", 1, stateful=True, deps=(), latency_ms=60.0,
                    client_error="s3_503"),
        ServiceSpec("job-scheduler", "control", 1, deps=("message-queue", "nova-api", "coredns"), latency_ms=200.0),
        ServiceSpec("coredns", "control", 2, deps=(), latency_ms=5.0, client_error="dns_timeout"),
        ServiceSpec("nova-api", "control", 1, deps=("message-queue", "nova-scheduler"), latency_ms=150.0,
                    client_error="nova_api_500"),
        ServiceSpec("nova-scheduler", "control", 1, deps=("message-queue",), latency_ms=100.0),
        ServiceSpec("nova-compute", "gpu", cfg.gpu_nodes, daemonset=True,
                    deps=("message-queue", "neutron-agent", "cinder-volume"), latency_ms=300.0),
        ServiceSpec("cinder-volume", "control", 1, deps=("message-queue",), latency_ms=200.0,
                    client_error="cinder_500"),
        ServiceSpec("neutron-server", "control", 1, deps=("message-queue",), latency_ms=150.0),
        ServiceSpec("neutron-agent", "gpu", cfg.gpu_nodes, daemonset=True,
                    deps=("message-queue", "neutron-server"), latency_ms=100.0, client_error="vif_unbound"),
    ]


class Topology:
    """Nodes, services, default placement, dependency matrix, action targets and the static action masks."""

    def __init__(self, cfg: TopologyConfig | None = None):
        cfg = cfg or TopologyConfig()
        cfg.validate()
        self.cfg = cfg
        self.nodes: list[str] = [f"ctl-{i}" for i in range(cfg.control_nodes)] + [f"gpu-{i}" for i in range(cfg.gpu_nodes)]
        self.node_role = np.array(["control"] * cfg.control_nodes + ["gpu"] * cfg.gpu_nodes)
        self.node_gpus = np.array([0] * cfg.control_nodes + [cfg.gpus_per_node] * cfg.gpu_nodes, dtype=np.float64)
        self.specs: list[ServiceSpec] = default_services(cfg)
        self.services: list[str] = [s.name for s in self.specs]
        self.S, self.N = len(self.services), len(self.nodes)
        self.svc_index = {n: i for i, n in enumerate(self.services)}
        self.node_index = {n: i for i, n in enumerate(self.nodes)}
        self.targets: list[str] = self.services + self.nodes
        self.T = len(self.targets)
        self.stateful = np.array([s.stateful for s in self.specs])
        self.daemonset = np.array([s.daemonset for s in self.specs])
        self.pdb_max_unavailable = np.array([np.inf if s.pdb_max_unavailable is None else s.pdb_max_unavailable
                                             for s in self.specs], dtype=np.float64)
        self.svc_gpus = np.array([s.gpus for s in self.specs], dtype=np.float64)
        self.base_replicas = np.array([s.replicas for s in self.specs], dtype=np.float64)
        self.base_latency = np.array([s.latency_ms for s in self.specs], dtype=np.float64)
        # allowed[s, n]: node n has the role service s runs on
        self.allowed = np.array([[self.node_role[n] == s.role for n in range(self.N)] for s in self.specs])
        self.placement0 = self._default_placement()
        dep = np.zeros((self.S, self.S))
        for i, s in enumerate(self.specs):
            for d in s.deps:
                dep[i, self.svc_index[d]] = 1.0
        self.dep = dep
        self.target_mask = self._target_mask()
        self.ratio_mask = np.zeros((len(CATEGORIES), NUM_RATIOS), dtype=np.float32)
        for c, name in enumerate(CATEGORIES):
            if name in RATIO_CATEGORIES:
                self.ratio_mask[c, :] = 1.0
            else:
                self.ratio_mask[c, 0] = 1.0

    def _default_placement(self) -> np.ndarray:
        """Replica counts per (service, node): daemonsets on every node of their role; GPU services packed
        round-robin over GPU nodes within GPU capacity (gpu-0 first); control services round-robin from ctl-0."""
        P = np.zeros((self.S, self.N))
        free_gpus = self.node_gpus.copy()
        ctl_cursor = 0
        gpu_nodes = [n for n in range(self.N) if self.node_role[n] == "gpu"]
        ctl_nodes = [n for n in range(self.N) if self.node_role[n] == "control"]
        gpu_cursor = 0
        for i, s in enumerate(self.specs):
            if s.daemonset:
                P[i, self.allowed[i]] = 1.0
                continue
            for _ in range(s.replicas):
                if s.role == "gpu":
                    for _try in range(len(gpu_nodes)):
                        n = gpu_nodes[gpu_cursor % len(gpu_nodes)]
                        gpu_cursor += 1
                        if free_gpus[n] >= s.gpus:
                            free_gpus[n] -= s.gpus
                            P[i, n] += 1
                            break
                else:
                    n = ctl_nodes[ctl_cursor % len(ctl_nodes)]
                    ctl_cursor += 1
                    P[i, n] += 1
        return P

    def _target_mask(self) -> np.ndarray:
        m = np.zeros((len(CATEGORIES), self.T), dtype=np.float32)
        for c, name in enumerate(CATEGORIES):
            kind = CATEGORY_TARGET_KIND[name]
            if kind == "none":
                m[c, 0] = 1.0
            elif kind == "service":
                m[c, : self.S] = 1.0
            else:
                m[c, self.S:] = 1.0
        # scaling a daemonset is not a thing: its replica count follows the nodes
        scale = CATEGORIES.index("scale")
        m[scale, : self.S][self.daemonset] = 0.0
        return m

    def target_name(self, t: int) -> str:
        if not 0 <= t < self.T:
            raise ValueError(f"target index {t} out of range [0, {self.T}); targets: {self.targets}")
        return self.targets[t]

    def to_dict(self) -> dict:
        return {"services": list(self.services), "nodes": list(self.nodes)}

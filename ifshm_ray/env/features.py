"""The policy's numeric observation: features of a :class:`~ifshm_ray.sim.core.BatchedSim`'s current state.

The simulator (:mod:`ifshm_ray.sim.core`) computes metrics, alerts and log counts; this module turns them into the
``obs`` vector of the environments (:class:`Featurizer`), laid out as :func:`obs_layout` says:

* a block of :data:`TARGET_FEAT` features for every action target (services, then nodes; the order of the target
  index), its columns named by the ``F_*`` constants below;
* then global features: alert flags (pending, then firing) per rule, log1p log-template counts, SLO green (every
  service within its SLOs by the reported metrics), the age of the oldest active alert, and the incident memory:
  for each of the last ``SimConfig.memory_actions`` actions other than observe (most recent first) its category
  (one-hot), its target (one-hot; none for observe/escalate) and how many steps ago it was taken (scaled).

Observation v2: every feature is a function of the rendered telemetry (:mod:`ifshm_ray.telemetry`: metrics as
rendered, rounded to ``METRIC_DECIMALS``; alarms; log lines) and of the agent's own past actions (memory, cordoned
nodes), so :class:`~ifshm_ray.env.observation.TelemetryObserver` rebuilds it exactly from those alone (tested). v1
also held the episode time fraction and the healthy streak, which counts steps with the *hidden* root cause cleared.
"""
from __future__ import annotations

import numpy as np

from ifshm_ray.sim.core import METRIC_DECIMALS, NODE_METRICS, SVC_METRICS, BatchedSim

# ---- columns of a target's feature block
# services: their metric features
F_LATENCY = 0             # log(max(p99 latency / SLO, 1e-3))
F_ERROR_RATE = 1
F_THROUGHPUT_DEFICIT = 2  # 1 - throughput ratio
F_UNREADY = 3             # 1 - ready ratio
F_CPU = 4
F_MEMORY = 5
F_RESTARTS = 6            # min(container restarts, 5) / 5
# nodes: their metric features, one column per metric of NODE_METRICS in that order (scaled as _NODE_AFFINE says)
F_NODE_METRICS = slice(0, len(NODE_METRICS))
F_NODE_NET_LATENCY = NODE_METRICS.index("node_network_latency_ms")
# every target
F_PENDING = len(NODE_METRICS)  # alerts pending (firing included) on the target
F_FIRING = F_PENDING + 1       # alerts firing on the target
F_LOG_LINES = F_PENDING + 2    # log1p(WARNING/ERROR log lines): by source for services, by host for nodes
F_IS_NODE = F_PENDING + 3
F_CORDONED = F_PENDING + 4     # (nodes; 0 for services)
TARGET_FEAT = F_PENDING + 5    # features per action target

# ---- the metric rows (SVC_METRICS / NODE_METRICS order) the features read
_M_LATENCY_SLO = SVC_METRICS.index("latency_slo_ratio")
_M_RESTARTS = SVC_METRICS.index("container_restarts")
_M_ERROR_RATE = SVC_METRICS.index("error_rate")
_M_THROUGHPUT = SVC_METRICS.index("throughput_ratio")
_M_READY = SVC_METRICS.index("ready_ratio")
# error rate, throughput ratio, ready ratio, CPU, memory: copied as one block into the same feature columns, then
# throughput and readiness become deficits (fewer numpy calls than feature by feature, the same values)
_M_COPIED = slice(SVC_METRICS.index("error_rate"), SVC_METRICS.index("memory_util") + 1)
_M_RATIOS = slice(SVC_METRICS.index("throughput_ratio"), SVC_METRICS.index("ready_ratio") + 1)
_F_COPIED = slice(F_ERROR_RATE, F_MEMORY + 1)
_F_DEFICITS = slice(F_THROUGHPUT_DEFICIT, F_UNREADY + 1)
_M_NET_LATENCY = NODE_METRICS.index("node_network_latency_ms")
# node metric -> (mul, cap, sign, shift, div) of its feature (min(x * mul, cap) * sign + shift) / div; the GPU
# temperature reads 0 on nodes without GPUs, the network latency is then replaced by log1p(latency) / 7
_NODE_AFFINE = {
    "node_cpu_utilisation": (1, np.inf, 1, 0, 1),
    "node_memory_utilisation": (1, np.inf, 1, 0, 1),
    "node_filesystem_used_ratio": (1, np.inf, 1, 0, 1),
    "DCGM_FI_DEV_GPU_UTIL": (1, np.inf, 1, 0, 100),            # / 100
    "DCGM_FI_DEV_GPU_TEMP": (1, np.inf, 1, -60, 40),           # (temp - 60) / 40
    "DCGM_FI_DEV_XID_ERRORS": (1, np.inf, 1, 0, 100),          # last Xid / 100
    "gpu_fb_used_ratio": (1, np.inf, 1, 0, 1),
    "node_network_receive_errs_ratio": (10, 1, 1, 0, 1),       # min(10 x errors, 1)
    "node_network_latency_ms": (1, np.inf, 1, 0, 1),
    "kube_node_status_ready": (1, np.inf, -1, 1, 1),           # NotReady = 1 - ready
    "node_timex_offset_seconds": (1, 1, 1, 0, 1),             # min(clock offset, 1 s)
}
assert SVC_METRICS[_M_COPIED] == ("error_rate", "throughput_ratio", "ready_ratio", "cpu_util", "memory_util")

ALERT_AGE_SCALE_S = 3600.0  # alert age feature: min(age / this, 1)
MEMORY_HORIZON_STEPS = 20   # incident memory: steps ago feature min(steps ago, this) / this


def obs_layout(sim: BatchedSim) -> dict:
    """Where things are in the observation of ``sim`` (for models that score targets with per-target features):
    the per-target blocks, then from ``global_offset`` the alert flags (2A), template counts (L), ``slo_green``,
    ``alert_age`` and from ``memory_offset`` ``memory_slots`` slots of ``memory_slot_feat`` features each
    (category one-hot C, target one-hot T, steps ago)."""
    T, A, L, C, M = sim.topo.T, sim.A, sim.L, sim.C, sim.cfg.memory_actions
    g = T * TARGET_FEAT
    mem = g + 2 * A + L + 2
    return {"num_targets": T, "target_feat": TARGET_FEAT, "global_offset": g, "slo_green": mem - 2,
            "alert_age": mem - 1, "memory_offset": mem, "memory_slots": M, "memory_slot_feat": C + T + 1,
            "obs_dim": mem + M * (C + T + 1)}


class Featurizer:
    """The numeric observation [B, obs_dim] of ``sim``'s B clusters (see the module docstring), from tables built
    once here (at batch size 1 the cost is per numpy call, not per element)."""

    def __init__(self, sim: BatchedSim):
        self.sim = sim
        self.layout = obs_layout(sim)
        self.obs_dim = self.layout["obs_dim"]
        S, T = sim.topo.S, sim.topo.T
        # built feature-major (see features): zeros, and 1 in the is-node feature of nodes
        self._template = np.zeros((sim.B, TARGET_FEAT, T))
        self._template[:, F_IS_NODE, S:] = 1.0
        # one-hot rows of categories / targets, with an all-zero row at index -1 (empty memory slot, no target)
        self._eye_c = np.eye(sim.C + 1, sim.C)
        self._eye_t = np.eye(T + 1, T)
        cfg = sim.cfg
        # node features = (min(metric * mul, cap) * sign + shift) / div * gpu mask (see _NODE_AFFINE), each
        # [1, metric, N] in NODE_METRICS order (repeated over the nodes: numpy is several times faster on equal
        # shapes than when broadcasting, and at batch size 1 these are the node metrics' shape)
        N = sim.topo.N
        mul, cap, sign, shift, div = (np.repeat(np.array(col, dtype=np.float64)[None, :, None], N, axis=2)
                                      for col in zip(*(_NODE_AFFINE[m] for m in NODE_METRICS)))
        gpu_only = np.array([m == "DCGM_FI_DEV_GPU_TEMP" for m in NODE_METRICS])[:, None]
        self._node_affine = (mul, cap, sign, shift, div,
                             np.where(gpu_only, sim.gpu_node[None, :], True).astype(float)[None])
        # SLO green tests x <= threshold on the rows (p99 latency / SLO, error rate, -throughput, -readiness) of
        # the service metrics: [1, 4, S] row signs and thresholds (x >= y is -x <= -y exactly)
        self._green_rows = np.array([_M_LATENCY_SLO, _M_ERROR_RATE, _M_THROUGHPUT, _M_READY])
        self._green_sign = np.repeat(np.array([1.0, 1.0, -1.0, -1.0])[None, :, None], S, axis=2)  # [1, 4, S]
        self._green_thr = np.repeat(np.array([1.0, cfg.slo_error_rate, -cfg.slo_throughput, -1.0])[None, :, None], S,
                                    axis=2)
        # the observation's columns: per-target blocks, pending, firing, template counts, SLO green, alert age, memory
        lay, A, L = self.layout, sim.A, sim.L
        g = lay["global_offset"]
        self._out_parts = (slice(0, g), slice(g, g + A), slice(g + A, g + 2 * A), slice(g + 2 * A, g + 2 * A + L),
                           lay["slo_green"], lay["alert_age"], slice(lay["memory_offset"], self.obs_dim))

    def features(self, counts: np.ndarray | None = None, svc_lines: np.ndarray | None = None,
                 node_lines: np.ndarray | None = None, alert_age: np.ndarray | None = None,
                 memory: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Observation [B, obs_dim] of the simulator's current state. ``counts`` / ``svc_lines`` / ``node_lines``
        replace the simulator's own log counts (template counts [B, L], WARNING/ERROR lines per service [B, S] and
        per node [B, N]) with counts mined from rendered text (same values, tested); ``alert_age`` [B] (seconds
        the oldest pending or firing alert has been active, 0 without one) and ``memory`` (category, target, steps
        ago [B, M], as :meth:`BatchedSim.action_memory`) replace the simulator's with those of a telemetry window
        and an action history (:class:`~ifshm_ray.env.observation.TelemetryObserver`)."""
        sim = self.sim
        B, S = sim.B, sim.topo.S
        # built feature-major (fb[:, k] is feature k of every target: contiguous rows), from the metric-major
        # metrics (s[:, m] is metric m of every service) as the telemetry reports them (rounded), then laid out
        # target by target
        s, n = sim.metric_rows(sim.obs_flat.round(METRIC_DECIMALS))
        fb = self._template.copy()
        fs, fn = fb[:, :, :S], fb[:, :, S:]
        # (neighbouring features are written as one block, then the transformed ones overwrite theirs: fewer numpy
        # calls, the same values)
        fs[:, F_LATENCY] = np.log(np.maximum(s[:, _M_LATENCY_SLO], 1e-3))
        fs[:, _F_COPIED] = s[:, _M_COPIED]
        fs[:, _F_DEFICITS] = 1 - s[:, _M_RATIOS]
        fs[:, F_RESTARTS] = np.minimum(s[:, _M_RESTARTS], 5.0) / 5.0
        fm, fcap, fsign, fshift, fdiv, fg = self._node_affine
        fn[:, F_NODE_METRICS] = (np.minimum(n * fm, fcap) * fsign + fshift) / fdiv * fg
        fn[:, F_NODE_NET_LATENCY] = np.log1p(n[:, _M_NET_LATENCY]) / 7.0
        fb[:, F_PENDING] = sim.ent_pending
        fb[:, F_FIRING] = sim.ent_firing
        fs[:, F_LOG_LINES] = _log1p_count(sim.svc_lines) if svc_lines is None else np.log1p(svc_lines)
        fn[:, F_LOG_LINES] = _log1p_count(sim.node_lines) if node_lines is None else np.log1p(node_lines)
        fn[:, F_CORDONED] = sim.cordoned
        # SLO green: every service within its SLOs (p99 latency / SLO, error rate, throughput, readiness) by the
        # reported metrics (noisy: not the hidden health the episode end tests)
        # (as (lat <= 1) & (err <= err SLO) & (tp >= tp SLO) & (ready >= 1), in one comparison)
        green = (s.take(self._green_rows, axis=1) * self._green_sign <= self._green_thr).all(axis=(1, 2))
        if alert_age is None:  # (what the rendered alarms' active_for_s say: t - since of each pending rule)
            t = sim.t[0] if B == 1 else sim.t[:, None]  # (one env: its time as a scalar, cheaper than broadcasting)
            alert_age = np.maximum.reduce(np.where(sim.pending, t - sim.alarm_since, 0.0), axis=1, initial=0.0)
        cat, tgt, ago = sim.action_memory() if memory is None else memory
        # every part is cast to float32 as it is written into its columns (as a concatenation with dtype float32
        # would cast it; fewer numpy calls)
        out = np.empty((B, self.obs_dim), np.float32)
        tgt_cols, pend_cols, fire_cols, count_cols, green_col, age_col, mem_cols = self._out_parts
        C, T = sim.C, sim.topo.T
        out[:, tgt_cols].reshape(B, T, TARGET_FEAT)[...] = fb.transpose(0, 2, 1)
        out[:, pend_cols] = sim.pending
        out[:, fire_cols] = sim.firing
        out[:, count_cols] = _log1p_count(sim.tcounts) if counts is None else np.log1p(counts)
        out[:, green_col] = green
        out[:, age_col] = np.minimum(alert_age / ALERT_AGE_SCALE_S, 1.0)
        mem = out[:, mem_cols].reshape(B, -1, C + T + 1)  # [B, memory slot, category one-hot, target one-hot, ago]
        mem[:, :, :C] = self._eye_c.take(cat, axis=0)  # (index -1: the all-zero row)
        mem[:, :, C:C + T] = self._eye_t.take(tgt, axis=0)
        mem[:, :, C + T] = np.minimum(ago, MEMORY_HORIZON_STEPS) / MEMORY_HORIZON_STEPS
        return out


# log1p of the small whole numbers the simulator counts (log lines), looked up instead of computed: the table holds
# np.log1p of the same float64 values, so the results are identical; larger counts fall back to np.log1p
_LOG1P_TABLE_SIZE = 4096
_LOG1P_TABLE = np.log1p(np.arange(_LOG1P_TABLE_SIZE, dtype=np.float64))
_LOG1P_MIN_SIZE = 4096


def _log1p_count(x: np.ndarray) -> np.ndarray:
    """np.log1p(x) for a float64 array of whole numbers >= 0 (the simulator's own counts)."""
    if x.size < _LOG1P_MIN_SIZE:  # (small arrays: one np.log1p call is cheaper than the lookup's three)
        return np.log1p(x)
    ix = x.astype(np.intp)
    if ix.max() >= _LOG1P_TABLE_SIZE:
        return np.log1p(x)
    return _LOG1P_TABLE.take(ix)

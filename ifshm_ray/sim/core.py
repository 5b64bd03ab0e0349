"""The batched fault-injection simulator.

:class:`BatchedSim` advances B independent simulated clusters at once with numpy. A single environment is the
same simulator with B = 1: under the same seeds the two give identical metrics, alarms, log-template counts and
rewards (all randomness is counter-based, see :mod:`ifshm_ray.sim.rng`).

One call to :meth:`BatchedSim.step` is one decision: the action is applied, simulated time advances by the
action's duration plus the step interval, then faults evolve, metrics are computed (with noise), alert rules are
evaluated (pending / firing with their ``for:`` delays), log-template counts are drawn, health is checked and the
reward is computed. :meth:`BatchedSim.telemetry` renders the raw telemetry (log lines, metric windows, alarms) of
one environment in the schema of :mod:`ifshm_ray.telemetry`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ifshm_ray.config import SimConfig
from ifshm_ray.sim import rng
from ifshm_ray.sim.actions import CATEGORIES, CATEGORY_INDEX, RATIO_LEVELS
from ifshm_ray.sim.catalog import (EFFECT_CODE, NODE_CH, SVC_CH, TGT_DEFAULT, TGT_NAMED, TGT_NODE_OF_ROOT,
                                   TGT_ROOT, TGT_SERVICES_ON_ROOT, Catalog, CatalogError, CompiledCatalog,
                                   load_catalog)
from ifshm_ray.sim.topology import Topology

K_SLOTS = 2  # concurrent faults per episode (compound incidents)

# metric names as they appear in telemetry, in feature order
SVC_METRICS = ("latency_p99_ms", "error_rate", "throughput_ratio", "ready_ratio", "cpu_util", "memory_util",
               "container_restarts", "latency_slo_ratio")
NODE_METRICS = ("node_cpu_utilisation", "node_memory_utilisation", "node_filesystem_used_ratio",
                "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_XID_ERRORS", "gpu_fb_used_ratio",
                "node_network_receive_errs_ratio", "node_network_latency_ms", "kube_node_status_ready")
GPU_ONLY = {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_XID_ERRORS", "gpu_fb_used_ratio"}

# benign log mix: (template id, emitting service or None for the template's own source, weight)
BENIGN_MIX = (
    ("health_ok", "inference-server", 2.0), ("req_ok", "api-gateway", 2.0), ("nova_spawn_ok", "nova-compute", 0.6),
    ("nova_sync_power", "nova-compute", 0.6), ("nova_api_ok", "nova-api", 0.8), ("sched_ok", "nova-scheduler", 0.4),
    ("cinder_ok", "cinder-volume", 0.4), ("neutron_ok", "neutron-server", 0.6), ("agent_report_ok", "neutron-agent", 0.5),
    ("train_step", "training-worker", 2.0), ("ckpt_ok", "training-worker", 0.3), ("mq_ok", "message-queue", 0.5),
    ("dns_ok", "coredns", 0.8), ("redis_ok", "feature-store", 0.3), ("sched_job_ok", "job-scheduler", 0.4),
    ("gc_pause", "api-gateway", 0.15), ("k8s_not_ready", "inference-server", 0.05),
    ("k8s_rollout", "inference-server", 0.03), ("net_timeout", "job-scheduler", 0.05),
)

# purposes of the counter-based random streams
P_RESET, P_NOISE, P_LOGU, P_LOGU2, P_PROPU, P_BENIGN, P_BENIGN2, P_MISC = 1, 2, 3, 4, 5, 6, 7, 8


class SimError(ValueError):
    """Bad input to the simulator (invalid action, unknown fault, bad config)."""


@dataclass
class StepResult:
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    harmful: np.ndarray


class BatchedSim:
    """B simulated clusters stepped together. See the module docstring."""

    def __init__(self, cfg: SimConfig | None = None, batch_size: int = 1, catalog: Catalog | None = None):
        self.cfg = cfg or SimConfig()
        self.cfg.validate()
        if batch_size < 1:
            raise SimError(f"batch_size must be >= 1, got {batch_size}")
        self.B = batch_size
        self.topo = Topology(self.cfg.topology)
        self.catalog = catalog or load_catalog(self.cfg.catalog)
        try:
            self.fault_names = self.catalog.select(self.cfg.faults)
        except CatalogError as e:
            raise SimError(str(e)) from e
        self.cc = CompiledCatalog(self.catalog, self.topo)
        self.allowed_faults = np.array([self.catalog.fault_index[n] for n in self.fault_names], dtype=np.int64)
        self._build_tables()
        self._alloc()

    # ------------------------------------------------------------------ static tables
    def _build_tables(self) -> None:
        topo, cc, cat = self.topo, self.cc, self.catalog
        S, N, F = topo.S, topo.N, cc.F
        Ms, Mn = len(SVC_CH), len(NODE_CH)
        # effect tables, with an all-zero row at index F for "no fault"
        self.t_root_svc = np.zeros((F + 1, Ms))
        self.t_root_node = np.zeros((F + 1, Mn))
        self.t_sor = np.zeros((F + 1, Ms))
        self.t_nor = np.zeros((F + 1, Mn))
        self.t_named = np.zeros((F + 1, S, Ms))
        for i, f in enumerate(cat.faults):
            for scope, chans in f.effects.items():
                for ch, v in chans.items():
                    if scope == "root" and f.target["kind"] == "service":
                        self.t_root_svc[i, SVC_CH[ch]] = v
                    elif scope == "root":
                        self.t_root_node[i, NODE_CH[ch]] = v
                    elif scope == "services_on_root":
                        self.t_sor[i, SVC_CH[ch]] = v
                    elif scope == "node_of_root":
                        self.t_nor[i, NODE_CH[ch]] = v
                    else:
                        self.t_named[i, topo.svc_index[scope.split(":", 1)[1]], SVC_CH[ch]] = v
        self.xid_code = np.zeros(F + 1)
        self.xid_code[:F] = self.t_root_node[:F, NODE_CH["xid"]]
        self.t_root_node[:, NODE_CH["xid"]] = 0.0
        self.onset = np.append(cc.onset, 0.0)
        self.ramp = np.append(cc.ramp, 1.0)
        self.log_tid = np.vstack([cc.log_tid, np.full((1, cc.max_logs), -1)])
        self.log_rate = np.vstack([cc.log_rate, np.zeros((1, cc.max_logs))])
        self.L = len(cat.templates)
        tix = cat.template_index
        self.client_err_tid = np.array([tix[s.client_error] for s in topo.specs], dtype=np.int64)
        self.benign_tid = np.array([tix[t] for t, _, _ in BENIGN_MIX], dtype=np.int64)
        self.benign_svc = np.array([topo.svc_index[s] for _, s, _ in BENIGN_MIX], dtype=np.int64)
        w = np.array([w for _, _, w in BENIGN_MIX])
        self.benign_rate = self.cfg.benign_log_rate * w / w.sum()
        self.tid_gc_pause = tix["gc_pause"]
        self.tid_failed_sched = tix["failed_scheduling"]
        self.tid_rollout = tix["k8s_rollout"]
        # alert rules
        self.alerts = cat.alerts
        self.A = len(self.alerts)
        self.svc_metric_ix = {m: i for i, m in enumerate(SVC_METRICS)}
        self.node_metric_ix = {m: i for i, m in enumerate(NODE_METRICS)}
        for a in self.alerts:
            table = self.svc_metric_ix if a.scope == "service" else self.node_metric_ix
            if a.metric not in table:
                raise CatalogError(f"alert {a.name}: metric {a.metric!r} is not one of {list(table)}")
        self.gpu_node = topo.node_role == "gpu"
        # base service behaviour
        self.base_util = 0.35
        self.slo_latency = topo.base_latency * self.cfg.slo_latency_factor
        self.is_train = np.zeros(S, bool)
        self.is_train[topo.svc_index["training-worker"]] = True
        self.is_inf = np.zeros(S, bool)
        self.is_inf[topo.svc_index["inference-server"]] = True
        self.C = len(CATEGORIES)
        # observation layout
        self.obs_dim = S * 7 + N * 10 + 2 * self.A + self.L + 1 + self.C + 1 + N

    def _alloc(self) -> None:
        B, S, N, K = self.B, self.topo.S, self.topo.N, K_SLOTS
        self.key = np.zeros(B, np.uint64)
        self.step_idx = np.zeros(B, np.int64)
        self.t = np.zeros(B)
        self.f_id = np.full((B, K), self.cc.F, np.int64)
        self.f_t0 = np.full((B, K), np.inf)
        self.f_eff_t0 = np.full((B, K), np.inf)
        self.f_active = np.zeros((B, K), bool)
        self.f_root = np.zeros((B, K), np.int64)
        self.f_worsen = np.zeros((B, K))
        self.f_heal_t = np.full((B, K), np.nan)
        self.emitters: list[list[list[tuple[int, int]]]] = [[[] for _ in range(K)] for _ in range(B)]
        self.replicas = np.tile(self.topo.base_replicas, (B, 1))
        self.P = np.tile(self.topo.placement0, (B, 1, 1))
        self.cordoned = np.zeros((B, N), bool)
        self.cold_until = np.full((B, S), -np.inf)
        self.res_ratio = np.ones((B, S))
        self.disk_cleared = np.zeros((B, N))
        self.alarm_since = np.full((B, self.A), np.nan)
        self.alarm_entity = np.zeros((B, self.A), np.int64)
        self.alarm_value = np.zeros((B, self.A))
        self.healthy = np.zeros(B, bool)
        self.streak = np.zeros(B, np.int64)
        self.healthy_since = np.full(B, np.nan)
        self.recover_t = np.full(B, np.nan)
        self.harmful = np.zeros(B, np.int64)
        self.n_actions = np.zeros(B, np.int64)
        self.escalated = np.zeros(B, bool)
        self.first_action_t = np.full(B, np.nan)
        self.unhealthy_s = np.zeros(B)
        self.blip_svc = np.zeros(B, np.int64)
        self.blip_t0 = np.full(B, np.inf)
        self.blip_dur = np.zeros(B)
        self.phase = np.zeros(B)
        self.last_cat = np.zeros(B, np.int64)
        self.mech_logs: list[list[tuple[int, int, int, int]]] = [[] for _ in range(B)]
        self.window_t0 = np.zeros(B)
        S_, N_ = len(SVC_METRICS), len(NODE_METRICS)
        self.svc_obs = np.zeros((B, S, S_))
        self.node_obs = np.zeros((B, N, N_))
        self.prev_svc_obs = np.zeros((B, S, S_))
        self.prev_node_obs = np.zeros((B, N, N_))
        self.svc_true = np.zeros((B, S, S_))
        self.node_true = np.zeros((B, N, N_))
        self.tcounts = np.zeros((B, self.L))
        self.fault_counts = np.zeros((B, K, self.cc.max_logs), np.int64)
        self.prop_counts = np.zeros((B, S), np.int64)
        self.prop_tid = np.zeros((B, S), np.int64)
        self.benign_counts = np.zeros((B, len(BENIGN_MIX)), np.int64)
        self.blip_counts = np.zeros(B, np.int64)
        self.firing = np.zeros((B, self.A), bool)
        self.pending = np.zeros((B, self.A), bool)

    # ------------------------------------------------------------------ reset
    def reset(self, idx: np.ndarray | list[int], keys: np.ndarray | list[int], faults: list | None = None) -> None:
        """Start new episodes in envs ``idx`` with episode keys ``keys``. ``faults`` may force the fault names
        per env (a list of names, or a list of lists for compound incidents)."""
        idx = np.asarray(idx, np.int64)
        keys = np.asarray(keys, np.uint64)
        cfg, cc, topo = self.cfg, self.cc, self.topo
        u = rng.uniform(keys, np.zeros(len(idx), np.uint64), P_RESET, 16)
        for j, b in enumerate(idx):
            self.key[b] = keys[j]
            self.step_idx[b] = 0
            self.t[b] = 0.0
            self.replicas[b] = topo.base_replicas
            self.P[b] = topo.placement0
            self.cordoned[b] = False
            self.cold_until[b] = -np.inf
            self.res_ratio[b] = 1.0
            self.disk_cleared[b] = 0.0
            self.alarm_since[b] = np.nan
            self.streak[b] = 0
            self.healthy_since[b] = np.nan
            self.recover_t[b] = np.nan
            self.harmful[b] = 0
            self.n_actions[b] = 0
            self.escalated[b] = False
            self.first_action_t[b] = np.nan
            self.unhealthy_s[b] = 0.0
            self.last_cat[b] = 0
            self.phase[b] = u[j, 0] * 2 * np.pi
            self.f_id[b] = cc.F
            self.f_active[b] = False
            self.f_worsen[b] = 0.0
            self.f_heal_t[b] = np.nan
            self.f_t0[b] = np.inf
            self.f_eff_t0[b] = np.inf
            forced = None if faults is None else faults[j]
            if forced is not None:
                names = [forced] if isinstance(forced, str) else list(forced)
                try:
                    fids = [self.catalog.fault_index[n] for n in names]
                except KeyError as e:
                    raise SimError(f"unknown fault name {e.args[0]!r}; valid names: {self.catalog.names}") from None
            else:
                fids = [self._draw_fault(u[j, 1], exclude=-1)]
                if u[j, 2] < cfg.compound_prob and len(self.allowed_faults) > 1:
                    fids.append(self._draw_fault(u[j, 3], exclude=fids[0]))
            t_inj = u[j, 4] * cfg.inject_max_delay_s
            for k, f in enumerate(fids[:K_SLOTS]):
                self.f_id[b, k] = f
                self.f_active[b, k] = True
                self.f_t0[b, k] = t_inj
                self.f_eff_t0[b, k] = t_inj
                self.f_root[b, k] = self._draw_root(b, f, u[j, 5 + k])
            self.emitters[b] = [self._resolve_emitters(b, k) for k in range(K_SLOTS)]
            if u[j, 7] < cfg.false_alarm_prob:
                self.blip_svc[b] = int(u[j, 8] * topo.S) % topo.S
                self.blip_t0[b] = u[j, 9] * cfg.time_limit_s * 0.5
                self.blip_dur[b] = 30.0 + 90.0 * u[j, 10]
            else:
                self.blip_t0[b] = np.inf
                self.blip_dur[b] = 0.0
        self._observe(idx, dur=np.zeros(len(idx)), first=True)

    def _draw_fault(self, u: float, exclude: int) -> int:
        cand = self.allowed_faults[self.allowed_faults != exclude]
        w = self.cc.freq[cand]
        c = np.cumsum(w) / w.sum()
        return int(cand[min(int(np.searchsorted(c, u, side="right")), len(cand) - 1)])

    def _draw_root(self, b: int, f: int, u: float) -> int:
        cc, topo = self.cc, self.topo
        if not cc.target_is_node[f]:
            return int(cc.target_service[f])
        ok = topo.node_role == cc.target_role[f]
        if cc.target_hosting[f] >= 0:
            ok &= self.P[b, cc.target_hosting[f]] > 0
        cand = np.flatnonzero(ok)
        return int(cand[min(int(u * len(cand)), len(cand) - 1)])

    def _resolve_emitters(self, b: int, k: int) -> list[tuple[int, int]]:
        """(emitting service or -1, host node) of each log entry of the fault in slot k."""
        f = self.f_id[b, k]
        if f >= self.cc.F:
            return []
        out = []
        root = self.f_root[b, k]
        is_node = self.cc.target_is_node[f]
        for scope in self.cc.log_scope[f]:
            if scope == "root":
                out.append((-1, root) if is_node else (root, self._host(b, root)))
            elif scope == "services_on_root":
                share = self.P[b, :, root].copy()
                share[self.topo.daemonset] = 0.0
                s = int(np.argmax(share * (1 + self.topo.svc_gpus)))
                out.append((s, root))
            elif scope == "node_of_root":
                out.append((-1, self._host(b, root)))
            else:
                s = self.topo.svc_index[scope.split(":", 1)[1]]
                host = root if (is_node and self.P[b, s, root] > 0) else self._host(b, s)
                out.append((s, host))
        return out

    def _host(self, b: int, s: int) -> int:
        return int(np.argmax(self.P[b, s]))

    # ------------------------------------------------------------------ masks
    def action_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """(target mask [B, C*T], ratio mask [C*R]); draining an already cordoned node is invalid."""
        topo = self.topo
        m = np.tile(topo.target_mask, (self.B, 1, 1))
        m[:, CATEGORY_INDEX["drain"], topo.S:] = (~self.cordoned).astype(np.float32)
        return m.reshape(self.B, -1), topo.ratio_mask.reshape(-1)

    def check_actions(self, actions: np.ndarray) -> np.ndarray:
        a = np.asarray(actions)
        if a.ndim != 2 or a.shape != (self.B, 3):
            raise SimError(f"actions must have shape ({self.B}, 3) as (category, target, ratio), got {a.shape}")
        if not np.issubdtype(a.dtype, np.integer):
            if not np.all(np.equal(np.mod(a, 1), 0)):
                raise SimError("actions must be integer indices (category, target, ratio)")
            a = a.astype(np.int64)
        c, t, r = a[:, 0], a[:, 1], a[:, 2]
        C, T, R = self.C, self.topo.T, len(RATIO_LEVELS)
        bad = (c < 0) | (c >= C) | (t < 0) | (t >= T) | (r < 0) | (r >= R)
        if bad.any():
            b = int(np.flatnonzero(bad)[0])
            raise SimError(f"action {tuple(a[b])} out of range: category in [0, {C}) = {list(CATEGORIES)}, "
                           f"target in [0, {T}) = {self.topo.targets}, ratio level in [0, {R}) = {list(RATIO_LEVELS)}")
        tm, rm = self.action_masks()
        ok = (tm[np.arange(self.B), c * T + t] > 0) & (rm[c * R + r] > 0)
        if not ok.all():
            b = int(np.flatnonzero(~ok)[0])
            cn = CATEGORIES[c[b]]
            valid = [self.topo.targets[i] for i in np.flatnonzero(tm[b].reshape(C, T)[c[b]])]
            raise SimError(f"invalid action ({cn}, {self.topo.targets[t[b]]}, ratio level {r[b]}): valid targets "
                           f"for {cn!r}: {valid}; ratio levels used only by scale/reallocate (others take level 0)")
        return a.astype(np.int64)

    # ------------------------------------------------------------------ step
    def step(self, actions: np.ndarray) -> StepResult:
        a = self.check_actions(actions)
        cfg, cc, topo = self.cfg, self.cc, self.topo
        B = self.B
        ar = np.arange(B)
        c, tg, r = a[:, 0], a[:, 1], a[:, 2]
        ratio = np.asarray(RATIO_LEVELS)[r]
        self.step_idx += 1
        unhealthy_before = ~self.healthy
        acting = c != CATEGORY_INDEX["observe"]
        any_fault = (self.f_active & (self.f_t0 <= self.t[:, None])).any(axis=1)
        false_alarm = acting & ~any_fault & (c != CATEGORY_INDEX["escalate"])
        self.n_actions += acting
        injected = (self.f_t0 <= self.t[:, None]).any(axis=1)
        first = acting & np.isnan(self.first_action_t) & injected
        self.first_action_t[first] = self.t[first]
        self.last_cat[:] = c
        for lst in self.mech_logs:
            lst.clear()
        harm = np.zeros(B)

        # ---- fault-specific remedy effects (vectorised over env x slot)
        f = self.f_id
        eff = cc.effect[np.minimum(f, cc.F - 1), c[:, None]]
        eff[~self.f_active | (f >= cc.F)] = EFFECT_CODE["none"]
        match = self._target_matches(f, c, tg)
        rneed = cc.min_ratio[np.minimum(f, cc.F - 1), c[:, None]]
        match &= (rneed <= 0) | (ratio[:, None] >= rneed - 1e-9)
        eff = np.where(match, eff, EFFECT_CODE["none"])
        dur_rem = cc.duration[np.minimum(f, cc.F - 1), c[:, None]]
        has_rem = (eff == EFFECT_CODE["heal"]) | (eff == EFFECT_CODE["mitigate"])
        dur = np.where(has_rem.any(axis=1), np.where(has_rem, dur_rem, 0.0).max(axis=1), cc.act_duration[c])
        esc = c == CATEGORY_INDEX["escalate"]
        dur = np.where(esc, cfg.human_response_s + cfg.human_fix_s, dur)
        t_done = self.t + dur
        heal = eff == EFFECT_CODE["heal"]
        heal_any = heal.any(axis=1)
        self.f_heal_t = np.where(heal, t_done[:, None], self.f_heal_t)
        self.f_active &= ~heal
        mit = eff == EFFECT_CODE["mitigate"]
        recur = cc.recur[np.minimum(f, cc.F - 1), c[:, None]]
        self.f_eff_t0 = np.where(mit, t_done[:, None] + recur - self.onset[f], self.f_eff_t0)
        hm = eff == EFFECT_CODE["harm"]
        harm += (hm * cc.harm_mult[np.minimum(f, cc.F - 1), c[:, None]]).sum(axis=1)
        self.f_worsen = np.where(hm, np.minimum(self.f_worsen + 0.5, 1.0), self.f_worsen)
        self.f_eff_t0 = np.where(hm, np.minimum(self.f_eff_t0, self.t[:, None] - self.ramp[f] - self.onset[f]),
                                 self.f_eff_t0)
        # escalate: the human fixes everything
        if esc.any():
            self.f_heal_t[esc] = np.where(self.f_active[esc], t_done[esc, None], self.f_heal_t[esc])
            self.f_active[esc] = False
            self.escalated |= esc

        # ---- generic action mechanics
        is_svc_t = tg < topo.S
        svc_t = np.where(is_svc_t, tg, 0)
        node_t = np.where(is_svc_t, 0, tg - topo.S)
        # restarting a stateful store that is not being healed by this restart loses in-flight writes
        rs = (c == CATEGORY_INDEX["restart"]) & topo.stateful[svc_t] & ~heal_any
        harm += rs
        self.cold_until[ar[rs], svc_t[rs]] = t_done[rs] + 300.0
        # shrinking resources below the current limit starves the service
        rl = (c == CATEGORY_INDEX["reallocate"]) & (ratio < 1.0)
        harm += rl
        self.cold_until[ar[rl], svc_t[rl]] = t_done[rl] + 300.0
        ra = c == CATEGORY_INDEX["reallocate"]
        self.res_ratio[ar[ra], svc_t[ra]] = np.clip(self.res_ratio[ar[ra], svc_t[ra]] * ratio[ra], 0.25, 4.0)
        cl = c == CATEGORY_INDEX["clear_storage"]
        self.disk_cleared[ar[cl], node_t[cl]] = np.minimum(self.disk_cleared[ar[cl], node_t[cl]] + 0.3, 0.45)
        for b in np.flatnonzero(c == CATEGORY_INDEX["scale"]):
            harm[b] += self._scale(b, svc_t[b], ratio[b])
        for b in np.flatnonzero(c == CATEGORY_INDEX["drain"]):
            harm[b] += self._drain(b, node_t[b])
        for b in np.flatnonzero(c == CATEGORY_INDEX["migrate"]):
            harm[b] += self._migrate(b, svc_t[b])
        for b in np.flatnonzero(c == CATEGORY_INDEX["rollback"]):
            self.mech_logs[b].append((self.tid_rollout, svc_t[b], self._host(b, svc_t[b]), 1))
        self.harmful += (harm > 0).astype(np.int64)

        # ---- advance time and observe
        self.t = t_done + cfg.step_s
        self._observe(ar, dur=dur, heal_done_t=t_done)
        healthy_after = self.healthy
        unhealthy_s = dur * unhealthy_before + cfg.step_s * ~healthy_after
        self.unhealthy_s += unhealthy_s
        rw = cfg.reward
        reward = (-(unhealthy_s / 60.0) * rw.unhealthy_weight - cc.act_cost[c] * rw.action_cost_scale
                  - harm * rw.harm_penalty - false_alarm * rw.false_alarm_penalty)
        terminated = self.streak >= cfg.healthy_steps
        truncated = ~terminated & (self.t >= cfg.time_limit_s)
        return StepResult(reward=reward, terminated=terminated, truncated=truncated, harmful=harm > 0)

    def _target_matches(self, f: np.ndarray, c: np.ndarray, tg: np.ndarray) -> np.ndarray:
        """[B, K]: does target ``tg`` of category ``c`` hit what the remedy of fault ``f`` needs?"""
        cc, topo = self.cc, self.topo
        fs = np.minimum(f, cc.F - 1)
        spec = cc.tgt_spec[fs, c[:, None]]
        named = cc.tgt_named[fs, c[:, None]]
        is_node_fault = cc.target_is_node[fs]
        tgt_is_svc = (tg < topo.S)[:, None]
        root = self.f_root
        svc_idx = np.where(tgt_is_svc, tg[:, None], 0)
        node_idx = np.where(tgt_is_svc, 0, tg[:, None] - topo.S)
        bi = np.arange(self.B)[:, None]
        # default: root if kinds agree; services on a root node; node(s) hosting a root service
        same = tgt_is_svc != is_node_fault
        m_root = same & np.where(tgt_is_svc, svc_idx == root, node_idx == root)
        on_root = self.P[bi, svc_idx, np.where(is_node_fault, root, 0)] > 0
        m_sor = tgt_is_svc & is_node_fault & on_root & ~topo.daemonset[svc_idx]
        hosts = self.P[bi, np.where(is_node_fault, 0, root), node_idx] > 0
        m_nor = ~tgt_is_svc & ~is_node_fault & hosts
        default = m_root | m_sor | m_nor
        m_named = tgt_is_svc & (svc_idx == named)
        return np.where(spec == TGT_NAMED, m_named, default)

    # ---- structural actions (per env; they move replicas)
    def _gpu_free(self, b: int) -> np.ndarray:
        used = (self.P[b] * self.topo.svc_gpus[:, None]).sum(axis=0)
        return np.where(self.cordoned[b], 0.0, self.topo.node_gpus - used)

    def _place(self, b: int, s: int, n_new: float, exclude: np.ndarray | None = None) -> float:
        """Place n_new replicas of service s on allowed, uncordoned nodes (GPU capacity permitting).
        Returns how many could not be placed."""
        topo = self.topo
        ok = topo.allowed[s] & ~self.cordoned[b]
        if exclude is not None:
            ok &= ~exclude
        left = n_new
        while left > 1e-9:
            cand = np.flatnonzero(ok)
            if topo.svc_gpus[s] > 0:
                free = self._gpu_free(b)
                cand = cand[free[cand] >= topo.svc_gpus[s] - 1e-9]
            if len(cand) == 0:
                break
            load = self.P[b, :, cand].sum(axis=1)
            n = cand[int(np.argmin(load))]
            step = min(1.0, left)
            self.P[b, s, n] += step
            left -= step
        return left

    def _scale(self, b: int, s: int, ratio: float) -> float:
        topo = self.topo
        cur = self.replicas[b, s]
        new = float(round(cur * ratio)) if cur > 0 else (topo.base_replicas[s] if ratio > 1 else 0.0)
        new = min(new, 4 * topo.base_replicas[s])
        harm = 0.0
        if new > cur:
            unplaced = self._place(b, s, new - cur)
            if unplaced > 0:
                self.mech_logs[b].append((self.tid_failed_sched, s, self._host(b, s), 1))
            self.replicas[b, s] = new - unplaced
        elif new < cur:
            remove = cur - new
            while remove > 1e-9 and self.P[b, s].sum() > 1e-9:
                n = int(np.argmax(self.P[b, s]))
                d = min(self.P[b, s, n], remove)
                self.P[b, s, n] -= d
                remove -= d
            self.replicas[b, s] = new
            if new < topo.base_replicas[s]:
                harm = 1.0  # removing capacity below what the service needs
        return harm

    def _drain(self, b: int, n: int) -> float:
        topo = self.topo
        harm = 0.0
        same_role = (topo.node_role == topo.node_role[n]) & ~self.cordoned[b]
        if same_role.sum() <= 1:
            harm = 1.0  # draining the last healthy node of its role: outage
        self.cordoned[b, n] = True
        for s in range(topo.S):
            moved = self.P[b, s, n]
            if moved <= 0:
                continue
            self.P[b, s, n] = 0.0
            if topo.daemonset[s]:
                self.replicas[b, s] -= moved  # a daemonset follows the schedulable nodes
                continue
            unplaced = self._place(b, s, moved)
            if unplaced > 0:
                self.replicas[b, s] -= 0.0  # desired stays; unplaced replicas are pending (not ready)
                self.mech_logs[b].append((self.tid_failed_sched, s, n, 1))
                harm = 1.0
        return harm

    def _migrate(self, b: int, s: int) -> float:
        """Live-migrate the replicas of s that sit on degraded nodes (node conditions) to healthy nodes."""
        if self.topo.daemonset[s]:
            return 0.0
        degraded = self._node_degraded(b)
        for n in np.flatnonzero(degraded & (self.P[b, s] > 0)):
            moved = self.P[b, s, n]
            self.P[b, s, n] = 0.0
            left = self._place(b, s, moved, exclude=degraded)
            if left > 0:
                self.P[b, s, n] += left  # nowhere to go: stays
        return 0.0

    def _node_degraded(self, b: int) -> np.ndarray:
        """Node conditions a scheduler/descheduler sees: NotReady, pressure, GPU errors, heat, network trouble."""
        x = self.node_true[b]
        ix = self.node_metric_ix
        return ((x[:, ix["kube_node_status_ready"]] < 0.5) | (x[:, ix["DCGM_FI_DEV_XID_ERRORS"]] > 0)
                | (x[:, ix["DCGM_FI_DEV_GPU_TEMP"]] > 85) | (x[:, ix["node_network_receive_errs_ratio"]] > 0.01)
                | (x[:, ix["node_network_latency_ms"]] > 50) | (x[:, ix["node_cpu_utilisation"]] > 0.9)
                | (x[:, ix["node_filesystem_used_ratio"]] > 0.9))

    # ------------------------------------------------------------------ observation
    def _severity(self, idx: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = self.f_id[idx]
        injected = self.f_active[idx] & (self.f_t0[idx] <= t[:, None])
        x = (t[:, None] - self.f_eff_t0[idx] - self.onset[f]) / self.ramp[f]
        visible = injected & (x >= 0)
        sev = np.where(injected, np.clip(x, 0.0, 1.0), 0.0) * (1.0 + self.f_worsen[idx])
        sev = np.where(visible, np.maximum(sev, 0.05), sev)
        return sev, visible

    def _observe(self, idx: np.ndarray, dur: np.ndarray, first: bool = False,
                 heal_done_t: np.ndarray | None = None) -> None:
        """Compute metrics, alarms, log counts and health at the current time of envs ``idx``."""
        cfg, topo = self.cfg, self.topo
        S, N = topo.S, topo.N
        t = self.t[idx]
        n_env = len(idx)
        sev, visible = self._severity(idx, t)
        f = self.f_id[idx]
        root = self.f_root[idx]
        P = self.P[idx]
        placed = P.sum(axis=2)
        share = P / np.maximum(placed[:, :, None], 1e-9)
        is_node_fault = self.cc.target_is_node[np.minimum(f, self.cc.F - 1)] & (f < self.cc.F)
        ek = np.arange(n_env)[:, None]
        # service-level fault effects [n, S, Ms]
        sv = np.zeros((n_env, S, len(SVC_CH)))
        nd = np.zeros((n_env, N, len(NODE_CH)))
        xid = np.zeros((n_env, N))
        for k in range(K_SLOTS):
            fk, rk, sk = f[:, k], root[:, k], sev[:, k][:, None, None]
            nf = is_node_fault[:, k]
            onehot_s = np.zeros((n_env, S))
            onehot_s[np.arange(n_env), np.where(nf, 0, rk)] = (~nf).astype(float)
            onehot_n = np.zeros((n_env, N))
            onehot_n[np.arange(n_env), np.where(nf, rk, 0)] = nf.astype(float)
            share_on_root = share[np.arange(n_env), :, np.where(nf, rk, 0)] * nf[:, None]
            share_on_root = share_on_root * ~topo.daemonset
            node_share = share[np.arange(n_env), np.where(nf, 0, rk), :] * (~nf)[:, None]
            sv += sk * (onehot_s[:, :, None] * self.t_root_svc[fk][:, None, :]
                        + share_on_root[:, :, None] * self.t_sor[fk][:, None, :]
                        + self.t_named[fk])
            nd += sk * (onehot_n[:, :, None] * self.t_root_node[fk][:, None, :]
                        + node_share[:, :, None] * self.t_nor[fk][:, None, :])
            xid = np.maximum(xid, onehot_n * (visible[:, k] * self.xid_code[fk])[:, None])
        # benign transient (false-alarm bait)
        blip = (t >= self.blip_t0[idx]) & (t < self.blip_t0[idx] + self.blip_dur[idx])
        if blip.any():
            bs = self.blip_svc[idx]
            sv[np.flatnonzero(blip), bs[blip], SVC_CH["lat"]] += 1.2
            sv[np.flatnonzero(blip), bs[blip], SVC_CH["err"]] += 0.03
        cold = t[:, None] < self.cold_until[idx]
        sv[:, :, SVC_CH["err"]] += cold * 0.3
        sv[:, :, SVC_CH["lat"]] += cold * 1.5
        sv[:, :, SVC_CH["restarts"]] += cold * 1.0
        # node state
        down = np.clip(nd[:, :, NODE_CH["down"]], 0, 1) >= 0.5
        # service capacity
        base = topo.base_replicas
        lost = (P * down[:, None, :]).sum(axis=2)
        desired = self.replicas[idx].copy()
        desired[:, topo.daemonset] = (topo.allowed[topo.daemonset][None] & ~self.cordoned[idx][:, None, :]).sum(axis=2)
        need = np.where(topo.daemonset, desired, base)
        unready = np.clip(sv[:, :, SVC_CH["unready"]], 0, 1)
        ready_n = np.maximum(placed - lost, 0.0) * (1 - unready)
        ready_ratio = np.clip(ready_n / np.maximum(need, 1e-9), 0.0, 1.0)
        cap = ready_n / np.maximum(base, 1e-9) * np.sqrt(self.res_ratio[idx])
        load = 1.0 + cfg.load_amplitude * np.sin(self.phase[idx] + 2 * np.pi * t / 86400.0)
        util = self.base_util * load[:, None] / np.maximum(cap, 1e-3)
        q0 = 1.0 / (1.0 - self.base_util)
        queue = (1.0 / (1.0 - np.minimum(util, 0.97))) / q0
        # propagation of impairment along dependencies (two hops)
        direct = np.clip(np.maximum.reduce([sv[:, :, SVC_CH["err"]], sv[:, :, SVC_CH["tp"]], 1 - ready_ratio,
                                            sv[:, :, SVC_CH["lat"]] / 4.0]), 0, 1)
        imp = direct
        prop = np.zeros_like(direct)
        worst_dep = np.zeros((n_env, S), np.int64)
        for _ in range(2):
            via = topo.dep[None, :, :] * imp[:, None, :]
            prop = 0.6 * via.max(axis=2)
            worst_dep = via.argmax(axis=2)
            imp = np.maximum(direct, prop)
        lat = topo.base_latency * (1 + sv[:, :, SVC_CH["lat"]] + prop) * queue
        err = np.clip(0.002 + sv[:, :, SVC_CH["err"]] + 0.5 * prop + np.maximum(util - 1.0, 0) * 0.5, 0, 1)
        err = np.where(ready_n <= 1e-9, 1.0, err)
        tp = np.clip(1 - sv[:, :, SVC_CH["tp"]] - 0.5 * prop, 0, 1) * np.minimum(1.0, 0.95 / np.maximum(util, 1e-6))
        tp = np.where(ready_n <= 1e-9, 0.0, tp)
        cpu = np.clip(util * 0.9 + sv[:, :, SVC_CH["cpu"]], 0, 1)
        mem = np.clip((0.45 + sv[:, :, SVC_CH["mem"]]) / np.sqrt(self.res_ratio[idx]), 0, 1)
        restarts = sv[:, :, SVC_CH["restarts"]]
        svc_true = np.stack([lat, err, tp, ready_ratio, cpu, mem, restarts, lat / self.slo_latency], axis=2)
        # node metrics
        ng = np.maximum(topo.node_gpus, 1.0)
        tr = topo.svc_index["training-worker"]
        inf = topo.svc_index["inference-server"]
        gpu_busy = (P[:, tr, :] * 0.95 * tp[:, tr][:, None] + P[:, inf, :] * 0.55 * load[:, None] * tp[:, inf][:, None]) / ng
        gpu_util = 100 * np.clip(gpu_busy * (1 - nd[:, :, NODE_CH["gpu_drop"]]), 0, 1)
        host_cpu = (P * cpu[:, :, None]).sum(axis=1) / np.maximum(P.sum(axis=1), 1.0)
        ncpu = np.clip(0.15 + 0.5 * host_cpu + nd[:, :, NODE_CH["cpu"]], 0, 1)
        nmem = np.clip(0.45 + nd[:, :, NODE_CH["mem"]], 0, 1)
        ndisk = np.clip(0.5 + nd[:, :, NODE_CH["disk"]] - self.disk_cleared[idx], 0.05, 1)
        temp = 38 + 0.35 * gpu_util + nd[:, :, NODE_CH["temp"]]
        fb = np.clip((P[:, tr, :] * 0.85 + P[:, inf, :] * 0.6) / ng + nd[:, :, NODE_CH["fb"]], 0, 1)
        neterr = np.clip(0.0005 + nd[:, :, NODE_CH["net_err"]], 0, 1)
        netlat = 0.4 + nd[:, :, NODE_CH["net_lat"]]
        ready = (~down).astype(float)
        gpu_mask = self.gpu_node[None, :]
        node_true = np.stack([ncpu, nmem, ndisk, gpu_util * gpu_mask, temp * gpu_mask, xid, fb * gpu_mask,
                              neterr, netlat, ready], axis=2)
        # down nodes stop exporting: metrics read as absent (0) except readiness
        node_true[:, :, :9] *= ~down[:, :, None]
        # noise
        cnt = self.step_idx[idx].astype(np.uint64)
        keys = self.key[idx]
        nz = rng.normal(keys, cnt, P_NOISE, S * len(SVC_METRICS) + N * len(NODE_METRICS))
        nzs = nz[:, : S * len(SVC_METRICS)].reshape(n_env, S, len(SVC_METRICS))
        nzn = nz[:, S * len(SVC_METRICS):].reshape(n_env, N, len(NODE_METRICS))
        a = cfg.metric_noise
        svc_obs = svc_true * (1 + a * nzs)
        svc_obs[:, :, 1] = np.clip(svc_true[:, :, 1] + 0.002 * np.abs(nzs[:, :, 1]), 0, 1)
        svc_obs[:, :, 3] = svc_true[:, :, 3]
        svc_obs[:, :, 6] = svc_true[:, :, 6]
        svc_obs[:, :, 2] = np.clip(svc_obs[:, :, 2], 0, 1)
        svc_obs[:, :, 7] = svc_obs[:, :, 0] / self.slo_latency
        node_obs = node_true * (1 + a * nzn)
        node_obs[:, :, 5] = node_true[:, :, 5]
        node_obs[:, :, 9] = node_true[:, :, 9]
        node_obs[:, :, [0, 1, 2, 3, 6]] = np.clip(node_obs[:, :, [0, 1, 2, 3, 6]], 0, [1, 1, 1, 100, 1])
        self.prev_svc_obs[idx] = self.svc_obs[idx] if not first else svc_obs
        self.prev_node_obs[idx] = self.node_obs[idx] if not first else node_obs
        self.svc_obs[idx], self.node_obs[idx] = svc_obs, node_obs
        self.svc_true[idx], self.node_true[idx] = svc_true, node_true
        self.window_t0[idx] = t - cfg.step_s
        # ---- alerts (on observed metrics)
        for ai, rule in enumerate(self.alerts):
            if rule.scope == "service":
                vals = svc_obs[:, :, self.svc_metric_ix[rule.metric]]
            else:
                vals = node_obs[:, :, self.node_metric_ix[rule.metric]]
            cond_e = vals > rule.threshold if rule.op == ">" else vals < rule.threshold
            if rule.scope == "node":
                cond_e &= ~down if rule.metric != "kube_node_status_ready" else True
                if rule.metric in GPU_ONLY:
                    cond_e &= self.gpu_node[None, :]
                if rule.only_gpu_nodes:  # nodes with GPU workloads placed on them
                    cond_e &= (P[:, self.is_train | self.is_inf, :].sum(axis=1) > 0)
            cond = cond_e.any(axis=1)
            score = np.where(cond_e, np.abs(vals - rule.threshold), -np.inf)
            ent = score.argmax(axis=1)
            since = self.alarm_since[idx, ai]
            since = np.where(cond, np.where(np.isnan(since), t, since), np.nan)
            self.alarm_since[idx, ai] = since
            self.alarm_entity[idx, ai] = ent
            self.alarm_value[idx, ai] = vals[np.arange(n_env), ent]
            self.pending[idx, ai] = cond
            self.firing[idx, ai] = cond & (t - np.nan_to_num(since, nan=np.inf) >= rule.for_s)
        # ---- log template counts
        cm = self.cc.max_logs
        u1 = rng.uniform(keys, cnt, P_LOGU, K_SLOTS * cm).reshape(n_env, K_SLOTS, cm)
        u2 = rng.uniform(keys, cnt, P_LOGU2, K_SLOTS * cm).reshape(n_env, K_SLOTS, cm)
        level = visible * (0.5 + 0.5 * np.minimum(sev, 1.0))
        rate = self.log_rate[f]
        fc = np.floor(rate * level[:, :, None] * (0.5 + u1) + u2 * (rate > 0) * visible[:, :, None]).astype(np.int64)
        fc[self.log_tid[f] < 0] = 0
        self.fault_counts[idx] = fc
        up = rng.uniform(keys, cnt, P_PROPU, 2 * S)
        pc = np.floor(2.0 * prop * (0.5 + up[:, :S]) + up[:, S:] * (prop > 0.15)).astype(np.int64)
        pc[prop <= 0.15] = 0
        self.prop_counts[idx] = pc
        self.prop_tid[idx] = self.client_err_tid[worst_dep]
        ub = rng.uniform(keys, cnt, P_BENIGN, len(BENIGN_MIX))
        ub2 = rng.uniform(keys, cnt, P_BENIGN2, len(BENIGN_MIX))
        bc = np.floor(self.benign_rate * (0.5 + ub) + ub2).astype(np.int64)
        self.benign_counts[idx] = bc
        self.blip_counts[idx] = blip * 2
        L = self.L
        tc = np.zeros((n_env, L))
        rows = np.repeat(np.arange(n_env), K_SLOTS * cm)
        tids = self.log_tid[f].reshape(-1)
        ok = tids >= 0
        tc += np.bincount(rows[ok] * L + tids[ok], weights=fc.reshape(-1)[ok], minlength=n_env * L).reshape(n_env, L)
        rows = np.repeat(np.arange(n_env), S)
        tc += np.bincount(rows * L + self.prop_tid[idx].reshape(-1), weights=pc.reshape(-1),
                          minlength=n_env * L).reshape(n_env, L)
        tc[:, self.benign_tid] += bc  # benign template ids are distinct
        tc[:, self.tid_gc_pause] += blip * 2
        for j, b in enumerate(idx):
            for tid, _, _, n in self.mech_logs[b]:
                tc[j, tid] += n
        self.tcounts[idx] = tc
        # ---- health: root cause cleared, SLOs hold, every service present with its replicas
        active = self.f_active[idx].any(axis=1)
        slo_ok = ((svc_true[:, :, 0] <= self.slo_latency * (1 + 1e-9)) & (svc_true[:, :, 1] <= cfg.slo_error_rate)
                  & (svc_true[:, :, 2] >= cfg.slo_throughput) & (ready_ratio >= 1.0 - 1e-9)
                  & (placed - lost >= need - 1e-9)).all(axis=1)
        healthy = ~active & slo_ok & ~down.any(axis=1)
        if first:
            self.healthy[idx] = healthy
            self.streak[idx] = 0
            return
        newly = healthy & (self.streak[idx] == 0)
        hd = heal_done_t[idx] if heal_done_t is not None else t
        self.healthy_since[idx] = np.where(newly, hd, np.where(healthy, self.healthy_since[idx], np.nan))
        self.streak[idx] = np.where(healthy, self.streak[idx] + 1, 0)
        self.healthy[idx] = healthy
        done = self.streak[idx] >= cfg.healthy_steps
        self.recover_t[idx] = np.where(done & np.isnan(self.recover_t[idx]), self.healthy_since[idx],
                                       self.recover_t[idx])

    # ------------------------------------------------------------------ features
    def features(self) -> np.ndarray:
        """Numeric observation [B, obs_dim]: service and node metric features, alarm flags (pending, firing),
        log1p log-template counts, time, last action and healthy streak, cordoned nodes."""
        B = self.B
        s = self.svc_obs
        svc = np.stack([np.log(np.maximum(s[:, :, 7], 1e-3)), s[:, :, 1], 1 - s[:, :, 2], 1 - s[:, :, 3], s[:, :, 4],
                        s[:, :, 5], np.minimum(s[:, :, 6], 5.0) / 5.0], axis=2).reshape(B, -1)
        n = self.node_obs
        node = np.stack([n[:, :, 0], n[:, :, 1], n[:, :, 2], n[:, :, 3] / 100.0, (n[:, :, 4] - 60.0) / 40.0 * self.gpu_node,
                         n[:, :, 5] / 100.0, n[:, :, 6], np.minimum(n[:, :, 7] * 10, 1.0),
                         np.log1p(n[:, :, 8]) / 7.0, 1 - n[:, :, 9]], axis=2).reshape(B, -1)
        last = np.zeros((B, self.C))
        last[np.arange(B), self.last_cat] = 1.0
        return np.concatenate([svc, node, self.pending.astype(float), self.firing.astype(float),
                               np.log1p(self.tcounts), (self.t / self.cfg.time_limit_s)[:, None], last,
                               (self.streak / self.cfg.healthy_steps)[:, None], self.cordoned.astype(float)],
                              axis=1).astype(np.float32)

    def features_with_counts(self, counts: np.ndarray) -> np.ndarray:
        """Like :meth:`features` for env 0 but with log-template counts given (mined from rendered text)."""
        x = self.features()[:1].copy()
        S, N = self.topo.S, self.topo.N
        off = S * 7 + N * 10 + 2 * self.A
        x[0, off:off + self.L] = np.log1p(counts)
        return x[0]

    # ------------------------------------------------------------------ ground truth (evaluation / oracle only)
    def incident(self, b: int = 0) -> dict:
        """Ground truth of env b: injected faults and their roots. Never part of a policy's observation."""
        out = []
        for k in range(K_SLOTS):
            f = int(self.f_id[b, k])
            if f >= self.cc.F:
                continue
            root = int(self.f_root[b, k])
            is_node = bool(self.cc.target_is_node[f])
            out.append({"fault": self.catalog.faults[f].name, "known": self.catalog.faults[f].known,
                        "root": self.topo.nodes[root] if is_node else self.topo.services[root],
                        "injected_at_s": float(self.f_t0[b, k]),
                        "visible_at_s": float(self.f_t0[b, k] + self.cc.onset[f]),
                        "active": bool(self.f_active[b, k]), "healed_at_s": float(self.f_heal_t[b, k])})
        return {"faults": out}

    def episode_stats(self, b: int = 0) -> dict:
        t_inj = float(np.min(self.f_t0[b][self.f_id[b] < self.cc.F])) if (self.f_id[b] < self.cc.F).any() else 0.0
        rec = float(self.recover_t[b])
        recovered = not math.isnan(rec)
        return {
            "recovered": recovered,
            "success": recovered and not bool(self.escalated[b]),
            "escalated": bool(self.escalated[b]),
            "mttr_s": (rec - t_inj) if recovered else float(self.cfg.time_limit_s - t_inj),
            "detect_s": float(self.first_action_t[b] - t_inj) if not math.isnan(self.first_action_t[b]) else float("nan"),
            "harmful_actions": int(self.harmful[b]),
            "actions": int(self.n_actions[b]),
            "unhealthy_s": float(self.unhealthy_s[b]),
            "time_s": float(self.t[b]),
        }

    # ------------------------------------------------------------------ raw telemetry
    def render_lines(self, b: int) -> list[tuple[int, int, int]]:
        """(template id, emitting service or -1, host node) of every log line of env b's current window."""
        lines: list[tuple[int, int, int]] = []
        for k in range(K_SLOTS):
            f = int(self.f_id[b, k])
            if f >= self.cc.F:
                continue
            for j, (s, n) in enumerate(self.emitters[b][k]):
                lines += [(int(self.log_tid[f, j]), s, n)] * int(self.fault_counts[b, k, j])
        for s in range(self.topo.S):
            if self.prop_counts[b, s]:
                lines += [(int(self.prop_tid[b, s]), s, self._host(b, s))] * int(self.prop_counts[b, s])
        for j in range(len(BENIGN_MIX)):
            if self.benign_counts[b, j]:
                s = int(self.benign_svc[j])
                lines += [(int(self.benign_tid[j]), s, self._host(b, s))] * int(self.benign_counts[b, j])
        if self.blip_counts[b]:
            s = int(self.blip_svc[b])
            lines += [(self.tid_gc_pause, s, self._host(b, s))] * int(self.blip_counts[b])
        for tid, s, n, cnt in self.mech_logs[b]:
            lines += [(tid, s, n)] * cnt
        return lines

    def alarms(self, b: int) -> list[dict]:
        out = []
        for ai in np.flatnonzero(self.pending[b]):
            rule = self.alerts[ai]
            ent_ix = int(self.alarm_entity[b, ai])
            ent = self.topo.services[ent_ix] if rule.scope == "service" else self.topo.nodes[ent_ix]
            val = float(self.alarm_value[b, ai])
            out.append({"name": rule.name, "severity": rule.severity, "entity": ent,
                        "state": "firing" if self.firing[b, ai] else "pending",
                        "active_for_s": float(self.t[b] - self.alarm_since[b, ai]),
                        "summary": rule.summary.format(entity=ent, value=val)})
        return out


_MASK_RE = re.compile(r"\S*\d\S*")


def mask_body(body: str) -> str:
    """The miner's normal form of a log body: every token holding a digit becomes <*>."""
    return _MASK_RE.sub("<*>", body)

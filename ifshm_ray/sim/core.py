"""The batched fault-injection simulator.

:class:`BatchedSim` advances B independent simulated clusters at once with numpy. A single environment is the
same simulator with B = 1: under the same seeds the two give identical metrics, alarms, log-template counts and
rewards (all randomness is counter-based, see :mod:`ifshm_ray.sim.rng`).

One call to :meth:`BatchedSim.step` is one decision: the action is applied, simulated time advances by the
action's duration plus the step interval, then faults evolve, metrics are computed (with noise), alert rules are
evaluated (pending / firing with their ``for:`` delays), log-template counts are drawn (a fault's log entry only
when the episode's log pipeline ships its source, the fault logs it at all and its delay has passed: states drawn at
reset from ``data/observability.yaml``, which also gives the healthy WARNING/ERROR noise), health is checked and the
reward is computed. The state holds what the telemetry reports (observed metrics, pending / firing alerts, the log
lines drawn, as counts per template and emitter); :class:`ifshm_ray.sim.render.Renderer` renders one environment's
raw telemetry (log lines, metric windows, alarms) from it in the schema of :mod:`ifshm_ray.telemetry`
(:meth:`BatchedSim.render_lines` and :meth:`BatchedSim.alarms` give its pieces), and
:class:`ifshm_ray.env.features.Featurizer` turns it into the policy's numeric observation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ifshm_ray.config import SimConfig
from ifshm_ray.sim import rng
from ifshm_ray.sim.actions import CATEGORIES, CATEGORY_INDEX, CATEGORY_TARGET_KIND, RATIO_LEVELS
from ifshm_ray.sim.catalog import (EFFECT_CODE, FAIL_STATES, FAULT_FREE, FLAP_MODES, NODE_CH, SVC_CH, TGT_NAMED,
                                   Catalog, CatalogError, CompiledCatalog, load_catalog)
from ifshm_ray.sim.human import HumanModel
from ifshm_ray.sim.topology import Topology

K_SLOTS = 2  # concurrent faults per episode (compound incidents)
# (_count_nonzero(x), numpy's C count_nonzero behind np.count_nonzero(x), stands for x.any() and x.nonzero()[0]
# for np.flatnonzero(x) of a 1-D x below: the same results without numpy's Python-level wrappers, which cost more
# than the work itself at batch size 1)
try:
    from numpy._core.multiarray import count_nonzero as _count_nonzero
except ImportError:  # (another numpy layout: its public function)
    _count_nonzero = np.count_nonzero

# metric names as they appear in telemetry, in the order of the metric rows (see BatchedSim.metric_rows)
SVC_METRICS = ("latency_p99_ms", "error_rate", "throughput_ratio", "ready_ratio", "cpu_util", "memory_util",
               "container_restarts", "latency_slo_ratio")
NODE_METRICS = ("node_cpu_utilisation", "node_memory_utilisation", "node_filesystem_used_ratio",
                "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_XID_ERRORS", "gpu_fb_used_ratio",
                "node_network_receive_errs_ratio", "node_network_latency_ms", "kube_node_status_ready",
                "node_timex_offset_seconds")
GPU_ONLY = {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_XID_ERRORS", "gpu_fb_used_ratio"}
METRIC_DECIMALS = 4  # metric samples are rendered (and so observed) rounded to this many decimals

# benign log mix of the packaged catalog: (template id, emitting service, share of the benign lines), from
# data/observability.yaml (INFO lines, then the WARNING/ERROR noise of healthy services at its measured share); a
# simulator reads its own catalog's (BatchedSim.benign_mix)
BENIGN_MIX = tuple(load_catalog().observability.benign)

# purposes of the counter-based random streams
P_RESET, P_NOISE, P_LOGU, P_LOGU2, P_PROPU, P_BENIGN, P_BENIGN2, P_MISC, P_WINDOW = 1, 2, 3, 4, 5, 6, 7, 8, 9
P_EPISODE_OBS = 20  # per-episode draws of fault-free episodes, benign transient kinds and log states
P_DYNAMICS, P_REMEDY, P_ACT_DURATION = 40, 41, 42  # per-episode fault dynamics; per-attempt remedy durations and
# failures; durations of other actions drawn per action
# P_HUMAN_Z, P_HUMAN_FAIL = 43, 44 (ifshm_ray.sim.human): the drawn human's page durations and failed first attempts
N_DYN_DRAWS = 7  # per fault slot: onset, ramp, ramp shape, severity, flap period, flap duty, recovery tail (+ self-heal)
FLAP_SQUARE, FLAP_SAWTOOTH = FLAP_MODES.index("square"), FLAP_MODES.index("sawtooth")
FAIL_PDB, FAIL_GPU_IN_USE, FAIL_MIGRATION = (FAIL_STATES.index(x) for x in ("pdb_blocked", "gpu_in_use",
                                                                             "migration_aborted"))


class SimError(ValueError):
    """Bad input to the simulator (invalid action, unknown fault, bad config)."""


@dataclass
class StepResult:
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    harmful: np.ndarray
    elapsed_steps: np.ndarray | None = None
    """[B] the step's length in step intervals, 1 + action duration / ``step_s`` (a 20-minute page: 41): the
    semi-MDP discount of the next state's value is gamma ** elapsed_steps (:mod:`ifshm_ray.policy.semi_mdp`)."""


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
            self.catalog.check_split(self.cfg.split)
            self.fault_names = self.catalog.select(self.cfg.faults, split=self.cfg.split)
        except CatalogError as e:
            raise SimError(str(e)) from e
        self.cc = CompiledCatalog(self.catalog, self.topo)
        self.allowed_faults = np.array([self.catalog.fault_index[n] for n in self.fault_names], dtype=np.int64)
        # the paged human: None = the fixed model; the drawn one reads, per fault id (row F: no fault), whether the
        # type is held out in the split (the on-call team has never met it: no runbook; read by the human only)
        self.human: HumanModel | None = None
        if self.cfg.human.model == "drawn":
            self.human = HumanModel.load(self.cfg.human.params)
            held = set(self.catalog.unknown_in(self.cfg.split))
            self.f_unfamiliar = np.array([n in held for n in self.catalog.names] + [False])
        self._build_tables()
        self._alloc()

    # ------------------------------------------------------------------ static tables
    def _build_tables(self) -> None:
        topo, cc, cat = self.topo, self.cc, self.catalog
        S, N, F = topo.S, topo.N, cc.F
        Ms, Mn = len(SVC_CH), len(NODE_CH)
        # effect tables, with an all-zero row at index F for "no fault" (node tables: and an all-zero channel Mn)
        self.t_root_svc = np.zeros((F + 1, Ms))
        self.t_root_node = np.zeros((F + 1, Mn + 1))
        self.t_sor = np.zeros((F + 1, Ms))
        self.t_nor = np.zeros((F + 1, Mn + 1))
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
        # faults whose effects spread beyond the root entity (to services, to nodes), by fault id, F = no fault
        self.f_spreads_svc = (self.t_sor != 0).any(axis=1) | (self.t_named != 0).any(axis=(1, 2))
        self.f_spreads_node = (self.t_nor != 0).any(axis=1)
        self.f_can_down = (self.t_root_node[:, NODE_CH["down"]] != 0) | (self.t_nor[:, NODE_CH["down"]] != 0)
        # per-episode dynamics (drawn in _episode_tables), by fault id with a row F for "no fault"
        self.onset_lh = np.vstack([cc.onset_lh, [[0.0, 0.0]]])
        self.ramp_lh = np.vstack([cc.ramp_lh, [[1.0, 1.0]]])
        self.sev_lh = np.vstack([cc.sev_lh, [[1.0, 1.0]]])
        self.shape_cum = np.vstack([np.cumsum(cc.shapes, axis=1) / cc.shapes.sum(axis=1, keepdims=True),
                                    np.ones((1, cc.shapes.shape[1]))])  # (cumulative choice probabilities)
        self.flap_mode = np.append(cc.flap_mode, 0)
        self.period_lh = np.vstack([cc.flap_period_lh, [[1.0, 1.0]]])
        self.duty_lh = np.vstack([cc.flap_duty_lh, [[1.0, 1.0]]])
        self.tail_lh = np.vstack([cc.tail_lh, [[1.0, 1.0]]])
        self.self_heal_lh = np.vstack([cc.self_heal_lh, [[np.inf, np.inf]]])
        self.f_migrate_heals = np.append(cc.effect[:, CATEGORY_INDEX["migrate"]] == EFFECT_CODE["heal"], False)
        self.log_tid = np.vstack([cc.log_tid, np.full((1, cc.max_logs), -1)])
        self.log_rate = np.vstack([cc.log_rate, np.zeros((1, cc.max_logs))])
        self.L = len(cat.templates)
        tix = cat.template_index
        self.client_err_tid = np.array([tix[s.client_error] for s in topo.specs], dtype=np.int64)
        obs_model = cat.observability
        self.benign_mix = tuple(obs_model.benign)
        bad = sorted({s for _, s, _ in self.benign_mix} - set(topo.svc_index))
        if bad:
            raise CatalogError(f"observability.yaml benign_logs: service(s) {bad} not in the topology {topo.services}")
        self.benign_tid = np.array([tix[t] for t, _, _ in self.benign_mix], dtype=np.int64)
        self.benign_svc = np.array([topo.svc_index[s] for _, s, _ in self.benign_mix], dtype=np.int64)
        w = np.array([w for _, _, w in self.benign_mix])
        self.benign_rate = self.cfg.benign_log_rate * w / w.sum()
        # log emission states (observability.yaml): per fault and log entry, its emit probability, its delay
        # quantiles and the index of its log source among the sources shipped with a probability (-1: always)
        self.ship_sources = sorted(obs_model.shipped_prob)
        self.ship_prob = np.array([obs_model.shipped_prob[x] for x in self.ship_sources])
        self.log_emit_p = np.zeros((F + 1, cc.max_logs))
        self.log_delay_q = np.zeros((F + 1, cc.max_logs, 3))
        self.log_src_ix = np.full((F + 1, cc.max_logs), -1, np.int64)
        for i in range(F):
            for j in range(cc.max_logs):
                if cc.log_tid[i, j] < 0:
                    continue
                tpl = cat.templates[cc.log_tid[i, j]]
                p, q, _ = obs_model.emission(tpl)
                self.log_emit_p[i, j] = p
                self.log_delay_q[i, j] = q
                if tpl.source in obs_model.shipped_prob:
                    self.log_src_ix[i, j] = self.ship_sources.index(tpl.source)
        # benign transient kinds (observability.yaml): effects at full size on the service / node channels, log
        # template and lines per window, duration range, and the cumulative weights they are drawn with
        tr = obs_model.transients
        self.tr_is_node = np.array([x["scope"] == "node" for x in tr])
        self.tr_svc = np.zeros((len(tr), len(SVC_CH)))
        self.tr_node = np.zeros((len(tr), len(NODE_CH) + 1))
        for i, x in enumerate(tr):
            for ch, v in x["effects"].items():
                if x["scope"] == "node":
                    self.tr_node[i, NODE_CH[ch]] = v
                else:
                    self.tr_svc[i, SVC_CH[ch]] = v
        self.tr_tid = np.array([tix[x["log"]] if x["log"] else 0 for x in tr], np.int64)
        self.tr_rate = np.array([x["log_rate"] for x in tr], np.int64)
        self.tr_dur = np.array([x["duration_s"] for x in tr])
        w = np.array([x["weight"] for x in tr])
        self.tr_cum = np.cumsum(w) / w.sum()
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
        svc_rules = [i for i, a in enumerate(self.alerts) if a.scope == "service"]
        node_rules = [i for i, a in enumerate(self.alerts) if a.scope == "node"]
        self.rs_ix, self.rn_ix = np.array(svc_rules, np.int64), np.array(node_rules, np.int64)
        self.rs_metric = np.array([self.svc_metric_ix[self.alerts[i].metric] for i in svc_rules], np.int64)
        self.rn_metric = np.array([self.node_metric_ix[self.alerts[i].metric] for i in node_rules], np.int64)
        self.r_sign = np.array([1.0 if a.op == ">" else -1.0 for a in self.alerts])
        self.r_thr = np.array([a.threshold for a in self.alerts], dtype=np.float64)
        self.r_for = np.array([a.for_s for a in self.alerts], dtype=np.float64)
        self.rn_gpu_only = np.array([self.alerts[i].metric in GPU_ONLY for i in node_rules])[:, None] & ~self.gpu_node[None, :]
        self.rn_busy_only = np.array([self.alerts[i].only_gpu_nodes for i in node_rules])
        self.rn_not_ready_rule = np.array([self.alerts[i].metric == "kube_node_status_ready" for i in node_rules])
        # candidate root nodes per fault (episodes start from the default placement)
        self.root_cand = np.zeros((cc.F, N), np.int64)
        self.root_ncand = np.ones(cc.F, np.int64)
        for i in range(cc.F):
            if cc.target_is_node[i]:
                ok = topo.node_role == cc.target_role[i]
                if cc.target_hosting[i] >= 0:
                    ok &= topo.placement0[cc.target_hosting[i]] > 0
                cand = np.flatnonzero(ok)
                self.root_cand[i, : len(cand)] = cand
                self.root_ncand[i] = len(cand)
            else:
                self.root_cand[i, 0] = cc.target_service[i]
        # per-entity log attribution: a line counts for its host node, and for a service when its source (the
        # process that wrote it) is that service; only WARNING/ERROR lines count
        tpls = cat.templates
        self.tpl_errwarn = np.array([t.level in ("ERROR", "WARNING") for t in tpls] + [False])
        R = max(S, N)
        self.attr_svc = np.full((cc.F + 1, R, cc.max_logs), -1, np.int64)
        self.attr_node = np.full((cc.F + 1, R, cc.max_logs), -1, np.int64)
        for i in range(cc.F):
            roots = range(N) if cc.target_is_node[i] else [int(cc.target_service[i])]
            for r in roots:
                for j, (es, en) in enumerate(self._emitters_for(i, r)):
                    tpl = tpls[cc.log_tid[i, j]]
                    src = tpl.source if tpl.source != "{svc}" else (topo.services[es] if es >= 0 else "kernel")
                    self.attr_svc[i, r, j] = topo.svc_index.get(src, -1)
                    self.attr_node[i, r, j] = en
        self.benign_attr = np.array([topo.svc_index.get(tpls[t].source if tpls[t].source != "{svc}" else
                                                        topo.services[sv], -1)
                                     for t, sv in zip(self.benign_tid, self.benign_svc)], np.int64)
        self.benign_errwarn = self.tpl_errwarn[self.benign_tid]
        self._benign_tid_list, self._benign_svc_list = self.benign_tid.tolist(), self.benign_svc.tolist()
        self.freq_allowed = np.cumsum(cc.freq[self.allowed_faults]) / cc.freq[self.allowed_faults].sum()
        self._emit_cache: dict[tuple[int, int], list[tuple[int, int]]] = {}
        # base service behaviour
        self.base_util = 0.35
        self.slo_latency = topo.base_latency * self.cfg.slo_latency_factor
        self.is_train = np.zeros(S, bool)
        self.is_train[topo.svc_index["training-worker"]] = True
        self.is_inf = np.zeros(S, bool)
        self.is_inf[topo.svc_index["inference-server"]] = True
        self.C = len(CATEGORIES)
        self.cat_has_target = np.array([CATEGORY_TARGET_KIND[c] != "none" for c in CATEGORIES])
        self._cat_targets_svc = np.array([CATEGORY_TARGET_KIND[c] == "service" for c in CATEGORIES])
        self._ranged_cats = set(np.flatnonzero(cc.act_dur_ranged.any(axis=1) & self._cat_targets_svc).tolist())
        self._svc_ix, self._node_ix = np.arange(S), np.arange(N)
        self.i_train, self.i_inf = topo.svc_index["training-worker"], topo.svc_index["inference-server"]
        # which metrics get multiplicative noise, and caps of observed node metrics
        self.svc_noisy = np.array([1, 0, 1, 0, 1, 1, 0, 1], float)
        self.node_noisy = np.array([1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1], float)
        self.node_cap = np.array([1, 1, 1, 100, np.inf, np.inf, 1, 1, np.inf, 1, np.inf], float)
        # node metrics from fault channels in one pass (see _observe): per metric its constant base, its channel
        # (the all-zero channel where none), its clip bounds and whether it exists on nodes without GPUs only
        inf = np.inf
        self.node_base = np.array([0, 0.45, 0.5, 0, 0, 0, 0, 0.0005, 0.4, 0, 0])
        self.node_ch_of_metric = np.array([NODE_CH[c] if c else len(NODE_CH) for c in
                                           ("cpu", "mem", "disk", None, "temp", None, "fb", "net_err", "net_lat", None,
                                            "clock")])
        self.node_lo_m = np.array([0, 0, 0.05, -inf, -inf, -inf, 0, 0, -inf, -inf, -inf])[:, None, None]  # [M, 1, 1]
        self.node_hi_m = np.array([1, 1, 1, inf, inf, inf, 1, 1, inf, inf, inf])[:, None, None]
        self.node_gmask_m = np.where(np.array([0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0], bool)[:, None, None],
                                     self.gpu_node[None, None, :], True).astype(float)        # [metric, 1, N]
        # ---- tables of _observe (built once: at batch size 1 the cost is per numpy call, not per element)
        self._arange = np.arange(self.B)
        self._ratio_levels = np.asarray(RATIO_LEVELS)
        # [C, T, R] valid (category, target, ratio); draining a cordoned node is valid too (`kubectl drain` is
        # idempotent: it retries the evictions a disruption budget refused)
        static_valid = (topo.target_mask[:, :, None] > 0) & (topo.ratio_mask[:, None, :] > 0)
        self._static_valid_flat = static_valid.ravel()  # (indexed by the flat (c, t, r), see check_actions)
        self._static_valid_list = self._static_valid_flat.tolist()
        self._act_cost_scaled = cc.act_cost * self.cfg.reward.action_cost_scale  # (the reward's action cost term)
        # action target -> (service index, node index), 0 where the target is of the other kind
        self._svc_of_target = np.where(np.arange(topo.T) < topo.S, np.arange(topo.T), 0)
        self._node_of_target = np.where(np.arange(topo.T) < topo.S, 0, np.arange(topo.T) - topo.S)
        self.f_is_node = np.append(cc.target_is_node, False)      # by fault id, F = no fault
        self.not_daemonset = ~topo.daemonset
        self.allowed_nodes_t = topo.allowed.T.astype(np.int64)    # [N, S]: uncordoned @ it = schedulable nodes
        self.node_gpus_min1 = np.maximum(topo.node_gpus, 1.0)
        self.slo_latency_tol = self.slo_latency * (1 + 1e-9)
        # the per-step uniforms: metric noise, fault log counts (2 streams), propagated client errors (2), benign
        # log counts (2); consecutive parts of one draw
        Ms_obs, Mn_obs = len(SVC_METRICS), len(NODE_METRICS)
        sizes = (S * Ms_obs + N * Mn_obs, K_SLOTS * cc.max_logs, K_SLOTS * cc.max_logs, S, S,
                 len(self.benign_mix), len(self.benign_mix))
        bounds = np.cumsum((0,) + sizes).tolist()
        self._noise_n = bounds[-1]
        self._noise_parts = [slice(bounds[i], bounds[i + 1]) for i in range(len(sizes))]
        # alert rules over entities: rule a looks at entity e (a service or a node, by its scope) through
        # r_gather[a, e], an index into the flattened metrics obs_flat (metric-major, see _obs_views);
        # r_static_ok masks padding (E = max(S, N)) and GPU metrics of nodes without GPUs
        E = max(S, N)
        self.r_gather = np.zeros((self.A, E), np.int64)
        self.r_static_ok = np.zeros((self.A, E), bool)
        self.r_ent_offset = np.zeros(self.A, np.int64)   # entity index -> target index
        self.r_down_blocks = np.zeros(self.A, bool)      # a down node raises only the NotReady rule
        self.r_busy_only = np.zeros(self.A, bool)        # rules for nodes running GPU work only
        for i, rule in enumerate(self.alerts):
            if rule.scope == "service":
                self.r_gather[i, :S] = self.svc_metric_ix[rule.metric] * S + np.arange(S)
                self.r_static_ok[i, :S] = True
            else:
                self.r_gather[i, :N] = S * Ms_obs + self.node_metric_ix[rule.metric] * N + np.arange(N)
                self.r_static_ok[i, :N] = self.gpu_node | (rule.metric not in GPU_ONLY)
                self.r_ent_offset[i] = S
                self.r_down_blocks[i] = rule.metric != "kube_node_status_ready"
                self.r_busy_only[i] = rule.only_gpu_nodes
        # The alert test runs in "signed" space: d = sign * value - sign * threshold is > 0 exactly when the rule's
        # comparison holds, and then equals |value - threshold| bit for bit (IEEE negation is exact), the score of
        # the worst offender. Entities a rule never looks at (padding, GPU metrics of nodes without GPUs) get an
        # infinite threshold, so d = -inf can neither cross nor win the argmax (metrics are always finite).
        self.r_sthr = np.where(self.r_static_ok, (self.r_sign * self.r_thr)[:, None], np.inf)
        self._busy_rules = np.flatnonzero(self.r_busy_only).tolist()
        # flat index of (env b, rule a, entity 0) in a [B, A, E] array, to read one entity per (env, rule)
        self._rule_flat = (np.arange(self.B)[:, None] * self.A + np.arange(self.A)) * E
        # flat index of (env b, target 0 of rule a's scope) in a [B, T] array (services first, then nodes)
        self._ent_base = np.arange(self.B)[:, None] * topo.T + self.r_ent_offset
        # dependency propagation over the (few) edges only: service s reads its dependencies dep_ix[s, :] (sorted,
        # so the first worst one wins ties as in a dense argmax), with weight 0 in the padding slots
        deg = (topo.dep != 0).sum(axis=1)
        D = max(int(deg.max()), 1)
        self.dep_ix = np.zeros((S, D), np.int64)
        self.dep_w = np.zeros((S, D))
        for s_, row in enumerate(topo.dep):
            nz = np.flatnonzero(row)
            self.dep_ix[s_, : len(nz)] = nz
            self.dep_w[s_, : len(nz)] = row[nz]
        self._dep_ix_flat, self._dep_row0 = self.dep_ix.ravel(), np.arange(S) * D  # (dep_ix[s, j] = flat[s * D + j])
        # constants of _observe at the shapes of the arrays they meet in one env ([1, ...], the values repeated):
        # numpy is about 3x faster on operands of equal shapes than when it broadcasts, at these sizes
        Ms, Mn = len(SVC_METRICS), len(NODE_METRICS)

        def at(x, shape):
            return np.ascontiguousarray(np.broadcast_to(x, shape))
        self._b_r_sign = at(self.r_sign[:, None], (1, self.A, E))
        self._b_r_sthr, self._b_r_for = self.r_sthr[None], self.r_for[None]
        self._b_node_lo, self._b_node_hi = at(self.node_lo_m, (Mn, 1, N)), at(self.node_hi_m, (Mn, 1, N))
        self._b_node_base_mem_disk = at(self.node_base[1:3, None, None], (2, 1, N))
        self._b_node_base_net = at(self.node_base[7:9, None, None], (2, 1, N))
        self._b_svc_noisy = at(self.svc_noisy[:, None], (1, Ms, S))  # (metric-major, as the observed metrics)
        self._b_node_noisy = at(self.node_noisy[:, None], (1, Mn, N))
        self._b_node_cap = at(self.node_cap[:, None], (1, Mn, N))
        # the metric noise's numbers (drawn entity-major: service s's metrics, then ...; then the nodes') in the
        # metric-major order of the flat metrics: position m * S + s holds number s * Ms + m (nodes likewise)
        self._noise_metric_major = np.concatenate([
            (np.arange(S)[None, :] * Ms + np.arange(Ms)[:, None]).ravel(),
            S * Ms + (np.arange(N)[None, :] * Mn + np.arange(Mn)[:, None]).ravel()])
        self._b_base_latency, self._b_base_replicas = topo.base_latency[None], topo.base_replicas[None]
        self._b_slo_latency, self._b_slo_latency_tol = self.slo_latency[None], self.slo_latency_tol[None]
        self._b_dep_w, self._b_node_gpus = self.dep_w[None], self.node_gpus_min1[None]
        self._b_benign_rate = self.benign_rate[None]
        # per-env rows of constants (sliced to the envs observed), to concatenate with per-env arrays
        self._svc_ix_rows = np.tile(self._svc_ix, (self.B, 1))
        self._benign_attr_rows = np.tile(self.benign_attr, (self.B, 1))

    def _alloc(self) -> None:
        B, S, N, K = self.B, self.topo.S, self.topo.N, K_SLOTS
        self.key = np.zeros(B, np.uint64)
        self.step_idx = np.zeros(B, np.int64)
        self.t = np.zeros(B)
        self.f_id = np.full((B, K), self.cc.F, np.int64)
        self.f_t0 = np.full((B, K), np.inf)
        self.f_eff_t0 = np.full((B, K), np.inf)
        self.f_active = np.zeros((B, K), bool)
        self.has_fault = np.zeros(B, bool)             # any fault injected in the episode (False: fault-free)
        self.f_root = np.zeros((B, K), np.int64)
        self.f_worsen = np.zeros((B, K))
        self.f_heal_t = np.full((B, K), np.nan)
        self.replicas = np.tile(self.topo.base_replicas, (B, 1))
        self.P = np.tile(self.topo.placement0, (B, 1, 1))
        self.cordoned = np.zeros((B, N), bool)
        self.cold_until = np.full((B, S), -np.inf)
        self.res_ratio = np.ones((B, S))
        self.res_sqrt = np.ones((B, S))                # sqrt(res_ratio)
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
        self.blip_node = np.zeros(B, np.int64)
        self.blip_kind = np.zeros(B, np.int64)         # benign transient kind (observability.yaml)
        self.blip_t0 = np.full(B, np.inf)
        self.blip_dur = np.zeros(B)
        self.phase = np.zeros(B)
        self.last_cat = np.zeros(B, np.int64)
        # incident memory: the last M actions other than observe (most recent first): category, target (-1: none
        # or a category without target) and the step index they were taken at
        M = self.cfg.memory_actions
        self.mem_cat = np.full((B, M), -1, np.int64)
        self.mem_tgt = np.full((B, M), -1, np.int64)
        self.mem_step = np.zeros((B, M), np.int64)
        self.mech_sched = np.full(B, -1, np.int64)     # service that failed to schedule this step (-1: none)
        self.mech_rollout = np.full(B, -1, np.int64)   # service rolled back this step (-1: none)
        self.window_t0 = np.zeros(B)
        S_, N_ = len(SVC_METRICS), len(NODE_METRICS)
        # observed metrics, flattened as [service metrics, node metrics] per env (the order the alert rules and the
        # renderer read them in); svc_obs [B, S, S_] and node_obs [B, N, N_] are views of it
        self.obs_flat = np.zeros((B, S * S_ + N * N_))
        self.prev_obs_flat = np.zeros((B, S * S_ + N * N_))
        self.svc_obs, self.node_obs = self._obs_views(self.obs_flat)
        self.prev_svc_obs, self.prev_node_obs = self._obs_views(self.prev_obs_flat)
        self.svc_true = np.zeros((B, S, S_))
        self.node_true = np.zeros((B, N, N_))
        self.fault_counts = np.zeros((B, K, self.cc.max_logs), np.int64)
        self.prop_counts = np.zeros((B, S), np.int64)
        self.prop_tid = np.zeros((B, S), np.int64)
        self.benign_counts = np.zeros((B, len(self.benign_mix)), np.int64)
        self.blip_counts = np.zeros(B, np.int64)
        self.blip_tid = np.zeros(B, np.int64)          # log template of the transient's lines
        self.firing = np.zeros((B, self.A), bool)
        self.pending = np.zeros((B, self.A), bool)
        self.ent_pending = np.zeros((B, self.topo.T))
        self.ent_firing = np.zeros((B, self.topo.T))
        self._log_totals: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        # per-episode tables: what the catalog says of each slot's fault (constant within an episode, set at reset)
        Ms, Mn, cm = len(SVC_CH), len(NODE_CH), self.cc.max_logs
        self.ep_nf = np.zeros((B, K), bool)            # the fault targets a node
        self.ep_onset = np.zeros((B, K))
        self.ep_ramp = np.ones((B, K))
        # drawn per episode and slot (see _episode_tables): ramp shape code, severity multiplier, flap mode / period /
        # duty (non-flapping: period inf, so the phase is the elapsed time), time constant of the recovery tail
        self.ep_shape = np.zeros((B, K), np.int64)
        self.ep_sevmax = np.ones((B, K))
        self.ep_flap = np.zeros((B, K), np.int64)
        self.ep_period = np.full((B, K), np.inf)
        self.ep_duty = np.ones((B, K))
        self.ep_tail = np.ones((B, K))
        self.f_tail_amp = np.zeros((B, K))             # severity when the fault was fixed (the tail decays from it)
        self.f_self_heal_t = np.full((B, K), np.inf)   # when something outside the agent clears the fault
        self._any_flap = False
        self._any_shape = False
        self._any_self_heal = False
        self._tails_live = False
        self.ep_rn = np.zeros((B, K), np.int64)        # root node (0 for service faults)
        self.ep_rs = np.zeros((B, K), np.int64)        # root service (0 for node faults)
        self.ep_root_svc = np.zeros((B, K, Ms))
        self.ep_root_node = np.zeros((B, K, Mn + 1))
        self.ep_spreads_svc = np.zeros((B, K), bool)
        self.ep_spreads_node = np.zeros((B, K), bool)
        self.ep_xid = np.zeros((B, K, N))              # Xid code on the root node
        self.ep_log_rate = np.zeros((B, K, cm))
        self.ep_log_on = np.zeros((B, K, cm), bool)
        self.ep_log_emit = np.zeros((B, K, cm), bool)   # the entry is logged (and its source shipped) this episode
        self.ep_log_delay = np.zeros((B, K, cm))        # seconds after the fault shows before its first line
        self.ep_shipped = np.ones((B, len(self.ship_sources)), bool)  # log sources the cluster ships
        # functions of the placement and the cordons (they change only at reset and with scale/drain/migrate)
        self.placed = np.zeros((B, S))                 # replicas placed per service
        self.share = np.zeros((B, S, N))               # share of a service's replicas on each node
        self.node_load_div = np.ones((B, N))           # max(replicas on the node, 1)
        self.fb_base = np.zeros((B, N))                # GPU memory of the placed training/inference replicas
        self.gpu_idle = np.ones((B, N), bool)          # no training/inference replica on the node
        # replicas each service needs (daemonsets: one per schedulable node), as the two forms _observe reads
        self.need_tol = np.zeros((B, S))               # need - 1e-9 (the health test's tolerance)
        self.need_div = np.ones((B, S))                # max(need, 1e-9) (the readiness ratio's divisor)
        self._any_xid = False                          # does any env's fault raise a GPU Xid
        self._any_down_fault = False                   # can any env's fault take a node down
        self._slot_kinds = [(False, False, False, False)] * K  # (see _episode_tables)
        self._no_down, self._no_down_env = np.zeros((B, N), bool), np.zeros(B, bool)
        # scratch of the alert evaluation in _observe (values and signed excess of every (rule, entity) pair)
        self._alert_vals = np.empty((B, self.A, max(S, N)))
        self._alert_d = np.empty((B, self.A, max(S, N)))

    def metric_rows(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(service metrics [n, S_, S], node metrics [n, N_, N]) as views of flattened metrics [n, S*S_ + N*N_],
        which are stored metric-major: all services' first metric, then their second, ..., then the same for
        nodes (each metric a contiguous row)."""
        S, N = self.topo.S, self.topo.N
        S_ = len(SVC_METRICS)
        svc, node = flat[:, : S * S_].reshape(-1, S_, S), flat[:, S * S_:].reshape(-1, len(NODE_METRICS), N)
        assert svc.base is not None and node.base is not None  # (views, never copies)
        return svc, node

    def _obs_views(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(service metrics [n, S, S_], node metrics [n, N, N_]): :meth:`metric_rows` entity by entity."""
        svc, node = self.metric_rows(flat)
        return svc.transpose(0, 2, 1), node.transpose(0, 2, 1)

    # ------------------------------------------------------------------ reset
    def fault_probabilities(self) -> dict[str, float]:
        """The probability of each of ``fault_names`` as the first fault of the next (auto-)reset's draws (the
        catalog frequencies or the last :meth:`set_fault_weights`), normalised to sum 1."""
        p = np.diff(self.freq_allowed, prepend=0.0)
        return {n: float(x) for n, x in zip(self.fault_names, p)}

    def set_fault_weights(self, weights: "dict[str, float] | None") -> None:
        """Draw the first fault of later (auto-)resets with these weights over ``fault_names`` instead of the
        catalog frequencies (scenario replay, :mod:`ifshm_ray.replay.level_sampler`); ``None`` restores the
        catalog frequencies. The draw uses the same uniform number either way, so the episode keys and every
        other random choice of a reset stay as they were. Names outside ``fault_names`` are refused; a name
        left out gets weight 0."""
        if weights is None:
            freq = self.cc.freq[self.allowed_faults]
        else:
            bad = sorted(set(weights) - set(self.fault_names))
            if bad:
                raise SimError(f"fault weights for {bad}, which this simulator does not draw; its faults: "
                               f"{self.fault_names}")
            freq = np.array([float(weights.get(n, 0.0)) for n in self.fault_names], dtype=np.float64)
            if not np.isfinite(freq).all() or (freq < 0).any() or freq.sum() <= 0:
                raise SimError(f"fault weights must be finite, >= 0 and not all 0, got {dict(weights)}")
        self.freq_allowed = np.cumsum(freq) / freq.sum()

    def reset(self, idx: np.ndarray | list[int], keys: np.ndarray | list[int], faults: list | None = None) -> None:
        """Start new episodes in envs ``idx`` with episode keys ``keys``. ``faults`` may force the fault names
        per env (a list of names, or a list of lists for compound incidents; ``FAULT_FREE`` = "none" for an episode
        without a fault). Otherwise each episode is fault-free with probability ``fault_free_prob``.

        Randomness: every draw made here comes from the episode key alone (streams ``P_RESET``, ``P_EPISODE_OBS``),
        whatever fault is forced or sampled, and the per-step draws from (key, step) with fixed positions per purpose;
        so a seed's fault-free run and the same seed's faulted run share the phase of the load curve, the injection time, the
        benign transient, the metric noise and the benign log lines, and differ only by what the fault causes
        (while the actions, and so the step times, are the same)."""
        idx = np.asarray(idx, np.int64)
        keys = np.asarray(keys, np.uint64)
        cfg, cc, topo = self.cfg, self.cc, self.topo
        n = len(idx)
        u = rng.uniform(keys, np.zeros(n, np.uint64), P_RESET, 16)
        # (fault-free, transient kind and node, then the log states: see _log_states)
        v = rng.uniform(keys, np.zeros(n, np.uint64), P_EPISODE_OBS,
                        3 + len(self.ship_sources) + 2 * K_SLOTS * cc.max_logs)
        if n == self.B and np.array_equal(idx, self._arange):
            idx = slice(None)  # (every env, in order: state is then written and read through views)
        self.key[idx] = keys
        self.step_idx[idx] = 0
        self.t[idx] = 0.0
        self.replicas[idx] = topo.base_replicas
        self.P[idx] = topo.placement0
        self.cordoned[idx] = False
        self.cold_until[idx] = -np.inf
        self.res_ratio[idx] = 1.0
        self.res_sqrt[idx] = 1.0
        self.disk_cleared[idx] = 0.0
        self.alarm_since[idx] = np.nan
        self.streak[idx] = 0
        self.healthy_since[idx] = np.nan
        self.recover_t[idx] = np.nan
        self.harmful[idx] = 0
        self.n_actions[idx] = 0
        self.escalated[idx] = False
        self.first_action_t[idx] = np.nan
        self.unhealthy_s[idx] = 0.0
        self.last_cat[idx] = 0
        self.mem_cat[idx] = -1
        self.mem_tgt[idx] = -1
        self.mem_step[idx] = 0
        self.mech_sched[idx] = -1
        self.mech_rollout[idx] = -1
        self.phase[idx] = u[:, 0] * 2 * np.pi
        fid = np.full((n, K_SLOTS), cc.F, np.int64)
        if faults is not None:
            if len(faults) != n:
                raise SimError(f"faults needs one entry per reset env ({n}), got {len(faults)}")
            for j, forced in enumerate(faults):
                names = [forced] if isinstance(forced, str) else list(forced)
                if names == [FAULT_FREE]:
                    continue  # no fault slot live
                bad = [x for x in names if x not in self.catalog.fault_index]
                if bad or not names:
                    raise SimError(f"unknown fault name(s) {bad}; valid names: {self.catalog.names}, or "
                                   f"{FAULT_FREE!r} alone for a fault-free episode")
                for k, name in enumerate(names[:K_SLOTS]):
                    fid[j, k] = self.catalog.fault_index[name]
        else:
            na = len(self.allowed_faults)
            first = np.minimum(np.searchsorted(self.freq_allowed, u[:, 1], side="right"), na - 1)
            fid[:, 0] = self.allowed_faults[first]
            if na > 1:
                # the second fault of a compound incident: uniform over the other allowed faults
                second = (first + 1 + (u[:, 3] * (na - 1)).astype(np.int64)) % na
                fid[:, 1] = np.where(u[:, 2] < cfg.compound_prob, self.allowed_faults[second], cc.F)
            fid[v[:, 0] < cfg.fault_free_prob] = cc.F  # a fault-free episode (a draw of its own, see above)
        live = fid < cc.F
        fs = np.minimum(fid, cc.F - 1)
        t_inj = u[:, 4] * cfg.inject_max_delay_s
        pick = np.minimum((u[:, 5:5 + K_SLOTS] * self.root_ncand[fs]).astype(np.int64), self.root_ncand[fs] - 1)
        self.f_id[idx] = fid
        self.has_fault[idx] = live.any(axis=1)
        self.f_active[idx] = live
        self.f_t0[idx] = np.where(live, t_inj[:, None], np.inf)
        self.f_eff_t0[idx] = self.f_t0[idx]
        self.f_root[idx] = self.root_cand[fs, pick]
        self.f_worsen[idx] = 0.0
        self.f_heal_t[idx] = np.nan
        self.f_tail_amp[idx] = 0.0
        blip = u[:, 7] < cfg.false_alarm_prob
        kind = np.minimum(np.searchsorted(self.tr_cum, v[:, 1], side="right"), len(self.tr_cum) - 1)
        self.blip_kind[idx] = kind
        self.blip_svc[idx] = (u[:, 8] * topo.S).astype(np.int64) % topo.S
        self.blip_node[idx] = (v[:, 2] * topo.N).astype(np.int64) % topo.N
        self.blip_t0[idx] = np.where(blip, u[:, 9] * cfg.time_limit_s * 0.5, np.inf)
        lo, hi = self.tr_dur[kind, 0], self.tr_dur[kind, 1]
        self.blip_dur[idx] = np.where(blip, lo + (hi - lo) * u[:, 10], 0.0)
        self._log_states(idx, v[:, 3:], fid)
        self._episode_tables(idx)
        self._refresh_placement(idx)
        self._observe(idx, dur=np.zeros(n), first=True)

    def _log_states(self, idx: np.ndarray | slice, u: np.ndarray, fid: np.ndarray) -> None:
        """Per episode (observability.yaml): which log sources the cluster ships, and per fault slot and log entry
        whether the fault logs it at all and after what delay, from the uniforms ``u`` [n, sources + 2 K max_logs]
        (drawn from the key alone, so the same seed's fault-free and faulted runs ship the same sources)."""
        n, K, cm = len(fid), K_SLOTS, self.cc.max_logs
        ns = len(self.ship_sources)
        shipped = u[:, :ns] < self.ship_prob
        ue = u[:, ns: ns + K * cm].reshape(n, K, cm)
        ud = u[:, ns + K * cm:].reshape(n, K, cm)
        si = self.log_src_ix[fid]                                                      # [n, K, cm]
        ok = np.where(si >= 0, shipped[self._arange[:n, None], np.maximum(si, 0).reshape(n, -1)].reshape(si.shape),
                      True) if ns else np.ones(si.shape, bool)
        q = self.log_delay_q[fid]                                                      # [n, K, cm, 3]
        lo = np.where(ud < 0.5, q[..., 0], q[..., 1])
        hi = np.where(ud < 0.5, q[..., 1], q[..., 2])
        self.ep_shipped[idx] = shipped
        self.ep_log_emit[idx] = (ue < self.log_emit_p[fid]) & ok
        self.ep_log_delay[idx] = lo + (hi - lo) * np.where(ud < 0.5, 2 * ud, 2 * ud - 1)

    def _episode_tables(self, idx: np.ndarray | slice) -> None:
        """The catalog rows of the faults of envs ``idx`` (gathered once per episode instead of every step)."""
        f, root = self.f_id[idx], self.f_root[idx]
        nf = self.f_is_node[f]
        self.ep_nf[idx] = nf
        self._draw_dynamics(idx, f)
        self.ep_rn[idx] = np.where(nf, root, 0)
        self.ep_rs[idx] = np.where(nf, 0, root)
        self.ep_root_svc[idx] = self.t_root_svc[f]
        self.ep_root_node[idx] = self.t_root_node[f]
        self.ep_spreads_svc[idx] = self.f_spreads_svc[f]
        self.ep_spreads_node[idx] = self.f_spreads_node[f]
        onehot_n = (root[:, :, None] == self._node_ix) & nf[:, :, None]                 # [n, K, N]
        self.ep_xid[idx] = onehot_n * self.xid_code[f][:, :, None]
        self._any_xid = bool(_count_nonzero(self.ep_xid))  # (else the Xid metric reads 0 everywhere: not computed)
        self._any_down_fault = bool(_count_nonzero(self.f_can_down[self.f_id]))  # (else no node is ever down:
        # not tested)
        # per slot, over all envs: does any fault there target a service / a node / spread to services / to nodes
        # (terms of a kind no env can have add zeros: skipped)
        live_f = self.f_id < self.cc.F
        self._slot_kinds = list(zip((live_f & ~self.ep_nf).any(axis=0).tolist(),
                                    (live_f & self.ep_nf).any(axis=0).tolist(),
                                    self.ep_spreads_svc.any(axis=0).tolist(),
                                    self.ep_spreads_node.any(axis=0).tolist()))
        rate = self.log_rate[f] * self.ep_log_emit[idx]
        self.ep_log_rate[idx] = rate
        self.ep_log_on[idx] = rate > 0

    def _draw_dynamics(self, idx: np.ndarray | slice, f: np.ndarray) -> None:
        """Draw each slot's onset, ramp, ramp shape, severity, flap period and duty, recovery tail and self-heal time
        from the catalog ranges (counter-based: a function of the episode key and the slot only)."""
        K = K_SLOTS
        u = rng.uniform(self.key[idx], np.zeros(len(f), np.uint64), P_DYNAMICS, K * (N_DYN_DRAWS + 1))
        u = u.reshape(len(f), K, N_DYN_DRAWS + 1)

        def draw(lh, j):
            return lh[f, 0] + u[:, :, j] * (lh[f, 1] - lh[f, 0])

        onset = draw(self.onset_lh, 0)
        self.ep_onset[idx] = onset
        self.ep_ramp[idx] = draw(self.ramp_lh, 1)
        self.ep_shape[idx] = (u[:, :, 2, None] >= self.shape_cum[f]).sum(axis=2)
        self.ep_sevmax[idx] = draw(self.sev_lh, 3)
        mode = self.flap_mode[f]
        self.ep_flap[idx] = mode
        self.ep_period[idx] = np.where(mode > 0, draw(self.period_lh, 4), np.inf)
        self.ep_duty[idx] = draw(self.duty_lh, 5)
        self.ep_tail[idx] = draw(self.tail_lh, 6)
        lo, hi = self.self_heal_lh[f, 0], self.self_heal_lh[f, 1]
        fin = np.isfinite(lo)  # (faults nothing outside the agent clears: inf)
        heal_after = np.where(fin, np.where(fin, lo, 0.0) + u[:, :, 7] * np.where(fin, hi - np.where(fin, lo, 0.0), 0.0),
                              np.inf)
        self.f_self_heal_t[idx] = self.f_t0[idx] + onset + heal_after
        self._any_flap = bool(_count_nonzero(self.ep_flap > 0))
        self._any_shape = bool(_count_nonzero(self.ep_shape > 0))
        self._any_self_heal = bool(np.isfinite(self.f_self_heal_t).any())
        self._tails_live = bool(_count_nonzero(self.f_tail_amp > 0))

    def _refresh_placement(self, idx: np.ndarray | slice) -> None:
        """Recompute the functions of the placement and the cordons for envs ``idx``."""
        P = self.P[idx]
        placed = P.sum(axis=2)
        self.placed[idx] = placed
        self.share[idx] = P / np.maximum(placed[:, :, None], 1e-9)
        self.node_load_div[idx] = np.maximum(P.sum(axis=1), 1.0)
        Pt, Pi = P[:, self.i_train, :], P[:, self.i_inf, :]
        self.fb_base[idx] = (Pt * 0.85 + Pi * 0.6) / self.node_gpus_min1
        self.gpu_idle[idx] = ~((Pt + Pi) > 0)
        # a daemonset needs one replica per schedulable node of its role
        need = np.where(self.topo.daemonset, ~self.cordoned[idx] @ self.allowed_nodes_t, self.topo.base_replicas)
        self.need_tol[idx] = need - 1e-9
        self.need_div[idx] = np.maximum(need, 1e-9)

    def emitters(self, b: int, k: int) -> list[tuple[int, int]]:
        """(emitting service or -1, host node) of each log entry of the fault in slot k (from the default
        placement the episode started with)."""
        f, root = int(self.f_id[b, k]), int(self.f_root[b, k])
        if f >= self.cc.F:
            return []
        hit = self._emit_cache.get((f, root))
        if hit is None:
            hit = self._emit_cache[(f, root)] = self._emitters_for(f, root)
        return hit

    def _emitters_for(self, f: int, root: int) -> list[tuple[int, int]]:
        P0, topo = self.topo.placement0, self.topo
        host = lambda s: int(np.argmax(P0[s]))  # noqa: E731
        out = []
        is_node = self.cc.target_is_node[f]
        for scope in self.cc.log_scope[f]:
            if scope == "root":
                out.append((-1, root) if is_node else (root, host(root)))
            elif scope == "services_on_root":
                share = P0[:, root] * ~topo.daemonset
                out.append((int(np.argmax(share * (1 + topo.svc_gpus))), root))
            elif scope == "node_of_root":
                out.append((-1, host(root)))
            else:
                s = topo.svc_index[scope.split(":", 1)[1]]
                out.append((s, root if (is_node and P0[s, root] > 0) else host(s)))
        return out

    def _host(self, b: int, s: int) -> int:
        return int(np.argmax(self.P[b, s]))

    # ------------------------------------------------------------------ masks
    def action_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """(target mask [B, C*T], ratio mask [C*R]): the topology's static masks (draining a cordoned node is valid:
        it retries the evictions a disruption budget refused)."""
        topo = self.topo
        m = np.empty((self.B, self.C, topo.T), np.float32)
        m[:] = topo.target_mask
        return m.reshape(self.B, -1), topo.ratio_mask.reshape(-1)

    def _valid_actions(self, c: np.ndarray, t: np.ndarray, flat: np.ndarray) -> np.ndarray:
        """[B] bool: is (c, t, r) allowed by :meth:`action_masks` (looked up without building the masks; ``flat``
        is the flat index of (c, t, r) in [C, T, R])."""
        return self._static_valid_flat[flat]

    def check_actions(self, actions: np.ndarray) -> np.ndarray:
        a = np.asarray(actions)
        if a.shape != (self.B, 3):
            raise SimError(f"actions must have shape ({self.B}, 3) as (category, target, ratio), got {a.shape}")
        if a.dtype != np.int64:
            if a.dtype.kind not in "iubf" or (a.dtype.kind == "f" and not np.all(np.equal(np.mod(a, 1), 0))):
                raise SimError(f"actions must be integer indices (category, target, ratio), got {a.tolist()!r}")
            a = a.astype(np.int64)
        C, T, R = self.C, self.topo.T, len(RATIO_LEVELS)
        if self.B == 1:  # (one env, every step of the single env: the same checks on Python ints; a failing action
            (ci, ti, ri), = a.tolist()  # gets its error from the general path below)
            if 0 <= ci < C and 0 <= ti < T and 0 <= ri < R and self._static_valid_list[(ci * T + ti) * R + ri]:
                return a
        c, t, r = a[:, 0], a[:, 1], a[:, 2]
        try:
            flat = np.ravel_multi_index((c, t, r), (C, T, R))  # (raises on an index out of range)
        except ValueError:
            bad = (c < 0) | (c >= C) | (t < 0) | (t >= T) | (r < 0) | (r >= R)
            b = int(bad.nonzero()[0][0])
            raise SimError(f"action {tuple(a[b])} out of range: category in [0, {C}) = {list(CATEGORIES)}, "
                           f"target in [0, {T}) = {self.topo.targets}, ratio level in [0, {R}) = {list(RATIO_LEVELS)}")
        ok = self._valid_actions(c, t, flat)
        if not ok.all():
            tm, _ = self.action_masks()
            b = int((~ok).nonzero()[0][0])
            cn = CATEGORIES[c[b]]
            valid = [self.topo.targets[i] for i in tm[b].reshape(C, T)[c[b]].nonzero()[0]]
            raise SimError(f"invalid action ({cn}, {self.topo.targets[t[b]]}, ratio level {r[b]}): valid targets "
                           f"for {cn!r}: {valid}; ratio levels used only by scale/reallocate (others take level 0)")
        return a

    # ------------------------------------------------------------------ step
    def step(self, actions: np.ndarray) -> StepResult:
        a = self.check_actions(actions)
        cfg, cc, topo = self.cfg, self.cc, self.topo
        B = self.B
        ar = self._arange
        c, tg, r = a[:, 0], a[:, 1], a[:, 2]
        ratio = self._ratio_levels[r]
        # categories taken by at least one env: the mechanics of the others are skipped (at batch size 1 most are)
        taken = np.bincount(c, minlength=self.C).tolist()
        self.step_idx += 1
        unhealthy_before = ~self.healthy
        acting = c != CATEGORY_INDEX["observe"]
        started = self.f_t0 <= (self.t[0] if B == 1 else self.t[:, None])  # (one env: a scalar, cheaper to broadcast)
        any_fault = (self.f_active & started).any(axis=1)
        false_alarm = acting & ~any_fault & (c != CATEGORY_INDEX["escalate"])
        self.n_actions += acting
        injected = started.any(axis=1)
        first = acting & np.isnan(self.first_action_t) & injected
        np.copyto(self.first_action_t, self.t, where=first)
        self.last_cat[:] = c
        if self.cfg.memory_actions and _count_nonzero(acting):
            self._remember(acting, c, tg)
        self.mech_sched[:] = -1
        self.mech_rollout[:] = -1
        harm = np.zeros(B)

        # ---- fault-specific remedy effects (vectorised over env x slot)
        f = self.f_id
        fs = np.minimum(f, cc.F - 1)
        fc_ix = (fs, c[:, None])
        no_effect = EFFECT_CODE["none"]
        eff = np.where(self.f_active, cc.effect[fc_ix], no_effect)  # (only slots holding a fault are ever active)
        effective = bool(_count_nonzero(eff != no_effect))  # else every remedy effect below is a no-op: skipped
        if effective:  # (the target matching is needed only then)
            match = self._target_matches(f, c, tg)
            rneed = cc.min_ratio[fc_ix]
            match &= (rneed <= 0) | (ratio[:, None] >= rneed - 1e-9)
            eff = np.where(match, eff, no_effect)
            effective = bool(_count_nonzero(eff != no_effect))
        # remedy attempts take drawn durations and can fail (catalog: duration_s ranges, fail_prob, fail_state)
        block_drain = abort_migrate = None
        fail = None
        if effective:
            has_rem = (eff == EFFECT_CODE["heal"]) | (eff == EFFECT_CODE["mitigate"])
            u = rng.table_uniform(self.key, self.step_idx, P_REMEDY, 2 * K_SLOTS)
            lh = cc.duration_lh[fc_ix]                                                # [B, K, 2]
            dur_rem = lh[..., 0] + u[:, :K_SLOTS] * (lh[..., 1] - lh[..., 0])
            dur = np.where(has_rem.any(axis=1), np.where(has_rem, dur_rem, 0.0).max(axis=1), self._act_duration(c, tg))
            fail = (eff == EFFECT_CODE["heal"]) & (u[:, K_SLOTS:] < cc.fail_prob[fc_ix])
            if _count_nonzero(fail):
                state = cc.fail_state[fc_ix]
                block_drain = (fail & (state == FAIL_PDB)).any(axis=1)        # evictions refused: pods stay
                abort_migrate = (fail & (state == FAIL_MIGRATION)).any(axis=1)  # nothing moves
                eff = np.where(fail, no_effect, eff)
        else:
            dur = self._act_duration(c, tg)
        esc = c == CATEGORY_INDEX["escalate"]
        if taken[CATEGORY_INDEX["escalate"]]:
            if self.human is None:  # the fixed human
                dur = np.where(esc, cfg.human_response_s + cfg.human_fix_s, dur)
            else:  # the drawn human: longer when a fault of a type held out in the split had started
                unfamiliar = (self.f_active & started & self.f_unfamiliar[self.f_id]).any(axis=1)
                page = self.human.draw(self.key, self.step_idx, unfamiliar)
                dur = np.where(esc, page["total_s"], dur)
        t_start = self.t
        t_done = t_start + dur
        heal = eff == EFFECT_CODE["heal"]
        heal_any = heal.any(axis=1)
        mit = eff == EFFECT_CODE["mitigate"] if effective else None
        # migrating off a faulty node moves the target service off that node (whatever its metrics show)
        mig_node = None
        if effective and taken[CATEGORY_INDEX["migrate"]]:
            mig_fix = heal & (c == CATEGORY_INDEX["migrate"])[:, None] & self.ep_nf
            if _count_nonzero(mig_fix):
                mig_node = np.where(mig_fix.any(axis=1), self.f_root[ar, mig_fix.argmax(axis=1)], -1)
        if effective:
            hm = eff == EFFECT_CODE["harm"]
            harm += (hm * cc.harm_mult[fc_ix]).sum(axis=1)
            self.f_worsen = np.where(hm, np.minimum(self.f_worsen + 0.5, 1.0), self.f_worsen)
            self.f_eff_t0 = np.where(hm, np.minimum(self.f_eff_t0, self.t[:, None] - self.ep_ramp - self.ep_onset),
                                     self.f_eff_t0)

        # ---- generic action mechanics
        svc_t, node_t = self._svc_of_target[tg], self._node_of_target[tg]
        if taken[CATEGORY_INDEX["restart"]]:
            # restarting a stateful store that is not being healed by this restart loses in-flight writes
            rs = (c == CATEGORY_INDEX["restart"]) & topo.stateful[svc_t] & ~heal_any
            harm += rs
            self.cold_until[ar[rs], svc_t[rs]] = t_done[rs] + 300.0
        if taken[CATEGORY_INDEX["reallocate"]]:
            # shrinking resources below the current limit starves the service
            ra = c == CATEGORY_INDEX["reallocate"]
            rl = ra & (ratio < 1.0)
            harm += rl
            self.cold_until[ar[rl], svc_t[rl]] = t_done[rl] + 300.0
            self.res_ratio[ar[ra], svc_t[ra]] = _clip(self.res_ratio[ar[ra], svc_t[ra]] * ratio[ra], 0.25, 4.0)
            self.res_sqrt[ar[ra], svc_t[ra]] = np.sqrt(self.res_ratio[ar[ra], svc_t[ra]])
        if taken[CATEGORY_INDEX["clear_storage"]]:
            cl = c == CATEGORY_INDEX["clear_storage"]
            self.disk_cleared[ar[cl], node_t[cl]] = np.minimum(self.disk_cleared[ar[cl], node_t[cl]] + 0.3, 0.45)
        moved = False
        for cat_name, fn, tgt, extra in (("scale", self._scale, svc_t, None), ("drain", self._drain, node_t, block_drain),
                                         ("migrate", self._migrate, svc_t, (abort_migrate, mig_node))):
            if taken[CATEGORY_INDEX[cat_name]]:
                sel = (c == CATEGORY_INDEX[cat_name]).nonzero()[0]
                harm[sel] += fn(sel, tgt[sel], ratio[sel], extra)
                moved = True
        if taken[CATEGORY_INDEX["rollback"]]:
            rb = c == CATEGORY_INDEX["rollback"]
            self.mech_rollout[rb] = svc_t[rb]
        if moved:
            self._refresh_placement(slice(None))
        self.harmful += harm > 0

        # ---- remedies whose success depends on the state the mechanics left
        if effective:
            if taken[CATEGORY_INDEX["scale"]]:  # a scale-out helps only once every new replica is placed
                pending = ((c == CATEGORY_INDEX["scale"]) & (self.mech_sched >= 0))[:, None]
                heal &= ~pending
                mit &= ~pending
            if mig_node is not None:  # migrating one service off a faulty node clears the fault only when nothing
                # the fault hurts is left there: the named service, or (default) every non-daemonset replica
                mig = heal & (c == CATEGORY_INDEX["migrate"])[:, None] & self.ep_nf
                named = cc.tgt_named[fs, CATEGORY_INDEX["migrate"]]
                on_root = self.P[ar[:, None], :, self.ep_rn] > 1e-9                        # [B, K, S]
                left = np.where(named >= 0, np.take_along_axis(on_root, np.maximum(named, 0)[:, :, None], 2)[..., 0],
                                (on_root & self.not_daemonset).any(axis=2))
                heal &= ~(mig & left)
            if taken[CATEGORY_INDEX["drain"]]:  # a node is repaired (reboot, GPU reset) only once its workload is
                # gone: pods a disruption budget kept there leave the GPU in use, the repair does not start
                dr = heal & (c == CATEGORY_INDEX["drain"])[:, None] & self.ep_nf
                if _count_nonzero(dr):
                    on_root = self.P[ar[:, None], :, self.ep_rn] > 1e-9                    # [B, K, S]
                    heal &= ~(dr & (on_root & self.not_daemonset).any(axis=2))
            heal_any = heal.any(axis=1)
            self.f_eff_t0 = np.where(mit, t_done[:, None] + cc.recur[fc_ix] - self.ep_onset, self.f_eff_t0)
        fixed = heal
        if taken[CATEGORY_INDEX["escalate"]]:  # escalate: the human fixes every fault that had started when paged (a
            # page sent before anything was wrong finds nothing: a fault injected later is not fixed by that page)
            fixed = heal | (esc[:, None] & self.f_active & started)
            self.escalated |= esc
        if _count_nonzero(fixed):
            self._fix(fixed, t_done)

        # ---- advance time (faults that something outside the agent clears go), and observe
        self.t = t_done + cfg.step_s
        if self._any_self_heal:
            gone = self.f_active & (self.f_self_heal_t <= self.t[:, None])
            if _count_nonzero(gone):
                self._fix(gone, self.f_self_heal_t)
        self._observe(slice(None), dur=dur, heal_done_t=t_done)
        healthy_after = self.healthy
        # unhealthy time charged: the action's duration, then the step interval, each only up to the time limit (an
        # action running past it, a page above all, is cut off there as staying put is: the episode, its MTTR and
        # its return observe nothing after it; the trajectory itself is not cut)
        act_s = np.minimum(dur, np.maximum(cfg.time_limit_s - t_start, 0.0))
        wait_s = np.clip(cfg.time_limit_s - t_done, 0.0, cfg.step_s)
        unhealthy_s = act_s * unhealthy_before + wait_s * ~healthy_after
        self.unhealthy_s += unhealthy_s
        rw = cfg.reward
        charged_s = unhealthy_s
        if rw.duration_discount is not None and rw.duration_discount < 1.0:  # semi-MDP: discounted inside the step
            g, n = rw.duration_discount, act_s / cfg.step_s
            gn = g ** n
            charged_s = (cfg.step_s * (1.0 - gn) / (1.0 - g)) * unhealthy_before + gn * wait_s * ~healthy_after
        reward = (-(charged_s / 60.0) * rw.unhealthy_weight - self._act_cost_scaled[c]
                  - harm * rw.harm_penalty - false_alarm * rw.false_alarm_penalty)
        terminated = (self.streak >= cfg.healthy_steps) & self.has_fault  # (fault-free: run to the time limit)
        truncated = ~terminated & (self.t >= cfg.time_limit_s)
        return StepResult(reward=reward, terminated=terminated, truncated=truncated, harmful=harm > 0,
                          elapsed_steps=1.0 + dur / cfg.step_s)

    def _act_duration(self, c: np.ndarray, tg: np.ndarray) -> np.ndarray:
        """[B] the duration of action (c, tg) outside a fault's remedy: the category's, or a range drawn per action for
        some target services (catalog actions.<category>.by_service: an inference server reloads its model)."""
        cc = self.cc
        if not self._ranged_cats.intersection(c.tolist()):  # (no category with a drawn duration taken)
            return cc.act_duration[c]
        svc = self._svc_of_target[tg]
        ranged = cc.act_dur_ranged[c, svc] & self._cat_targets_svc[c]
        if not _count_nonzero(ranged):
            return cc.act_duration[c]
        lh = cc.act_dur_lh[c, svc]
        u = rng.table_uniform(self.key, self.step_idx, P_ACT_DURATION, 1)[:, 0]
        return np.where(ranged, lh[:, 0] + u * (lh[:, 1] - lh[:, 0]), cc.act_duration[c])

    def _fix(self, fixed: np.ndarray, t_fix: np.ndarray) -> None:
        """Clear the faults ``fixed`` [B, K] at times ``t_fix`` ([B] or [B, K]); their symptoms then decay from their
        severity at that moment (the recovery tail, see _severity)."""
        t_fix = np.broadcast_to(t_fix[:, None] if t_fix.ndim == 1 else t_fix, fixed.shape)
        sev, _ = self._severity(slice(None), self.t)
        self.f_tail_amp = np.where(fixed, np.where(self.f_active, sev, 0.0), self.f_tail_amp)
        self.f_heal_t = np.where(fixed, t_fix, self.f_heal_t)
        self.f_active &= ~fixed
        self._tails_live = bool(_count_nonzero(self.f_tail_amp > 0))

    def _remember(self, acting: np.ndarray, c: np.ndarray, tg: np.ndarray) -> None:
        """Push the actions of the ``acting`` envs onto their incident memory (the oldest entry drops off)."""
        e = acting.nonzero()[0]
        if len(e) == self.B:  # (every env acts, always so in a single env that acts: rows by slice, no gathers;
            e = slice(None)   # numpy copies an overlapping right-hand side first, so the shift is the same)
        ce = c[e]
        for mem, new in ((self.mem_cat, ce), (self.mem_tgt, np.where(self.cat_has_target[ce], tg[e], -1)),
                         (self.mem_step, self.step_idx[e])):
            mem[e, 1:] = mem[e, :-1]
            mem[e, 0] = new

    def action_memory(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The incident memory as the observation reads it: (category [B, M], target [B, M], steps ago [B, M]), most
        recent first; category and target -1 and steps ago 0 in empty slots, steps ago 1 for the last decision."""
        now = self.step_idx[0] if self.B == 1 else self.step_idx[:, None]  # (one env: a scalar, cheaper to broadcast)
        ago = np.where(self.mem_cat >= 0, now - self.mem_step + 1, 0)
        return self.mem_cat, self.mem_tgt, ago

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
    # ---- structural actions, vectorised over the envs that take them; placement is fractional (replica mass)
    def _weights(self, sel: np.ndarray, svc: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
        """[n, N] where new replicas of ``svc`` go: allowed, schedulable nodes, by free GPU capacity for GPU
        services and evenly otherwise. Rows of zeros where nothing fits."""
        topo = self.topo
        ok = topo.allowed[svc] & ~self.cordoned[sel]
        if exclude is not None:
            ok &= ~exclude
        used = np.einsum("bsn,s->bn", self.P[sel], topo.svc_gpus)
        free = np.maximum(topo.node_gpus[None, :] - used, 0.0)
        gpu = topo.svc_gpus[svc] > 0
        w = ok * np.where(gpu[:, None], free, 1.0)
        tot = w.sum(axis=1, keepdims=True)
        return np.where(tot > 0, w / np.maximum(tot, 1e-12), 0.0), (free * ok).sum(axis=1)

    def _add(self, sel, svc, amount, exclude=None) -> np.ndarray:
        """Place ``amount`` replicas of ``svc`` in envs ``sel``; returns the amount that found no room."""
        w, free_gpus = self._weights(sel, svc, exclude)
        gpus = self.topo.svc_gpus[svc]
        fits = np.where(gpus > 0, np.minimum(amount, free_gpus / np.maximum(gpus, 1e-9)), amount)
        fits = np.where(w.sum(axis=1) > 0, fits, 0.0)
        self.P[sel, svc, :] += fits[:, None] * w
        return amount - fits

    def _scale(self, sel, svc, ratio, _extra=None) -> np.ndarray:
        topo = self.topo
        cur = self.replicas[sel, svc]
        base = topo.base_replicas[svc]
        new = np.where(cur > 0, np.round(cur * ratio), np.where(ratio > 1, base, 0.0))
        new = np.minimum(new, 4 * base)
        up = new > cur
        unplaced = np.zeros(len(sel))
        if _count_nonzero(up):
            unplaced[up] = self._add(sel[up], svc[up], (new - cur)[up])
        failed = unplaced > 1e-9
        self.mech_sched[sel[failed]] = svc[failed]
        self.replicas[sel, svc] = new - unplaced
        down = new < cur
        if _count_nonzero(down):
            scale = np.where(cur > 0, new / np.maximum(cur, 1e-9), 0.0)
            self.P[sel[down], svc[down], :] *= scale[down, None]
        return (new < base).astype(float)  # removing capacity below what the service needs is harmful

    def _drain(self, sel, node, ratio, blocked=None) -> np.ndarray:
        """Cordon and drain ``node`` (re-draining a cordoned node retries the evictions left); ``blocked`` [B]: the
        disruption budget refuses the evictions, the node is cordoned and its pods stay."""
        topo = self.topo
        role = topo.node_role[node]
        same = (topo.node_role[None, :] == role[:, None]) & ~self.cordoned[sel]
        same[np.arange(len(sel)), node] = True  # (the node itself, cordoned or not)
        harm = (same.sum(axis=1) <= 1).astype(float)  # draining the last schedulable node of its role: outage
        self.cordoned[sel, node] = True
        if blocked is not None:
            keep = blocked[sel]
            sel, node, harm_all, harm = sel[~keep], node[~keep], harm, harm[~keep]
            if len(sel) == 0:
                return harm_all
        else:
            harm_all = None
        moved = self.P[sel, :, node].copy()          # [n, S]
        self.P[sel, :, node] = 0.0
        for s in (moved.sum(axis=0) > 0).nonzero()[0]:
            m = moved[:, s] > 0
            if topo.daemonset[s]:
                self.replicas[sel[m], s] -= moved[m, s]  # a daemonset follows the schedulable nodes
                continue
            left = self._add(sel[m], np.full(m.sum(), s), moved[m, s])
            bad = left > 1e-9
            self.mech_sched[sel[m][bad]] = s
            harm[m.nonzero()[0][bad]] = 1.0
            # the disruption budget: replicas beyond maxUnavailable that found no room are not evicted
            stay = np.maximum(left - topo.pdb_max_unavailable[s], 0.0)
            self.P[sel[m], s, node[m]] += stay
        if harm_all is not None:
            harm_all[~keep] = harm
            return harm_all
        return harm

    def _migrate(self, sel, svc, ratio, extra=(None, None)) -> np.ndarray:
        """Live-migrate the replicas of ``svc`` on degraded nodes (node conditions, and the faulty node a matching
        remedy names: ``extra[1]`` [B], -1 for none) to healthy nodes; ``extra[0]`` [B]: the migration aborts, nothing
        moves."""
        topo = self.topo
        aborted, bad_node = extra
        ok = ~topo.daemonset[svc]
        if aborted is not None:
            ok &= ~aborted[sel]
        sel, svc = sel[ok], svc[ok]
        if len(sel) == 0:
            return np.zeros(len(ok))
        deg = self._node_degraded(sel)
        if bad_node is not None:
            deg |= bad_node[sel][:, None] == self._node_ix
        moved = (self.P[sel, svc, :] * deg).sum(axis=1)
        self.P[sel, svc, :] *= ~deg
        left = self._add(sel, svc, moved, exclude=deg)
        self.P[sel, svc, :] += left[:, None] * deg / np.maximum(deg.sum(axis=1, keepdims=True), 1)
        return np.zeros(len(ok))

    def _node_degraded(self, sel) -> np.ndarray:
        """Node conditions a scheduler/descheduler sees: NotReady, pressure, GPU errors, heat, network trouble."""
        x = self.node_true[sel]
        ix = self.node_metric_ix
        return ((x[..., ix["kube_node_status_ready"]] < 0.5) | (x[..., ix["DCGM_FI_DEV_XID_ERRORS"]] > 0)
                | (x[..., ix["DCGM_FI_DEV_GPU_TEMP"]] > 85) | (x[..., ix["node_network_receive_errs_ratio"]] > 0.01)
                | (x[..., ix["node_network_latency_ms"]] > 50) | (x[..., ix["node_cpu_utilisation"]] > 0.9)
                | (x[..., ix["node_filesystem_used_ratio"]] > 0.9))

    # ------------------------------------------------------------------ observation
    def _severity(self, idx: np.ndarray | slice, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(severity [n, K], visible [n, K]) of every slot at times ``t``: the drawn ramp shape over the drawn ramp,
        times the drawn severity; intermittent faults show only in the "on" part of each period (square) or restart
        their ramp every period (sawtooth); a fixed fault leaves a decaying tail (severity, not visible: no new
        fault log lines). Every term is elementwise, so results do not depend on the batch size."""
        tc = t[0] if len(t) == 1 else t[:, None]  # (one env: its time as a scalar, cheaper than broadcasting [1, 1])
        injected = self.f_active[idx] & (self.f_t0[idx] <= tc)
        el = tc - self.f_eff_t0[idx] - self.ep_onset[idx]  # seconds since the first symptom
        started = injected & (el >= 0)
        if self._any_flap:
            mode, per = self.ep_flap[idx], self.ep_period[idx]
            ph = np.mod(np.maximum(el, 0.0), per)  # (the elapsed time itself where per = inf: not flapping)
            on = (mode != FLAP_SQUARE) | (ph < self.ep_duty[idx] * per)
            x = np.where(mode == FLAP_SAWTOOTH, ph, el) / self.ep_ramp[idx]
            visible = started & on
        else:
            x = el / self.ep_ramp[idx]
            visible = started
        x = _clip(x, 0.0, 1.0)
        if self._any_shape:  # 0 linear, 1 saturating 1 - (1 - x)^2, 2 accelerating x^2
            shape = self.ep_shape[idx]
            x = np.where(shape == 1, 1.0 - (1.0 - x) * (1.0 - x), np.where(shape == 2, x * x, x))
        # (x is never -0: as a where(visible, ..., 0) the product is the same; so is the floor of 0.05 on the
        # visible ones, as severities are >= +0)
        sev = x * visible * (self.ep_sevmax[idx] * (1.0 + self.f_worsen[idx]))
        sev = np.maximum(sev, 0.05 * visible)
        if self._tails_live:  # symptoms decay after the fix instead of vanishing at once
            dt = tc - self.f_heal_t[idx]
            tail = self.f_tail_amp[idx] * np.exp(-np.where(dt > 0, dt, 0.0) / self.ep_tail[idx])
            sev = sev + np.where(tail >= self.cc.tail_cutoff, tail, 0.0)
        return sev, visible

    def symptoms_started(self, b: int = 0) -> np.ndarray:
        """[K] ground truth (the oracle's): has each slot's still-active fault shown its first symptom (whether or not
        an intermittent one shows right now)."""
        t = self.t[b]
        return self.f_active[b] & (self.f_t0[b] <= t) & (t - self.f_eff_t0[b] - self.ep_onset[b] >= 0)

    def _observe(self, idx: np.ndarray | slice, dur: np.ndarray, first: bool = False,
                 heal_done_t: np.ndarray | None = None) -> None:
        """Compute metrics, alarms, log counts and health at the current time of envs ``idx`` (an index array, or
        ``slice(None)`` for all envs: then state is read through views and the big arrays are replaced, not copied).

        Most of the cost at small batch sizes is per numpy call, so static index tables are built once
        (:meth:`_build_tables`), what is constant within an episode once per reset (:meth:`_episode_tables`), what
        depends on the placement only when it changes (:meth:`_refresh_placement`), and each quantity is computed for
        all fault slots / alert rules in one call, on contiguous rows where it matters (channels and metrics are
        stored metric-major; numpy is several times slower on strided columns at these sizes). Terms that can only
        add zeros are skipped. Every quantity keeps the same floating-point operations in the same order, so results
        do not depend on the batch size."""
        cfg, topo = self.cfg, self.topo
        S, N, K = topo.S, topo.N, K_SLOTS
        full = isinstance(idx, slice)
        n_env = self.B if full else len(idx)
        ar = self._arange[:n_env]
        one = n_env == 1
        t = self.t[idx]
        tc = t[0] if one else t[:, None]  # (one env: its time as a scalar, cheaper than broadcasting [1, 1])
        sev, visible = self._severity(idx, t)
        f = self.f_id[idx]
        P = self.P[idx]
        placed, share = self.placed[idx], self.share[idx]
        nf = self.ep_nf[idx]                                                          # [n, K]
        # ---- fault effects: per slot, on the root entity, then spread over the entities around it
        svc_ix = self._svc_ix
        rn, rs = self.ep_rn[idx], self.ep_rs[idx]
        # fault channels, stored channel-major (svc_ch[c] and node_ch[c] are contiguous [n, S] / [n, N] rows: numpy
        # is several times faster on those than on strided columns); sv and nd are their entity-major views
        svc_ch = np.zeros((len(SVC_CH), n_env, S))
        node_ch = np.zeros((len(NODE_CH) + 1, n_env, N))  # (+ an all-zero channel, read by metrics without one)
        sv, nd = svc_ch.transpose(1, 2, 0), node_ch.transpose(1, 2, 0)
        # A term with severity 0, or from an all-zero table row, adds (signed) zeros, which cannot change sv/nd
        # (they start at +0 and so never hold -0): a slot with severity 0 in every env is skipped, and so is the
        # whole block when no fault shows yet or any more; the spread terms are computed only for the envs whose
        # fault in the slot shows and has spread effects (a minority of the faults).
        live = sev[0].tolist() if one else sev.any(axis=0).tolist()  # (one env: its nonzero floats are true)
        if any(live):
            kinds = [self._slot_kinds[k] for k in range(K) if live[k]]
            if any(kind[0] for kind in kinds):
                root_sv = (sev * ~nf)[:, :, None] * self.ep_root_svc[idx]               # [n, K, Ms]
            if any(kind[1] for kind in kinds):
                root_nd = (sev * nf)[:, :, None] * self.ep_root_node[idx]               # [n, K, Mn]
            shows = sev != 0
            spread_s = shows & self.ep_spreads_svc[idx]                                 # [n, K]
            spread_n = shows & self.ep_spreads_node[idx]
            for k in range(K):  # slot by slot: the sums keep their order
                if not live[k]:
                    continue
                svc_kind, node_kind, spreads_s, spreads_n = self._slot_kinds[k]
                # (one env: the same in-place sums through plain indices, which numpy handles several times faster)
                if svc_kind:
                    if one:
                        sv[0, rs[0, k]] += root_sv[0, k]
                    else:
                        sv[ar, rs[:, k], :] += root_sv[:, k]
                if node_kind:
                    if one:
                        nd[0, rn[0, k]] += root_nd[0, k]
                    else:
                        nd[ar, rn[:, k], :] += root_nd[:, k]
                e = spread_s[:, k].nonzero()[0] if spreads_s else ()
                if len(e):
                    fk, sev_k = f[e, k], sev[e, k][:, None, None]
                    sor = share[e, :, rn[e, k]] * (nf[e, k][:, None] & self.not_daemonset)  # [m, S]
                    x = sor[:, :, None] * self.t_sor[fk][:, None, :]
                    x += self.t_named[fk]
                    x *= sev_k
                    if one:
                        sv[0] += x[0]
                    else:
                        sv[e] += x
                e = spread_n[:, k].nonzero()[0] if spreads_n else ()
                if len(e):
                    fk = f[e, k]
                    nor = share[e, rs[e, k], :] * ~nf[e, k][:, None]                         # [m, N]
                    x = (sev[e, k][:, None] * nor)[:, :, None] * self.t_nor[fk][:, None, :]
                    if one:
                        nd[0] += x[0]
                    else:
                        nd[e] += x
        # benign transient (false-alarm bait) and harm after-effects
        blip_t0, blip_svc = self.blip_t0[idx], self.blip_svc[idx]
        blip = (t >= blip_t0) & (t < blip_t0 + self.blip_dur[idx])
        cold = tc < self.cold_until[idx]
        any_blip = bool(_count_nonzero(blip))
        if any_blip:  # the benign transient's effects, by its kind, on the envs that have one now (elsewhere
            kind = self.blip_kind[idx]  # they would add zeros)
            on_node = self.tr_is_node[kind]
            e = (blip & ~on_node).nonzero()[0]
            if len(e):
                svc_ch[:, e, blip_svc[e]] += self.tr_svc[kind[e]].T
            e = (blip & on_node).nonzero()[0]
            if len(e):
                node_ch[:, e, self.blip_node[idx][e]] += self.tr_node[kind[e]].T
        if _count_nonzero(cold):
            svc_ch[SVC_CH["lat"]] += 1.5 * cold
            svc_ch[SVC_CH["err"]] += 0.3 * cold
            svc_ch[SVC_CH["restarts"]] += cold
        if self._any_down_fault:
            down = node_ch[NODE_CH["down"]] >= 0.5
            down_env = down.any(axis=1)
            any_down = bool(_count_nonzero(down_env))
        else:  # (no env's fault can take a node down)
            down, down_env, any_down = self._no_down[:n_env], self._no_down_env[:n_env], False
        # ---- service capacity and metrics
        base = self._b_base_replicas
        # replicas not on down nodes (with no node down: the placed ones, as placed - (P x 0 = +0) would give)
        avail = placed - np.einsum("bsn,bn->bs", P, down) if any_down else placed
        # the true service metrics are written straight into their columns of svc_true (SVC_METRICS order)
        true_m = np.empty((len(SVC_METRICS), n_env, S))  # (metric-major rows; svc_true is its [n, S, M] view)
        svc_true = true_m.transpose(1, 2, 0)
        unready = _clip(svc_ch[SVC_CH["unready"]], 0, 1)
        ready_n = np.maximum(avail, 0.0) * (1 - unready)
        ready_ratio = np.minimum(np.maximum(ready_n / self.need_div[idx], 0.0), 1.0, out=true_m[3])
        rr = self.res_sqrt[idx]
        cap = ready_n / base * rr
        if one:  # (the same operations on scalars)
            load = 1.0 + cfg.load_amplitude * np.sin(self.phase[idx][0] + 2 * np.pi * t[0] / 86400.0)
            util = self.base_util * load / np.maximum(cap, 1e-3)
        else:
            load = 1.0 + cfg.load_amplitude * np.sin(self.phase[idx] + 2 * np.pi * t / 86400.0)
            util = self.base_util * load[:, None] / np.maximum(cap, 1e-3)
        queue = (1.0 - self.base_util) / (1.0 - np.minimum(util, 0.97))
        direct = _clip(np.maximum(np.maximum(svc_ch[SVC_CH["err"]], svc_ch[SVC_CH["tp"]]),
                                    np.maximum(1 - ready_ratio, svc_ch[SVC_CH["lat"]] * 0.25)), 0, 1)
        # propagation of impairment along dependencies (two hops)
        # (over the edges only: a dense [S, S] product would add zeros, which never exceed an impairment >= 0; a
        # service without an impaired dependency gets worst_dep 0, as a dense argmax over zeros would give)
        # (one env: x.take(ix, axis) is x[:, ix] along that axis, several times cheaper than fancy indexing at these
        # sizes; with many envs fancy indexing is the cheaper one)
        via = (direct.take(self.dep_ix, axis=1) if one else direct[:, self.dep_ix]) * self._b_dep_w  # [n, S, D]
        imp = np.maximum(direct, 0.6 * via.max(axis=2))
        via = (imp.take(self.dep_ix, axis=1) if one else imp[:, self.dep_ix]) * self._b_dep_w
        worst = via.max(axis=2)
        prop = 0.6 * worst
        half_prop = 0.5 * prop
        worst_dep = self._dep_ix_flat.take(via.argmax(axis=2) + self._dep_row0) * (worst > 0)  # (0: none)
        dead = ready_n <= 1e-9  # (a service without ready replicas errs on every request and serves nothing)
        any_dead = bool(_count_nonzero(dead))
        lat = np.multiply(self._b_base_latency * (1 + svc_ch[SVC_CH["lat"]] + prop), queue, out=true_m[0])
        err = np.minimum(np.maximum(0.002 + svc_ch[SVC_CH["err"]] + half_prop + np.maximum(util - 1.0, 0) * 0.5, 0),
                         1, out=true_m[1])
        tp = np.multiply(_clip(1 - svc_ch[SVC_CH["tp"]] - half_prop, 0, 1),
                         np.minimum(1.0, 0.95 / np.maximum(util, 1e-6)), out=true_m[2])
        if any_dead:
            np.copyto(err, 1.0, where=dead)
            np.copyto(tp, 0.0, where=dead)
        cpu = np.minimum(np.maximum(util * 0.9 + svc_ch[SVC_CH["cpu"]], 0), 1, out=true_m[4])
        np.minimum(np.maximum((0.45 + svc_ch[SVC_CH["mem"]]) / rr, 0), 1, out=true_m[5])
        true_m[6] = svc_ch[SVC_CH["restarts"]]
        np.divide(lat, self._b_slo_latency, out=true_m[7])
        # ---- node metrics
        ng = self._b_node_gpus
        tr, inf = self.i_train, self.i_inf
        Pt, Pi = P[:, tr, :], P[:, inf, :]
        if one:  # (the same products with scalar factors)
            gpu_busy = (Pt * (0.95 * tp[0, tr]) + Pi * (0.55 * load * tp[0, inf])) / ng
        else:
            gpu_busy = (Pt * (0.95 * tp[:, tr])[:, None] + Pi * (0.55 * load * tp[:, inf])[:, None]) / ng
        gpu_util = 100 * _clip(gpu_busy * (1 - node_ch[NODE_CH["gpu_drop"]]), 0, 1)
        host_cpu = np.einsum("bsn,bs->bn", P, cpu) / self.node_load_div[idx]
        # node metric m = clip(fault channel m + base_m, lo_m, hi_m) * gpu mask_m, all metrics in one pass (see
        # _build_tables: metrics without a channel read the zero channel, unclipped ones clip at -inf/inf, metrics of
        # all nodes multiply by 1; each of these is exact and IEEE addition commutes, so every metric keeps its own
        # formula bit for bit):
        # cpu 0.15 + 0.5 host CPU; mem 0.45; disk 0.5 (- cleared); GPU util; GPU temp 38 + 0.35 util; Xid; GPU
        # memory of the placed replicas; network errors 0.0005; latency 0.4 ms; ready unless down
        # [metric, n, N] (metric-major rows; node_true is its [n, N, M] view)
        nb = node_ch.take(self.node_ch_of_metric, axis=0) if one else node_ch[self.node_ch_of_metric]
        nb[0] += 0.15 + 0.5 * host_cpu
        nb[1:3] += self._b_node_base_mem_disk
        nb[2] -= self.disk_cleared[idx]
        nb[3] += gpu_util
        nb[4] += 38 + 0.35 * gpu_util
        if self._any_xid:
            nb[5] += (self.ep_xid[idx] * visible[:, :, None]).max(axis=1)  # Xid of the visible node faults
        nb[6] += self.fb_base[idx]
        nb[7:9] += self._b_node_base_net
        nb[9] += ~down
        np.minimum(np.maximum(nb, self._b_node_lo, out=nb), self._b_node_hi, out=nb)
        nb *= self.node_gmask_m
        if any_down:
            nb[:9] *= ~down  # a down node stops exporting: metrics read 0, except readiness
            nb[10:] *= ~down
        node_true = nb.transpose(1, 2, 0)
        # ---- one draw of counter-based randomness for the whole step
        u = rng.table_uniform(self.key[idx], self.step_idx[idx], P_NOISE, self._noise_n)
        part = self._noise_parts  # (each part sliced from u where it is used)
        nz = (u[:, part[0]] * 2.0 - 1.0) * 1.7320508  # unit-variance uniform noise
        Ms, Mn, cm = len(SVC_METRICS), len(NODE_METRICS), self.cc.max_logs
        # the noise is drawn entity by entity (entity-major); the observed metrics are computed metric-major, as they
        # are stored (contiguous rows, several times faster than strided columns at these sizes), so the same noise
        # numbers are first put in that order
        nz = nz.take(self._noise_metric_major, axis=1)
        nzs = nz[:, : S * Ms].reshape(n_env, Ms, S)
        nzn = nz[:, S * Ms:].reshape(n_env, Mn, N)
        a = cfg.metric_noise
        flat = np.empty((n_env, self._noise_parts[0].stop))  # (the metrics take the first part of the draw)
        svc_m, node_m = self.metric_rows(flat)                 # [n, Ms, S], [n, Mn, N] views
        np.multiply(true_m.transpose(1, 0, 2), 1 + a * nzs * self._b_svc_noisy, out=svc_m)
        svc_m[:, 1] = _clip(err + 0.002 * np.abs(nzs[:, 1]), 0, 1)
        svc_m[:, 2] = np.minimum(svc_m[:, 2], 1.0)
        svc_m[:, 7] = svc_m[:, 0] / self._b_slo_latency
        np.multiply(nb.transpose(1, 0, 2), 1 + a * nzn * self._b_node_noisy, out=node_m)
        np.minimum(node_m, self._b_node_cap, out=node_m)
        svc_obs, node_obs = svc_m.transpose(0, 2, 1), node_m.transpose(0, 2, 1)  # (the views of _obs_views)
        if full and not first:  # the fresh arrays become the state (nobody else holds them)
            self.prev_obs_flat, self.prev_svc_obs, self.prev_node_obs = self.obs_flat, self.svc_obs, self.node_obs
            self.obs_flat, self.svc_obs, self.node_obs = flat, svc_obs, node_obs
            self.svc_true, self.node_true = svc_true, node_true
        else:
            self.prev_obs_flat[idx] = flat if first else self.obs_flat[idx]
            self.obs_flat[idx] = flat
            self.svc_true[idx], self.node_true[idx] = svc_true, node_true
        # ---- alerts on observed metrics: pending from the first crossing, firing after `for:`. All rules at once:
        # the value of every (rule, entity) pair is gathered from the flattened metrics (see _build_tables)
        # (into preallocated buffers: fresh multi-MB temporaries each step cost page faults at large batch sizes;
        # mode="clip" only lets np.take write into `out` directly, the indices are all in range)
        vals = flat.take(self.r_gather, axis=1, out=self._alert_vals[:n_env], mode="clip")     # [n, A, E]
        d = np.multiply(vals, self._b_r_sign, out=self._alert_d[:n_env])  # signed excess (see _build_tables)
        d -= self._b_r_sthr
        # node rules: a down node only raises NotReady; some rules look at nodes running GPU work only
        if any_down:  # (few envs have a down node: only their rows are touched)
            de = down_env.nonzero()[0]
            dd = d[de]
            np.copyto(dd[:, :, :N], -np.inf, where=down[de][:, None, :] & self.r_down_blocks[:, None])
            d[de] = dd
        if self._busy_rules:
            idle = self.gpu_idle[idx]
            for j in self._busy_rules:
                np.copyto(d[:, j, :N], -np.inf, where=idle)
        ent = d.argmax(axis=2)                 # [n, A] the worst offender, if any entity crosses
        flat = self._rule_flat[:n_env] + ent
        cond = d.take(flat) > 0
        ent *= cond                            # (entity 0 where none crosses, as before)
        flat = self._rule_flat[:n_env] + ent
        val = vals.take(flat)
        since = self.alarm_since[idx]
        since = np.where(cond, np.fmin(since, tc), np.nan)  # (a pending alert keeps its start time <= t)
        self.alarm_since[idx] = since
        self.alarm_entity[idx] = ent
        self.alarm_value[idx] = val
        self.pending[idx] = cond
        firing = cond & ((tc - since) >= self._b_r_for)
        self.firing[idx] = firing
        # alerts per entity (services, then nodes: the target order)
        T = topo.T
        if _count_nonzero(cond):
            ent_flat = self._ent_base[:n_env] + ent
            self.ent_pending[idx] = np.bincount(ent_flat[cond], minlength=n_env * T).reshape(n_env, T)
            self.ent_firing[idx] = np.bincount(ent_flat[firing], minlength=n_env * T).reshape(n_env, T)
        else:  # (no alert pending anywhere)
            self.ent_pending[idx] = 0
            self.ent_firing[idx] = 0
        # ---- log template counts (stochastic rounding of rate x level)
        # (no visible fault: every term is 0, and so is every count; likewise without impaired dependencies)
        if _count_nonzero(visible):
            level = visible * (0.5 + 0.5 * np.minimum(sev, 1.0))
            # an entry logs once its delay has passed since the fault showed (observability.yaml)
            since = tc - self.f_eff_t0[idx] - self.ep_onset[idx]
            on = self.ep_log_on[idx] & visible[:, :, None] & (since[:, :, None] >= self.ep_log_delay[idx])
            rate = self.ep_log_rate[idx] * on
            u1, u2 = u[:, part[1]].reshape(n_env, K, cm), u[:, part[2]].reshape(n_env, K, cm)
            # (whole floats, cast to the int64 counts by the assignment as astype would)
            self.fault_counts[idx] = np.floor(rate * level[:, :, None] * (0.5 + u1) + u2 * on)
        else:
            self.fault_counts[idx] = 0
        has_prop = prop > 0.15
        if _count_nonzero(has_prop):
            self.prop_counts[idx] = np.floor(2.0 * prop * (0.5 + u[:, part[3]]) + u[:, part[4]]) * has_prop
        else:
            self.prop_counts[idx] = 0
        ptid = self.client_err_tid.take(worst_dep) if one else self.client_err_tid[worst_dep]
        self.prop_tid[idx] = ptid
        self.benign_counts[idx] = np.floor(self._b_benign_rate * (0.5 + u[:, part[5]]) + u[:, part[6]])
        if any_blip:  # (the transient's own log lines, written by its service)
            self.blip_counts[idx] = blip * self.tr_rate[kind] * ~on_node
            self.blip_tid[idx] = self.tr_tid[kind]
        else:
            self.blip_counts[idx] = 0
        self._log_totals = None  # (the per-template / per-entity totals follow from these counts on demand)
        # ---- health: root cause cleared, SLOs hold, every service present with its replicas
        f_active = self.f_active[idx]
        # (a root cause still active everywhere: nobody is healthy, the SLOs need no test; one env: any slot active)
        if _count_nonzero(f_active) if one else f_active.any(axis=1).all():
            healthy = np.zeros(n_env, bool)
        else:
            active = f_active.any(axis=1)
            slo_ok = ((lat <= self._b_slo_latency_tol) & (err <= cfg.slo_error_rate)
                      & (tp >= cfg.slo_throughput) & (ready_ratio >= 1.0 - 1e-9)
                      & (avail >= self.need_tol[idx])).all(axis=1)
            healthy = ~active & slo_ok & ~down_env
        if first:
            self.healthy[idx] = healthy
            self.streak[idx] = 0
            return
        if not _count_nonzero(healthy):  # (nobody healthy: every streak restarts and nobody recovers; the general
            self.healthy_since[idx] = np.nan  # case below gives exactly this)
            self.streak[idx] = 0
            self.healthy[idx] = False
            return
        streak = self.streak[idx]
        newly = healthy & (streak == 0)
        hd = heal_done_t[idx] if heal_done_t is not None else t
        self.healthy_since[idx] = np.where(newly, hd, np.where(healthy, self.healthy_since[idx], np.nan))
        streak = np.where(healthy, streak + 1, 0)
        self.streak[idx] = streak
        self.healthy[idx] = healthy
        done = (streak >= cfg.healthy_steps) & np.isnan(self.recover_t[idx]) & self.has_fault[idx]
        self.recover_t[idx] = np.where(done, self.healthy_since[idx], self.recover_t[idx])

    # ------------------------------------------------------------------ log totals (on demand)
    def log_totals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(template counts [B, L], WARNING/ERROR lines per service by source [B, S], per host node [B, N]) of the
        current window, from the per-entry counts :meth:`_observe` drew. Computed when first asked for after a
        step (the raw-telemetry env mines them from the rendered text instead and never needs them) and kept."""
        if self._log_totals is None:
            self._log_totals = self._count_lines()
        return self._log_totals

    tcounts = property(lambda self: self.log_totals()[0])
    svc_lines = property(lambda self: self.log_totals()[1])
    node_lines = property(lambda self: self.log_totals()[2])

    def _count_lines(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        S, N, L, n_env = self.topo.S, self.topo.N, self.L, self.B
        ar = self._arange
        f, root, P = self.f_id, self.f_root, self.P
        fc, pc, ptid, bc = self.fault_counts, self.prop_counts, self.prop_tid, self.benign_counts
        blip2, blip_svc, ms, mr = self.blip_counts, self.blip_svc, self.mech_sched, self.mech_rollout
        tid_f = self.log_tid[f].reshape(n_env, -1)
        # (all counts are whole numbers, so the order of the weighted sums cannot change them)
        flat = np.concatenate([(ar[:, None] * L + np.maximum(tid_f, 0)).reshape(-1), (ar[:, None] * L + ptid).reshape(-1)])
        w = np.concatenate([(fc.reshape(n_env, -1) * (tid_f >= 0)).reshape(-1), pc.reshape(-1)])
        tc = np.bincount(flat, weights=w, minlength=n_env * L).reshape(n_env, L)
        tc[:, self.benign_tid] += bc  # benign template ids are distinct
        tc[ar, self.blip_tid] += blip2  # (one entry per env: no repeated index)
        tc[:, self.tid_failed_sched] += ms >= 0
        tc[:, self.tid_rollout] += mr >= 0
        # WARNING/ERROR lines per service (by source) and per host node
        host_of = P.argmax(axis=2)                                               # [n, S]
        sa = self.attr_svc[f, root].reshape(n_env, -1)                            # [n, K*cm]
        na = self.attr_node[f, root].reshape(n_env, -1)
        wf = fc.reshape(n_env, -1) * self.tpl_errwarn[tid_f]
        bw = bc * self.benign_errwarn
        bhost = host_of[:, self.benign_svc]
        bl_host = host_of[ar, blip_svc]
        blip2 = blip2 * self.tpl_errwarn[self.blip_tid]  # (only WARNING/ERROR lines count below)
        svc_w = np.concatenate([wf, pc, bw, blip2[:, None]], axis=1)
        svc_i = np.concatenate([sa, self._svc_ix_rows[:n_env], self._benign_attr_rows[:n_env], blip_svc[:, None]],
                               axis=1)
        ok = svc_i >= 0
        svc_lines = np.bincount((ar[:, None] * S + svc_i)[ok], weights=svc_w[ok],
                                minlength=n_env * S).reshape(n_env, S)
        node_w = np.concatenate([wf, pc, bw, blip2[:, None], (ms >= 0)[:, None]], axis=1)
        node_i = np.concatenate([na, host_of, bhost, bl_host[:, None], host_of[ar, np.maximum(ms, 0)][:, None]], axis=1)
        ok = node_i >= 0
        node_lines = np.bincount((ar[:, None] * N + node_i)[ok], weights=node_w[ok],
                                 minlength=n_env * N).reshape(n_env, N)
        return tc, svc_lines, node_lines

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
            name = self.catalog.faults[f].name
            out.append({"fault": name, "known": self.catalog.is_known(name, self.cfg.split),
                        "root": self.topo.nodes[root] if is_node else self.topo.services[root],
                        "injected_at_s": float(self.f_t0[b, k]),
                        "visible_at_s": float(self.f_t0[b, k] + self.ep_onset[b, k]),
                        "ramp_s": float(self.ep_ramp[b, k]), "severity": float(self.ep_sevmax[b, k]),
                        "flap_period_s": float(self.ep_period[b, k]) if self.ep_flap[b, k] else None,
                        "active": bool(self.f_active[b, k]), "healed_at_s": float(self.f_heal_t[b, k])})
        return {"fault": "+".join(f["fault"] for f in out) if out else FAULT_FREE, "fault_free": not out,
                "faults": out}

    def episode_stats(self, b: int = 0) -> dict:
        """End-of-episode figures of env b. A fault-free episode has nothing to recover from: ``recovered`` is
        False, ``mttr_s`` and ``detect_s`` are NaN, ``success`` means no action other than observe (restraint), and
        ``actions`` counts its false actions."""
        if not self.has_fault[b]:
            nan = float("nan")
            return {"recovered": False, "success": not bool(self.n_actions[b]), "escalated": bool(self.escalated[b]),
                    "mttr_s": nan, "detect_s": nan, "harmful_actions": int(self.harmful[b]),
                    "actions": int(self.n_actions[b]), "unhealthy_s": float(self.unhealthy_s[b]),
                    "time_s": float(self.t[b]), "fault_free": True}
        t_inj = float(np.min(self.f_t0[b][self.f_id[b] < self.cc.F]))
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
            "fault_free": False,
        }

    def episode_stats_batch(self, done: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`episode_stats` of every env at once, as arrays [B] holding env b's value where ``done[b]`` and 0
        (False, 0.0) elsewhere: ``recovered``, ``success``, ``escalated``, ``fault_free`` (bool), ``mttr_s``,
        ``detect_s`` (float), ``harmful_actions``, ``actions`` (int64). The same values as :meth:`episode_stats`
        (the same operations on the same float64 numbers; tested), without a Python call per env."""
        done = np.asarray(done, bool)
        nan = np.nan
        fault = self.has_fault
        t_inj = np.where(self.f_id < self.cc.F, self.f_t0, np.inf).min(axis=1)   # (inf in fault-free envs)
        rec = self.recover_t
        recovered = ~np.isnan(rec) & fault
        mttr = np.where(recovered, rec - t_inj, self.cfg.time_limit_s - t_inj)
        detect = np.where(np.isnan(self.first_action_t), nan, self.first_action_t - t_inj)
        return {
            "recovered": recovered & done,
            "success": np.where(fault, recovered & ~self.escalated, self.n_actions == 0) & done,
            "escalated": self.escalated & done,
            "mttr_s": np.where(done, np.where(fault, mttr, nan), 0.0),
            "detect_s": np.where(done, np.where(fault, detect, nan), 0.0),
            "harmful_actions": np.where(done, self.harmful, 0),
            "actions": np.where(done, self.n_actions, 0),
            "fault_free": ~fault & done,
        }

    # ------------------------------------------------------------------ raw telemetry
    def render_lines(self, b: int) -> list[tuple[int, int, int]]:
        """(template id, emitting service or -1, host node) of every log line of env b's current window."""
        lines: list[tuple[int, int, int]] = []
        host = self.P[b].argmax(axis=1).tolist()  # host node of each service (where most of its replicas run)
        for k, (f, counts) in enumerate(zip(self.f_id[b].tolist(), self.fault_counts[b].tolist())):
            if f >= self.cc.F or not any(counts):  # (no fault in the slot, or no line of it in this window)
                continue
            for (s, n), tid, cnt in zip(self.emitters(b, k), self.log_tid[f].tolist(), counts):
                lines += [(tid, s, n)] * cnt
        prop_tid = self.prop_tid[b].tolist()
        for s, cnt in enumerate(self.prop_counts[b].tolist()):
            if cnt:
                lines += [(prop_tid[s], s, host[s])] * cnt
        for tid, s, cnt in zip(self._benign_tid_list, self._benign_svc_list, self.benign_counts[b].tolist()):
            if cnt:
                lines += [(tid, s, host[s])] * cnt
        if self.blip_counts[b]:
            s = int(self.blip_svc[b])
            lines += [(int(self.blip_tid[b]), s, host[s])] * int(self.blip_counts[b])
        if self.mech_sched[b] >= 0:
            s = int(self.mech_sched[b])
            lines.append((self.tid_failed_sched, s, host[s]))
        if self.mech_rollout[b] >= 0:
            s = int(self.mech_rollout[b])
            lines.append((self.tid_rollout, s, host[s]))
        return lines

    def alarms(self, b: int) -> list[dict]:
        out = []
        pending = self.pending[b].nonzero()[0].tolist()
        if not pending:
            return out
        ents, vals = self.alarm_entity[b].tolist(), self.alarm_value[b].tolist()
        firing, since, t = self.firing[b].tolist(), self.alarm_since[b].tolist(), float(self.t[b])
        services, nodes = self.topo.services, self.topo.nodes
        for ai in pending:
            rule = self.alerts[ai]
            ent = services[ents[ai]] if rule.scope == "service" else nodes[ents[ai]]
            out.append({"name": rule.name, "severity": rule.severity, "entity": ent,
                        "state": "firing" if firing[ai] else "pending", "active_for_s": t - since[ai],
                        "summary": rule.summary.format(entity=ent, value=vals[ai])})
        return out


def _clip(x, lo, hi):
    """np.clip without its Python-level overhead (two ufunc calls; matters for batch size 1)."""
    return np.minimum(np.maximum(x, lo), hi)

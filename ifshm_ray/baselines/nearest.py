"""``nearest-known``: diagnose an incident as the nearest known fault type, apply that type's remedies, escalate.

Features: the observation's alert flags (pending and firing per rule) and log1p log-template counts of the current
window, the global block the linear baseline also reads. The **healthy envelope** is their per-feature maximum over
every window of ``calibration_episodes`` fault-free calibration runs (benign log noise, false alarms, standing
alerts). A window is **symptomatic** when runbook-instant's trigger holds (an alert other than the runbook's ignored
info-level ones is pending or firing) and some feature exceeds the envelope (something appears that fault-free runs
never show: the first symptomatic window, judged from telemetry). Its **excess** over the envelope
(``max(x - envelope, 0)``) is compared with one prototype per known fault type of the split by **cosine
similarity**; a prototype is the mean of the unit-normalised excess vectors of that type's first symptomatic
window in ``calibration_episodes`` observe-only runs. Calibration uses only the split's known types, on seeds
disjoint from the evaluation's (the harness checks), and is cached on disk.

At the first symptomatic window the policy applies the nearest type's healing remedies from the catalog, fastest
first (``CompiledCatalog.remedy_table``), waiting the runbook's ``verify_steps`` after each while alerts stay
active; targets come from the telemetry (the entity of the oldest active alert, the source or host of the type's
signature log lines, the initial placement of services), never from the simulator's hidden state. When the remedies
are spent and alerts are still active it escalates (at once when the excess shares no feature with any prototype:
cosine 0).
"""
from __future__ import annotations

import hashlib
import json
import logging
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from ifshm_ray.baselines.config import NearestKnownConfig
from ifshm_ray.baselines.policies import RUNBOOK_PATH, Policy, ignored_alerts, runbook_trigger
from ifshm_ray.sim.actions import CATEGORIES, CATEGORY_TARGET_KIND, NUM_RATIOS, RATIO_CATEGORIES
from ifshm_ray.sim.catalog import TGT_NAMED, ratio_level_for

log = logging.getLogger(__name__)

FEATURES = ("alert flags (pending, firing) + log1p template counts; excess over the fault-free envelope at the first "
            "symptomatic window; cosine similarity")
"""What a prototype is made of (recorded in the cache; a change of features invalidates it)."""

_MEMO: dict[str, dict] = {}


def feature_slice(layout: dict) -> slice:
    """The observation's alert flags and template counts: from ``global_offset`` up to the SLO-green feature."""
    return slice(layout["global_offset"], layout["slo_green"])


def calibration_seed(cfg: NearestKnownConfig, fault: str, i: int) -> int:
    """Episode seed of calibration episode ``i`` of ``fault`` (the evaluation harness's derivation)."""
    from ifshm_ray.eval.harness import episode_seed

    return episode_seed(cfg.calibration_seed, fault, i)


def calibration_seeds(cfg: NearestKnownConfig, faults: Sequence[str]) -> set[int]:
    """Every calibration episode seed: of ``faults`` and of the fault-free episodes."""
    from ifshm_ray.sim.catalog import FAULT_FREE

    return {calibration_seed(cfg, f, i) for f in [*faults, FAULT_FREE] for i in range(cfg.calibration_episodes)}


def _unit(x: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(x))
    return x / n if n > 0 else x


def build_prototypes(sim_cfg, cfg: NearestKnownConfig | None = None) -> dict:
    """Prototypes of the known fault types of ``sim_cfg.split`` (see the module docstring):
    ``{"faults": [...], "vectors": [[...]], "episodes": {fault: used}, ...}``. A type none of whose calibration
    episodes reached the trigger after the fault became visible gets no prototype (listed under ``no_trigger``)."""
    from ifshm_ray.config import to_dict
    from ifshm_ray.env import FaultInjectionEnv
    from ifshm_ray.sim.catalog import FAULT_FREE, load_catalog

    cfg = cfg or NearestKnownConfig()
    known = load_catalog(sim_cfg.catalog).known_in(sim_cfg.split)
    env_cfg = {**to_dict(sim_cfg), "faults": known, "render_telemetry": True, "mine_logs": True}
    env = FaultInjectionEnv(env_cfg)
    sl = feature_slice(env.obs_layout)
    ignore = ignored_alerts()
    # the healthy envelope: every window of the fault-free calibration runs
    env_max = None
    for i in range(cfg.calibration_episodes):
        obs, info = env.reset(seed=calibration_seed(cfg, FAULT_FREE, i), options={"faults": [FAULT_FREE]})
        done = False
        while not done:
            x = np.asarray(obs["obs"][sl], np.float64)
            env_max = x if env_max is None else np.maximum(env_max, x)
            obs, _, term, trunc, info = env.step((0, 0, 0))
            done = term or trunc
    faults, vectors, used, missing = [], [], {}, []
    for f in known:
        acc = []
        for i in range(cfg.calibration_episodes):
            obs, info = env.reset(seed=calibration_seed(cfg, f, i), options={"faults": [f]})
            visible = env.incident()["faults"][0]["visible_at_s"]  # (ground truth: calibration labels only)
            done = False
            while not done:
                e = excess(obs["obs"][sl], env_max)
                if info["time_s"] >= visible and e.any() and runbook_trigger(info["telemetry"], ignore):
                    acc.append(_unit(e))
                    break
                obs, _, term, trunc, info = env.step((0, 0, 0))
                done = term or trunc
        if acc:
            faults.append(f)
            vectors.append(_unit(np.mean(acc, axis=0)).tolist())
            used[f] = len(acc)
        else:
            missing.append(f)
    return {"split": sim_cfg.split, "features": FEATURES, "envelope": env_max.tolist(), "faults": faults,
            "vectors": vectors, "episodes": used, "no_trigger": missing, "calibration_seed": cfg.calibration_seed,
            "calibration_episodes": cfg.calibration_episodes}


def restrict_prototypes(protos: dict, known: Sequence[str]) -> dict:
    """The prototypes of the types in ``known`` only (each type's prototype is its own calibration episodes'
    mean and the envelope is the fault-free runs', so this is what :func:`build_prototypes` gives for a split that
    knows only ``known``)."""
    keep = set(known)
    idx = [i for i, f in enumerate(protos["faults"]) if f in keep]
    return {**protos, "faults": [protos["faults"][i] for i in idx], "vectors": [protos["vectors"][i] for i in idx],
            "episodes": {f: n for f, n in protos.get("episodes", {}).items() if f in keep},
            "no_trigger": [f for f in protos.get("no_trigger", []) if f in keep]}


def excess(x, envelope) -> np.ndarray:
    """How far each feature of ``x`` exceeds the healthy envelope (0 within it)."""
    return np.maximum(np.asarray(x, np.float64) - np.asarray(envelope, np.float64), 0.0)


def _cache_key(sim_cfg, cfg: NearestKnownConfig) -> str:
    from ifshm_ray.config import to_dict
    from ifshm_ray.sim.catalog import load_catalog

    sim = to_dict(sim_cfg)
    sim.pop("faults", None)  # (the prototypes are always of the split's known types)
    desc = {"sim": sim, "catalog": load_catalog(sim_cfg.catalog).sha256, "features": FEATURES,
            "calibration_seed": cfg.calibration_seed, "calibration_episodes": cfg.calibration_episodes,
            "code": 3}
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:20]


def prototypes_path(sim_cfg, cfg: NearestKnownConfig | None = None, key: str | None = None) -> Path:
    """Where :func:`load_prototypes` caches the prototypes of ``sim_cfg`` (there or not yet)."""
    cfg = cfg or NearestKnownConfig()
    default = Path.home() / ".cache" / "ifshm_ray" / "nearest_known"
    folder = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default
    return folder / f"prototypes_{sim_cfg.split}_{key or _cache_key(sim_cfg, cfg)}.json"


def load_prototypes(sim_cfg, cfg: NearestKnownConfig | None = None) -> dict:
    """:func:`build_prototypes`, cached in this process and on disk (``cfg.cache_dir``) under a key of the
    simulator config (its fault list aside), the catalog hash, the split and the calibration settings."""
    cfg = cfg or NearestKnownConfig()
    key = _cache_key(sim_cfg, cfg)
    if key in _MEMO:
        return _MEMO[key]
    path = prototypes_path(sim_cfg, cfg, key)
    folder = path.parent
    if path.is_file():
        protos = json.loads(path.read_text())
    else:
        log.info("nearest-known: building prototypes of split %s (%d calibration episodes per known type)",
                 sim_cfg.split, cfg.calibration_episodes)
        protos = build_prototypes(sim_cfg, cfg)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{zlib.crc32(str(id(protos)).encode())}.tmp")
        tmp.write_text(json.dumps(protos))
        tmp.replace(path)  # (atomic: parallel Ray tasks may build the same file)
    _MEMO[key] = protos
    return protos


class NearestKnownPolicy(Policy):
    """See the module docstring. ``prototypes``: :func:`load_prototypes`' dict; ``sim_cfg``: the simulator config
    (topology and catalog: static tables only)."""

    name = "nearest-known"

    def __init__(self, prototypes: dict, sim_cfg):
        from ifshm_ray.sim.catalog import CompiledCatalog, load_catalog
        from ifshm_ray.sim.core import BatchedSim
        from ifshm_ray.sim.render import TemplateMiner

        if not prototypes.get("faults"):
            raise ValueError("nearest-known needs at least one known fault type with a prototype")
        self.proto_faults = list(prototypes["faults"])
        self.protos = np.asarray(prototypes["vectors"], np.float64)
        self.envelope = np.asarray(prototypes["envelope"], np.float64)
        self.catalog = load_catalog(sim_cfg.catalog)
        spec = yaml.safe_load(RUNBOOK_PATH.read_text())
        self.verify_steps = int(spec["verify_steps"])
        self.ignore = set(spec.get("ignore_alerts", []))
        # static tables only: a simulator instance that is never reset gives the topology, the compiled catalog
        # and the env's log-template miner (rendered line -> template id)
        static = BatchedSim(sim_cfg.model_copy(update={"faults": "all"}), batch_size=1)
        self.topo = static.topo
        self.cc = CompiledCatalog(self.catalog, self.topo)
        self.miner = TemplateMiner(static)
        # a known type's signature templates emitted at its root (the root service's own lines; for a node fault
        # the lines of the node and of the services on it): their source / host locates the root in telemetry
        root_scopes = {"service": ("root",), "node": ("root", "services_on_root", "node_of_root")}
        self.tids = {f: {self.catalog.template_index[e["t"]] for e in self.catalog.spec(f).logs
                         if e.get("at", "root") in root_scopes[self.catalog.spec(f).target["kind"]]}
                     for f in prototypes["faults"]}
        self.reset(None)

    def reset(self, env, episode_seed: int | None = None) -> None:
        self.plan: list[dict] | None = None
        self.guess: str | None = None
        self.similarity = float("nan")
        self.wait = 0
        self.done = False
        self.log_memory: list[str] = []

    # ------------------------------------------------------------------ diagnosis
    def diagnose(self, x: np.ndarray) -> tuple[str, float]:
        """The known type whose prototype is nearest to excess vector ``x`` by cosine similarity."""
        sims = self.protos @ _unit(np.asarray(x, np.float64))
        i = int(np.argmax(sims))
        return self.proto_faults[i], float(sims[i])

    def act(self, obs, info, env):
        tel = info.get("telemetry") or {}
        self.log_memory = (self.log_memory + tel.get("logs", []))[-400:]
        observe = np.zeros(3, np.int64)
        if self.done:
            return observe
        if self.wait > 0:
            self.wait -= 1
            return observe
        if not runbook_trigger(tel, self.ignore):
            return observe
        if self.plan is None:
            e = excess(obs["obs"][feature_slice(env.unwrapped.obs_layout)], self.envelope)
            if not e.any():  # (nothing fault-free runs do not show: keep watching)
                return observe
            self.guess, self.similarity = self.diagnose(e)
            # (nothing in common with any known type: no remedy to transfer, page a human at once)
            self.plan = self.cc.remedy_table(self.catalog.fault_index[self.guess]) if self.similarity > 0 else []
        mask = obs["action_mask"]
        while self.plan:
            a = self._action(self.plan.pop(0), tel, obs)
            if a is not None and mask[a[0] * self.topo.T + a[1]] > 0:
                self.wait = self.verify_steps
                return a
        self.done = True
        return np.array([CATEGORIES.index("escalate"), 0, 0], np.int64)

    # ------------------------------------------------------------------ targets from telemetry
    def _action(self, rem: dict, tel: dict, obs) -> np.ndarray | None:
        c = rem["category"]
        cname = CATEGORIES[c]
        kind = CATEGORY_TARGET_KIND[cname]
        guess_is_node = self.catalog.spec(self.guess).target["kind"] == "node"
        S = self.topo.S
        if kind == "none":
            t = 0
        elif rem["spec"] == TGT_NAMED:
            t = rem["named"]
        elif kind == "service":
            svc = self._services_on(self._root_node(tel), obs) if guess_is_node else self._root_service(tel)
            if svc is None:
                return None
            t = self.topo.svc_index[svc]
        else:
            node = self._root_node(tel) if guess_is_node else self._host_of(self._root_service(tel))
            if node is None:
                return None
            t = S + self.topo.node_index[node]
        r = ratio_level_for(rem["min_ratio"]) if cname in RATIO_CATEGORIES else 0
        return np.array([c, t, min(r, NUM_RATIOS - 1)], np.int64)

    def _alerts(self, tel: dict, entities: Sequence[str]) -> list[dict]:
        """Active alerts (not ignored) on ``entities``, oldest first."""
        al = [a for a in tel.get("alarms", []) if a["name"] not in self.ignore and a["entity"] in entities]
        return sorted(al, key=lambda a: -a["active_for_s"])

    def _signature_vote(self, field: int, valid: dict) -> str | None:
        """The host (``field`` 1) or source (2) most of the remembered lines of the diagnosed type's root signature
        templates name (ties: the most recent), among ``valid`` names."""
        tids = self.tids[self.guess]
        votes: dict[str, int] = {}
        for line in reversed(self.log_memory):
            if self.miner.template_id(line) in tids:
                name = line.split(" ", 3)[field].rstrip(":")
                if name in valid:
                    votes[name] = votes.get(name, 0) + 1
        return max(votes, key=votes.get) if votes else None  # (dicts keep the most recent first among ties)

    def _root_service(self, tel: dict) -> str | None:
        svc = self._signature_vote(2, self.topo.svc_index)
        if svc is not None:
            return svc
        al = self._alerts(tel, self.topo.services)
        return al[0]["entity"] if al else None

    def _root_node(self, tel: dict) -> str | None:
        node = self._signature_vote(1, self.topo.node_index)
        if node is not None:
            return node
        al = self._alerts(tel, self.topo.nodes)
        return al[0]["entity"] if al else None

    def _host_of(self, svc: str | None) -> str | None:
        """The host of ``svc``'s most recent log line, else its node in the initial placement."""
        if svc is None:
            return None
        for line in reversed(self.log_memory):
            parts = line.split(" ", 3)
            if len(parts) == 4 and parts[2].rstrip(":") == svc and parts[1] in self.topo.node_index:
                return parts[1]
        return self.topo.nodes[int(np.argmax(self.topo.placement0[self.topo.svc_index[svc]]))]

    def _services_on(self, node: str | None, obs) -> str | None:
        """The service (not a daemonset) on ``node`` in the initial placement with the most WARNING/ERROR log
        lines in the observation (ties: the most GPUs)."""
        if node is None:
            return None
        from ifshm_ray.env.features import F_LOG_LINES, TARGET_FEAT

        ni = self.topo.node_index[node]
        on = [s for s in range(self.topo.S) if self.topo.placement0[s, ni] > 0 and not self.topo.daemonset[s]]
        if not on:
            return None
        x = obs["obs"]
        best = max(on, key=lambda s: (float(x[s * TARGET_FEAT + F_LOG_LINES]), float(self.topo.svc_gpus[s])))
        return self.topo.services[best]

"""The serving logic as plain classes (no Ray, no HTTP), so it is tested in-process.

* :func:`serve_encoder`: the encoder of the Serve app, an :class:`~ifshm_ray.encoding.service.EncoderWorker` (the
  class the encoder actor pool runs): telemetry windows -> fault mode, confidence, unknown score, top 3, from a
  fine-tuned checkpoint or an untrained encoder over a preset backbone, with an LRU cache of results keyed by a hash
  of the window.
* :class:`HealingService`: the policy bundle (``load_policy_bundle``) + :class:`~ifshm_ray.env.observation.TelemetryObserver`
  + the fault catalog; answers diagnose / heal / Alertmanager requests given any ``diagnose_one`` coroutine
  (the encoder deployment's handle under Serve, a :func:`serve_encoder` in tests).
* :func:`check_limits`, :func:`alertmanager_to_telemetry`: input limits (413) and the Alertmanager mapping.

Novelty gate (``/v1/heal``, issue 15): when the policy bundle holds a meta-controller state (``meta_state.json``,
:mod:`ifshm_ray.meta.controller`), every response carries ``gate``: who should act (policy, blind runbook or a
human) and why; a deferral is also listed in ``escalate_reasons``. Serving only reads that state.

Expected recovery time (``/v1/heal``): the catalog remedy of the recommended category for the *diagnosed* fault;
when its effect is ``heal``, its expected duration (the mean of its ``duration_s`` range, or the category's default
duration when the remedy gives none, over the expected number of attempts ``1 / (1 - fail_prob)``) plus the
SLO verification time ``healthy_steps x step_s`` of the policy's simulator config; otherwise null, with the
fastest healing remedy named in ``expected_recovery_basis``.
"""
from __future__ import annotations

import asyncio
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Sequence

import numpy as np

from ifshm_ray.encoding.cache import LRUCache
from ifshm_ray.serve.config import ServeConfig

logger = logging.getLogger(__name__)

HEALTHY = "healthy"
MISSING_SETS_REMEMBERED = 64
"""Distinct sets of missing series the service remembers having warned about (a client sends a few kinds of window;
an evicted set is warned about again)."""
RATIO_CATEGORIES = ("scale", "reallocate")


class InputError(ValueError):
    """The request is well-formed JSON but wrong (unknown entity, bad time stamp): HTTP 422."""


class LimitError(ValueError):
    """The request is larger than a configured limit: HTTP 413."""


# ---------------------------------------------------------------------------------------------------- limits
def check_limits(t: dict, cfg: ServeConfig) -> None:
    """Raise :class:`LimitError` naming the limit a telemetry window exceeds (limits are ``ServeConfig`` fields)."""
    logs, metrics, alarms = t.get("logs", []), t.get("metrics", {}), t.get("alarms", [])
    if len(logs) > cfg.max_log_lines:
        raise LimitError(f"telemetry.logs has {len(logs)} lines; the limit is max_log_lines={cfg.max_log_lines}")
    for i, line in enumerate(logs):
        if len(line) > cfg.max_line_chars:
            raise LimitError(f"telemetry.logs[{i}] has {len(line)} characters; the limit is "
                             f"max_line_chars={cfg.max_line_chars}")
    n_series = sum(len(s) for s in metrics.values())
    if n_series > cfg.max_metric_series:
        raise LimitError(f"telemetry.metrics has {n_series} series; the limit is "
                         f"max_metric_series={cfg.max_metric_series}")
    for ent, series in metrics.items():
        for name, vals in series.items():
            if len(vals) > cfg.max_samples_per_series:
                raise LimitError(f"telemetry.metrics[{ent!r}][{name!r}] has {len(vals)} samples; the limit is "
                                 f"max_samples_per_series={cfg.max_samples_per_series}")
    if len(alarms) > cfg.max_alarms:
        raise LimitError(f"telemetry.alarms has {len(alarms)} alarms; the limit is max_alarms={cfg.max_alarms}")
    for i, a in enumerate(alarms):
        for key in ("name", "summary", "entity"):
            if len(a.get(key) or "") > cfg.max_line_chars:
                raise LimitError(f"telemetry.alarms[{i}].{key} is longer than max_line_chars={cfg.max_line_chars}")


# ---------------------------------------------------------------------------------------------- Alertmanager
_SEVERITY = {"critical": "critical", "page": "critical", "error": "critical", "high": "critical",
             "warning": "warning", "warn": "warning", "medium": "warning",
             "info": "info", "none": "info", "low": "info"}


def parse_rfc3339(value: str) -> datetime:
    """Alertmanager's time stamps (RFC 3339, Go may give nanoseconds) as an aware datetime."""
    s = value.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    if "." in s:  # cut the fraction to microseconds
        head, _, rest = s.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        s = head + "." + rest[:min(digits, 6)].ljust(6, "0") + rest[digits:]
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt


def resolve_entity(labels: dict[str, str], services: Sequence[str], nodes: Sequence[str]) -> str | None:
    """The topology entity an alert's labels name: ``service``, then ``pod`` (a service name prefix, Kubernetes
    pod naming), then ``node``, then ``instance`` (its host part). None when no such label is present;
    :class:`InputError` naming the valid entities when labels are present but none names an entity."""
    svc, node_set = set(services), set(nodes)
    given = {k: labels[k] for k in ("service", "pod", "node", "instance") if labels.get(k)}
    if not given:
        return None
    if given.get("service") in svc:
        return given["service"]
    pod = given.get("pod")
    if pod:
        for s in sorted(services, key=len, reverse=True):
            if pod == s or pod.startswith(s + "-"):
                return s
    if given.get("node") in node_set:
        return given["node"]
    inst = given.get("instance")
    if inst:
        host = inst.rsplit(":", 1)[0] if inst.count(":") == 1 else inst
        host = host.split(".", 1)[0]
        if host in node_set or host in svc:
            return host
    shown = ", ".join(f"{k}={v!r}" for k, v in given.items())
    raise InputError(f"alert labels {shown} name no service or node of the served topology; valid services: "
                     f"{sorted(services)}; valid nodes: {sorted(nodes)}")


def alertmanager_to_telemetry(payload: dict, services: Sequence[str], nodes: Sequence[str],
                              now: datetime | None = None) -> tuple[dict, int, int]:
    """Map an Alertmanager webhook payload (version 4) to a telemetry window.

    Firing alerts become alarms: ``labels.alertname`` -> name, ``labels.severity`` -> severity (critical / page /
    error -> critical, warning -> warning, info / none -> info; missing -> warning), ``labels.service`` / ``pod`` /
    ``node`` / ``instance`` -> entity (:func:`resolve_entity`), ``startsAt`` -> ``active_for_s`` (until ``now``),
    ``annotations.summary`` (else ``description``, else the common ones) -> summary, state ``firing``. Resolved alerts are counted, not used.
    Returns ``(telemetry, alerts_used, alerts_resolved)``."""
    now = now or datetime.now(timezone.utc)
    alarms, resolved = [], 0
    for i, alert in enumerate(payload.get("alerts", [])):
        if alert.get("status") == "resolved":
            resolved += 1
            continue
        labels = {**payload.get("commonLabels", {}), **alert.get("labels", {})}
        own, common = alert.get("annotations", {}), payload.get("commonAnnotations", {})
        name = labels.get("alertname")
        if not name:
            raise InputError(f"alerts[{i}].labels has no 'alertname' (every Alertmanager alert has one)")
        active = 0.0
        if alert.get("startsAt"):
            try:
                active = max(0.0, (now - parse_rfc3339(alert["startsAt"])).total_seconds())
            except ValueError:
                raise InputError(f"alerts[{i}].startsAt {alert['startsAt']!r} is not an RFC 3339 time "
                                 "(e.g. 2026-11-28T10:15:02.113Z)") from None
        if not math.isfinite(active):
            active = 0.0
        alarms.append({
            "name": name,
            "severity": _SEVERITY.get(labels.get("severity", "warning").lower(), "warning"),
            "entity": resolve_entity(labels, services, nodes),
            "state": "firing",
            "active_for_s": active,
            "summary": (own.get("summary") or own.get("description") or common.get("summary")
                        or common.get("description") or ""),
        })
    telemetry = {"schema": "ifshm.telemetry/v1", "time_s": 0.0, "window_s": 30.0, "logs": [], "metrics": {},
                 "alarms": alarms}
    return telemetry, len(alarms), resolved


# --------------------------------------------------------------------------------------------------- encoder
def serve_encoder(model: str = "minilm", encoder: str | None = None, mode: str | None = None,
                  cache_size: int = 4096, torch_threads: int | None = 1, num_gpus: float = 0.0,
                  tensor_parallel: int = 1, split: str | None = None):
    """The encoder of the Serve app, run by the encoder actor pool's own class: an
    :class:`~ifshm_ray.encoding.service.EncoderWorker` in this process, or with ``tensor_parallel`` > 1 a
    one-replica :class:`~ifshm_ray.encoding.service.EncoderPool` (its ranks share a STRICT_PACK placement group and
    split ``num_gpus``). Either answers ``diagnose(windows) -> [{"fault_mode", "confidence", "unknown_score",
    "top": [{"fault", "prob"}] x3}]`` and ``info()``.

    ``encoder``: a ``jobs/finetune_encoder.py --out`` checkpoint (trained fault head, calibration, prototypes).
    Without it, an *untrained* encoder over the ``model`` preset and the known fault types (+ healthy) of ``split``
    is built: the API works, but its diagnoses are not meaningful (``info()["trained"]`` is False). ``split``: the
    named split of the served policy bundle (the app passes it; default: the catalog's default split); a checkpoint
    fine-tuned on another split is refused. The template miner
    is frozen either way, so a diagnosis never depends on earlier requests. ``cache_size``: diagnoses kept by window
    hash (0: off). ``num_gpus``: GPUs for the encoder (> 0 with CUDA: on the GPU, with DeepSpeed inference)."""
    import torch

    from ifshm_ray.encoding.config import EncoderConfig, ServiceConfig
    from ifshm_ray.encoding.service import EncoderPool, EncoderWorker

    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    from ifshm_ray.sim.catalog import load_catalog

    catalog = load_catalog()
    split = catalog.check_split(split or catalog.default_split)
    fault_types = None
    if encoder:
        from ifshm_ray.encoding.semantic import check_checkpoint_split

        check_checkpoint_split(encoder, split, "the served policy bundle")
    else:
        fault_types = [HEALTHY] + catalog.known_in(split)
        logger.warning("no encoder checkpoint given: serving an UNTRAINED %s encoder (diagnoses are not "
                       "meaningful); pass encoder_checkpoint=<jobs/finetune_encoder.py --out>", model)
    args = dict(encoder_config=EncoderConfig(model=model), fault_types=fault_types, checkpoint=encoder, mode=mode,
                result_cache_size=cache_size)
    if tensor_parallel > 1:
        service = ServiceConfig(num_actors=1, num_cpus=max(1, int(torch_threads or 1)), num_gpus=num_gpus,
                                tensor_parallel=tensor_parallel)
        return EncoderPool(service_config=service, **args)
    # num_cpus < 1: the worker leaves torch's threads as set above
    return EncoderWorker(service_config=ServiceConfig(num_cpus=0.5, num_gpus=num_gpus), **args)


def load_meta_controller(bundle_dir: Any):
    """The meta-controller saved in a policy bundle (``meta_state.json``), or None when the bundle has none."""
    from pathlib import Path

    from ifshm_ray.meta.controller import STATE_FILE, MetaController

    path = Path(bundle_dir) / STATE_FILE
    return MetaController.load(path) if path.is_file() else None


def load_gate_diagnoser(bundle_dir: Any):
    """The feature diagnoser saved beside the meta-controller (``diagnoser.json`` in the bundle, which
    ``jobs/continual.py`` writes into each learning arm's bundle, else in the folder holding the bundle: the arm's
    folder, as ``gated:PATH`` evaluations look it up): the gate's threshold was calibrated on its unknown score, so
    serving scores novelty with it too. None without one, or when it is the encoder's (then the served encoder's
    unknown score is used: serve that encoder checkpoint)."""
    from pathlib import Path

    from ifshm_ray.meta.diagnose import DIAGNOSER_FILE, FeatureDiagnoser, load_diagnoser

    for folder in (Path(bundle_dir), Path(bundle_dir).parent):
        if (folder / DIAGNOSER_FILE).is_file():
            d = load_diagnoser(folder / DIAGNOSER_FILE)
            if isinstance(d, FeatureDiagnoser):
                logger.info("gate: novelty scored by the feature diagnoser %s", folder / DIAGNOSER_FILE)
                return d
            return None
    return None


# --------------------------------------------------------------------------------------------------- service
DiagnoseOne = Callable[[dict], Awaitable[dict]]


class HealingService:
    """Diagnosis + recommended action for telemetry windows, for one policy bundle and one diagnoser.

    ``policy``: a :class:`~ifshm_ray.policy.bundle.PolicyBundle`; ``diagnose_one``: coroutine function telemetry ->
    diagnosis dict (as :meth:`~ifshm_ray.encoding.service.EncoderWorker.diagnose` gives for one window). The valid entities are the services
    and nodes of the simulator topology recorded in the bundle's manifest; known and unknown fault types are those of
    the bundle's split (``policy.split``)."""

    def __init__(self, policy: Any, diagnose_one: DiagnoseOne, cfg: ServeConfig,
                 diagnoser_info: Callable[[], Awaitable[dict]] | None = None):
        from ifshm_ray.env.fault_env import split_env_config
        from ifshm_ray.env.observation import TelemetryObserver, steady_state_metrics
        from ifshm_ray.sim.catalog import load_catalog

        self.cfg = cfg
        self.policy = policy
        self.diagnose_one = diagnose_one
        self.diagnoser_info = diagnoser_info
        env = policy.manifest.get("env", {})
        try:
            self.sim_cfg, _ = split_env_config(env.get("config", {}))
        except Exception as exc:  # a bundle trained on another env (e.g. the policy tests' stand-in)
            raise ValueError(f"policy bundle {policy.path}: its env config {env} is no FaultInjectionEnv config, so "
                             f"telemetry cannot be turned into its observations ({exc})") from exc
        # the series the simulator reports in every window, at their fault-free values: what the policy reads where
        # a request is silent (ServeConfig.missing_metrics)
        self.steady_state = steady_state_metrics(self.sim_cfg, episodes=cfg.steady_state_episodes,
                                                 steps=cfg.steady_state_steps, seed=cfg.steady_state_seed)
        self.observer = TelemetryObserver(self.sim_cfg,
                                          fill=self.steady_state if cfg.missing_metrics == "steady_state" else None)
        self._missing_warned = LRUCache(MISSING_SETS_REMEMBERED)  # the sets of missing series already warned about
        topo = self.observer.topology
        self.services, self.nodes = list(topo.services), list(topo.nodes)
        spaces = policy.manifest.get("spaces", {})
        probe = self.observer.observe({"logs": [], "metrics": {}, "alarms": []})
        if spaces and (spaces.get("num_features") != probe["obs"].shape[0]
                       or spaces.get("num_targets") != len(topo.targets)):
            raise ValueError(
                f"policy bundle {policy.path} expects {spaces.get('num_features')} features / "
                f"{spaces.get('num_targets')} targets, but its recorded env config gives {probe['obs'].shape[0]} / "
                f"{len(topo.targets)}: the bundle does not fit this simulator version (env {env}; bundles from "
                f"before observation v2, which dropped the hidden healthy streak, must be retrained)")
        self.catalog = load_catalog(self.sim_cfg.catalog)
        self.split = self.catalog.check_split(getattr(policy, "split", self.sim_cfg.split))
        self.verify_s = float(self.sim_cfg.healthy_steps * self.sim_cfg.step_s)
        # The observer and the policy are not thread-safe: one worker thread runs them, off the event loop.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ifshm-policy")
        self._policy_cache = LRUCache(cfg.cache_size)
        self.meta = load_meta_controller(policy.path)
        self.gate_diagnoser = load_gate_diagnoser(policy.path) if self.meta is not None else None

    # ----- inputs ------------------------------------------------------------------------------------------------
    def check(self, telemetry: dict) -> dict:
        """Limits (413) and entity names (422) of one window; returns it."""
        from ifshm_ray.telemetry import TelemetryError, validate_telemetry

        check_limits(telemetry, self.cfg)
        try:
            validate_telemetry(telemetry, services=self.services, nodes=self.nodes)
        except TelemetryError as exc:
            raise InputError(str(exc)) from None
        return telemetry

    def check_cordoned(self, cordoned: Sequence[str]) -> None:
        bad = [n for n in cordoned if n not in self.nodes]
        if bad:
            raise InputError(f"cordoned names unknown node(s) {bad}; valid nodes: {self.nodes}")

    # ----- endpoints ---------------------------------------------------------------------------------------------
    def faults(self) -> list[dict]:
        return [{"name": f.name, "family": f.family, "known": self.catalog.is_known(f.name, self.split),
                 "split": self.split, "description": f.description,
                 "remedies": {c: {k: v for k, v in r.items()} for c, r in f.remedies.items()}}
                for f in self.catalog.faults]

    async def health(self) -> dict:
        m = self.policy.manifest
        info = await self.diagnoser_info() if self.diagnoser_info else None
        return {"status": "ok", "policy": {"path": str(self.policy.path), "kind": m.get("policy_kind"),
                                           "action_space_hash": m.get("action_space_hash"), "split": self.split,
                                           "env": m.get("env", {}).get("entry_point")},
                "topology": {"services": self.services, "nodes": self.nodes},
                "observation": {"features": int(m.get("spaces", {}).get("num_features") or 0),
                                "encoder_in_policy": m.get("encoder"),
                                "missing_metrics": self.cfg.missing_metrics,
                                "series": sum(len(v) for v in self.steady_state.values())},
                "encoder": info, "auth": self.cfg.resolved_token() is not None,
                "policy_cache": self._policy_cache.stats()}

    async def diagnose(self, telemetry: dict) -> dict:
        d = await self.diagnose_one(telemetry)
        return self._diagnosis(d, telemetry)

    def missing(self, telemetry: dict) -> list[str]:
        """The ``entity/metric`` series the simulator reports in every window that ``telemetry`` lacks."""
        from ifshm_ray.env.observation import missing_series

        return missing_series(telemetry, self.steady_state)

    def _note_missing(self, missing: list[str]) -> None:
        """A warning the first time a set of missing series is seen (one per set: the live loop's windows and
        Alertmanager's notifications, which carry no metrics, alternate)."""
        key = tuple(missing)
        if not missing or self._missing_warned.get(key) is not None:
            return
        self._missing_warned.put(key, True)
        by_entity: dict[str, list[str]] = {}
        for name in missing:
            e, m = name.split("/", 1)
            by_entity.setdefault(e, []).append(m)
        whole = sorted(e for e, ms in by_entity.items() if len(ms) == len(self.steady_state.get(e, ())))
        part = {e: ms for e, ms in by_entity.items() if e not in whole}
        how = ("the simulator's steady state" if self.cfg.missing_metrics == "steady_state" else
               "0 (missing_metrics: zero; values the policy never saw in training)")
        logger.warning("telemetry lacks %d of %d series the policy was trained on; read as %s: every metric of %s; "
                       "some metrics of %s", len(missing), sum(len(v) for v in self.steady_state.values()), how,
                       whole, part)

    async def heal(self, telemetry: dict, last_action: str | None = None, cordoned: Sequence[str] = (),
                   history: list[dict] | None = None, incident_gate: str | None = None) -> dict:
        self.check_cordoned(cordoned)
        if self.cfg.missing_metrics == "error":
            missing = self.missing(telemetry)
            if missing:
                raise InputError(f"telemetry lacks {len(missing)} series the policy was trained on "
                                 f"(missing_metrics: error): {missing[:20]}{' ...' if len(missing) > 20 else ''}")
        try:  # (reads the topology only: safe off the policy thread)
            self.observer.memory(history, last_action, cordoned)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        loop = asyncio.get_running_loop()
        diag, pol = await asyncio.gather(
            self.diagnose_one(telemetry),
            loop.run_in_executor(self._executor, self._policy, telemetry, last_action, list(cordoned), history),
        )
        diagnosis = self._diagnosis(diag, telemetry)
        gate = None
        if self.meta is not None:
            scored = None
            if self.gate_diagnoser is not None:
                scored = await loop.run_in_executor(self._executor, self.gate_diagnoser, telemetry)
            gate = self.gate(diagnosis, telemetry=telemetry, proposal=pol["act"], incident_gate=incident_gate,
                             scored=scored)
        return self._heal_response(diagnosis, pol, gate)

    async def alertmanager(self, payload: dict) -> dict:
        if len(payload.get("alerts", [])) > self.cfg.max_alarms:
            raise LimitError(f"the notification has {len(payload['alerts'])} alerts; the limit is "
                             f"max_alarms={self.cfg.max_alarms}")
        telemetry, used, resolved = alertmanager_to_telemetry(payload, self.services, self.nodes)
        self.check(telemetry)
        out = await self.heal(telemetry)
        return {**out, "groupKey": payload.get("groupKey", ""), "alerts_used": used, "alerts_resolved": resolved}

    # ----- internals ---------------------------------------------------------------------------------------------
    def _policy(self, telemetry: dict, last_action: str | None, cordoned: list[str],
                history: list[dict] | None) -> dict:
        missing = self.missing(telemetry)
        self._note_missing(missing)
        obs = self.observer.observe(telemetry, last_action=last_action, cordoned=cordoned, history=history)
        key = b"".join(np.ascontiguousarray(obs[k], np.float32).tobytes() for k in ("obs", "action_mask", "ratio_mask"))
        hit = self._policy_cache.get(key)
        if hit is not None:
            return {**hit, "imputed": missing}
        c, t, r = self.policy.act(obs, deterministic=True)
        dist = self.policy.action_distribution(obs, top_k=max(64, self.cfg.top_k))
        out = {"act": (c, t, r), "dist": dist}
        self._policy_cache.put(key, out)
        return {**out, "imputed": missing}

    def _action(self, c: int, t: int, r: int, prob: float | None) -> dict:
        p = self.policy
        cat = p.categories[c] if c < len(p.categories) else str(c)
        target = p.target_names[t] if p.target_names and t < len(p.target_names) else None
        ratio = p.ratio_levels[r] if cat in RATIO_CATEGORIES and r < len(p.ratio_levels) else None
        if cat in ("observe", "escalate"):
            target = None
        return {"category": cat, "target": target, "ratio": ratio, "probability": prob}

    def _heal_response(self, diagnosis: dict, pol: dict, gate: dict | None = None) -> dict:
        c, t, r = pol["act"]
        dist = pol["dist"]
        joint = {(a["category"], a["target"], a["ratio"]): a["prob"] for a in dist["top_actions"]}
        action = self._action(c, t, r, joint.get((c, t, r)))
        cat_prob = next((x["prob"] for x in dist["categories"] if x["index"] == c), None)
        alternatives = [self._action(a["category"], a["target"], a["ratio"], a["prob"])
                        for a in dist["top_actions"] if (a["category"], a["target"], a["ratio"]) != (c, t, r)]
        alternatives = alternatives[: self.cfg.top_k - 1]
        eta, basis = self.expected_recovery(diagnosis["fault_mode"], action["category"])
        reasons = []
        if diagnosis["confidence"] < self.cfg.min_confidence:
            reasons.append(f"diagnosis confidence {diagnosis['confidence']:.2f} < min_confidence "
                           f"{self.cfg.min_confidence}")
        if diagnosis["unknown"]:
            reasons.append(f"unknown score {diagnosis['unknown_score']:.2f} > max_unknown_score "
                           f"{self.cfg.max_unknown_score} (unlike every known fault type)")
        if action["category"] == "escalate":
            reasons.append("the policy recommends escalating to a human")
        if gate is not None and gate["deferred"] and gate["applies"]:
            reasons.append(f"meta-controller gate: deferred to {gate['actor']} ({gate['reason']})")
        return {"diagnosis": diagnosis, "action": action, "category_probability": cat_prob,
                "alternatives": alternatives, "expected_recovery_s": eta, "expected_recovery_basis": basis,
                "escalate": bool(reasons), "escalate_reasons": reasons,
                "value": float(dist["value"]) if dist.get("value") is not None else None, "gate": gate,
                "imputed_metrics": list(pol.get("imputed", []))}

    def gate(self, diagnosis: dict, *, telemetry: dict | None = None, proposal: Sequence[int] | None = None,
             incident_gate: str | None = None, scored: tuple | None = None) -> dict | None:
        """The meta-controller's decision for one window (None without a meta-controller). Serving only reads
        the controller's state (nearest cluster, trust table): it neither clusters nor records. Novelty is scored by
        the bundle's diagnoser (``scored``: its (unknown score, state) of the window) when it has one, else by the
        served encoder's diagnosis. ``decides_here``: the window is where the gate decides the incident
        (:func:`~ifshm_ray.meta.gate.gate_decides_here` with the policy's ``proposal``); ``incident_gate``: the actor
        decided at an earlier window of the incident, kept (the score is still reported)."""
        if self.meta is None:
            return None
        from ifshm_ray.meta.gate import gate_decides_here

        score, state = scored if scored is not None else (diagnosis.get("unknown_score"), diagnosis.get("state"))
        d = self.meta.observe(score, state, update=False)
        out = {"actor": d.actor, "deferred": d.deferred, "novel": d.novel, "reason": d.reason,
               "unknown_score": d.unknown_score, "threshold": d.threshold, "cluster": d.cluster,
               "decides_here": False, "applies": True,
               "score_source": "diagnoser" if scored is not None else "encoder"}
        if incident_gate is not None:
            return {**out, "actor": incident_gate, "deferred": incident_gate != "policy",
                    "reason": f"decided at an earlier window of this incident: {incident_gate} (this window: "
                              f"{d.reason})"}
        if telemetry is not None and proposal is not None:
            out["decides_here"] = bool(gate_decides_here(telemetry, self.meta.config.decide_on,
                                                         np.asarray(proposal, np.int64)))
            out["applies"] = out["decides_here"]
        return out

    def expected_recovery(self, fault: str, category: str) -> tuple[float | None, str]:
        """Expected seconds to recovery if ``category`` is applied to ``fault`` (see the module docstring)."""
        if fault == HEALTHY:
            return (0.0, "diagnosed healthy: nothing to recover") if category == "observe" else \
                (None, f"diagnosed healthy: {category!r} is not expected to change anything")
        if fault not in self.catalog.fault_index:
            return None, f"fault {fault!r} is not in the catalog"
        spec = self.catalog.spec(fault)
        from ifshm_ray.sim.catalog import expected_remedy_s

        svc = spec.target.get("name") if spec.target["kind"] == "service" else None
        act = self.catalog.actions
        heals = {cat: expected_remedy_s(rem, (act[cat].get("by_service") or {}).get(rem.get("target") or svc,
                                                                                   act[cat]["duration_s"]))
                 for cat, rem in spec.remedies.items() if rem.get("effect") == "heal"}
        verify = f"+ {self.verify_s:.0f} s SLO verification ({self.sim_cfg.healthy_steps} x {self.sim_cfg.step_s:.0f} s)"
        if category in heals:
            return heals[category] + self.verify_s, f"catalog: {category} heals {fault} in {heals[category]:.0f} s {verify}"
        best = min(heals, key=heals.get)
        effect = spec.remedies.get(category, {}).get("effect", "none")
        return None, (f"catalog: {category} does not heal {fault} (effect: {effect}); fastest healing remedy: "
                      f"{best} ({heals[best]:.0f} s {verify})")

    def _diagnosis(self, d: dict, telemetry: dict) -> dict:
        unknown = d["unknown_score"] is not None and d["unknown_score"] > self.cfg.max_unknown_score
        return {**d, "unknown": bool(unknown), "explanation": self.explain(d, telemetry, unknown)}

    def explain(self, d: dict, telemetry: dict, unknown: bool) -> str:
        """A short explanation: the diagnosis and runner-up, the catalog's description, the evidence seen."""
        fault = d["fault_mode"]
        parts = [f"{fault} (p={d['confidence']:.2f}"]
        if len(d["top"]) > 1:
            parts[0] += f"; next {d['top'][1]['fault']} p={d['top'][1]['prob']:.2f}"
        parts[0] += ")."
        if fault in self.catalog.fault_index:
            desc = self.catalog.spec(fault).description
            parts.append(desc.split(". ")[0].rstrip(".") + ".")
        firing = [a for a in telemetry.get("alarms", []) if a.get("state", "firing") == "firing"]
        pending = len(telemetry.get("alarms", [])) - len(firing)
        if firing:
            shown = ", ".join(f"{a['name']}" + (f" on {a['entity']}" if a.get("entity") else "") for a in firing[:3])
            more = f" (+{len(firing) - 3} more)" if len(firing) > 3 else ""
            parts.append(f"Firing: {shown}{more}.")
        if pending:
            parts.append(f"{pending} pending alert(s).")
        errors = sum(1 for line in telemetry.get("logs", []) if any(w in line for w in ("ERROR", "CRITICAL", "FATAL",
                                                                                        "Xid", "Error", "error")))
        if errors:
            parts.append(f"{errors} error log line(s).")
        if d["unknown_score"] is None:
            parts.append("No unknown score (the encoder has no fault prototypes: untrained).")
        else:
            parts.append(f"Unknown score {d['unknown_score']:.2f}" +
                         (": unlike every known fault type." if unknown else ": close to a known fault type."))
        return " ".join(parts)

    def close(self) -> None:
        self._executor.shutdown(wait=False)

"""One live incident on a running :class:`~ifshm_ray.live.stack.LiveStack`: inject a fault from the plan file, let
a healer (the project's runbook on live telemetry, or nobody) act through the :class:`SafeExecutor`, and measure
on the wall clock: detection (first firing webhook at Alertmanager's receiver), first action, recovery (the load
generator's view green for ``green_s`` consecutive seconds: success rate and p95 latency within the simulator's
SLO fields), all bounded by a cap. The fault is always undone and the stack put back into its steady state.

Used by ``jobs/live_eval.py`` and the live end-to-end test.
"""
from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ifshm_ray.config import SimConfig
from ifshm_ray.eval.config import StatsConfig
from ifshm_ray.eval.stats import bootstrap_mean_ci
from ifshm_ray.live.binding import Binding
from ifshm_ray.live.collector import Collector
from ifshm_ray.live.config import LiveConfig
from ifshm_ray.live.executor import SafeExecutor
from ifshm_ray.live.healer import HealerArm
from ifshm_ray.live.handlers import (NginxRestartHandler, NginxUpstreamHandler, PruneFolderHandler,
                                     RedisMaxmemoryHandler, ServeAppHandler, build_handlers, redis_command,
                                     render_upstream)
from ifshm_ray.live.injectors import FaultPlan, ProxyControl, build_injector, experiment
from ifshm_ray.live.recording import IncidentRecorder
from ifshm_ray.live.serve_api import ServeDashboard
from ifshm_ray.live.slo import RecoveryWatch, SloReading, slo_badness
from ifshm_ray.live.stack import APP, ROUTE_PROXIED, LiveStack
from ifshm_ray.sim.actions import CATEGORIES, CATEGORY_TARGET_KIND, RATIO_CATEGORIES, RATIO_LEVELS

log = logging.getLogger(__name__)


class LoadSloProbe:
    """SLO badness (:func:`slo_badness`) of the load generator's last ``window_s`` of requests: no extra traffic
    is sent, the requests users make are the probe. Replicas are checked through the dashboard when asked."""

    def __init__(self, stack: LiveStack, sim: SimConfig, window_s: float, check_replicas: bool = True):
        self.stack, self.sim, self.window_s, self.check_replicas = stack, sim, window_s, check_replicas

    def reading(self) -> SloReading:
        st = self.stack.load.window(since=time.monotonic() - self.window_s, q=self.stack.cfg.slo.latency_quantile)
        healthy = None
        if self.check_replicas:
            try:
                healthy = self.stack.replicas_healthy()
            except Exception:  # noqa: BLE001  (an unreachable dashboard counts as not healthy)
                healthy = False
        return SloReading(st.requests, st.success_rate, st.latency_ms, healthy)

    def badness(self, reading: SloReading | None = None) -> float:
        return slo_badness(reading or self.reading(), baseline_latency_ms=self.stack.baseline.p95_s * 1000.0,
                           sim=self.sim)

    def __call__(self) -> float:
        return self.badness()


class _TopologyEnv:
    """What :class:`RunbookPolicy` reads of an env: ``env.unwrapped.topology``."""

    def __init__(self, topology):
        self.topology = topology
        self.unwrapped = self


def make_executor(stack: LiveStack, cfg: LiveConfig, binding: Binding, probe: LoadSloProbe,
                  audit_log: str) -> SafeExecutor:
    """The safe executor with the real handlers of the running stack."""
    h = cfg.handlers
    handlers = build_handlers(
        serve=ServeAppHandler(stack.dashboard_url, h, history_path=stack.deploy_history),
        redis=RedisMaxmemoryHandler(stack.ports.redis, h),
        prune=PruneFolderHandler(stack.run_dir, h),
        nginx=NginxUpstreamHandler(stack.nginx_upstream_file, stack.nginx_routes, stack.nginx_reload_cmd(), h,
                                   test_cmd=stack.nginx_cmd("-t")),
        nginx_restart=NginxRestartHandler(stack.restart_nginx, stack.nginx_config_files, h,
                                          test_cmd=stack.nginx_cmd("-t")))
    return SafeExecutor(cfg.executor.model_copy(update={"audit_log": audit_log}), binding, handlers, probe=probe)


def make_collector(stack: LiveStack, binding: Binding, topology) -> Collector:
    return Collector(stack.prometheus_url, stack.queries, binding, stack.log_files,
                     services=list(topology.services), nodes=list(topology.nodes))


def restore_steady_state(stack: LiveStack, cfg: LiveConfig) -> dict:
    """Undo whatever a healer changed: the steady-state Serve config, nginx's proxied route, Redis's maxmemory,
    an empty prune folder. Returns what was put back."""
    out: dict[str, Any] = {}
    dash = ServeDashboard(stack.dashboard_url, cfg.handlers.http_timeout_s)
    details = dash.details()
    if details["applications"].get(APP, {}).get("deployed_app_config") != stack.app_config():
        out["serve"] = dash.put(dash.body(details, APP, stack.app_config()))
        stack.wait_app_running(stack.s.startup_timeout_s)
    if not stack.nginx_alive():  # a failed restart
        out["nginx_started"] = stack.restart_nginx(stack.s.startup_timeout_s)
    want = render_upstream("serve", stack.nginx_routes[ROUTE_PROXIED])
    if stack.nginx_upstream_file.read_text() != want:
        stack.nginx_upstream_file.write_text(want)
        import subprocess
        out["nginx"] = subprocess.run(stack.nginx_reload_cmd(), capture_output=True, timeout=10,
                                      env={"LD_LIBRARY_PATH": stack.lib_path}).returncode
    mm = int(redis_command(stack.ports.redis, "CONFIG", "GET", "maxmemory")[1])
    if mm != stack.s.redis_maxmemory_bytes:
        out["redis"] = redis_command(stack.ports.redis, "CONFIG", "SET", "maxmemory", stack.s.redis_maxmemory_bytes)
    for p in stack.prune_folder.iterdir():
        p.unlink()
        out.setdefault("pruned", []).append(p.name)
    return out


def answer_from_action(a: np.ndarray, topology) -> dict:
    """A ``/v1/heal``-shaped answer from a simulator action ``[category, target, ratio]``."""
    c, t, r = (int(x) for x in a)
    cat = CATEGORIES[c]
    kind = CATEGORY_TARGET_KIND[cat]
    target = None if kind == "none" else topology.targets[t]
    ratio = RATIO_LEVELS[r] if cat in RATIO_CATEGORIES else None
    return {"action": {"category": cat, "target": target, "ratio": ratio}, "escalate": cat == "escalate"}


@dataclass
class IncidentResult:
    record: dict

    @property
    def recovered(self) -> bool:
        return self.record["recovered"]


def wait_green(probe: LoadSloProbe, green_s: float, timeout_s: float, step_s: float) -> float | None:
    """Seconds until the probe has been green for ``green_s`` (None when not within ``timeout_s``)."""
    t0 = time.monotonic()
    watch = RecoveryWatch(green_s)
    while time.monotonic() - t0 < timeout_s:
        if watch.update(time.monotonic(), probe.badness() == 0.0):
            return time.monotonic() - t0
        time.sleep(step_s)
    return None


def healer_decision(healer: HealerArm, fallback: Any | None, telemetry: dict, env: Any, topology
                    ) -> tuple[dict, dict, dict, str | None]:
    """One decision window of the healer arm: ``(request, answer, acting, actor)``. ``answer`` is the healer's
    (recorded and replayed as is); ``acting`` what goes to the executor: the answer, or, once the incident's gate
    deferred to the runbook (``healer.gate_actor``), the blind runbook's action on the same window (``fallback``);
    ``actor``: who acted by the gate (None without a gate in the answer)."""
    request, answer = healer.decide(telemetry)
    acting, actor = answer, None
    if answer.get("gate"):
        actor = healer.gate_actor or "policy"
    if healer.gate_actor == "runbook" and fallback is not None:
        acting = answer_from_action(fallback.act({}, {"telemetry": telemetry}, env), topology)
    return request, answer, acting, actor


def run_incident(stack: LiveStack, cfg: LiveConfig, binding: Binding, plan: FaultPlan, arm: str, *,
                 topology, executor: SafeExecutor, collector: Collector, probe: LoadSloProbe,
                 recorder: IncidentRecorder | None = None, policy_factory: Callable[[], Any] | None = None,
                 healer: HealerArm | None = None, repeat: int = 0,
                 fallback_factory: Callable[[], Any] | None = None) -> dict:
    """One incident; returns its JSON-able record (see the module docstring). ``fallback_factory``: the blind
    runbook that acts for the healer once its gate deferred the incident to it (``HealerArm.gate_actor``)."""
    ev = cfg.eval
    incident = f"{plan.name}-{arm}-{repeat}-{uuid.uuid4().hex[:6]}"
    rec: dict[str, Any] = {"incident": incident, "fault": plan.name, "kind": plan.kind, "arm": arm,
                           "repeat": repeat, "expected": plan.expected, "actions": [], "windows": 0}
    if plan.kind == "disk_fill" and not stack.mounted:
        rec.update(skipped="the model cache is not a dedicated tmpfs (needs root): disk fill not run",
                   recovered=False)
        return rec
    pre = wait_green(probe, cfg.slo.green_s, ev.settle_s, ev.probe_interval_s)
    rec["steady_before_s"] = pre
    if pre is None:
        r = probe.reading()  # why: errors, latency against its SLO, replicas
        limit_ms = probe.sim.slo_latency_factor * probe.stack.baseline.p95_s * 1000.0
        q = f"p{cfg.slo.latency_quantile * 100:g}"
        why = (f"success {r.success_rate:.1%} of {r.requests} requests, {q} {r.latency_ms:.0f} ms (SLO "
               f"{limit_ms:.0f} ms), replicas healthy: {r.replicas_healthy}")
        load = getattr(stack, "load", None)
        if load is not None and not load.running():
            why += "; the load generator has stopped (loadgen.max_duration_s reached?)"
        rec.update(skipped=f"not green for {cfg.slo.green_s} s within settle_s = {ev.settle_s} before injecting "
                           f"({why})", recovered=False,
                   reading_before={"requests": r.requests, "success_rate": r.success_rate,
                                   "latency_ms": r.latency_ms if math.isfinite(r.latency_ms) else None,
                                   "latency_slo_ms": limit_ms, "replicas_healthy": r.replicas_healthy})
        log.warning("incident %s skipped: the stack is not green before injecting (%s)", incident, why)
        return rec
    injector = build_injector(plan, cfg.injectors, proxy=ProxyControl(stack.proxy_control_url,
                                                                      cfg.injectors.control_timeout_s),
                              fill_folder=stack.prune_folder,
                              dashboard=ServeDashboard(stack.dashboard_url, cfg.handlers.http_timeout_s),
                              binding=binding, history_path=stack.deploy_history, find_pid=stack.model_replica_pid,
                              load=stack.load, redis_port=stack.ports.redis)
    policy = policy_factory() if (arm != "none" and policy_factory) else None
    env = _TopologyEnv(topology)
    if policy is not None:
        policy.reset(env)
    if arm == "policy" and healer is None:
        raise ValueError("the policy arm needs a healer (HealerArm over /v1/heal)")
    if healer is not None:
        healer.reset()
    fallback = fallback_factory() if (healer is not None and fallback_factory is not None) else None
    if fallback is not None:
        fallback.reset(env)
    watch: RecoveryWatch | None = None  # started at the first SLO violation: recovery is counted after it
    trace: list[list] = []  # [s since injection, success rate, latency quantile (ms), SLO badness] per probe read
    rec["trace_columns"] = list(TRACE_COLUMNS)
    rec["trace"] = trace
    ever_bad = False
    with experiment(injector, check_steady_state=True) as run:
        # the fault starts with inject() (a disk fill takes seconds): count from its start, not its end
        t_inject = run["started_at"]
        m_inject = time.monotonic() - (time.time() - t_inject)
        rec["injected_at"] = t_inject
        rec["injected"] = run.get("injected")
        next_decision = m_inject + cfg.decision_interval_s
        window = 0
        while True:
            now_m = time.monotonic()
            elapsed = now_m - m_inject
            reading = probe.reading()
            bad = probe.badness(reading)
            trace.append([round(elapsed, 2), _num(reading.success_rate), _num(reading.latency_ms), _num(bad),
                          None if reading.replicas_healthy is None else int(reading.replicas_healthy)])
            if bad > 0 and watch is None:
                ever_bad, watch = True, RecoveryWatch(cfg.slo.green_s)
            if watch is not None and watch.update(now_m, bad == 0.0):
                break
            if not ever_bad and elapsed >= min(plan.hold_s, ev.arm_cap_s) + cfg.slo.green_s:
                break  # the SLOs never broke (a transient that stayed below them): nothing to recover from
            if elapsed >= ev.arm_cap_s:
                break
            executor.poll()
            if now_m >= next_decision:
                next_decision = now_m + cfg.decision_interval_s
                tel = collector.window(ev.window_s, t0=t_inject)
                answer = request = None
                outcome = None
                acting = actor = None  # what goes to the executor (the answer, or the runbook's after a deferral)
                if policy is not None:
                    a = policy.act({}, {"telemetry": tel}, env)
                    answer = acting = answer_from_action(a, topology)
                elif arm == "policy":
                    try:
                        request, answer, acting, actor = healer_decision(healer, fallback, tel, env, topology)
                    except Exception as e:  # noqa: BLE001  (no answer: no decision for this window, recorded)
                        log.warning("incident %s: /v1/heal failed: %r", incident, e)
                        rec.setdefault("heal_errors", []).append(repr(e)[:300])
                if acting is not None:
                    d = executor.decide(incident=incident, answer=acting, telemetry=tel,
                                        fingerprint=",".join(sorted({x["name"] for x in tel["alarms"]})))
                    outcome = d["outcome"]
                    if healer is not None and request is not None:
                        healer.taken(outcome, applied=acting["action"] if acting is not answer else None)
                    if acting["action"]["category"] != "observe" or acting.get("escalate"):
                        rec["actions"].append({"at_s": round(time.time() - t_inject, 2),
                                               **{k: acting["action"].get(k) for k in ("category", "target",
                                                                                       "ratio")},
                                               **({"actor": actor} if actor is not None else {}),
                                               "outcome": outcome, "reason": d["reason"][:300],
                                               # what the healer saw: firing alerts, and its diagnosis if any
                                               "firing": sorted({f"{x['name']}/{x['entity']}" for x in tel["alarms"]
                                                                 if x["state"] == "firing"}),
                                               "diagnosis": (answer.get("diagnosis") or {}).get("fault_mode"),
                                               # series of the simulator's the window lacked (the healer read
                                               # them at the simulator's steady state)
                                               "imputed": len(answer.get("imputed_metrics") or [])})
                if recorder is not None:
                    recorder.add(incident=incident, fault=plan.name, arm=arm, window_index=window,
                                 wall_time=time.time(), telemetry=tel, answer=answer, outcome=outcome,
                                 request=request)
                window += 1
            time.sleep(ev.probe_interval_s)
        t_end = time.time()
    rec["windows"] = window
    rec["undone"] = run.get("undone")
    fired = stack.sidecar.alerts_since(t_inject, started_after=t_inject)  # alerts this incident raised
    rec["alerts"] = sorted({f'{a["labels"].get("alertname")}/{a["labels"].get("service") or a["labels"].get("node")}'
                            for a in fired})
    rec["detect_s"] = round(min(a["received_at"] for a in fired) - t_inject, 3) if fired else None
    acted = [a for a in rec["actions"] if a["outcome"] in ("executed", "dry_run")]
    rec["first_action_s"] = acted[0]["at_s"] if acted else None
    rec["ever_violated"] = ever_bad
    if not ever_bad:
        rec["recovered"], rec["mttr_s"] = True, 0.0
    else:
        rec["recovered"] = watch.recovered_at is not None
        rec["mttr_s"] = round(max(0.0, watch.recovered_at - m_inject), 3) if rec["recovered"] else None
    rec["capped_at_s"] = ev.arm_cap_s
    rec["duration_s"] = round(t_end - t_inject, 3)
    executor.wait_verified(cfg.executor.verify_after_s + 5.0)
    # every firing and resolved notification of this incident's alerts (resolutions may come after the end)
    rec["alert_events"] = alert_events(stack, t_inject)
    rec["restored"] = restore_steady_state(stack, cfg)
    log.info("incident %s: recovered=%s mttr=%s detect=%s actions=%s", incident, rec["recovered"], rec["mttr_s"],
             rec["detect_s"], [(a["category"], a["target"], a["outcome"]) for a in rec["actions"]])
    return rec


TRACE_COLUMNS = ("t_s", "success_rate", "latency_ms", "slo_badness", "replicas_healthy")
"""Columns of an incident record's ``trace`` (one row per probe read, time counted from the injection)."""


def _num(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), 4)


def alert_events(stack: LiveStack, t_inject: float) -> list[dict]:
    """Firing and resolved notifications received since ``t_inject`` for alerts that became active after it:
    ``{"at_s", "alert" ("name/entity"), "status"}``, in arrival order."""
    out = []
    for status in ("firing", "resolved"):
        for a in stack.sidecar.alerts_since(t_inject, status=status, started_after=t_inject):
            lab = a["labels"]
            out.append({"at_s": round(a["received_at"] - t_inject, 3), "status": status,
                        "alert": f'{lab.get("alertname")}/{lab.get("service") or lab.get("node")}'})
    return sorted(out, key=lambda e: e["at_s"])


def incident_outcome(r: dict) -> str:
    """``escalated`` (the executor paged a human: not healed, at the cap, also when the service came back later:
    the human then owns the incident, as the simulator counts an escalation), ``recovered`` (within the cap, nobody
    paged) or ``timed_out`` (not recovered by the cap, nobody paged). The record's own ``recovered``/``mttr_s`` keep
    what the probe saw."""
    if any(a.get("outcome") == "page" for a in r.get("actions", [])):
        return "escalated"
    return "recovered" if r["recovered"] else "timed_out"


def healed_mttr_s(r: dict) -> float:
    """The incident's MTTR as the evaluation counts it: the probe's when healed (:func:`incident_outcome`
    ``recovered``), else the cap."""
    return r["mttr_s"] if incident_outcome(r) == "recovered" else r["capped_at_s"]


def paired_arms(records: list[dict], arm: str, others: tuple[str, ...], stats: StatsConfig | None = None,
                exclude_faults: tuple[str, ...] = ()) -> dict:
    """``arm`` - each of ``others`` in MTTR (:func:`healed_mttr_s`), paired by fault and repeat (the same injected
    fault, the arms interleaved within a repeat): mean difference, its percentile-bootstrap interval and the pairs.
    Skipped incidents and ``exclude_faults`` are left out; a pair needs both incidents."""
    stats = stats or StatsConfig()
    val = {(r["fault"], r["repeat"], r["arm"]): healed_mttr_s(r) for r in records
           if "skipped" not in r and r["fault"] not in exclude_faults}
    out = {}
    for other in others:
        keys = sorted((f, rep) for (f, rep, a) in val if a == arm and (f, rep, other) in val)
        d = [val[(f, rep, arm)] - val[(f, rep, other)] for f, rep in keys]
        ci = bootstrap_mean_ci(d, stats) if len(d) >= 2 else None
        out[f"{arm}-{other}"] = {"pairs": len(d), "mean_diff_s": round(float(np.mean(d)), 3) if d else None,
                                 "ci95_s": None if ci is None else [round(v, 3) for v in ci]}
    return out


def _group_stats(rs: list[dict], stats: StatsConfig) -> dict:
    mttr = [healed_mttr_s(r) for r in rs]
    det = [r["detect_s"] for r in rs if r.get("detect_s") is not None]
    first = [r["first_action_s"] for r in rs if r.get("first_action_s") is not None]
    outcomes = [incident_outcome(r) for r in rs]
    return {"incidents": len(rs), "recovered": outcomes.count("recovered"),
            "success_rate": round(outcomes.count("recovered") / len(rs), 4),
            "escalations": outcomes.count("escalated"), "timeouts": outcomes.count("timed_out"),
            "mttr_mean_s": round(float(np.mean(mttr)), 3),
            "mttr_ci95_s": None if len(mttr) < 2 else [round(v, 3) for v in bootstrap_mean_ci(mttr, stats)],
            "detect_mean_s": round(float(np.mean(det)), 3) if det else None,
            "first_action_mean_s": round(float(np.mean(first)), 3) if first else None,
            "acted": sum(1 for r in rs if any(a["outcome"] in ACTED for a in r.get("actions", [])))}


ACTED = ("executed", "dry_run", "failed")
"""Executor outcomes that count as the healer having acted (also a failed call: it was attempted)."""


def summarise(records: list[dict], stats: StatsConfig | None = None) -> dict:
    """Per ``fault/arm``: incidents, recovered, success rate, escalations, time-outs, mean MTTR on the wall clock
    (a not-recovered incident counts at the cap) with its percentile-bootstrap interval
    (:func:`ifshm_ray.eval.stats.bootstrap_mean_ci`, at least 2 incidents), mean detection and first-action
    times, incidents with an action, and the actions of each incident. Skipped incidents are left out."""
    stats = stats or StatsConfig()
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if "skipped" in r:
            continue
        groups.setdefault((r["fault"], r["arm"]), []).append(r)
    return {f"{fault}/{arm}": {"fault": fault, "arm": arm, **_group_stats(rs, stats),
                               "actions": [[(a["category"], a["target"],
                                             a["outcome"] + (", by the runbook" if a.get("actor") == "runbook" else ""))
                                            for a in r["actions"]]
                                           for r in rs]}
            for (fault, arm), rs in groups.items()}


def summarise_arms(records: list[dict], stats: StatsConfig | None = None,
                   exclude_faults: tuple[str, ...] = ()) -> dict:
    """Per arm over every fault (but ``exclude_faults``, e.g. the negative control): the same statistics as
    :func:`summarise` pooled over the arm's incidents."""
    stats = stats or StatsConfig()
    groups: dict[str, list[dict]] = {}
    for r in records:
        if "skipped" in r or r["fault"] in exclude_faults:
            continue
        groups.setdefault(r["arm"], []).append(r)
    return {arm: {"arm": arm, **_group_stats(rs, stats)} for arm, rs in groups.items()}

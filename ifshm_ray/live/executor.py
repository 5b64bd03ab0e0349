"""The safe executor: turns the healer's answer into (at most) one bounded, reversible, audited action.

Every decision goes through the same checks, in this order, and ends in exactly one audit record:

1. ``observe`` -> ``observed``; ``escalate`` (or the answer's ``escalate: true``) -> ``page``.
2. The target must have a live binding (:mod:`ifshm_ray.live.binding`); otherwise ``page`` (never guessed).
3. Deny-list: components whose kind (GCS, Serve controller, Prometheus, Alertmanager, the healer) or name is
   denied -> ``refused``.
4. Allow-list: the category must have a registered handler -> otherwise ``refused``.
5. One action in flight: while an executed action waits for its SLO verification -> ``refused``.
6. At most ``max_actions_per_incident`` actions per incident; a cooldown per live component -> ``refused``.
7. A ratio that is not a positive number is refused. The handler plans the call (reading the live state, no
   change); the plan's own pre-check problems, an error while planning and the replica bounds refuse it.
8. Dry-run (the default): ``dry_run`` with the planned call, nothing is changed. With ``execute: true`` the SLO
   probe is read, the call is made (``executed`` or ``failed``), and ``verify_after_s`` later :meth:`poll`
   reads the probe again: worse by more than ``revert_margin`` -> the handler's undo runs (``reverted``),
   otherwise ``verified``. Both are audit records of their own, linked by ``action_id``; an action that made the
   SLOs worse and could not be undone (``revert_failed``) is marked ``page: true``.

An unexpected error inside the executor still ends in a ``refused`` record (nothing is done after it).

A handler is any callable ``handler(request: ActionRequest) -> PlannedCall`` registered per category: planning
must not change anything; the returned :class:`PlannedCall` carries the call's description (for the audit log),
``execute`` (makes the call, returns its reply) and ``undo``. The SLO probe is a callable returning a badness
(0: every SLO holds; larger is worse).

Example::

    ex = SafeExecutor(ExecutorConfig(), load_binding(), build_handlers(serve=ServeAppHandler(...)),
                      probe=HttpSloProbe(url, SloProbeConfig(), SimConfig()))  # ifshm_ray.live.handlers / .slo
    rec = ex.decide(incident="inc-1", answer=heal_response, telemetry=window, fingerprint="abc")
    ...
    ex.poll()  # call regularly; reverts an action that made the SLOs worse
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ifshm_ray.live.binding import Binding, LiveComponent
from ifshm_ray.live.config import ExecutorConfig
from ifshm_ray.sim.actions import CATEGORIES

log = logging.getLogger(__name__)

NO_TARGET_CATEGORIES = frozenset({"observe", "escalate"})

# outcomes of a decision record
OBSERVED, PAGE, REFUSED, DRY_RUN, EXECUTED, FAILED = "observed", "page", "refused", "dry_run", "executed", "failed"
# outcomes of the follow-up record of an executed action
VERIFIED, REVERTED, REVERT_FAILED = "verified", "reverted", "revert_failed"


@dataclass(frozen=True)
class ActionRequest:
    """What a handler is asked to plan."""

    category: str
    target: str
    """The simulator entity the healer named."""
    component: str
    """The live component bound to it."""
    binding: LiveComponent
    ratio: float | None


@dataclass
class PlannedCall:
    """A handler's plan: the call it would make, how to make it and how to undo it."""

    call: dict
    """JSON-able description for the audit log (e.g. method, url, body)."""
    execute: Callable[[], Any]
    """Makes the call; returns its reply (JSON-able)."""
    undo: Callable[[], Any] | None = None
    """Undoes the call; returns its reply. None: the action cannot be reverted."""
    replicas: tuple[int, int] | None = None
    """(before, after) replica counts for a scaling action, checked against the executor's bounds."""
    problems: list[str] = field(default_factory=list)
    """Pre-check failures found while planning (the action is refused with them)."""


Handler = Callable[[ActionRequest], PlannedCall]
SloProbe = Callable[[], float]


def telemetry_hash(telemetry: Any) -> str:
    """sha256 of the telemetry window's canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(telemetry, sort_keys=True, default=str).encode()).hexdigest()


class AuditLog:
    """Append-only JSONL file; every record is one line, flushed and fsynced before :meth:`append` returns."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, default=str)
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict]:
        """Every record so far (for tests and reports)."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass
class _Pending:
    action_id: str
    incident: str
    component: str
    due: float
    baseline: float
    plan: PlannedCall


class SafeExecutor:
    """Checks, carries out (or dry-runs), verifies and audits the healer's actions; see the module docstring."""

    def __init__(self, cfg: ExecutorConfig, binding: Binding, handlers: Mapping[str, Handler], probe: SloProbe,
                 *, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        builtin = sorted(set(handlers) & NO_TARGET_CATEGORIES)
        if builtin:
            raise ValueError(f"categories {builtin} take no handler (observe and escalate are built in)")
        unknown = sorted(set(handlers) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"handlers for unknown categories {unknown}; categories: {list(CATEGORIES)}")
        missing = sorted(set(cfg.deny_components) - set(binding.components))
        if missing:
            raise ValueError(f"deny_components {missing} are not components of the binding "
                             f"({sorted(binding.components)})")
        self.cfg = cfg
        self.binding = binding
        self.handlers = dict(handlers)
        self.probe = probe
        self.clock = clock
        self.wall = wall
        self.audit = AuditLog(cfg.audit_log)
        self._lock = threading.Lock()
        self._pending: _Pending | None = None
        self._last_action: dict[str, float] = {}   # component -> clock time of its last action
        self._actions: dict[str, int] = {}          # incident -> actions counted against the cap

    @property
    def in_flight(self) -> bool:
        """True while an executed action waits for its SLO verification."""
        return self._pending is not None

    # ------------------------------------------------------------------------------------------------ decide
    def decide(self, *, incident: str, answer: Mapping[str, Any], telemetry: Any = None,
               fingerprint: str = "") -> dict:
        """Check, then dry-run or execute the healer's answer (a ``/v1/heal`` response: ``action`` with
        ``category``/``target``/``ratio``, optionally ``escalate``); returns the audit record written."""
        started = self.wall()
        if hasattr(answer, "model_dump"):  # a HealResponse model rather than its JSON
            answer = answer.model_dump(mode="json")
        action = dict(answer.get("action") or {})
        category, target, ratio = action.get("category"), action.get("target"), action.get("ratio")
        rec: dict[str, Any] = {
            "record": "decision", "action_id": uuid.uuid4().hex, "incident": incident,
            "alert_fingerprint": fingerprint, "telemetry_sha256": telemetry_hash(telemetry),
            "answer": dict(answer), "mode": "executed" if self.cfg.execute else "dry_run",
            "category": category, "target": target, "ratio": ratio, "component": None,
            "call": None, "reply": None, "reason": "", "started_at": started,
        }
        with self._lock:
            try:
                outcome, reason = self._decide_locked(rec, incident, category, target, ratio)
            except Exception as e:  # noqa: BLE001  (every decision gets its record, also an unexpected failure)
                log.exception("incident %s: the executor failed on %s %s", incident, category, target)
                outcome, reason = REFUSED, f"executor error, nothing done after the error: {e!r}"
        rec.update(outcome=outcome, reason=reason, finished_at=self.wall())
        self.audit.append(rec)
        log.info("incident %s: %s %s -> %s %s", incident, category, target, outcome, reason)
        return rec

    def _decide_locked(self, rec: dict, incident: str, category: Any, target: Any,
                       ratio: Any) -> tuple[str, str]:
        if category == "observe" and not rec["answer"].get("escalate"):
            return OBSERVED, "the healer chose to observe"
        if category == "escalate" or rec["answer"].get("escalate"):
            reasons = rec["answer"].get("escalate_reasons") or ["the healer escalated"]
            return PAGE, "; ".join(map(str, reasons))
        if not isinstance(target, str) or not target:
            return REFUSED, f"category {category!r} needs a target, got {target!r}"
        bound = self.binding.component_for(target)
        if bound is None:
            return PAGE, f"target {target!r} has no live binding: escalated, not guessed"
        name, comp = bound
        rec["component"] = name
        if comp.kind in self.cfg.deny_kinds or name in self.cfg.deny_components:
            return REFUSED, f"component {name!r} (kind {comp.kind}) is on the deny-list"
        handler = self.handlers.get(category)
        if handler is None:
            return REFUSED, (f"category {category!r} is not allow-listed (handlers: {sorted(self.handlers)})")
        if self._pending is not None:
            return REFUSED, (f"another action is in flight ({self._pending.action_id} on "
                             f"{self._pending.component!r}, verified at its SLO check)")
        if self._actions.get(incident, 0) >= self.cfg.max_actions_per_incident:
            return REFUSED, (f"incident {incident!r} already had {self._actions[incident]} actions "
                             f"(max_actions_per_incident = {self.cfg.max_actions_per_incident})")
        last = self._last_action.get(name)
        now = self.clock()
        if last is not None and now - last < self.cfg.cooldown_s:
            return REFUSED, (f"component {name!r} is cooling down ({now - last:.1f} s since its last action, "
                             f"cooldown_s = {self.cfg.cooldown_s})")
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float))
                                  or not 0.0 < float(ratio) < float("inf")):
            return REFUSED, f"ratio must be a positive number or null, got {ratio!r}"
        req = ActionRequest(category=category, target=target, component=name, binding=comp,
                            ratio=None if ratio is None else float(ratio))
        try:
            plan = handler(req)
        except Exception as e:  # noqa: BLE001  (a failed plan is a refused action, recorded with its error)
            log.warning("planning %s on %s failed: %r", category, name, e)
            return REFUSED, f"pre-check failed while planning: {e!r}"
        rec["call"] = plan.call
        problems = list(plan.problems)
        if plan.replicas is not None:
            before, after = plan.replicas
            rec["replicas"] = [before, after]
            if not self.cfg.min_replicas <= after <= self.cfg.max_replicas:
                problems.append(f"replicas {before} -> {after} outside the bounds [{self.cfg.min_replicas}, "
                                f"{self.cfg.max_replicas}]")
        if problems:
            return REFUSED, "pre-check failed: " + "; ".join(problems)
        if not self.cfg.execute:
            self._count(incident, name, now)
            return DRY_RUN, "dry-run: checks passed, nothing changed (set execute: true to act)"
        try:
            baseline = float(self.probe())
        except Exception as e:  # noqa: BLE001
            return REFUSED, f"pre-check failed: the SLO probe raised {e!r}"
        rec["slo_before"] = baseline
        self._count(incident, name, now)
        rec["executed_at"] = self.wall()
        try:
            rec["reply"] = plan.execute()
        except Exception as e:  # noqa: BLE001  (recorded; the action counts against the cap)
            rec["reply"] = {"error": repr(e)}
            return FAILED, f"the call failed: {e!r}"
        due = self.clock() + self.cfg.verify_after_s  # counted from the end of the call
        self._pending = _Pending(rec["action_id"], incident, name, due, baseline, plan)
        return EXECUTED, f"executed; SLOs checked again in {self.cfg.verify_after_s} s"

    def _count(self, incident: str, component: str, now: float) -> None:
        self._actions[incident] = self._actions.get(incident, 0) + 1
        self._last_action[component] = now

    # ------------------------------------------------------------------------------------------------ verify
    def poll(self) -> dict | None:
        """Verify the action in flight once its ``verify_after_s`` has passed: revert it when the SLO probe is
        worse than before by more than ``revert_margin``. Returns the follow-up audit record, or None when nothing
        was due."""
        with self._lock:
            p = self._pending
            if p is None or self.clock() < p.due:
                return None
            rec: dict[str, Any] = {"record": "verification", "action_id": p.action_id, "incident": p.incident,
                                   "component": p.component, "slo_before": p.baseline, "started_at": self.wall()}
            try:
                after = float(self.probe())
            except Exception as e:  # noqa: BLE001  (an unreadable probe counts as worse)
                after, rec["probe_error"] = float("inf"), repr(e)
            rec["slo_after"] = after
            if after > p.baseline + self.cfg.revert_margin:
                if p.plan.undo is None:
                    rec.update(outcome=REVERT_FAILED, reason="SLOs worse after the action and it has no undo")
                else:
                    rec["call"] = {"undo_of": p.plan.call}
                    try:
                        rec["reply"] = p.plan.undo()
                        rec.update(outcome=REVERTED, reason=f"SLO badness {after:.4g} > {p.baseline:.4g} + "
                                                            f"revert_margin {self.cfg.revert_margin}: undone")
                    except Exception as e:  # noqa: BLE001
                        rec.update(outcome=REVERT_FAILED, reply={"error": repr(e)}, reason=f"undo failed: {e!r}")
            else:
                rec.update(outcome=VERIFIED, reason=f"SLO badness {after:.4g} <= {p.baseline:.4g} + "
                                                    f"revert_margin {self.cfg.revert_margin}")
            rec["page"] = rec["outcome"] == REVERT_FAILED  # worse and not undone: a human must look
            self._pending = None
            rec["finished_at"] = self.wall()
            self.audit.append(rec)
            log.info("action %s: %s (%s)", p.action_id, rec["outcome"], rec["reason"])
            return rec

    def wait_verified(self, timeout_s: float, poll_s: float = 0.5) -> dict | None:
        """Poll every ``poll_s`` (wall time) until the action in flight is verified or reverted, at most
        ``timeout_s`` (live loop helper); returns the follow-up record or None."""
        for _ in range(max(1, math.ceil(timeout_s / poll_s)) + 1):
            rec = self.poll()
            if rec is not None or self._pending is None:
                return rec
            time.sleep(poll_s)
        return None

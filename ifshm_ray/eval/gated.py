"""The gate inside evaluation: policy spec ``gated:PATH`` (``jobs/evaluate.py --policy gated:PATH``).

PATH is a policy bundle or a run folder (``jobs/train.py --out``, ``jobs/continual.py``'s arm folders) that holds,
besides the bundle, the meta-controller's ``meta_state.json`` and a ``diagnoser.json``
(:mod:`ifshm_ray.meta.diagnose`), each looked up first in the bundle folder, then in PATH. The policy is then a
:class:`~ifshm_ray.meta.gate.GatedPolicy` over the bundle's policy and the blind runbook, with ``update=False``:
an evaluation never changes the meta-controller (no clustering, no trust outcomes).

Each episode record gets ``actor`` (policy / runbook / escalate: who acted from the first alarm on; ``policy`` for an
incident without any alarm), ``deferred``, ``novel`` and ``unknown_score``; :func:`gate_summary` turns them into the
deferral rate and the actors' shares, which :func:`~ifshm_ray.eval.harness.summarise` reports.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

PREFIX = "gated:"
BLIND_KNOWN_FILE = "blind_known.json"
"""Beside the gate of a run blind to more types than its split's unknown ones (``jobs/continual.py``'s pseudo-unknown
tuning): ``{"known": [...]}``, the only known types the gate's runbook may use."""


def _find(path: Path, bundle_dir: Path, name: str) -> Path:
    for folder in (bundle_dir, path):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"gated:{path}: no {name} in {bundle_dir} nor in {path} (a gated evaluation needs the "
                            "meta-controller's state and a diagnoser beside the policy bundle; jobs/continual.py "
                            "writes both into each arm's folder)")


def load_gate(path: str | Path):
    """``(meta-controller, diagnoser)`` for ``gated:PATH``."""
    from ifshm_ray.meta.controller import STATE_FILE, MetaController
    from ifshm_ray.meta.diagnose import DIAGNOSER_FILE, load_diagnoser
    from ifshm_ray.policy.bundle import BUNDLE_DIRNAME

    path = Path(path).expanduser().resolve()
    bundle_dir = path / BUNDLE_DIRNAME if (path / BUNDLE_DIRNAME).is_dir() else path
    meta = MetaController.load(_find(path, bundle_dir, STATE_FILE))
    if meta.calibration is None:
        raise ValueError(f"gated:{path}: its meta_state.json has no novelty calibration, so the gate would pass "
                         "every incident to the policy; calibrate it first (meta.calibration)")
    return meta, load_diagnoser(_find(path, bundle_dir, DIAGNOSER_FILE))


def load_blind_known(path: str | Path) -> list[str] | None:
    """The known types of ``path``'s ``blind_known.json`` (:data:`BLIND_KNOWN_FILE`), None without one."""
    import json

    from ifshm_ray.policy.bundle import BUNDLE_DIRNAME

    path = Path(path).expanduser().resolve()
    for folder in (path / BUNDLE_DIRNAME, path):
        if (folder / BLIND_KNOWN_FILE).is_file():
            return list(json.loads((folder / BLIND_KNOWN_FILE).read_text())["known"])
    return None


def make_gated_policy(policy: Any, path: str | Path, env: Any = None):
    """A :class:`GatedPolicy` (``update=False``) over ``policy`` (the bundle's, already loaded) with the gate of
    ``path``; a deferred incident goes to the blind runbook of ``env``'s split (its known types' rules only, or
    those of :func:`load_blind_known`'s types when ``path`` has a ``blind_known.json``)."""
    from ifshm_ray.baselines.policies import make_baseline
    from ifshm_ray.meta.gate import GatedPolicy

    meta, diagnose = load_gate(path)
    runbook = make_baseline("runbook", 0, getattr(getattr(env, "unwrapped", env), "sim_cfg", None),
                            known=load_blind_known(path))
    gated = GatedPolicy(policy, runbook, meta, diagnose, update=False)
    gated.name = f"gated({Path(path).name})"
    return gated


def gate_fields(policy: Any) -> dict[str, Any]:
    """The gate's per-episode fields of a finished episode ({} for a policy without a gate)."""
    if not hasattr(policy, "decision") or not hasattr(policy, "meta"):
        return {}
    d = policy.decision
    if d is None:  # no alarm in the whole episode: the policy acted throughout
        return {"actor": "policy", "deferred": False, "novel": False, "unknown_score": None}
    return {"actor": d.actor, "deferred": bool(d.deferred), "novel": bool(d.novel),
            "unknown_score": d.unknown_score}


def gate_summary(records: list[dict]) -> dict[str, Any]:
    """``deferral_rate`` and ``actor_shares`` (and the flagged-novel rate) of records with gate fields; {} when
    none has them."""
    gated = [r for r in records if "actor" in r]
    if not gated:
        return {}
    actors = [r["actor"] for r in gated]
    return {"deferral_rate": float(np.mean([r["deferred"] for r in gated])),
            "novel_rate": float(np.mean([r["novel"] for r in gated])),
            "actor_shares": {a: float(np.mean([x == a for x in actors])) for a in ("policy", "runbook", "escalate")}}

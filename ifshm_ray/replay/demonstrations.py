"""Demonstrations for the replay (``replay.demonstrations`` of a training config): incidents of the known fault types
handled by a blind reference (the runbook of the env's split), recorded as RLlib episodes in the policy's action
space and pushed into a stratum of their own before training starts (see
:class:`~ifshm_ray.replay.config.DemonstrationsConfig`).

The reference sees what the policy sees (telemetry and alarms; the blind runbook knows only the split's known types),
so nothing of the held-out types reaches training through it. The incidents are recorded on a single
``FaultInjectionEnv`` with the training env's simulator settings, one fault type at a time, at seeds of their own
(:func:`demo_seed`).
"""
from __future__ import annotations

import time
import zlib
from typing import Any, Callable, Sequence

from ifshm_ray.replay.config import DemonstrationsConfig

DEMO_SEED_BASE = 1_500_000_007
"""Offset of the demonstration seeds, a formula of their own: the evaluation's seeds (``jobs/evaluate.py --seed``, the
continual protocol's ``incident_seed``) come from other formulas over the same 2^31 range, so a demonstration can
coincide with an evaluation incident only by chance (about 1 in 2^31 per pair; not excluded)."""


def demo_seed(run_seed: int, demo: DemonstrationsConfig, fault: str, i: int) -> int:
    """Seed of demonstration incident ``i`` of ``fault``: a function of the run's seed, ``demo.seed``, the fault name
    and ``i`` only (the same demonstrations for every run with those)."""
    return (DEMO_SEED_BASE + run_seed * 1_000_003 + demo.seed * 104_729 + zlib.crc32(fault.encode()) * 7919 + i) \
        % (2**31 - 1)


def demo_env_config(env_config: dict) -> dict:
    """The config of a single ``FaultInjectionEnv`` for demonstrations from a training env config: the same simulator
    settings and the same observation (log features mined from rendered logs only where the training env mines them),
    the telemetry rendered for the reference (the runbook reads alarms and logs), every fault type drawable (each
    reset names one); the training env's fault set and seed dropped (``split_env_config`` drops the vector-only
    keys)."""
    out = {k: v for k, v in env_config.items() if k not in ("faults", "seed")}
    out["mine_logs"] = bool(env_config.get("mine_logs", env_config.get("render_telemetry", False)))
    return {**out, "render_telemetry": True, "faults": "all"}


def record_demonstrations(demo: DemonstrationsConfig, env_config: dict, known: Sequence[str], run_seed: int,
                          progress: Callable[[str], None] | None = None) -> tuple[list[Any], dict[str, Any]]:
    """Record ``demo.incidents_per_type`` incidents of each type in ``known`` with ``demo.policy``; returns the
    episodes to store (the successful ones only with ``demo.healed_only``) and a summary (per type: recorded,
    stored, mean MTTR and success of the reference)."""
    from ifshm_ray.baselines import make_baseline
    from ifshm_ray.env import FaultInjectionEnv
    from ifshm_ray.meta.gate import record_incident

    if not demo.enabled:
        raise ValueError("replay.demonstrations.policy is not set")
    if not known:
        raise ValueError("demonstrations need at least one known fault type")
    env = FaultInjectionEnv(demo_env_config(env_config))
    try:
        missing = sorted(set(known) - set(env.sim.fault_names))
        if missing:
            raise ValueError(f"demonstrations: fault types {missing} are not in the env's catalog")
        policy = make_baseline(demo.policy, run_seed, env.sim_cfg, known=list(known))
        episodes, per_type = [], {}
        t0 = time.time()
        for k, fault in enumerate(known):
            mttr, ok, stored = [], 0, 0
            for i in range(demo.incidents_per_type):
                rec = record_incident(env, policy, fault, demo_seed(run_seed, demo, fault, i))
                success = bool(rec.info["success"])
                mttr.append(float(rec.info["mttr_s"]))
                ok += success
                if success or not demo.healed_only:
                    episodes.append(rec.episode)
                    stored += 1
            per_type[fault] = {"recorded": demo.incidents_per_type, "stored": stored,
                               "mttr_s": sum(mttr) / len(mttr), "success": ok / demo.incidents_per_type}
            if progress is not None:
                progress(f"demonstrations by {demo.policy}: {fault} ({k + 1}/{len(known)}): {stored} stored of "
                         f"{demo.incidents_per_type}, success {ok / demo.incidents_per_type:.0%}, "
                         f"MTTR {per_type[fault]['mttr_s']:.0f} s ({time.time() - t0:.0f} s)")
    finally:
        env.close()
    summary = {"policy": demo.policy, "stratum": demo.stratum, "episodes": len(episodes),
               "steps": int(sum(len(e) for e in episodes)), "per_type": per_type}
    return episodes, summary

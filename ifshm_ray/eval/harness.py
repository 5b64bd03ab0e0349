"""Run a policy on the simulator for a set of faults and summarise MTTR, detection, repair, success and harm.

Episode seeds depend only on (seed, fault, episode index), so every policy meets exactly the same incidents.
"""
from __future__ import annotations

import logging
import math
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from ifshm_ray.baselines import BASELINES, make_baseline
from ifshm_ray.baselines.policies import Policy, runbook_sha256
from ifshm_ray.config import SimConfig, to_dict
from ifshm_ray.env import FaultInjectionEnv
from ifshm_ray.sim.catalog import load_catalog

log = logging.getLogger(__name__)


def episode_seed(seed: int, fault: str, i: int) -> int:
    return (seed * 1_000_003 + zlib.crc32(fault.encode()) * 7919 + i) % (2**31 - 1)


def make_policy(spec: str, seed: int = 0, env: FaultInjectionEnv | None = None) -> Policy:
    """``oracle | runbook | runbook-instant | random | checkpoint:PATH | gated:PATH``. A checkpoint must fit
    ``env``'s action space (topology) and observation size, otherwise a clear error says so. ``gated:PATH``: the
    checkpoint behind the meta-controller's gate (:mod:`ifshm_ray.eval.gated`)."""
    if spec.startswith("gated:"):
        from ifshm_ray.eval.gated import make_gated_policy

        path = spec.split(":", 1)[1]
        return make_gated_policy(make_policy("checkpoint:" + path, seed, env), path)
    if spec.startswith("checkpoint:"):
        from ifshm_ray.policy.bundle import PolicyBundleError, action_space_hash_of_env, load_policy_bundle

        path = spec.split(":", 1)[1]
        expected = action_space_hash_of_env(env) if env is not None else None
        bundle = load_policy_bundle(path, expected_action_space_hash=expected)
        if env is not None:
            want = env.observation_space["obs"].shape
            have = getattr(bundle.module.observation_space, "spaces", {}).get("obs")
            if have is not None and have.shape != want:
                raise PolicyBundleError(f"{path}: policy observation size {have.shape} != env's {want}: it was "
                                        "trained with another simulator config, catalog or observation version (bundles from "
                                        "before observation v2, which dropped the hidden healthy streak, must be "
                                        "retrained with jobs/train.py); evaluate with the same")
        return _BundlePolicy(bundle, spec)
    if spec in BASELINES:
        return make_baseline(spec, seed)
    raise ValueError(f"unknown policy {spec!r}; valid: {list(BASELINES)}, checkpoint:PATH or gated:PATH")


class _BundlePolicy(Policy):
    def __init__(self, bundle, name: str):
        self.bundle, self.name = bundle, name

    def act(self, obs, info, env):
        return np.asarray(self.bundle.act(obs, deterministic=True), np.int64)


def run_episode(env: FaultInjectionEnv, policy: Policy, fault: str, seed: int) -> dict:
    obs, info = env.reset(seed=seed, options={"faults": [fault]})
    policy.reset(env, episode_seed=seed)
    done = False
    ret = 0.0
    while not done:
        a = policy.act(obs, info, env)
        obs, r, term, trunc, info = env.step(a)
        ret += r
        done = term or trunc
    detect = info["detect_s"]
    rec = {"fault": fault, "seed": seed, "mttr_s": info["mttr_s"], "detect_s": detect,
           "repair_s": (info["mttr_s"] - detect) if (info["recovered"] and not math.isnan(detect)) else float("nan"),
           "recovered": info["recovered"], "success": info["success"], "escalated": info["escalated"],
           "harmful_actions": info["harmful_actions"], "actions": info["actions"], "return": ret}
    from ifshm_ray.eval.gated import gate_fields

    rec.update(gate_fields(policy))  # a gated policy: who acted, deferred, novel, unknown score
    return rec


def run_chunk(policy_spec: str, sim_cfg: dict, jobs: list[tuple[str, int]], policy_seed: int) -> list[dict]:
    """Episodes ``jobs`` = [(fault, seed), ...] for one policy (runs inside a Ray task or locally)."""
    needs_text = policy_spec.startswith(("runbook", "gated:"))
    env = FaultInjectionEnv({**sim_cfg, "render_telemetry": needs_text or policy_spec.startswith("checkpoint:"),
                             "mine_logs": not policy_spec in ("oracle", "random")})
    policy = make_policy(policy_spec, policy_seed, env)
    return [run_episode(env, policy, f, s) for f, s in jobs]


def evaluate(policy_spec: str, faults: list[str], episodes: int, seed: int, sim_cfg: SimConfig,
             use_ray: bool = True, chunks: int | None = None, num_cpus_per_task: float = 1.0,
             progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """All episodes of one policy: ``episodes`` per fault, in parallel Ray tasks when ``use_ray``."""
    cfg = to_dict(sim_cfg)
    cfg.pop("faults", None)
    cfg["faults"] = list(faults)
    if policy_spec.startswith(("checkpoint:", "gated:")):  # fail fast, here, with a clear message (topology, obs
        from pathlib import Path  # size, files)

        kind, _, where = policy_spec.partition(":")
        policy_spec = f"{kind}:" + str(Path(where).expanduser().resolve())  # for workers
        make_policy(policy_spec, seed, FaultInjectionEnv({**cfg, "render_telemetry": False}))
    jobs = [(f, episode_seed(seed, f, i)) for f in faults for i in range(episodes)]
    if not use_ray:
        out = []
        for i in range(0, len(jobs), max(episodes, 1)):
            out += run_chunk(policy_spec, cfg, jobs[i:i + episodes], seed)
            if progress:
                progress(len(out), len(jobs))
        return out
    import ray

    n = chunks or max(1, min(len(jobs), 4 * int(ray.available_resources().get("CPU", 2))))
    parts = [jobs[i::n] for i in range(n) if jobs[i::n]]
    task = ray.remote(num_cpus=num_cpus_per_task)(run_chunk)
    pending = [task.remote(policy_spec, cfg, p, seed) for p in parts]
    out: list[dict] = []
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        out += ray.get(ready[0])
        if progress:
            progress(len(out), len(jobs))
    order = {j: i for i, j in enumerate(jobs)}
    out.sort(key=lambda r: order[(r["fault"], r["seed"])])
    return out


def summarise(records: list[dict], policy: str, fault_set: str, time_limit_s: float,
              catalog: str | Path | None = None) -> dict:
    """metrics.json content. Failed episodes (not recovered, or escalated) count in MTTR as they ended; an episode
    that never recovered counts at the time limit. ``catalog``: the fault catalog the episodes ran on
    (``SimConfig.catalog``; None: the packaged one), whose hash is recorded as ``catalog_sha256``."""
    mttr = np.array([r["mttr_s"] for r in records])
    det = np.array([r["detect_s"] for r in records], dtype=float)
    rep = np.array([r["repair_s"] for r in records], dtype=float)
    acts = sum(r["actions"] for r in records)
    per_fault = {}
    for f in dict.fromkeys(r["fault"] for r in records):
        rs = [r for r in records if r["fault"] == f]
        per_fault[f] = {"mttr_mean_s": float(np.mean([r["mttr_s"] for r in rs])),
                        "success_rate": float(np.mean([r["success"] for r in rs])),
                        "detect_mean_s": _nanmean([r["detect_s"] for r in rs]),
                        "repair_mean_s": _nanmean([r["repair_s"] for r in rs]),
                        "episodes": len(rs)}
    cat = load_catalog(catalog)
    return {
        "policy": policy, "fault_set": fault_set, "episodes": len(records),
        "mttr_mean_s": float(mttr.mean()), "mttr_p50_s": float(np.percentile(mttr, 50)),
        "mttr_p95_s": float(np.percentile(mttr, 95)),
        "detect_mean_s": _nanmean(det), "repair_mean_s": _nanmean(rep),
        "success_rate": float(np.mean([r["success"] for r in records])),
        "recovered_rate": float(np.mean([r["recovered"] for r in records])),
        "escalation_rate": float(np.mean([r["escalated"] for r in records])),
        "harmful_action_rate": float(sum(r["harmful_actions"] for r in records) / acts) if acts else 0.0,
        "mean_return": float(np.mean([r["return"] for r in records])),
        "catalog_sha256": cat.sha256, "runbook_sha256": runbook_sha256(),
        "time_limit_s": time_limit_s,
        "note": "episodes that never recovered count in MTTR at the time limit; escalated ones at the human's fix",
        "per_fault": per_fault,
        **_gate_summary(records),
    }


def _gate_summary(records: list[dict]) -> dict:
    from ifshm_ray.eval.gated import gate_summary

    return gate_summary(records)


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else float("nan")

#!/usr/bin/env python
"""Reproducibility check: hashes of simulator rollouts and of the references' evaluation metrics. Prints ONE JSON line.

    python benchmarks/repro_hashes.py                      # print the hashes
    python benchmarks/repro_hashes.py --check              # compare with tests/data/repro_hashes.json (exit 1 on a change)
    python benchmarks/repro_hashes.py --write              # record the current hashes as the reference

What is hashed (every fault type of the catalog, fixed seeds):
  * ``single/<fault>``: a FaultInjectionEnv with raw telemetry (log lines, metric windows, alarms) rendered and mined,
    40 steps of random valid actions then the oracle's actions: observations (obs + masks), rewards, flags and the
    telemetry JSON of every step.
  * ``batched``: 16 clusters in FaultInjectionVectorEnv (the class RLlib's env runners step), 60 steps of random valid
    actions with its auto-resets: observations, rewards, terminated/truncated and the episode-end infos.
  * ``eval/<policy>``: the evaluation harness (``ifshm_ray.eval.harness.evaluate`` without Ray) of every reference
    of ``ifshm_ray.baselines.BASELINES`` (oracle, runbook, runbook-full, runbook-instant, nearest-known,
    escalate-first, random), 1 episode per fault type: the per-episode records.
A refactoring that must not change behaviour gives the same hashes before and after (``--check``). Takes ~30-60 s.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from ifshm_ray.baselines import BASELINES
from ifshm_ray.config import SimConfig
from ifshm_ray.env import FaultInjectionEnv, FaultInjectionVectorEnv, sample_valid_actions
from ifshm_ray.eval.harness import evaluate
from ifshm_ray.sim.catalog import load_catalog

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "repro_hashes.json"
POLICIES = tuple(BASELINES)
"""Every reference policy (a new one in BASELINES gets its hash here; re-record the reference with --write)."""


def _update_obs(h, obs: dict) -> None:
    for k in sorted(obs):
        h.update(k.encode())
        h.update(np.ascontiguousarray(obs[k]).tobytes())


def single_hash(fault: str, seed: int, random_steps: int = 40, total_steps: int = 80) -> str:
    env = FaultInjectionEnv({"faults": "all", "render_telemetry": True})
    rng = np.random.default_rng(seed)
    h = hashlib.sha256()
    obs, info = env.reset(seed=seed, options={"faults": [fault]})
    _update_obs(h, obs)
    h.update(json.dumps(info["telemetry"], sort_keys=True).encode())
    for i in range(total_steps):
        a = sample_valid_actions(obs["action_mask"][None], rng, env.topology.T)[0] if i < random_steps else env.oracle_action()
        obs, r, term, trunc, info = env.step(a)
        _update_obs(h, obs)
        h.update(np.float64(r).tobytes())
        h.update(json.dumps({"term": term, "trunc": trunc, "invalid": info["invalid_action"],
                             "harmful": info["harmful"], "time_s": info["time_s"]}, sort_keys=True).encode())
        h.update(json.dumps(info["telemetry"], sort_keys=True).encode())
        if term or trunc:
            h.update(json.dumps({k: v for k, v in info.items() if k != "telemetry"}, sort_keys=True,
                                default=str).encode())
            obs, info = env.reset(seed=seed + i + 1, options={"faults": [fault]})
            _update_obs(h, obs)
    return h.hexdigest()[:16]


def batched_hash(num_envs: int = 16, steps: int = 60, seed: int = 7) -> str:
    env = FaultInjectionVectorEnv({"faults": "all", "num_envs": num_envs})
    rng = np.random.default_rng(seed)
    h = hashlib.sha256()
    obs, _ = env.reset(seed=seed)
    _update_obs(h, obs)
    for _ in range(steps):
        a = sample_valid_actions(obs["action_mask"], rng, env.topology.T)
        obs, r, term, trunc, infos = env.step(a)
        _update_obs(h, obs)
        for x in (r, term, trunc):
            h.update(np.ascontiguousarray(x).tobytes())
        for k in sorted(infos):
            h.update(k.encode())
            h.update(np.ascontiguousarray(infos[k]).tobytes())
    return h.hexdigest()[:16]


def eval_hash(policy: str, faults: list[str], seed: int = 1000) -> str:
    records = evaluate(policy, faults, episodes=1, seed=seed, sim_cfg=SimConfig(), use_ray=False)
    return hashlib.sha256(json.dumps(records, sort_keys=True, default=str).encode()).hexdigest()[:16]


def compute(log=None) -> dict:
    faults = list(load_catalog().names)
    out: dict = {}
    for i, f in enumerate(faults):
        out[f"single/{f}"] = single_hash(f, seed=100 + i)
    out["batched"] = batched_hash()
    for p in POLICIES:
        out[f"eval/{p}"] = eval_hash(p, faults)
        if log:
            log(f"eval/{p} done")
    return out


def compare(ref: dict, got: dict) -> dict:
    """``{"changed": [...], "missing": [...], "stale": [...]}``: keys whose hash differs, keys computed now that the
    reference lacks (a new reference policy or fault type: re-record), keys of the reference no longer computed."""
    return {"changed": sorted(k for k in set(ref) & set(got) if ref[k] != got[k]),
            "missing": sorted(set(got) - set(ref)), "stale": sorted(set(ref) - set(got))}


def describe(diff: dict) -> str:
    """One message for a failed check (empty when the hashes match)."""
    parts = []
    if diff["missing"]:
        parts.append(f"no reference hash for {diff['missing']} in {REFERENCE.name}: record them with "
                     "`python benchmarks/repro_hashes.py --write` (after checking nothing else changed)")
    if diff["stale"]:
        parts.append(f"{REFERENCE.name} holds {diff['stale']}, which are no longer computed")
    if diff["changed"]:
        parts.append(f"behaviour changed for {diff['changed']}; re-record only for a deliberate change")
    return "; ".join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help=f"compare with {REFERENCE.name}; exit 1 on any difference")
    g.add_argument("--write", action="store_true", help=f"record the hashes as the reference ({REFERENCE})")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    hashes = compute(log=lambda m: print(m, file=sys.stderr))
    result = {"bench": "repro_hashes", "wall_s": round(time.perf_counter() - t0, 1), "hashes": hashes}
    if args.write:
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        REFERENCE.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    if args.check:
        ref = json.loads(REFERENCE.read_text())
        result.update(compare(ref, hashes))
        print(json.dumps(result))
        return 1 if result["changed"] or result["missing"] or result["stale"] else 0
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

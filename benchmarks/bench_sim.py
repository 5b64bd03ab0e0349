#!/usr/bin/env python
"""Simulator throughput. Prints ONE JSON line.

    python benchmarks/bench_sim.py [--seconds 5] [--batch 2048]

Measures env-steps/s with uniformly random valid actions (so every action mechanic is exercised) for:
  * single_raw:      FaultInjectionEnv with raw telemetry rendered every step and log templates mined from the text
  * single_numeric:  FaultInjectionEnv with numeric observations only (render_telemetry=False)
  * batched_numeric: FaultInjectionVectorEnv, the class training runs (the same simulator, B clusters per numpy
                     call, masked actions checked, NEXT_STEP autoreset)
All on one core (OMP/MKL threads = 1). Rates are per CPU-second of this process (time.process_time), so they
stay meaningful when other work shares the machine; wall-clock rates are reported too (`*_wall`).
Targets (issue 12): batched numeric >= 50,000 steps/s, single raw >= 1,500 steps/s.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(v, "1")

import numpy as np  # noqa: E402

from ifshm_ray.env import FaultInjectionEnv, FaultInjectionVectorEnv, sample_valid_actions  # noqa: E402
from ifshm_ray.sim.actions import CATEGORIES, NUM_RATIOS, RATIO_CATEGORIES  # noqa: E402

RATIO_CATS = np.array([c in RATIO_CATEGORIES for c in CATEGORIES])



def sample_one(mask: np.ndarray, rng: np.random.Generator, T: int) -> tuple[int, int, int]:
    """One random valid (category, target, ratio) for a single env's [C*T] mask: the distribution of
    :func:`~ifshm_ray.env.sample_valid_actions` (uniform over the valid (category, target) pairs, uniform ratio level where it is read) at a
    fraction of its numpy calls, so that the policy's cost does not hide the env's."""
    valid = np.flatnonzero(mask)
    c, t = divmod(int(valid[rng.integers(len(valid))]), T)
    return c, t, int(rng.integers(NUM_RATIOS)) if RATIO_CATS[c] else 0


def bench_single(render: bool, seconds: float) -> tuple[float, float]:
    env = FaultInjectionEnv({"faults": "all", "render_telemetry": render})
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    T = env.topology.T
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.process_time() - c0 < seconds:
        obs, _, term, trunc, _ = env.step(sample_one(obs["action_mask"], rng, T))
        n += 1
        if term or trunc:
            obs, _ = env.reset()
    return n / (time.process_time() - c0), n / (time.perf_counter() - t0)


def bench_batched(batch: int, seconds: float) -> tuple[float, float]:
    env = FaultInjectionVectorEnv({"faults": "all"}, num_envs=batch)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=list(range(batch)))
    T = env.topology.T
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.process_time() - c0 < seconds:
        obs, *_ = env.step(sample_valid_actions(obs["action_mask"], rng, T))
        n += batch
    return n / (time.process_time() - c0), n / (time.perf_counter() - t0)


def main() -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0, help="wall seconds per measurement")
    p.add_argument("--batch", type=int, default=2048, help="clusters per batched step")
    a = p.parse_args()
    res = {}
    for name, (cpu, wall) in (("single_raw", bench_single(True, a.seconds)),
                              ("single_numeric", bench_single(False, a.seconds)),
                              ("batched_numeric", bench_batched(a.batch, a.seconds))):
        res[f"{name}_steps_per_s"] = round(cpu, 1)
        res[f"{name}_steps_per_s_wall"] = round(wall, 1)
    res.update({
        "batch": a.batch,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 thread used",
    })
    res["targets_met"] = res["batched_numeric_steps_per_s"] >= 50_000 and res["single_raw_steps_per_s"] >= 1_500
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()

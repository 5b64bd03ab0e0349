#!/usr/bin/env python
"""Evaluation cost per episode of every reference and of a trained-policy stand-in, per fault set. Prints ONE JSON
line.

    python benchmarks/bench_eval.py [--split handpicked] [--samples 6] [--seed 1000]

For each policy (every reference of BASELINES, and ``checkpoint``: an untrained hierarchical policy bundle with the
demo's network sizes, which stands in for a trained one: the same per-step cost, and it rarely ends an episode early)
and each fault set (known, unknown, compound, fault_free of the split), ``--samples`` episodes spread evenly over
the set's episodes (``ifshm_ray.eval.harness.make_jobs``) run in this process exactly as a Ray task of the harness runs
them (``run_chunk``'s env and policy, ``run_episode``). Reported per policy: ``setup_cpu_s`` (env + policy
construction, paid once per evaluation chunk) and per set ``cpu_s_per_episode``; plus ``nearest_known_build_cpu_s``,
building nearest-known's prototypes with an empty cache (paid once per machine, split and simulator config).
Times are CPU seconds of this process (time.process_time, one thread), so they stay meaningful when other work
shares the machine; the evaluation's wall time on N free cores is about their sum / N. jobs/pipeline.py's start-up
estimate reads these figures from configs/stage_timings.yaml.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(v, "1")

import numpy as np  # noqa: E402

from ifshm_ray.baselines import BASELINES  # noqa: E402
from ifshm_ray.config import SimConfig, to_dict  # noqa: E402
from ifshm_ray.env import FaultInjectionEnv  # noqa: E402
from ifshm_ray.eval.harness import make_jobs, make_policy, run_episode  # noqa: E402
from ifshm_ray.sim.catalog import load_catalog  # noqa: E402

SETS = ("known", "unknown", "compound", "fault_free")
DEMO_MODEL = {"encoder_hiddens": [128, 128], "head_hiddens": [64], "vf_hiddens": [128, 128], "activation": "tanh",
              "category_embed_dim": 16}
"""Network sizes of configs/demo*.yaml (the stand-in's per-step cost is the trained policy's)."""


def spread(jobs: list, n: int) -> list:
    """``n`` jobs spread evenly over ``jobs`` (every fault type of a set gets its share)."""
    idx = np.linspace(0, len(jobs) - 1, num=min(n, len(jobs))).round().astype(int)
    return [jobs[i] for i in dict.fromkeys(idx.tolist())]


def bench_policy(spec: str, sim_cfg: SimConfig, split: str, samples: int, seed: int) -> dict:
    cfg = to_dict(sim_cfg)
    cfg["faults"] = "all"
    needs_text = spec not in ("oracle", "random")  # (as ifshm_ray.eval.harness.run_chunk builds its env)
    c0 = time.process_time()
    env = FaultInjectionEnv({**cfg, "render_telemetry": needs_text, "mine_logs": needs_text})
    policy = make_policy(spec, seed, env)
    out = {"setup_cpu_s": round(time.process_time() - c0, 3), "sets": {}}
    cat = load_catalog(sim_cfg.catalog)
    for fs in SETS:
        jobs = spread(make_jobs(fs, cat, split, 1, seed), samples)
        c0 = time.process_time()
        recs = [run_episode(env, policy, f, s) for f, s in jobs]
        cpu = time.process_time() - c0
        out["sets"][fs] = {"cpu_s_per_episode": round(cpu / len(jobs), 4), "episodes": len(jobs),
                           "success_rate": round(float(np.mean([r["success"] for r in recs])), 2)}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="handpicked", help="named split (default handpicked)")
    ap.add_argument("--samples", type=int, default=6, help="episodes per policy and fault set (default 6)")
    ap.add_argument("--seed", type=int, default=1000,
                    help="seed of the incidents (default 1000, configs/pipeline.yaml's)")
    ap.add_argument("--policies", default=",".join((*BASELINES, "checkpoint")),
                    help="comma-separated: references and/or 'checkpoint' (the untrained stand-in)")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    sim_cfg = SimConfig(split=a.split)
    t0 = time.perf_counter()
    result: dict = {"bench": "eval_cost", "split": a.split, "samples": a.samples, "seed": a.seed,
                    "loadavg_1m_start": round(os.getloadavg()[0], 2), "policies": {}}
    with tempfile.TemporaryDirectory() as tmp:
        pols = [p.strip() for p in a.policies.split(",") if p.strip()]
        if "nearest-known" in pols:  # prototypes from an empty cache: the first evaluation on a fresh machine
            from ifshm_ray.baselines.config import NearestKnownConfig
            from ifshm_ray.baselines.nearest import build_prototypes

            c0 = time.process_time()
            build_prototypes(sim_cfg, NearestKnownConfig(cache_dir=tmp))
            result["nearest_known_build_cpu_s"] = round(time.process_time() - c0, 2)
        for p in pols:
            spec = p
            if p == "checkpoint":
                from ifshm_ray.serve.testing import untrained_policy_bundle

                spec = "checkpoint:" + str(untrained_policy_bundle(os.path.join(tmp, "bundle"),
                                                                   {"faults": "known", "split": a.split}, DEMO_MODEL))
            result["policies"][p] = bench_policy(spec, sim_cfg, a.split, a.samples, a.seed)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

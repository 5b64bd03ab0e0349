"""Latency and throughput of the IFSHM Serve app against a no-op Serve endpoint, on loopback, in one run.

How to run
----------
::

    .venv/bin/python benchmarks/bench_serve.py                                   # untrained bundle, minilm, 50 clients
    .venv/bin/python benchmarks/bench_serve.py --checkpoint results/demo --concurrency 50 --seconds 10
    RAY_SERVE_THROUGHPUT_OPTIMIZED=1 .venv/bin/python benchmarks/bench_serve.py    # Serve's throughput mode

It starts a local Ray (``--num-cpus``, default 2) and Serve on 127.0.0.1 with two applications: the IFSHM app
(``build_app``: ingress + encoder deployment, the given policy bundle and encoder preset) and a no-op FastAPI
deployment (``POST /noop`` reads the body and answers ``{}``) with the same CPU share as the ingress. Then ``--concurrency`` clients
(asyncio + httpx, one process, keep-alive connections) post telemetry windows for ``--seconds`` per phase:

* ``noop``: the same payloads to the no-op endpoint (the baseline: Serve's own overhead under this load);
* ``heal`` / ``diagnose`` (warm cache): a pool of ``--pool`` simulator windows, repeated, so the encoder's and the
  policy's result caches answer after the first round;
* ``heal_cold`` / ``diagnose_cold`` (with ``--cold``, default on): every request unique (a fresh window variant:
  a log line with random words, so a new template for the LM, and jittered metrics, so a new observation).

Without ``--checkpoint`` an untrained policy bundle with the default network sizes is exported to a temp dir
(same inference cost as a trained one). Prints ONE JSON line: ``<phase>_p50_ms``, ``_p95_ms``, ``_p99_ms``,
``_rps``, ``_errors`` for every phase, the ratios ``heal_rps_ratio`` (heal rps / noop rps, target >= 0.5) and
``heal_p50_ratio`` (heal p50 / noop p50, target <= 2), and the machine (cores, load average).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import string
import tempfile
import time
from pathlib import Path

import numpy as np


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Serve latency/throughput vs a no-op Serve endpoint (one JSON line).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="Policy bundle (jobs/train.py --out); default: untrained.")
    p.add_argument("--model", default="minilm", help="Encoder preset (when --encoder is not given).")
    p.add_argument("--encoder", default=None, help="Fine-tuned encoder checkpoint (jobs/finetune_encoder.py --out).")
    p.add_argument("--concurrency", type=int, default=50, help="Concurrent clients.")
    p.add_argument("--seconds", type=float, default=10.0, help="Measured seconds per phase.")
    p.add_argument("--warmup", type=float, default=2.0, help="Unmeasured seconds before each phase.")
    p.add_argument("--pool", type=int, default=8, help="Distinct windows of the warm-cache phases.")
    p.add_argument("--cold", action=argparse.BooleanOptionalAction, default=True,
                   help="Also measure unique payloads (cold caches).")
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray.")
    p.add_argument("--ingress-cpus", type=float, default=0.5, help="CPUs of the ingress and of the no-op replica.")
    p.add_argument("--encoder-cpus", type=float, default=0.5, help="CPUs of the encoder replica.")
    p.add_argument("--max-batch-size", type=int, default=16, help="@serve.batch size of the encoder.")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_noop_app(num_cpus: float):
    """The baseline: a Serve deployment that reads the request body and answers ``{}`` (no FastAPI, no model)."""
    from ray import serve

    @serve.deployment(name="Noop", max_ongoing_requests=128, ray_actor_options={"num_cpus": num_cpus})
    class Noop:
        async def __call__(self, request) -> dict:
            await request.body()
            return {}

    return Noop.bind()


def unique_variant(window: dict, rng: random.Random) -> dict:
    """A copy of ``window`` that no cache has seen: a log line with random words, jittered metric samples."""
    w = json.loads(json.dumps(window))
    words = " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 9))) for _ in range(4))
    w["logs"] = list(w.get("logs", [])) + [f"2026-11-28 10:15:02.113 4211 ERROR worker.{words} failed: {words}"]
    for series in w.get("metrics", {}).values():
        for name, vals in series.items():
            if vals:
                series[name] = vals[:-1] + [vals[-1] * (1.0 + rng.uniform(-0.02, 0.02)) + rng.uniform(0, 1e-3)]
    return w


async def drive(url: str, bodies, concurrency: int, seconds: float, warmup: float) -> dict:
    """``concurrency`` clients post ``bodies()`` (a callable giving the next JSON body) for warmup + seconds."""
    import httpx

    lat: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:
        t_start = time.perf_counter()
        t_measure = t_start + warmup
        t_end = t_measure + seconds

        async def worker():
            nonlocal errors
            while True:
                body = bodies()
                t0 = time.perf_counter()
                if t0 >= t_end:
                    return
                try:
                    r = await client.post(url, content=body, headers={"content-type": "application/json"})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                t1 = time.perf_counter()
                if t0 >= t_measure and t1 <= t_end:
                    if ok:
                        lat.append(t1 - t0)
                    else:
                        errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    if not lat:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "rps": 0.0, "errors": errors, "n": 0}
    a = np.asarray(lat) * 1000.0
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99)), "rps": len(lat) / seconds, "errors": errors, "n": len(lat)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from ifshm_ray.policy.config import PolicySection
    from ifshm_ray.serve.app import build_app
    from ifshm_ray.serve.testing import sample_windows, untrained_policy_bundle

    tmp = tempfile.mkdtemp(prefix="ifshm_bench_serve_")
    checkpoint = args.checkpoint or str(untrained_policy_bundle(Path(tmp) / "run",
                                                                model_config=PolicySection().rl_module_config()))
    windows = sample_windows(max(args.pool, 32), seed=11)
    pool = [json.dumps({"telemetry": w}).encode() for w in windows[-args.pool:]]
    rng = random.Random(0)

    temp_dir = tempfile.mkdtemp(prefix="ifb-", dir="/tmp")
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False,
             _temp_dir=temp_dir)
    port = free_port()
    result: dict = {}
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(make_noop_app(args.ingress_cpus), name="noop", route_prefix="/noop")
        settings = {"checkpoint": checkpoint, "model": args.model, "encoder_checkpoint": args.encoder,
                    "ingress_num_cpus": args.ingress_cpus, "encoder_num_cpus": args.encoder_cpus,
                    "max_batch_size": args.max_batch_size}
        serve.run(build_app(settings), name="ifshm", route_prefix="/")
        base = f"http://127.0.0.1:{port}"

        def cycle(items):
            i = 0

            def nxt():
                nonlocal i
                i += 1
                return items[i % len(items)]
            return nxt

        def cold():
            return json.dumps({"telemetry": unique_variant(rng.choice(windows), rng)}).encode()

        phases = [("noop", f"{base}/noop", cycle(pool)), ("heal", f"{base}/v1/heal", cycle(pool)),
                  ("diagnose", f"{base}/v1/diagnose", cycle(pool))]
        if args.cold:
            phases += [("heal_cold", f"{base}/v1/heal", cold), ("diagnose_cold", f"{base}/v1/diagnose", cold)]
        for name, url, bodies in phases:
            stats = asyncio.run(drive(url, bodies, args.concurrency, args.seconds, args.warmup))
            result.update({f"{name}_{k}": v for k, v in stats.items()})
        for name in ("heal", "diagnose"):
            ok = result["noop_rps"] and result[f"{name}_p50_ms"] is not None
            result[f"{name}_rps_ratio"] = result[f"{name}_rps"] / result["noop_rps"] if ok else None
            result[f"{name}_p50_ratio"] = result[f"{name}_p50_ms"] / result["noop_p50_ms"] if ok else None
    finally:
        serve.shutdown()
        ray.shutdown()
    result.update({
        "concurrency": args.concurrency, "seconds": args.seconds, "model": args.model,
        "encoder_checkpoint": args.encoder, "checkpoint": args.checkpoint or "untrained (default sizes)",
        "throughput_optimized": os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED", "0"),
        "cpus": os.cpu_count(), "ray_num_cpus": args.num_cpus, "loadavg_1m": os.getloadavg()[0],
    })
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

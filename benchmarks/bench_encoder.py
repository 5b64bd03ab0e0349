"""Encoder throughput on CPU: contexts/s at batch 1 and batched, with and without the LM-output cache, for the
template path (RL) and the whole-context path (diagnosis / serving). Prints ONE JSON line.

How to run (from the repo root)::

    .venv/bin/python benchmarks/bench_encoder.py                 # default model (SmolLM2-135M), a few min on 2 cores
    .venv/bin/python benchmarks/bench_encoder.py --model minilm  # fast preset
    .venv/bin/python benchmarks/bench_encoder.py --load-only     # only the backbone load times (~5 s; --cold: ~30 s)

A context is one telemetry window from the simulator (known faults, several seeds), encoded end to end: modal
encoding (Drain3 templates, metric features, alarms), the LM pass, the fusion and the heads. "uncached": the
LM-output cache is emptied before every batch (within a batch each distinct text still runs once); "cached": the
cache is warm, as in steady-state RL where the set of log templates / alarm texts is small.
Keys: ``uncached_contexts_per_s`` / ``cached_contexts_per_s`` (template path, batched: the RL configuration),
``cache_speedup``, and per path and batch size ``{templates,context}_{b1,bN}_{uncached,cached}_contexts_per_s``.
Target: cached >= 5x uncached.

Load times (``--load-only`` prints only these): ``backbone_load_cached_s``, a load of the backbone as every process
after the first does it (SmolLM2: from the cached fp32 safetensors, ~1 s; target < 30 s), and with ``--cold``
``backbone_load_cold_s``, the first load ever (SmolLM2: GGUF dequantisation + writing the cache, ~17 s), measured
into a temporary cache folder that is removed afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def measure(enc, windows: list[dict], batch: int, cached: bool, mode: str) -> float:
    """Contexts per second over ``windows`` in batches of ``batch``."""
    if cached:
        for i in range(0, len(windows), batch):
            enc.predict(windows[i:i + batch], mode=mode)
    t0 = time.perf_counter()
    for i in range(0, len(windows), batch):
        if not cached:
            enc.clear_cache()
        enc.predict(windows[i:i + batch], mode=mode)
    return len(windows) / (time.perf_counter() - t0)


def load_times(model: str, cold: bool) -> dict:
    """Seconds to load ``model``'s backbone: from a warm cache, and (``cold``) the first load ever."""
    import shutil
    import tempfile

    from ifshm_ray.encoding.models import load_backbone

    res: dict = {}
    if cold:
        tmp = tempfile.mkdtemp(prefix="bench-encoder-cache-")
        try:
            t0 = time.perf_counter()
            load_backbone(model, cache_dir=tmp)
            res["backbone_load_cold_s"] = round(time.perf_counter() - t0, 2)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    load_backbone(model)  # fills the default cache if it is empty: the cached load below never dequantises
    t0 = time.perf_counter()
    load_backbone(model)
    res["backbone_load_cached_s"] = round(time.perf_counter() - t0, 2)
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2", help="preset, HF name or path (default: the embedded SmolLM2)")
    ap.add_argument("--windows", type=int, default=32, help="windows per batched measurement")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--context-windows", type=int, default=8,
                    help="windows for the whole-context path (expensive on CPU)")
    ap.add_argument("--load-only", action="store_true", help="only measure the backbone load times")
    ap.add_argument("--cold", action="store_true", help="also measure the first load ever (temporary cache)")
    ap.add_argument("--split", default="handpicked", help="named known/unknown split whose known fault types are "
                    "the head's classes (default handpicked)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    import logging

    logging.disable(logging.WARNING)
    import torch

    from ifshm_ray.encoding.config import EncoderConfig
    from ifshm_ray.encoding.semantic import SemanticEncoder
    from ifshm_ray.encoding.simdata import known_faults, labelled_windows

    torch.set_num_threads(args.threads)
    loads = load_times(args.model, args.cold)
    if args.load_only:
        res = {"model": args.model, "threads": args.threads, **loads}
        print(json.dumps(res))
        return res
    windows = [w["telemetry"] for w in labelled_windows(range(2), windows_per_episode=2, split=args.split)]
    windows = windows[:: max(1, len(windows) // args.windows)][: args.windows]
    cfg = EncoderConfig(model=args.model, adapter="lora", max_template_tokens=32)
    t0 = time.perf_counter()
    enc = SemanticEncoder.build(cfg, known_faults(args.split) + ["healthy"], split=args.split)
    load_s = time.perf_counter() - t0
    enc.eval()
    for w in windows:  # mine the templates once, so every pass sees the same texts
        enc.modal.encode(w)
    enc.modal.freeze()
    enc.predict(windows[:2])  # warm-up: first-call costs of the kernels are no part of a context's cost
    enc.clear_cache()

    res: dict = {"model": args.model, "threads": args.threads, "batch": args.batch, "load_s": round(load_s, 2),
                 **loads}
    few = windows[: args.context_windows]
    plan = [("templates", 1, False, windows[:8]), ("templates", 1, True, windows),
            ("templates", args.batch, False, windows), ("templates", args.batch, True, windows),
            ("context", 1, False, few[:4]), ("context", 1, True, few),
            ("context", args.batch, False, few), ("context", args.batch, True, few)]
    for mode, b, cached, ws in plan:
        key = f"{mode}_{'b1' if b == 1 else 'bN'}_{'cached' if cached else 'uncached'}_contexts_per_s"
        t0 = time.perf_counter()
        res[key] = round(measure(enc, ws, b, cached, mode), 2)
        print(f"{key}: {res[key]} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    stats = enc.cache_stats()
    res["uncached_contexts_per_s"] = res["templates_bN_uncached_contexts_per_s"]
    res["cached_contexts_per_s"] = res["templates_bN_cached_contexts_per_s"]
    res["cache_speedup"] = round(res["cached_contexts_per_s"] / max(res["uncached_contexts_per_s"], 1e-9), 1)
    res["distinct_items_per_window"] = round(
        sum(len(set(c.items)) for c in enc.encode_telemetry(windows)) / len(windows), 1)
    res["distinct_items_total"] = len({t for c in enc.encode_telemetry(windows) for t in c.items})
    res["cache_entries"] = stats["entries"]
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()

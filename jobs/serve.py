"""Serve IFSHM locally: the Ray Serve app (FastAPI ingress + encoder deployment) on an embedded Ray, until Ctrl-C.

How to run
----------
::

    .venv/bin/python jobs/serve.py --checkpoint results/demo                  # policy bundle of jobs/train.py --out
    .venv/bin/python jobs/serve.py --checkpoint results/demo --encoder-checkpoint results/encoder --port 8000
    IFSHM_SERVE_TOKEN=s3cret .venv/bin/python jobs/serve.py --checkpoint results/demo   # bearer-token auth on
    .venv/bin/python jobs/serve.py --checkpoint results/demo --set max_log_lines=500 --set min_confidence=0.6

The same app starts with ``serve run ifshm_ray.serve.app:build_app checkpoint=results/demo model=minilm`` or, on a
running Ray (``ray start --head`` / a cluster), ``serve deploy configs/serve.yaml``.

What to expect
--------------
Ray starts (~5 s), the encoder loads (minilm ~2 s; smollm2 ~1 s after its one-time ~17 s dequantisation), then::

    serving on http://127.0.0.1:8000  (docs: http://127.0.0.1:8000/docs)

and it blocks until SIGINT / SIGTERM, then shuts Serve and Ray down. Endpoints: ``POST /v1/diagnose``,
``POST /v1/heal``, ``POST /v1/alertmanager``, ``GET /v1/faults``, ``GET /healthz``, ``/docs``. Try::

    curl -s localhost:8000/healthz
    curl -s -X POST localhost:8000/v1/heal -H 'content-type: application/json' -d @window.json
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path

from ifshm_ray.config import ConfigError, add_override_arg, parse_overrides

logger = logging.getLogger("serve")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Serve IFSHM (diagnosis + recommended recovery action) locally with "
                                            "Ray Serve. See the module docstring.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="Policy bundle: the --out dir of jobs/train.py or jobs/tune.py, or its policy_bundle/.")
    p.add_argument("--model", default="minilm",
                   help="Encoder preset when --encoder-checkpoint is not given (minilm, smollm2, tiny-llama, "
                        "tiny-bert); the fault head is then untrained.")
    p.add_argument("--encoder-checkpoint", "--encoder", dest="encoder_checkpoint", default=None,
                   help="Fine-tuned encoder checkpoint: the --out dir of jobs/finetune_encoder.py.")
    p.add_argument("--host", default="127.0.0.1", help="HTTP host (0.0.0.0 to listen on every interface).")
    p.add_argument("--port", type=int, default=8000, help="HTTP port.")
    add_override_arg(p)  # any other ServeConfig setting (ifshm_ray/serve/config.py), e.g. --set max_log_lines=500
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="Ray cluster to join (default: $RAY_ADDRESS); unset = start a local embedded Ray.")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local embedded Ray (default: all).")
    return p


def main(argv: list[str] | None = None) -> None:
    parser = make_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    # ---- settings ------------------------------------------------------------------------------------------
    from ifshm_ray.serve.config import serve_config_from_args

    settings = {"checkpoint": str(Path(args.checkpoint).resolve()), "model": args.model}
    if args.encoder_checkpoint:
        settings["encoder_checkpoint"] = str(Path(args.encoder_checkpoint).resolve())
    try:
        cfg = serve_config_from_args({**settings, **parse_overrides(args.overrides)})
    except ConfigError as e:  # the setting, its value and what is allowed
        parser.error(str(e))  # exit 2 with the message, no traceback

    # ---- Ray + Serve ----------------------------------------------------------------------------------------
    import ray
    from ray import serve

    from ifshm_ray.serve.app import build_app

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.address:
        ray.init(address=args.address)
    else:  # replicas import ifshm_ray from the installed package (pip install -e .)
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False)
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(build_app(cfg), name="ifshm", route_prefix="/")
    url = f"http://{args.host}:{args.port}"
    print(f"serving on {url}  (docs: {url}/docs; auth: {'on' if cfg.resolved_token() else 'off'})", flush=True)

    # ---- block until SIGINT / SIGTERM ---------------------------------------------------------------------------
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    print("shutting down", flush=True)
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()

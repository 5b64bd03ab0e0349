"""The healer for the live stack: the project's HTTP API (``/v1/heal``, ``/v1/alertmanager``, ``/healthz``) over a
trained policy bundle, in its own process on 127.0.0.1, outside the target Ray (the two never fail together),
and the live loop's client of it.

* ``python -m ifshm_ray.live.healer --checkpoint BUNDLE --port P [--set min_confidence=0]``: the FastAPI app of
  :func:`ifshm_ray.serve.http.create_app` over a :class:`~ifshm_ray.serve.service.HealingService` (the same
  service and routes the Ray Serve ingress serves), with the encoder in-process (no Ray at all: on 2 shared cores
  a second Ray for the healer would cost more than the target). Any :class:`ServeConfig` field with ``--set``.
* :class:`HealerProcess`: starts that process (its own session, under ``timeout``), waits for ``/healthz``,
  stops it by its process group.
* :class:`HealerArm`: the live arm's per-incident memory and one ``/v1/heal`` call per decision window: the
  request carries the window, the category taken at the last decision and the incident's history of actions
  (``steps_ago`` in decision windows), as the simulator gives the policy; the answer goes to the safe executor
  unchanged (a target with no live binding is escalated there, never guessed).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from ifshm_ray.live.config import HealerConfig
from ifshm_ray.live.net import check_loopback_url

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]


def build_service(checkpoint: str, overrides: list[str] | None = None):
    """The :class:`HealingService` of ``checkpoint`` with its encoder in this process (``ServeConfig`` fields from
    ``overrides``, ``key=value``)."""
    import asyncio

    import torch

    from ifshm_ray.config import parse_overrides
    from ifshm_ray.policy.bundle import load_policy_bundle, manifest_split, read_manifest
    from ifshm_ray.serve.config import ServeConfig, serve_config_from_args
    from ifshm_ray.serve.service import HealingService, serve_encoder

    cfg: ServeConfig = serve_config_from_args({"checkpoint": checkpoint, **parse_overrides(overrides or [])})
    torch.set_num_threads(cfg.torch_threads)
    split, _ = manifest_split(read_manifest(cfg.checkpoint))
    encoder = serve_encoder(model=cfg.model, encoder=cfg.encoder_checkpoint, mode=cfg.encoder_mode,
                            cache_size=cfg.cache_size, torch_threads=cfg.torch_threads, split=split)

    async def diagnose_one(telemetry: dict) -> dict:
        return (await asyncio.to_thread(encoder.diagnose, [telemetry]))[0]

    async def info() -> dict:
        return encoder.info()

    policy = load_policy_bundle(cfg.checkpoint)
    describe_inputs(policy.manifest, encoder.info(), cfg)
    return HealingService(policy, diagnose_one, cfg, info)


def describe_inputs(manifest: dict, encoder_info: dict, cfg) -> list[str]:
    """Log (and return) what the policy and the diagnosis read, so that a healer whose inputs differ from the
    policy's training is visible in its log: the policy's observation (its feature count, whether it embeds text
    with an encoder, recorded in the bundle), the diagnosing encoder, and warnings where the two could be taken for
    one another: an untrained diagnosing encoder with a ``min_confidence`` above 0 (its pages would come from an
    untrained head), a policy with an LLM semantic state (it carries its own item table from the encoder named in
    the manifest; the diagnosing encoder is not part of its input)."""
    spaces = manifest.get("spaces", {})
    enc = manifest.get("encoder")
    train_env = manifest.get("env", {}).get("config", {})
    lines = [f"policy input: {spaces.get('num_features')} telemetry features of the simulator's observation "
             f"(env config {train_env}); "
             + ("no encoder (numeric metrics, alert flags, log-template counts, incident memory)" if enc is None
                else f"plus its LLM semantic state from the encoder in its manifest ({enc})")
             + f"; series a window lacks read as: missing_metrics={cfg.missing_metrics}",
             f"diagnosis (fault_mode, confidence, unknown score; not the policy's input): {encoder_info.get('model')} "
             f"encoder, {'trained: ' + str(encoder_info.get('checkpoint')) if encoder_info.get('trained') else 'untrained'}"]
    for line in lines:
        log.info(line)
    warnings = []
    if not encoder_info.get("trained") and cfg.min_confidence > 0:
        warnings.append(f"the diagnosing encoder is untrained but min_confidence={cfg.min_confidence}: its "
                        f"confidence carries no information, so the pages it causes are noise (set min_confidence=0 "
                        f"or give encoder_checkpoint)")
    if enc is not None and encoder_info.get("checkpoint") != enc.get("checkpoint"):
        warnings.append(f"the policy's semantic state came from encoder {enc.get('checkpoint') or enc.get('model')}; "
                        f"the diagnosis uses {encoder_info.get('checkpoint') or encoder_info.get('model')} (the "
                        f"policy reads its own item table, not the diagnosis)")
    for w in warnings:
        log.warning(w)
    return lines + warnings


def main(argv: list[str] | None = None) -> int:
    from ifshm_ray.config import add_override_arg

    p = argparse.ArgumentParser(description="The healer's HTTP API over a policy bundle on 127.0.0.1 (no Ray).")
    p.add_argument("--checkpoint", required=True, help="policy bundle (jobs/train.py --out or its policy_bundle/)")
    p.add_argument("--port", type=int, required=True)
    add_override_arg(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import uvicorn

    from ifshm_ray.serve.http import create_app

    app = create_app(build_service(args.checkpoint, args.overrides))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


class HealerProcess:
    """``python -m ifshm_ray.live.healer`` in its own session, under ``timeout`` (ends by itself after
    ``max_lifetime_s``); a context manager that waits for ``/healthz`` and stops the process group on exit."""

    def __init__(self, cfg: HealerConfig, checkpoint: str, port: int, log_path: str | Path, max_lifetime_s: float):
        self.cfg, self.checkpoint, self.port = cfg, checkpoint, port
        self.log_path, self.max_lifetime_s = Path(log_path), max_lifetime_s
        self.popen: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "HealerProcess":
        sets = [f"--set={k}={v}" for k, v in self.cfg.serve.items()]
        cmd = ["timeout", "-k", "10", f"{self.max_lifetime_s:g}", sys.executable, "-m", "ifshm_ray.live.healer",
               "--checkpoint", self.checkpoint, "--port", str(self.port), *sets]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=env, cwd=str(REPO), start_new_session=True)
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        while True:
            if self.popen.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"the healer exited with {self.popen.returncode}; log {self.log_path}:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                with httpx.Client(trust_env=False, timeout=5) as c:
                    if c.get(self.url + "/healthz").status_code == 200:
                        return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the healer did not answer /healthz within {self.cfg.startup_timeout_s} s "
                                   f"(log {self.log_path})")
            time.sleep(1.0)

    def health(self) -> dict:
        with httpx.Client(trust_env=False, timeout=10) as c:
            return c.get(self.url + "/healthz").json()

    def stop(self) -> int | None:
        p = self.popen
        if p is None:
            return None
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        return p.returncode

    def __enter__(self) -> "HealerProcess":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def heal_request(telemetry: dict, decisions: list[dict]) -> dict:
    """The ``/v1/heal`` body for a window, given the incident's earlier decisions (``{"category", "target"}``, one
    per decision window, oldest first): ``last_action`` is the category of the last one, ``history`` every
    non-observe one with ``steps_ago`` counted in decision windows (1: the last)."""
    n = len(decisions)
    history = [{"category": d["category"], "target": d.get("target"), "steps_ago": n - i}
               for i, d in enumerate(decisions) if d["category"] != "observe"]
    return {"telemetry": telemetry, "last_action": decisions[-1]["category"] if decisions else None,
            "history": history}


class HealerArm:
    """The trained-policy arm of the live loop: one ``/v1/heal`` call per decision window (see the module
    docstring); :meth:`reset` starts a new incident's memory. ``decide`` returns ``(request, answer)``.

    With a meta-controller in the bundle the answer carries the gate; the gate decides once per incident, as in
    training and evaluation (:class:`~ifshm_ray.meta.gate.GatedPolicy`): :attr:`gate_actor` is the ``actor`` of the
    first answer whose gate ``decides_here``, sent back as ``incident_gate`` with the incident's later windows.
    ``runbook``: the live loop lets the blind runbook act for the rest of the incident; ``escalate``: the answers
    escalate (the executor pages)."""

    def __init__(self, url: str, timeout_s: float):
        self.url = check_loopback_url(url, "healer")
        self.timeout_s = timeout_s
        self.decisions: list[dict] = []
        self.gate_actor: str | None = None

    def reset(self) -> None:
        self.decisions = []
        self.gate_actor = None

    def decide(self, telemetry: dict) -> tuple[dict, dict[str, Any]]:
        body = heal_request(telemetry, self.decisions)
        if self.gate_actor is not None:
            body["incident_gate"] = self.gate_actor
        with httpx.Client(trust_env=False, timeout=self.timeout_s) as c:
            r = c.post(self.url + "/v1/heal", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"/v1/heal answered {r.status_code}: {r.text[:500]}")
        answer = r.json()
        self.note_gate(answer)
        self.decisions.append({"category": answer["action"]["category"], "target": answer["action"]["target"]})
        return body, answer

    def note_gate(self, answer: dict) -> None:
        """Keep the incident's gate decision: the first answer whose gate decides here."""
        g = answer.get("gate")
        if self.gate_actor is None and g and g.get("decides_here"):
            self.gate_actor = g["actor"]

    def taken(self, outcome: str, applied: dict | None = None) -> None:
        """What the executor did with the last answer, which the incident's memory records for that window, as the
        simulator's memory holds the actions applied (and counts one the masks refuse as ``observe``): an action
        refused (cooldown, in flight, deny-list, ...) or only observed was not taken (``observe``); a page is the
        policy's ``escalate`` when it chose one, and otherwise nothing applied to the system (``observe``): an action
        on a target with no live binding, which the executor escalates instead of guessing, or a page of the
        service's own gate (low confidence, unknown fault). ``applied``: the action that was sent to the executor
        instead of the policy's (the runbook's, after the gate deferred to it), ``{"category", "target"}``."""
        if not self.decisions:
            return
        if applied is not None:
            self.decisions[-1] = {"category": applied["category"], "target": applied.get("target")}
        if outcome in ("refused", "observed") or (outcome == "page" and self.decisions[-1]["category"] != "escalate"):
            self.decisions[-1] = {"category": "observe", "target": None}


if __name__ == "__main__":
    sys.exit(main())

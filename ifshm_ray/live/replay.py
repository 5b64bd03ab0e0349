"""Replay of recorded live windows through ``/v1/heal``: every window the policy arm decided on was recorded with
the exact request it sent (telemetry, ``last_action``, ``history``) and the healer's answer
(:mod:`ifshm_ray.live.recording`); sending the same requests again to a healer over the same policy bundle must
give the same decisions (category, target, ratio, escalate). A decision that changes means the healer is not a
function of what it was sent (hidden state, nondeterminism) or the bundle is not the one recorded.

    python -m ifshm_ray.live.replay --windows results/live/incidents.parquet --checkpoint BUNDLE \
        [--set min_confidence=0 ...] [--out replay.json]

runs the healer's app in-process (FastAPI's test client: no server, no Ray); ``jobs/live_eval.py`` replays its
own windows through the running healer over HTTP at the end of a run (``OUT/replay.json``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

DECISION_KEYS = ("category", "target", "ratio")


def decision(answer: Mapping[str, Any]) -> dict:
    """What a ``/v1/heal`` answer decides: the action's category, target and ratio, and whether it escalates."""
    return {**{k: answer["action"].get(k) for k in DECISION_KEYS}, "escalate": bool(answer.get("escalate"))}


def replay_windows(windows: Iterable[Mapping[str, Any]], heal: Callable[[dict], dict]) -> dict:
    """Send each recorded window's request (windows without one, the runbook's and no-healer arm's, are left out)
    to ``heal`` (request body -> answer) and compare the decisions. Returns ``{"windows", "matches",
    "mismatches": [{"incident", "window_index", "recorded", "replayed"}]}``."""
    n, mismatches = 0, []
    for w in windows:
        if w.get("request") is None or w.get("answer") is None:
            continue
        n += 1
        recorded, replayed = decision(w["answer"]), decision(heal(dict(w["request"])))
        if recorded != replayed:
            mismatches.append({"incident": w["incident"], "window_index": w["window_index"], "recorded": recorded,
                               "replayed": replayed})
    return {"windows": n, "matches": n - len(mismatches), "mismatches": mismatches}


def http_heal(url: str, timeout_s: float = 30.0) -> Callable[[dict], dict]:
    """``heal`` over a running healer's ``/v1/heal`` on 127.0.0.1."""
    import httpx

    from ifshm_ray.live.net import check_loopback_url

    base = check_loopback_url(url, "healer")

    def heal(body: dict) -> dict:
        with httpx.Client(trust_env=False, timeout=timeout_s) as c:
            r = c.post(base + "/v1/heal", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"/v1/heal answered {r.status_code}: {r.text[:500]}")
        return r.json()
    return heal


def in_process_heal(checkpoint: str, overrides: list[str] | None = None):
    """``(heal, close)``: the healer's app over ``checkpoint`` in this process (FastAPI's test client)."""
    from fastapi.testclient import TestClient

    from ifshm_ray.live.healer import build_service
    from ifshm_ray.serve.http import create_app

    service = build_service(checkpoint, overrides)
    client = TestClient(create_app(service))

    def heal(body: dict) -> dict:
        r = client.post("/v1/heal", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"/v1/heal answered {r.status_code}: {r.text[:500]}")
        return r.json()

    def close() -> None:
        client.close()
        service.close()
    return heal, close


def main(argv: list[str] | None = None) -> int:
    from ifshm_ray.config import add_override_arg
    from ifshm_ray.live.recording import read_windows

    p = argparse.ArgumentParser(description="Replay recorded live windows through /v1/heal (in-process).")
    p.add_argument("--windows", required=True, help="incidents.parquet of jobs/live_eval.py")
    p.add_argument("--checkpoint", required=True, help="the policy bundle the windows were recorded with")
    p.add_argument("--out", default=None, help="write the result as JSON here")
    add_override_arg(p)
    args = p.parse_args(argv)
    heal, close = in_process_heal(args.checkpoint, args.overrides)
    try:
        res = replay_windows(read_windows(args.windows), heal)
    finally:
        close()
    text = json.dumps(res, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0 if not res["mismatches"] else 1


if __name__ == "__main__":
    sys.exit(main())

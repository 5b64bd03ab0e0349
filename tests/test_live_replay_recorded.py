"""Recorded live windows replayed through /v1/heal give the recorded decisions (issue 13).

``tests/data/live_replay/`` holds windows the policy arm of a real ``jobs/live_eval.py`` run decided on (one
incident per fault; ``meta.json`` says which run, with its command, and the healer's settings), each with the exact
``/v1/heal`` request sent (telemetry from Prometheus and the real log files, last action, history) and the answer
the healer gave, and a copy of the policy bundle that answered (the simulator-trained hierarchical PPO of the
handpicked split, seed 0). The test serves that bundle with the same settings in-process and sends every request
again: each decision (category, target, ratio, escalate) must be the recorded one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ifshm_ray.live.recording import read_windows
from ifshm_ray.live.replay import decision, in_process_heal, replay_windows

pytestmark = pytest.mark.timeout(240)
FIX = Path(__file__).resolve().parent / "data" / "live_replay"


def test_recorded_live_windows_replayed_through_v1_heal_give_the_recorded_decisions():
    meta = json.loads((FIX / "meta.json").read_text())
    windows = read_windows(FIX / "windows.parquet")
    assert {w["arm"] for w in windows} == {"policy"} and len({w["fault"] for w in windows}) >= 3
    assert all(w["request"] is not None and w["answer"] is not None for w in windows)
    heal, close = in_process_heal(str(FIX / "policy_bundle"), [f"{k}={v}" for k, v in meta["serve"].items()])
    try:
        res = replay_windows(windows, heal)
    finally:
        close()
    assert res["windows"] == len(windows) and res["mismatches"] == [], res
    # the recording holds more than one kind of decision (not a constant answer replayed)
    assert len({json.dumps(decision(w["answer"]), sort_keys=True) for w in windows}) >= 2

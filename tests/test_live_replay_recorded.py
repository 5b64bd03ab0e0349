"""Recorded live windows replayed through /v1/heal give the recorded decisions (issue 13).

``tests/data/live_replay/`` holds windows the policy arm of two real ``jobs/live_eval.py`` runs decided on (one
incident per fault; ``meta.json`` says which runs, with their commands, and the healer's settings), each with the exact
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


@pytest.mark.parametrize("recording", ["zero", "steady_state"])
def test_recorded_live_windows_replayed_through_v1_heal_give_the_recorded_decisions(recording):
    """``zero``: recorded when the healer read the series a window lacks as 0 (replayed with
    ``missing_metrics=zero``); ``steady_state``: recorded with the default, every answer naming those series."""
    meta = json.loads((FIX / "meta.json").read_text())
    rec = meta if recording == "zero" else meta["steady_state"]
    windows = read_windows(FIX / rec.get("file", "windows.parquet"))
    assert len(windows) == rec["windows"] and sorted({w["incident"] for w in windows}) == sorted(rec["incidents"])
    assert {w["arm"] for w in windows} == {"policy"} and len({w["fault"] for w in windows}) >= 3
    assert all(w["request"] is not None and w["answer"] is not None for w in windows)
    if recording == "steady_state":
        assert all(w["answer"]["imputed_metrics"] for w in windows)
    heal, close = in_process_heal(str(FIX / "policy_bundle"), [f"{k}={v}" for k, v in rec["serve"].items()])
    try:
        res = replay_windows(windows, heal)
    finally:
        close()
    assert res["windows"] == len(windows) and res["mismatches"] == [], res
    # the recording holds more than one kind of decision (not a constant answer replayed)
    assert len({json.dumps(decision(w["answer"]), sort_keys=True) for w in windows}) >= 2


def test_recorded_live_windows_name_the_series_the_policy_reads_at_the_steady_state():
    """A live window reports only the bound entities' mapped metrics; the answer lists every other series the
    simulator reports (read at its steady state), e.g. every metric of the unbound services and of the GPU nodes
    without a live counterpart, and none that the window sent."""
    meta = json.loads((FIX / "meta.json").read_text())
    windows = read_windows(FIX / "windows.parquet")
    sets = [f"{k}={v}" for k, v in meta["serve"].items() if k != "missing_metrics"]
    heal, close = in_process_heal(str(FIX / "policy_bundle"), sets)
    try:
        w = windows[0]
        answer = heal(dict(w["request"]))
    finally:
        close()
    imputed = set(answer["imputed_metrics"])
    sent = {f"{e}/{m}" for e, ms in w["telemetry"]["metrics"].items() for m, v in ms.items() if v}
    assert imputed and not imputed & sent
    assert {"coredns/cpu_util", "gpu-3/DCGM_FI_DEV_GPU_TEMP", "gpu-0/DCGM_FI_DEV_GPU_TEMP"} <= imputed
    assert not any(x.startswith("ctl-0/DCGM") for x in imputed)  # (the simulator has no GPU metrics there either)


def test_live_sim_gap_report_on_the_recorded_windows(capsys):
    """``python -m ifshm_ray.live.sim_gap`` on the recorded windows: read as 0, the unbound entities' CPU and memory
    leave the simulator's range in every window; read at the steady state they do not."""
    from ifshm_ray.live import sim_gap as gap

    assert gap.main(["--windows", str(FIX / "windows.parquet"), "--checkpoint", str(FIX / "policy_bundle"),
                     "--episodes", "3", "--max-steps", "4", "--rows", "1000"]) == 0
    out = capsys.readouterr().out
    zero, _, rest = out.partition("read as `steady_state`")
    assert "| coredns.cpu | 1.00 |" in zero and "| coredns.cpu |" not in rest
    assert "| gpu-3.DCGM_FI_DEV_GPU_TEMP | 1.00 |" in zero and "gpu-3.DCGM_FI_DEV_GPU_TEMP" not in rest
    assert "## Decisions" in rest and "path-errors-policy-0-1d3e2f" in rest


def test_the_committed_live_policy_gates_recorded_live_windows():
    """``models/live_policy`` (make live's default LIVE_POLICY: the entity policy with its zero-shot gate attached)
    serves the recorded live windows with the gate scored by its own diagnoser: the full model cache (a type the
    simulator's known faults do not show on an inference node) is novel and goes to the runbook; the Redis fault and
    the negative control are not, and the policy acts."""
    bundle = Path(__file__).resolve().parents[1] / "models" / "live_policy"
    meta = json.loads((FIX / "meta.json").read_text())["steady_state"]
    windows = read_windows(FIX / meta["file"])
    heal, close = in_process_heal(str(bundle), [f"{k}={v}" for k, v in meta["serve"].items()])
    try:
        gates = {}
        for w in windows:
            g = heal(w["request"])["gate"]
            assert g["score_source"] == "diagnoser" and g["threshold"] == pytest.approx(4.3112, abs=1e-3)
            gates.setdefault(w["fault"], []).append(g)
    finally:
        close()
    assert {"model-cache-full", "redis-maxmemory-too-small", "negative-control"} <= set(gates)
    for fault, gs in gates.items():
        novel = fault == "model-cache-full"
        assert all(g["novel"] is novel and g["actor"] == ("runbook" if novel else "policy") for g in gs), (fault, gs)
        assert all((g["unknown_score"] > g["threshold"]) is novel for g in gs)

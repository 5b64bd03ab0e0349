"""jobs/train.py end to end: a local smoke run + resume, and a `ray job submit` run on a private loopback cluster."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import torch
from conftest import load_job

REPO = Path(__file__).resolve().parents[1]
TINY = "configs/tiny.yaml"


def _env() -> dict:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # never join somebody else's cluster
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


@pytest.mark.timeout(30)
def test_train_help_documents_flags():
    proc = subprocess.run([sys.executable, "jobs/train.py", "--help"], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0
    for flag in ("--config", "--out", "--resume", "--seed", "--iterations"):
        assert flag in proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_train_script_smoke_then_resume(ray_session, tmp_path, capsys, monkeypatch):
    """jobs/train.py's main() in-process on the session Ray (saves two Ray start-ups), then --resume."""
    monkeypatch.chdir(REPO)
    train = load_job("train")
    out = tmp_path / "run"
    # the bundle records the run's named split; the run is alert-triggered (policy.act_on), which the bundle keeps
    split = ["--set", "env.config.split=random1", "--set", "policy.act_on=alert"]
    train.main(["--config", TINY, "--out", str(out), "--iterations", "1", "--seed", "1", *split])
    first = capsys.readouterr().out
    assert "iter    1/1" in first and "env-steps/s" in first
    assert (out / "checkpoints" / "iter_000001" / "rllib_checkpoint.json").is_file()
    assert (out / "policy_bundle" / "manifest.json").is_file()
    assert list((out / "tb").iterdir()), "no TensorBoard events"

    train.main(["--config", TINY, "--out", str(out), "--resume", str(out), "--iterations", "2", "--seed", "1", *split])
    second = capsys.readouterr().out
    assert "iter    2/2" in second and "iter    1/" not in second
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    assert rows[1]["env_steps_lifetime"] > rows[0]["env_steps_lifetime"]
    for key in ("episode_return_mean", "mttr_s", "success_rate", "env_steps_per_s", "entropy_high", "entropy_low",
                "policy_loss", "vf_loss", "total_loss"):
        assert key in rows[1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iteration"] == 2

    from ifshm_ray.policy.bundle import action_space_hash_of_env, load_policy_bundle
    from ifshm_ray.env import FaultInjectionEnv

    env = FaultInjectionEnv({"faults": "known", "render_telemetry": False})
    policy = load_policy_bundle(out, expected_action_space_hash=action_space_hash_of_env(env))
    assert policy.manifest["training"]["iterations"] == 2
    assert policy.split == policy.manifest["split"] == "random1"
    obs, _ = env.reset(seed=3)
    c, t, r = policy.act(obs)
    assert obs["action_mask"][c * env.topology.T + t] == 1.0
    assert obs["ratio_mask"][c * len(policy.ratio_levels) + r] == 1.0
    assert policy.action_distribution(obs)["top_actions"]
    # alert-triggered: the reloaded module observes while the telemetry shows no incident (and its trigger is the
    # one built for this env)
    from ifshm_ray.policy.trigger import trigger_spec
    from ifshm_ray.sim.actions import CATEGORIES

    assert policy.manifest["model_config"]["act_trigger"] == trigger_spec(policy.manifest["env"]["config"])
    batch = {k: torch.as_tensor(obs[k], dtype=torch.float32)[None] for k in ("obs", "action_mask", "ratio_mask")}
    assert not bool(policy.module.incident_open(batch)[0]), "the first window of an episode shows no incident"
    assert all(policy.act(obs, deterministic=False)[0] == CATEGORIES.index("observe") for _ in range(5))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(cond, timeout: float, what: str, interval: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def _dashboard_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/api/version", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _pids_using(marker: str) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker in (p / "cmdline").read_bytes().decode(errors="ignore"):
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_ray_job_submit_end_to_end(tmp_path):
    bin_dir = Path(sys.executable).parent
    temp_dir = tempfile.mkdtemp(prefix="ifj-", dir="/tmp")  # short: Ray's unix sockets live under it
    # Every port explicit: the defaults (client server 10001, dashboard agent 52365) may be taken by another
    # cluster on this machine. Ephemeral ports (>= 32768) also stay clear of Ray's worker-port range.
    gcs_port, dash_port, client_port, agent_port = (_free_port() for _ in range(4))
    url = f"http://127.0.0.1:{dash_port}"
    env = _env() | {"RAY_AUTH_MODE": "disabled", "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    head = subprocess.Popen(
        [str(bin_dir / "ray"), "start", "--head", "--block", "--port", str(gcs_port),
         "--dashboard-host=127.0.0.1", "--dashboard-port", str(dash_port), "--temp-dir", temp_dir,
         "--ray-client-server-port", str(client_port), "--dashboard-agent-listen-port", str(agent_port),
         "--disable-usage-stats", "--num-cpus", "1", "--include-dashboard=true"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    out = tmp_path / "job_out"
    sub_id = f"ifshm-test-{uuid.uuid4().hex[:8]}"
    try:
        _wait_for(lambda: _dashboard_up(url) or head.poll() is not None, 90, "the Ray dashboard")
        assert head.poll() is None, "ray start --head exited"
        runtime_env = {"excludes": [".venv", ".git", "results", "**/__pycache__", "*.egg-info"]}
        submit_cmd = [
            str(bin_dir / "ray"), "job", "submit", "--address", url, "--submission-id", sub_id, "--no-wait",
            "--working-dir", ".", "--runtime-env-json", json.dumps(runtime_env), "--",
            sys.executable, "jobs/train.py", "--config", TINY, "--out", str(out),
        ]
        submitted = {}

        def submit_accepted() -> bool:
            # Right after start-up the dashboard answers before its job agent is ready ("No available agent to
            # submit job, please try again later"): retry that case only.
            proc = subprocess.run(submit_cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
            submitted["proc"] = proc
            return proc.returncode == 0 or "No available agent" not in proc.stderr

        _wait_for(submit_accepted, 90, "the job agent to accept the submission", interval=2.0)
        submit = submitted["proc"]
        assert submit.returncode == 0, submit.stderr[-3000:]

        from ray.job_submission import JobStatus, JobSubmissionClient

        client = JobSubmissionClient(url)
        _wait_for(lambda: client.get_job_status(sub_id).is_terminal(), 200, "the job to finish", interval=1.0)
        status = client.get_job_status(sub_id)
        if status != JobStatus.SUCCEEDED:
            pytest.fail(f"job {status}:\n{client.get_job_logs(sub_id)[-5000:]}")
        assert (out / "checkpoints" / "iter_000002" / "rllib_checkpoint.json").is_file()
        assert (out / "policy_bundle" / "manifest.json").is_file()
    finally:
        # End only this cluster: its process group, then any of its processes that left the group.
        try:
            os.killpg(head.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:  # `ray start --block` may hang in its own cleanup with gcs_server still up
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        head.wait(timeout=10)
        for pid in _pids_using(temp_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)

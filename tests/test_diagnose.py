"""Real-data ingestion and jobs/diagnose.py: workload logs are never model input; folder and single-window runs."""
from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from ifshm_ray.encoding.real_data import (REAL_CLASSES, is_service_log, load_samples, scoring_label,
                                          sim_to_failure_mode)

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "openstack_fault_injection_fse2019"
needs_real = pytest.mark.skipif(not (REAL / "samples.json").is_file(), reason="../shared/data is absent")


def fake_dataset(root: Path) -> Path:
    """A two-sample folder in the openstack_fault_injection_fse2019 layout; the workload .err log holds the label."""
    samples = []
    for i, (mode, err_line) in enumerate([("FAILURE_VOLUME_CREATED", "ERROR cinder.volume.manager No space"),
                                          ("NORMAL_FAULT_FREE_ROUND", "INFO cinder.volume.manager ok")]):
        base = root / "tests" / "Cinder" / f"Test_{i}" / "logs" / "round_1"
        (base / "cinder").mkdir(parents=True)
        (base / "foreground_wl").mkdir(parents=True)
        (base / "cinder" / "volume.log.bzip2.out").write_text(
            f"2018-09-28 21:29:2{i}.816 9211 {err_line} [req-x] volume {i}\n")
        (base / "foreground_wl" / "openstack_demo_workload-1.err.log.bzip2.out").write_text(
            f"2018-09-28 21:30:38.335131 INFO [sample_workload.sh]: Assertion results: {mode} LEAK_MARKER\n")
        (base / "trigger_log").write_text("1538184568.0 LEAK_MARKER\n")
        files = [{"path": f"dev/x/tests/{p.relative_to(root / 'tests')}", "source_path": str(p.relative_to(root / 'tests'))}
                 for p in sorted(base.rglob("*")) if p.is_file()]
        samples.append({"sample_id": f"s{i}", "failure_mode": mode, "files": files})
    (root / "samples.json").write_text(json.dumps({"samples": samples}))
    return root


@pytest.mark.timeout(30)
def test_workload_logs_are_never_input(tmp_path):
    root = fake_dataset(tmp_path / "data")
    samples = load_samples(root)
    assert [s.label for s in samples] == ["FAILURE_VOLUME_CREATED", "HEALTHY"]
    for s in samples:
        assert s.input_files and all("foreground_wl" not in f and "trigger_log" not in f for f in s.input_files)
        assert not any("LEAK_MARKER" in line or "Assertion results" in line for line in s.telemetry["logs"])
    assert not is_service_log("Nova/Test_1/logs/round_1/foreground_wl/openstack_demo_workload-1.err.log.bzip2.out")
    assert not is_service_log("Nova/Test_1/fip_info.data")
    assert is_service_log("Nova/Test_1/logs/round_1/nova/nova-api.log.bzip2.out")


@needs_real
@pytest.mark.timeout(60)
def test_real_samples_only_service_logs():
    samples = load_samples(REAL, max_lines=500)
    assert len(samples) >= 10
    for s in samples:
        assert s.label in REAL_CLASSES
        for f in s.input_files:
            assert "foreground_wl" not in f and not f.endswith(("fip_info.data", "trigger_log"))
            assert Path(f).parent.name in ("nova", "cinder", "neutron")
        # the workload's assertion text (the label) never reaches the model
        assert not any("Assertion results" in line or "sample_workload.sh" in line for line in s.telemetry["logs"])
    assert scoring_label("NO_FAILURE") == scoring_label("NORMAL_FAULT_FREE_ROUND") == "HEALTHY"
    assert sim_to_failure_mode("volume_attach_failure") == "FAILURE_VOLUME_ATTACHED"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from ifshm_ray.encoding.config import EncoderConfig
    from ifshm_ray.encoding.semantic import SemanticEncoder

    enc = SemanticEncoder.build(EncoderConfig(model="tiny-llama", state_dim=8, adapter="lora"),
                                ["healthy", "volume_attach_failure", "instance_boot_failure"])
    return enc.save(tmp_path_factory.mktemp("ckpt") / "enc")


def run_diagnose(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "jobs" / "diagnose.py"), *args], capture_output=True,
                          text=True, timeout=120, env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                                                       "PATH": "/usr/bin:/bin", "HOME": str(Path.home()),
                                                       **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}})


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_diagnose_folder_and_window_through_the_pool(ray_session, tmp_path, tiny_checkpoint, capsys):
    """jobs/diagnose.py on the session's Ray: every window goes through the encoder actors, and the pool's answer
    equals the encoder's own (the same worker class in this process)."""
    from ifshm_ray.encoding.service import EncoderWorker

    job = SimpleNamespace(**runpy.run_path(str(REPO / "jobs" / "diagnose.py"), run_name="diagnose_job"))
    data = REAL if (REAL / "samples.json").is_file() else fake_dataset(tmp_path / "data")
    out = job.main(["--data", str(data), "--encoder-checkpoint", str(tiny_checkpoint), "--json", "--max-lines", "300",
                    "--num-cpus", "0.25"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == out["n"]
    assert {"accuracy", "macro_f1", "n", "confusion_matrix"} <= set(out)
    assert out["n"] == len(json.loads((data / "samples.json").read_text())["samples"])
    assert out["encoder"] == {"actors": 1, "tensor_parallel": 1, "contexts": out["n"]}  # all through the actor
    local = job.diagnose_folder(EncoderWorker(checkpoint=str(tiny_checkpoint)), load_samples(data, max_lines=300))
    assert [p["sim_fault"] for p in out["predictions"]] == [p["sim_fault"] for p in local["predictions"]]
    assert max(abs(a["confidence"] - b["confidence"]) for a, b in zip(out["predictions"], local["predictions"])) \
        <= 1e-5
    window = tmp_path / "w.json"
    window.write_text(json.dumps({"logs": ["2026-11-28 10:00:00.0 1 ERROR cinder.volume.api Volume status error"],
                                  "metrics": {}, "alarms": []}))
    one = job.main(["--telemetry", str(window), "--encoder-checkpoint", str(tiny_checkpoint), "--json", "--num-cpus", "0.25"])
    assert one["fault"] in ("healthy", "volume_attach_failure", "instance_boot_failure") and len(one["top3"]) == 3
    assert one["encoder"]["contexts"] == 1


@pytest.mark.timeout(60)
def test_diagnose_missing_adapter_is_clear(tmp_path):
    root = fake_dataset(tmp_path / "data")
    res = run_diagnose("--data", str(root), "--encoder-checkpoint", str(tmp_path / "no-such-adapter"))
    assert res.returncode == 2
    assert "does not exist" in res.stderr and "finetune_encoder.py" in res.stderr
    shutil.rmtree(root)


@pytest.mark.timeout(60)
def test_diagnose_bad_input_is_clear_before_ray_starts(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    import ray

    from ifshm_ray.encoding.service import EncoderPool

    def started(*args, **kwargs):
        raise AssertionError("Ray or the encoder pool started for bad input")

    monkeypatch.setattr(ray, "init", started)
    monkeypatch.setattr(EncoderPool, "__init__", started)
    main = runpy.run_path(str(REPO / "jobs" / "diagnose.py"), run_name="diagnose_job")["main"]
    bad = tmp_path / "bad.json"
    fixtures = REPO / "tests" / "data" / "real_fixtures"
    cases = [(["--data", str(tmp_path)], "samples.json"),
             (["--data", str(tmp_path / "jss" / "NET")], "label 9 out of range 1..4 for campaign NET"),
             (["--data", str(tmp_path / "nezha")], "inject_time_utc '29/01/2023 11:00' is not"),
             (["--data", str(tmp_path / "loghub")], "no fault or anomaly labels"),
             (["--telemetry", str(bad)], "--telemetry .*logs"),
             (["--telemetry", str(tmp_path / "garbled.json")], "not JSON"),
             (["--telemetry", str(bad), "--tensor-parallel", "0"], "tensor_parallel")]
    bad.write_text(json.dumps({"logs": "not a list", "metrics": {}, "alarms": []}))
    (tmp_path / "jss" / "NET").mkdir(parents=True)  # a malformed campaign folder (read without Ray)
    (tmp_path / "jss" / "NET" / "SEQ.tsv").write_text("novaclient_POST_500\tnova-api_GET_200\n1\t2\n")
    (tmp_path / "jss" / "NET" / "Failure_Labels.txt").write_text("9\n")
    (tmp_path / "garbled.json").write_text("{not json")
    nezha = Path(shutil.copytree(fixtures / "nezha_trainticket_fse2023", tmp_path / "nezha"))
    label = nezha / "2023-01-29_110000_exception" / "label.json"
    label.write_text(json.dumps({**json.loads(label.read_text()), "inject_time_utc": "29/01/2023 11:00"}))
    (tmp_path / "loghub").mkdir()  # the layout of loghub_openstack_2k (no fault labels); not a copy of its data
    (tmp_path / "loghub" / "OpenStack_2k.log_structured.csv").write_text("LineId,Content,EventId,EventTemplate\n")
    for args, message in cases:
        if "tensor_parallel" in message:
            bad.write_text(json.dumps({"logs": [], "metrics": {}, "alarms": []}))
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--encoder-checkpoint", str(tiny_checkpoint)])
        assert exit_info.value.code == 2, args
        err = capsys.readouterr().err
        assert re.search(message, err), (args, err)


# ---- Nezha TrainTicket ----------------------------------------------------------------------------------------------
NEZHA_FIX = REPO / "tests" / "data" / "real_fixtures" / "nezha_trainticket_fse2023"
NEZHA_REAL = REPO.parent / "shared" / "data" / "nezha_trainticket_fse2023"


@pytest.fixture(scope="module")
def nezha_checkpoint(tmp_path_factory) -> Path:
    from ifshm_ray.encoding.config import EncoderConfig
    from ifshm_ray.encoding.semantic import SemanticEncoder

    enc = SemanticEncoder.build(EncoderConfig(model="tiny-llama", state_dim=8, adapter="lora"),
                                ["healthy", "packet_loss_latency", "api_5xx_storm"])
    return enc.save(tmp_path_factory.mktemp("ckpt") / "enc")


def check_nezha_result(res: dict, samples: list) -> None:
    from ifshm_ray.encoding.real_data import NEZHA_FAULT_TYPES, NEZHA_NONE, nezha_service_windows

    n = len(samples)
    assert res["n"] == n and len(res["predictions"]) == n
    acc = res["fault_type"]["accuracy"]
    assert acc["n"] == n and acc["value"] == pytest.approx(acc["k"] / n)
    assert acc["k"] == sum(p["predicted_fault_type"] == p["fault_type"] for p in res["predictions"])
    for iv in (acc["wilson_ci95"], acc["bootstrap_ci95"], res["fault_type"]["macro_f1_ci95"]):
        assert 0.0 <= iv[0] <= iv[1] <= 1.0
    for rank in ("encoder", "metric_shift"):
        r = res["root_cause"][rank]
        assert r["top1"]["value"] <= r["top3"]["value"]
        key = "encoder_top3" if rank == "encoder" else "metric_shift_top3"
        assert r["top1"]["k"] == sum(p[key][:1] == [p["root_cause_service"]] for p in res["predictions"])
    for s, p in zip(samples, res["predictions"]):
        assert p["predicted_fault_type"] in (*NEZHA_FAULT_TYPES, NEZHA_NONE)
        services = nezha_service_windows(s)
        assert "front_service" not in services and s.root_cause_service in services
        assert set(p["encoder_top3"]) <= set(services)


@pytest.mark.timeout(120)
def test_diagnose_nezha_fixture(nezha_checkpoint):
    """Fault type and root-cause ranking on the Nezha fixture, with intervals; every service's window holds only
    its own metrics and logs."""
    from ifshm_ray.encoding.real_data import load_nezha, nezha_service_windows, sim_to_nezha_fault
    from ifshm_ray.encoding.service import EncoderWorker

    job = SimpleNamespace(**runpy.run_path(str(REPO / "jobs" / "diagnose.py"), run_name="diagnose_job"))
    samples = load_nezha(NEZHA_FIX)
    res = job.diagnose_nezha(EncoderWorker(checkpoint=str(nezha_checkpoint)), samples, n_boot=200)
    check_nezha_result(res, samples)
    # the fixture's root-cause pods are the ones whose metrics jump after injection
    assert res["root_cause"]["metric_shift"]["top1"]["value"] == 1.0
    assert res["services_per_sample"] == [3, 3]
    w = nezha_service_windows(samples[1])["ts-order-service"]
    assert set(w["metrics"]) == {"ts-order-service"} and w["logs"]
    assert all(line.startswith("ts-order-service ") for line in w["logs"])
    assert sim_to_nezha_fault("packet_loss_latency") == "network_delay"
    assert sim_to_nezha_fault("healthy") == sim_to_nezha_fault("gpu_xid79_fallen_off_bus") == "no_nezha_counterpart"
    # deterministic: the same numbers twice
    again = job.diagnose_nezha(EncoderWorker(checkpoint=str(nezha_checkpoint)), samples, n_boot=200)
    assert again["fault_type"] == res["fault_type"] and again["root_cause"] == res["root_cause"]


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_diagnose_nezha_through_the_pool(ray_session, nezha_checkpoint, capsys):
    """``jobs/diagnose.py --data <Nezha folder> --json``: the last line is the JSON report; the shared dev split
    when present, else the fixture."""
    from ifshm_ray.encoding.real_data import load_nezha

    job = SimpleNamespace(**runpy.run_path(str(REPO / "jobs" / "diagnose.py"), run_name="diagnose_job"))
    data = NEZHA_REAL if (NEZHA_REAL / "samples.json").is_file() else NEZHA_FIX
    out = job.main(["--data", str(data), "--encoder-checkpoint", str(nezha_checkpoint), "--json", "--n-boot", "100",
                    "--num-cpus", "0.25"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["fault_type"] == out["fault_type"] and last["dataset"] == "nezha_trainticket_fse2023"
    samples = load_nezha(data)
    check_nezha_result(out, samples)
    n_windows = len(samples) + sum(out["services_per_sample"])
    assert out["encoder"]["contexts"] == n_windows  # whole windows and every service's window, through the actor


@pytest.mark.skipif(not (NEZHA_REAL / "samples.json").is_file(), reason="../shared/data is absent")
@pytest.mark.timeout(120)
def test_diagnose_nezha_shared_dev_split(nezha_checkpoint):
    from ifshm_ray.encoding.real_data import load_nezha
    from ifshm_ray.encoding.service import EncoderWorker

    job = SimpleNamespace(**runpy.run_path(str(REPO / "jobs" / "diagnose.py"), run_name="diagnose_job"))
    samples = load_nezha(NEZHA_REAL)
    assert {s.fault_type for s in samples} <= {"return", "exception", "cpu_contention", "network_delay"}
    res = job.diagnose_nezha(EncoderWorker(checkpoint=str(nezha_checkpoint)), samples, n_boot=100)
    check_nezha_result(res, samples)
    assert min(res["services_per_sample"]) >= 40  # TrainTicket: ~46 services per sample

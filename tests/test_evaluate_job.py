"""jobs/evaluate.py end to end on a tiny budget (Ray tasks on the shared test Ray), its error messages, policy
labels, and the catalog hash it records."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_job

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_evaluate_smoke_several_policies(ray_session, tmp_out):
    res = load_job("evaluate").main(["--policy", "oracle,runbook,runbook-instant,random", "--faults",
                         "certificate_expiry,node_crash", "--episodes", "2", "--seed", "0", "--out", str(tmp_out),
                         "--task-cpus", "0.5"])
    for p in ("oracle", "runbook", "runbook-instant", "random"):
        m = json.loads((tmp_out / p / "metrics.json").read_text())
        for key in ("policy", "fault_set", "episodes", "mttr_mean_s", "mttr_p50_s", "mttr_p95_s", "detect_mean_s",
                    "repair_mean_s", "success_rate", "harmful_action_rate", "catalog_sha256", "runbook_sha256",
                    "per_fault", "false_action_rate", "time_to_mitigate_mean_s", "mttr_ci95", "split",
                    "escalation_rate", "timeout_rate"):
            assert key in m
        assert m["split"] == "handpicked" and m["mttr_ci95"][0] <= m["mttr_mean_s"] <= m["mttr_ci95"][1]
        assert m["episodes"] == 4 and set(m["per_fault"]) == {"certificate_expiry", "node_crash"}
    assert res["oracle"]["mttr_mean_s"] <= res["runbook"]["mttr_mean_s"]
    assert (tmp_out / "report.md").exists()
    assert (tmp_out / "mttr_per_fault_custom.png").stat().st_size > 1000
    assert (tmp_out / "mttr_paired_difference_custom.png").stat().st_size > 1000
    assert "Paired MTTR difference" in (tmp_out / "report.md").read_text()


@pytest.mark.timeout(300)
def test_evaluate_fault_sets_fault_free_and_compound(tmp_out):
    """Several fault sets: OUT/<set>/<policy>/metrics.json, a false-action rate on the fault-free set (the random
    policy acts, the oracle never), compound incidents of two faults, one report over the sets."""
    res = load_job("evaluate").main(["--policy", "oracle,escalate-first,random", "--faults", "fault_free,compound",
                                     "--episodes", "1", "--split", "handpicked", "--set", "time_limit_s=1200",
                                     "--out", str(tmp_out), "--no-ray"])
    ff, comp = res["fault_free"], res["compound"]
    assert ff["oracle"]["false_action_rate"] == 0.0 and ff["random"]["false_action_rate"] > 0.0
    assert ff["oracle"]["mttr_mean_s"] is None and ff["oracle"]["fault_free_episodes"] == ff["oracle"]["episodes"]
    assert comp["oracle"]["success_rate"] > 0 and comp["oracle"]["false_action_rate"] is None
    assert all("+" in f for f in comp["oracle"]["per_fault"])
    m = json.loads((tmp_out / "compound" / "escalate-first" / "metrics.json").read_text())
    assert m["escalation_rate"] == 1.0 and m["split"] == "handpicked"
    report = (tmp_out / "report.md").read_text()
    assert "## fault_free faults" in report and "## compound faults" in report


@pytest.mark.timeout(120)
def test_evaluate_single_policy_no_ray(tmp_out):
    r = subprocess.run([sys.executable, "jobs/evaluate.py", "--policy", "oracle", "--faults", "unknown",
                        "--episodes", "1", "--out", str(tmp_out), "--no-ray"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_out / "metrics.json").read_text())
    assert m["fault_set"] == "unknown" and m["success_rate"] == 1.0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args, msg", [
    (["--policy", "genius"], "unknown policy 'genius'"),
    (["--faults", "gpu_on_fire"], "unknown fault name"),
    (["--policy", "checkpoint:/nonexistent/x"], "does not exist"),
    (["--config", "/nonexistent.yaml"], "does not exist"),
    (["--policy", "checkpoint:tests,checkpoint:jobs"], "two policies are labelled 'ppo'"),
    (["--policy", "oracle,random,oracle"], "two policies are labelled 'oracle'"),
    (["--set", "step_s=-30"], "step_s = -30: Input should be greater than 0"),
    (["--set", "reward.harm_penaltyy=5"], "reward.harm_penaltyy: unknown config key"),
    (["--split", "nosuchsplit"], "unknown split 'nosuchsplit'"),
    (["--faults", "known,node_crash"], "mixes fault sets and fault names"),
])
def test_evaluate_bad_input(tmp_out, args, msg):
    r = subprocess.run([sys.executable, "jobs/evaluate.py", "--out", str(tmp_out), "--no-ray", *args], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert msg in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.timeout(30)
def test_checkpoints_need_distinct_labels(tmp_path):
    evaluate = load_job("evaluate")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    with pytest.raises(SystemExit, match="two policies are labelled 'ppo'.*its own label"):
        evaluate.parse_policies(f"checkpoint:{a},checkpoint:{b}")
    assert evaluate.parse_policies(f"oracle,checkpoint:{a}") == {"oracle": "oracle", "ppo": f"checkpoint:{a}"}
    assert evaluate.parse_policies(f"x=checkpoint:{a},y=checkpoint:{b}") == {"x": f"checkpoint:{a}",
                                                                            "y": f"checkpoint:{b}"}


@pytest.mark.timeout(60)
def test_metrics_record_the_hash_of_the_catalog_that_ran(tmp_out):
    """SimConfig.catalog names another catalog: metrics.json hashes that one, not the packaged default."""
    from ifshm_ray.sim.catalog import DATA_DIR, load_catalog

    catalog = tmp_out / "catalog.yaml"
    catalog.write_text("# a copy of the packaged catalog, so another file\n" + (DATA_DIR / "catalog.yaml").read_text())
    sim = tmp_out / "sim.yaml"
    sim.write_text(f"catalog: {catalog}\n")
    want, default = load_catalog(catalog).sha256, load_catalog().sha256
    assert want != default
    res = load_job("evaluate").main(["--policy", "oracle", "--faults", "node_crash", "--episodes", "1", "--config", str(sim),
                                "--out", str(tmp_out / "eval"), "--no-ray"])
    assert res["oracle"]["catalog_sha256"] == want
    assert json.loads((tmp_out / "eval" / "metrics.json").read_text())["catalog_sha256"] == want


def test_random_baseline_does_not_depend_on_how_episodes_are_grouped():
    """The harness groups episodes into Ray tasks by the CPUs free at the time; a random policy's episode must not
    depend on which episodes ran before it in the same task (it did: one RNG stream per task)."""
    from ifshm_ray.eval.harness import episode_seed, run_chunk

    jobs = [(f, episode_seed(1000, f, i)) for f in ("node_crash", "dns_upstream_failure") for i in range(2)]
    together = run_chunk("random", {"faults": "all"}, jobs, policy_seed=1000)
    alone = [run_chunk("random", {"faults": "all"}, [j], policy_seed=1000)[0] for j in reversed(jobs)][::-1]
    assert json.dumps(together) == json.dumps(alone)  # (NaN-aware: episodes that never acted have NaN times)


@pytest.mark.timeout(120)
def test_evaluate_split_selects_its_unknown_types(tmp_out):
    from ifshm_ray.sim.catalog import load_catalog

    res = load_job("evaluate").main(["--policy", "oracle", "--faults", "unknown", "--split", "logo_network",
                                     "--episodes", "1", "--out", str(tmp_out), "--no-ray"])
    m = json.loads((tmp_out / "metrics.json").read_text())
    assert m["split"] == "logo_network" and res["oracle"]["split"] == "logo_network"
    assert sorted(m["per_fault"]) == sorted(load_catalog().unknown_in("logo_network"))


@pytest.mark.timeout(120)
def test_evaluate_refuses_a_checkpoint_of_another_split(tmp_path):
    from ifshm_ray.policy.bundle import MANIFEST
    from ifshm_ray.serve.testing import untrained_policy_bundle

    bundle = untrained_policy_bundle(tmp_path / "run", env_config={"faults": "known", "split": "random1"})
    job = load_job("evaluate")
    with pytest.raises(SystemExit, match="policy 'ppo'.*trained on split 'random1'.*uses split 'handpicked'"):
        job.main(["--policy", f"checkpoint:{tmp_path / 'run'}", "--out", str(tmp_path / "e"), "--no-ray"])
    with pytest.raises(SystemExit, match="trained on split 'random1'.*uses split 'random3'"):
        job.main(["--policy", f"checkpoint:{bundle}", "--split", "random3", "--out", str(tmp_path / "e"), "--no-ray"])
    manifest = json.loads((bundle / MANIFEST).read_text())
    del manifest["split"], manifest["env"]["config"]["split"]  # as written before splits were recorded
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match="records no split.*counts as 'handpicked'.*uses split 'random1'"):
        job.main(["--policy", f"checkpoint:{bundle}", "--split", "random1", "--out", str(tmp_path / "e"), "--no-ray"])
    with pytest.raises(SystemExit, match="unknown split 'nope'.*handpicked"):
        job.main(["--policy", "oracle", "--split", "nope", "--out", str(tmp_path / "e"), "--no-ray"])

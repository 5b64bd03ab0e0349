"""Serve's /v1/heal with a meta-controller in the policy bundle (issue 15): the response's ``gate`` says who acts
and why; without ``meta_state.json`` in the bundle the field is null and nothing else changes. In-process (FastAPI
TestClient, a stub diagnoser with a chosen unknown score, an untrained policy bundle; no Ray)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from ifshm_ray.meta.config import MetaConfig
from ifshm_ray.meta.controller import STATE_FILE, MetaController
from ifshm_ray.meta.novelty import calibrate
from ifshm_ray.serve.config import ServeConfig


@pytest.fixture(scope="module")
def bundle_and_windows(tmp_path_factory):
    from ifshm_ray.serve.testing import sample_windows, untrained_policy_bundle

    return untrained_policy_bundle(tmp_path_factory.mktemp("bundle")), sample_windows(2, seed=5)


def _client(bundle, unknown_score: float):
    from fastapi.testclient import TestClient

    from ifshm_ray.policy.bundle import load_policy_bundle
    from ifshm_ray.serve.http import create_app
    from ifshm_ray.serve.service import HealingService

    async def diagnose_one(t):
        return {"fault_mode": "node_crash", "confidence": 0.9, "unknown_score": unknown_score,
                "top": [{"fault": "node_crash", "prob": 0.9}, {"fault": "network_partition", "prob": 0.05},
                        {"fault": "dns_upstream_failure", "prob": 0.05}]}

    cfg = ServeConfig(checkpoint=str(bundle), max_unknown_score=1e6).validate()
    return TestClient(create_app(HealingService(load_policy_bundle(bundle), diagnose_one, cfg)))


@pytest.mark.timeout(120)
def test_heal_without_meta_state_has_no_gate(bundle_and_windows):
    bundle, windows = bundle_and_windows
    r = _client(bundle, 5.0).post("/v1/heal", json={"telemetry": windows[0]})
    assert r.status_code == 200, r.text
    assert r.json()["gate"] is None


@pytest.mark.timeout(120)
def test_heal_serves_a_bundle_trained_on_the_continual_stream_env(bundle_and_windows, tmp_path):
    """A bundle from phase 2 of the continual protocol records the stream env's vector-only keys (fault_weights,
    num_envs) in its manifest; Serve (and every single env built from the manifest) drops them."""
    import json

    src, windows = bundle_and_windows
    bundle = tmp_path / "bundle"
    shutil.copytree(src, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["env"]["config"].update({"fault_weights": {"node_crash": 0.9, "dns_upstream_failure": 0.1},
                                      "num_envs": 8})
    manifest["env"]["entry_point"] = "ifshm_ray.meta.continual:make_stream_env"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    r = _client(bundle, 0.1).post("/v1/heal", json={"telemetry": windows[0]})
    assert r.status_code == 200, r.text


@pytest.mark.timeout(120)
def test_heal_gate_defers_novel_incidents_and_says_why(bundle_and_windows, tmp_path):
    src, windows = bundle_and_windows
    bundle = tmp_path / "bundle"
    shutil.copytree(src, bundle)
    meta = MetaController(MetaConfig(enabled=True, trust={"min_episodes": 1}), calibrate(np.linspace(0, 1, 100)))
    meta.record(None, "runbook", True, 900.0)
    meta.record(None, "escalate", True, 400.0)  # a human was measured faster on novel incidents
    meta.save(bundle)
    assert (bundle / STATE_FILE).is_file()

    firing = {**windows[0], "alarms": [{"name": "ServiceErrorBudgetBurn", "severity": "critical",
                                        "entity": "coredns", "state": "firing", "active_for_s": 30.0,
                                        "summary": "coredns burns its error budget fast"}]}
    client = _client(bundle, 5.0)
    novel = client.post("/v1/heal", json={"telemetry": firing}).json()
    g = novel["gate"]
    assert g["deferred"] and g["novel"] and g["actor"] == "escalate" and g["threshold"] == pytest.approx(97 / 99)
    assert "5.00 > threshold 0.98" in g["reason"] and "escalation's 400 s" in g["reason"]
    assert g["decides_here"] and g["applies"] and g["score_source"] == "encoder"  # (a firing alarm: it decides)
    assert novel["escalate"] and any("deferred to escalate" in x for x in novel["escalate_reasons"])
    # a calm window (no alarm) of an incident whose gate has not decided yet: the policy's answer stands, as in
    # training (the gate decides at the first firing alarm or the first window the policy would act in)
    calm = client.post("/v1/heal", json={"telemetry": windows[0]}).json()  # (decide_on: firing, the default)
    assert calm["gate"]["deferred"] and not calm["gate"]["decides_here"] and not calm["gate"]["applies"]
    assert not any("gate" in x for x in calm["escalate_reasons"])
    # the incident's later windows keep the actor decided earlier (sent back as incident_gate)
    kept = client.post("/v1/heal", json={"telemetry": windows[0], "incident_gate": "escalate"}).json()
    assert kept["gate"]["actor"] == "escalate" and kept["gate"]["applies"] and kept["escalate"]
    assert kept["gate"]["reason"].startswith("decided at an earlier window of this incident: escalate")
    stays = client.post("/v1/heal", json={"telemetry": firing, "incident_gate": "policy"}).json()
    assert stays["gate"]["actor"] == "policy" and not stays["gate"]["deferred"] and stays["gate"]["novel"]
    assert not any("meta-controller gate" in x for x in stays["escalate_reasons"])
    bad = client.post("/v1/heal", json={"telemetry": firing, "incident_gate": "oracle"})
    assert bad.status_code == 422

    known = _client(bundle, 0.2).post("/v1/heal", json={"telemetry": firing}).json()
    assert known["gate"]["actor"] == "policy" and not known["gate"]["deferred"] and not known["gate"]["novel"]
    assert not any("gate" in x for x in known["escalate_reasons"])
    # serving only reads the state: nothing was clustered or counted
    assert MetaController.load(bundle).state() == meta.state()


@pytest.mark.timeout(120)
def test_heal_gate_scores_novelty_with_the_bundles_diagnoser(bundle_and_windows, tmp_path):
    """A bundle with a feature diagnoser (diagnoser.json, what jobs/continual.py calibrates the gate on) is scored
    by it, not by the served encoder's unknown score (another scale): the gate's score is the diagnoser's."""
    import json

    from ifshm_ray.meta.diagnose import FeatureDiagnoser

    src, windows = bundle_and_windows
    bundle = tmp_path / "bundle"
    shutil.copytree(src, bundle)
    sim_config = json.loads((bundle / "manifest.json").read_text())["env"]["config"]
    from ifshm_ray.serve.testing import sample_windows

    fit = [("node_crash" if i % 2 else "dns_upstream_failure", i, w) for i, w in enumerate(sample_windows(8, seed=1))]
    diag = FeatureDiagnoser.fit(sim_config, fit)
    diag.save(bundle)
    meta = MetaController(MetaConfig(enabled=True), calibrate(np.linspace(0, 1, 100)))
    meta.save(bundle)
    r = _client(bundle, 123.0).post("/v1/heal", json={"telemetry": windows[1]}).json()
    want, _ = diag(windows[1])
    assert r["gate"]["score_source"] == "diagnoser"
    assert r["gate"]["unknown_score"] == pytest.approx(float(want)) and r["gate"]["unknown_score"] != 123.0


@pytest.mark.timeout(120)
def test_attach_gate_writes_a_servable_gated_bundle_and_refuses_mismatches(bundle_and_windows, tmp_path):
    """python -m ifshm_ray.meta.attach: a phase-1 bundle + a calibration + the diagnoser it was calibrated on -> a
    bundle whose /v1/heal gates with that diagnoser's score; a diagnoser for another observation, an encoder
    diagnoser, an existing --out and a missing calibration are refused with a clear message."""
    import json

    from ifshm_ray.meta.attach import ATTACHED_FILE, main
    from ifshm_ray.meta.diagnose import FeatureDiagnoser
    from ifshm_ray.serve.testing import sample_windows

    src, windows = bundle_and_windows
    sim_config = json.loads((src / "manifest.json").read_text())["env"]["config"]
    fit = [("node_crash" if i % 2 else "dns_upstream_failure", i, w) for i, w in enumerate(sample_windows(8, seed=1))]
    d = tmp_path / "seed"
    FeatureDiagnoser.fit(sim_config, fit).save(d)
    calibrate(np.linspace(0, 1, 100)).save(d / "novelty_calibration.json")
    (tmp_path / "meta.yaml").write_text("meta:\n  decide_on: firing\n  trust: {prior_strength: 5}\n")
    args = ["--bundle", str(src), "--calibration", str(d / "novelty_calibration.json"), "--diagnoser",
            str(d / "diagnoser.json"), "--meta-config", str(tmp_path / "meta.yaml")]
    assert main(args + ["--out", str(tmp_path / "gated")]) == 0
    out = tmp_path / "gated"
    meta = MetaController.load(out)
    assert meta.config.enabled and meta.config.trust.prior_strength == 5 and meta.threshold == pytest.approx(97 / 99)
    assert json.loads((out / ATTACHED_FILE).read_text())["fallback"] == "runbook"
    r = _client(out, 123.0).post("/v1/heal", json={"telemetry": windows[1]}).json()
    assert r["gate"]["score_source"] == "diagnoser" and r["gate"]["unknown_score"] != 123.0

    assert main(args + ["--out", str(out)]) == 2  # exists
    bad = json.loads((d / "diagnoser.json").read_text())
    for k in ("mean", "std", "unseen"):
        if isinstance(bad.get(k), list):
            bad[k] = bad[k] + [0.0 if k != "unseen" else False]
    bad["prototypes"] = [p + [0.0] for p in bad["prototypes"]]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "diagnoser.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="features, the bundle's policy reads"):
        from ifshm_ray.meta.attach import attach_gate
        attach_gate(src, d / "novelty_calibration.json", tmp_path / "bad" / "diagnoser.json", tmp_path / "meta.yaml",
                    tmp_path / "gated2")
    assert not (tmp_path / "gated2").exists()
    assert main(args[:2] + ["--calibration", str(tmp_path / "nope.json")] + args[4:] +
                ["--out", str(tmp_path / "gated3")]) == 2
    assert not (tmp_path / "gated3").exists()

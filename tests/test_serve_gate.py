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

    novel = _client(bundle, 5.0).post("/v1/heal", json={"telemetry": windows[0]}).json()
    g = novel["gate"]
    assert g["deferred"] and g["novel"] and g["actor"] == "escalate" and g["threshold"] == pytest.approx(97 / 99)
    assert "5.00 > threshold 0.98" in g["reason"] and "escalation's 400 s" in g["reason"]
    assert novel["escalate"] and any("deferred to escalate" in x for x in novel["escalate_reasons"])

    known = _client(bundle, 0.2).post("/v1/heal", json={"telemetry": windows[1]}).json()
    assert known["gate"]["actor"] == "policy" and not known["gate"]["deferred"] and not known["gate"]["novel"]
    assert not any("gate" in x for x in known["escalate_reasons"])
    # serving only reads the state: nothing was clustered or counted
    assert MetaController.load(bundle).state() == meta.state()

"""End to end through real Ray Serve (the session's local Ray): the app builder, the encoder deployment behind its
handle, HTTP on loopback; plus the Serve config YAMLs against Serve's schema and ``jobs/serve.py --help``."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", ["serve.yaml", "cluster_serve.yaml"])
def test_serve_config_yaml_is_valid(name):
    from ray.serve.schema import ServeDeploySchema

    from ifshm_ray.serve.app import ENCODER_DEPLOYMENT, INGRESS_DEPLOYMENT
    from ifshm_ray.serve.config import ServeConfig, serve_config_from_args

    data = yaml.safe_load((REPO / "configs" / name).read_text())
    schema = ServeDeploySchema.model_validate(data)
    app = schema.applications[0]
    assert app.import_path == "ifshm_ray.serve.app:build_app"
    assert {d.name for d in app.deployments} == {INGRESS_DEPLOYMENT, ENCODER_DEPLOYMENT}
    assert isinstance(serve_config_from_args(app.args), ServeConfig)  # every arg is a ServeConfig field
    if name == "cluster_serve.yaml":
        enc = next(d for d in app.deployments if d.name == ENCODER_DEPLOYMENT)
        assert enc.ray_actor_options.num_gpus == 1


@pytest.mark.timeout(30)
def test_jobs_serve_help():
    r = subprocess.run([sys.executable, str(REPO / "jobs" / "serve.py"), "--help"], capture_output=True, text=True,
                       timeout=25)
    assert r.returncode == 0 and "--checkpoint" in r.stdout and "--encoder" in r.stdout


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_serve_end_to_end(ray_session, tmp_path):
    import httpx
    from ray import serve

    from ifshm_ray.serve.app import build_app
    from ifshm_ray.serve.testing import sample_windows, untrained_policy_bundle

    from test_serve_api import alertmanager_payload

    bundle = untrained_policy_bundle(tmp_path / "run")
    window = sample_windows(4, seed=1)[-1]
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"checkpoint": str(tmp_path / "run"), "model": "tiny-llama", "ingress_num_cpus": "0.25",
                             "encoder_num_cpus": "0.25", "max_batch_size": "4"}),
                  name="ifshm", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=60) as c:
            h = c.get("/healthz").json()
            assert h["status"] == "ok" and h["encoder"]["model"] == "tiny-llama"
            assert h["policy"]["path"] == str(bundle)
            heal = c.post("/v1/heal", json={"telemetry": window})
            assert heal.status_code == 200, heal.text
            assert heal.json()["action"]["category"] and "escalate" in heal.json()
            diag = c.post("/v1/diagnose", json={"telemetry": window})
            assert diag.status_code == 200 and diag.json()["fault_mode"] == heal.json()["diagnosis"]["fault_mode"]
            am = c.post("/v1/alertmanager", json=alertmanager_payload())
            assert am.status_code == 200 and am.json()["alerts_used"] == 2, am.text
            bad = c.post("/v1/heal", json={"telemetry": {"metrics": {"db-7": {"cpu": [1.0]}}}})
            assert bad.status_code == 422 and "gpu-3" in bad.json()["detail"]
            assert c.post("/v1/heal", content=b"{", headers={"content-type": "application/json"}).status_code == 422
            assert len(c.get("/v1/faults").json()) >= 29
            assert "/v1/heal" in c.get("/openapi.json").json()["paths"]
    finally:
        serve.shutdown()

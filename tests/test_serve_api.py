"""The Serve app's HTTP contract, in-process (FastAPI TestClient; policy bundle and encoder injected, no Ray cluster):
endpoints, validation (422), limits (413), bearer-token auth (401), Alertmanager mapping, expected recovery time."""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from ifshm_ray.config import ConfigError
from ifshm_ray.serve.config import ServeConfig, serve_config_from_args
from ifshm_ray.serve.service import InputError, alertmanager_to_telemetry, parse_rfc3339, resolve_entity

TOKEN_ENV = "IFSHM_TEST_SERVE_TOKEN"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One untrained policy bundle, one tiny encoder and a few simulator windows for the whole module."""
    from ifshm_ray.policy.bundle import load_policy_bundle
    from ifshm_ray.serve.service import serve_encoder
    from ifshm_ray.serve.testing import sample_windows, untrained_policy_bundle

    bundle = untrained_policy_bundle(tmp_path_factory.mktemp("bundle"))
    return {"bundle": bundle, "policy": load_policy_bundle(bundle), "diagnoser": serve_encoder(model="tiny-llama"),
            "windows": sample_windows(6, seed=3)}


@pytest.fixture(scope="module")
def make_client(served):
    from fastapi.testclient import TestClient

    from ifshm_ray.serve.http import create_app
    from ifshm_ray.serve.service import HealingService

    diagnoser = served["diagnoser"]

    async def diagnose_one(t):
        return (await asyncio.to_thread(diagnoser.diagnose, [t]))[0]

    async def info():
        return diagnoser.info()

    def make(**overrides):
        cfg = ServeConfig(checkpoint=str(served["bundle"]), auth_token_env=TOKEN_ENV, **overrides).validate()
        service = HealingService(served["policy"], diagnose_one, cfg, info)
        return TestClient(create_app(service)), service

    return make


@pytest.fixture(scope="module")
def client(make_client):
    return make_client()[0]


def alertmanager_payload(now: datetime | None = None) -> dict:
    """A notification as Alertmanager's webhook receiver sends it (version 4)."""
    now = now or datetime.now(timezone.utc)
    started = (now - timedelta(minutes=16)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"  # Go gives nanoseconds
    return {
        "version": "4",
        "groupKey": '{}:{cluster="ai-prod"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "ifshm",
        "groupLabels": {"cluster": "ai-prod"},
        "commonLabels": {"cluster": "ai-prod"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": [
            {"status": "firing", "labels": {"alertname": "KubePodCrashLooping", "severity": "warning",
                                            "pod": "inference-server-7d9f8b6c5-x2k4q", "namespace": "ml",
                                            "cluster": "ai-prod"},
             "annotations": {"summary": "Pod ml/inference-server-7d9f8b6c5-x2k4q is in CrashLoopBackOff"},
             "startsAt": started, "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "http://prometheus.example:9090/graph?g0.expr=...", "fingerprint": "c1a2b3d4e5f60718"},
            {"status": "firing", "labels": {"alertname": "NodeHighTemp", "severity": "critical",
                                            "instance": "gpu-3:9100", "cluster": "ai-prod"},
             "annotations": {"description": "GPU node gpu-3 is hot"}, "startsAt": started,
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": "aa"},
            {"status": "resolved", "labels": {"alertname": "KubeNodeNotReady", "node": "gpu-1", "cluster": "ai-prod"},
             "annotations": {}, "startsAt": started, "endsAt": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
             "generatorURL": "", "fingerprint": "bb"},
        ],
    }


# ------------------------------------------------------------------------------------------------ contract
@pytest.mark.timeout(120)
def test_heal_contract(client, served):
    policy = served["policy"]
    for window in served["windows"][-2:]:
        r = client.post("/v1/heal", json={"telemetry": window})
        assert r.status_code == 200, r.text
        body = r.json()
        a = body["action"]
        assert a["category"] in policy.categories
        assert a["target"] is None or a["target"] in policy.target_names
        assert a["ratio"] is None or a["ratio"] in policy.ratio_levels
        assert a["probability"] is None or 0.0 <= a["probability"] <= 1.0
        assert 0.0 <= body["category_probability"] <= 1.0
        assert len(body["alternatives"]) <= ServeConfig.model_fields["top_k"].default - 1
        probs = [x["probability"] for x in body["alternatives"]]
        assert probs == sorted(probs, reverse=True)
        assert isinstance(body["escalate"], bool) and isinstance(body["escalate_reasons"], list)
        assert body["escalate"] == bool(body["escalate_reasons"])
        d = body["diagnosis"]
        assert d["fault_mode"] in served["diagnoser"].encoder.fault_types
        assert 0.0 <= d["confidence"] <= 1.0 and len(d["top"]) == 3 and d["explanation"]
        assert body["expected_recovery_basis"]
    # the recommendation is the bundle's deterministic action
    from ifshm_ray.env.observation import TelemetryObserver
    from ifshm_ray.env.fault_env import split_env_config

    sim_cfg, _ = split_env_config(policy.manifest["env"]["config"])
    c, t, _ = policy.act(TelemetryObserver(sim_cfg).observe(served["windows"][-1]))
    assert body["action"]["category"] == policy.categories[c]


@pytest.mark.timeout(120)
def test_heal_accepts_the_incident_history(make_client, served):
    """``history`` (and the older ``last_action`` / ``cordoned``) reach the observation as the env builds it."""
    from ifshm_ray.env.fault_env import split_env_config
    from ifshm_ray.env.observation import TelemetryObserver

    client, service = make_client()
    policy, window = served["policy"], served["windows"][-1]
    observer = TelemetryObserver(split_env_config(policy.manifest["env"]["config"])[0])
    history = [{"category": "drain", "target": "gpu-1", "steps_ago": 3},
               {"category": "restart", "target": "inference-server", "steps_ago": 1}]
    obs = observer.observe(window, history=history)
    assert not np.array_equal(obs["obs"], observer.observe(window)["obs"])
    assert obs["action_mask"].reshape(len(policy.categories), -1)[policy.categories.index("drain"),
                                                                  policy.target_names.index("gpu-1")] == 1  # (retry)
    np.testing.assert_array_equal(obs["obs"], observer.observe(window, last_action="restart", cordoned=["gpu-1"],
                                                               history=history)["obs"])
    seen = []
    real = service.observer.observe
    service.observer.observe = lambda *a, **k: seen.append(real(*a, **k)) or seen[-1]
    try:
        r = client.post("/v1/heal", json={"telemetry": window, "history": history})
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(seen[-1]["obs"], obs["obs"])
        c, t, _ = policy.act(obs)
        assert r.json()["action"]["category"] == policy.categories[c]
        # the older fields alone still work: last_action is the entry one step ago, without target
        r = client.post("/v1/heal", json={"telemetry": window, "last_action": "escalate", "cordoned": ["gpu-1"]})
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(seen[-1]["obs"], observer.observe(
            window, cordoned=["gpu-1"], history=[{"category": "escalate", "target": None, "steps_ago": 1}])["obs"])
    finally:
        service.observer.observe = real


@pytest.mark.timeout(60)
def test_diagnose_contract(client, served):
    r = client.post("/v1/diagnose", json={"telemetry": served["windows"][-1]})
    assert r.status_code == 200, r.text
    d = r.json()
    assert set(d) >= {"fault_mode", "confidence", "unknown_score", "unknown", "top", "explanation"}
    assert d["fault_mode"] == d["top"][0]["fault"]
    # same window -> same answer (served from the result cache the second time)
    assert client.post("/v1/diagnose", json={"telemetry": served["windows"][-1]}).json() == d
    # an empty window is valid
    assert client.post("/v1/diagnose", json={"telemetry": {}}).status_code == 200


@pytest.mark.timeout(60)
def test_faults_healthz_docs(client):
    faults = client.get("/v1/faults").json()
    assert len(faults) >= 29 and {"name", "family", "known", "description", "remedies"} <= set(faults[0])
    assert any(not f["known"] for f in faults)
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and "gpu-3" in h["topology"]["nodes"] and h["encoder"]["trained"] is False
    spec = client.get("/openapi.json").json()
    assert {"/v1/diagnose", "/v1/heal", "/v1/alertmanager", "/v1/faults", "/healthz"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


@pytest.mark.timeout(60)
def test_expected_recovery_and_escalation(make_client, served):
    _, service = make_client()
    eta, basis = service.expected_recovery("gpu_xid79_fallen_off_bus", "drain")
    assert eta == pytest.approx((420 + 900) / 2 / (1 - 0.1) + 3 * 30.0) and "drain heals" in basis  # (catalog: drawn
    # in [420, 900] s, fails 1 in 10: the mean over the expected attempts)
    eta, basis = service.expected_recovery("gpu_xid79_fallen_off_bus", "restart")
    assert eta is None and "fastest healing remedy: drain" in basis
    assert service.expected_recovery("healthy", "observe")[0] == 0.0
    assert service.expected_recovery("not_a_fault", "drain")[0] is None
    window = {"telemetry": served["windows"][-1]}
    always, _ = make_client(min_confidence=1.0)
    body = always.post("/v1/heal", json=window).json()
    assert body["escalate"] and any("confidence" in r for r in body["escalate_reasons"])
    never, _ = make_client(min_confidence=0.0)
    body = never.post("/v1/heal", json=window).json()
    assert not any("confidence" in r for r in body["escalate_reasons"])


@pytest.mark.timeout(120)
def test_series_a_window_lacks_are_read_at_the_steady_state_and_named(make_client, served):
    """``missing_metrics``: a series the simulator reports in every window but the request leaves out is read at
    the simulator's fault-free value (default), listed in ``imputed_metrics``; ``zero`` keeps the old defaults;
    ``error`` refuses the request."""
    import copy

    from ifshm_ray.env.fault_env import split_env_config
    from ifshm_ray.env.observation import TelemetryObserver, steady_state_metrics

    full = served["windows"][-1]
    window = copy.deepcopy(full)
    del window["metrics"]["coredns"]
    del window["metrics"]["gpu-3"]["DCGM_FI_DEV_GPU_TEMP"]
    dropped = {f"coredns/{m}" for m in full["metrics"]["coredns"]} | {"gpu-3/DCGM_FI_DEV_GPU_TEMP"}
    client, service = make_client()
    seen = []
    real = service.observer.observe
    service.observer.observe = lambda *a, **k: seen.append(real(*a, **k)) or seen[-1]
    try:
        body = client.post("/v1/heal", json={"telemetry": window}).json()
        assert set(body["imputed_metrics"]) == dropped
        # the observation is that of the window with those series at the steady state
        sim_cfg = split_env_config(served["policy"].manifest["env"]["config"])[0]
        ss = steady_state_metrics(sim_cfg, episodes=8, steps=4, seed=0)
        assert ss == service.steady_state  # (deterministic, the ServeConfig defaults)
        assert ss["gpu-3"]["DCGM_FI_DEV_GPU_TEMP"] > 30.0 and 0.0 < ss["coredns"]["cpu_util"] < 1.0
        patched = copy.deepcopy(window)
        patched["metrics"]["coredns"] = {m: [v] for m, v in ss["coredns"].items()}
        patched["metrics"]["gpu-3"]["DCGM_FI_DEV_GPU_TEMP"] = [ss["gpu-3"]["DCGM_FI_DEV_GPU_TEMP"]]
        np.testing.assert_array_equal(seen[-1]["obs"], TelemetryObserver(sim_cfg).observe(patched)["obs"])
        assert not np.array_equal(seen[-1]["obs"], TelemetryObserver(sim_cfg).observe(window)["obs"])
        # a complete window reads nothing at the steady state
        assert client.post("/v1/heal", json={"telemetry": full}).json()["imputed_metrics"] == []
        np.testing.assert_array_equal(seen[-1]["obs"], TelemetryObserver(sim_cfg).observe(full)["obs"])
    finally:
        service.observer.observe = real
    zero, _ = make_client(missing_metrics="zero")
    body = zero.post("/v1/heal", json={"telemetry": window}).json()
    assert set(body["imputed_metrics"]) == dropped
    strict, _ = make_client(missing_metrics="error")
    r = strict.post("/v1/heal", json={"telemetry": window})
    assert r.status_code == 422 and "missing_metrics: error" in r.json()["detail"]
    assert "coredns/cpu_util" in r.json()["detail"]
    assert strict.post("/v1/heal", json={"telemetry": full}).status_code == 200


def test_missing_series_are_logged_when_their_set_changes(make_client, served, caplog):
    import copy
    import logging

    _, service = make_client()
    window = copy.deepcopy(served["windows"][-1])
    del window["metrics"]["coredns"]
    empty = {**window, "metrics": {}}
    with caplog.at_level(logging.WARNING, logger="ifshm_ray.serve.service"):
        for _ in range(3):  # two kinds of request alternating: one warning for each
            service._note_missing(service.missing(window))
            service._note_missing(service.missing(empty))
            service._note_missing(service.missing(served["windows"][-1]))  # (complete: nothing to say)
    warned = [r.getMessage() for r in caplog.records if "lacks" in r.getMessage()]
    assert len(warned) == 2 and "coredns" in warned[0] and "steady state" in warned[0]
    assert f"lacks {len(service.missing(empty))} of {len(service.missing(empty))}" in warned[1]


# ------------------------------------------------------------------------------------------- Alertmanager
@pytest.mark.timeout(60)
def test_alertmanager_mapping():
    services, nodes = ["api-gateway", "inference-server"], ["gpu-1", "gpu-3"]
    now = datetime(2026, 11, 28, 10, 31, 2, tzinfo=timezone.utc)
    payload = alertmanager_payload(now)
    tel, used, resolved = alertmanager_to_telemetry(payload, services, nodes, now=now)
    assert (used, resolved) == (2, 1)
    a, b = tel["alarms"]
    assert a == {"name": "KubePodCrashLooping", "severity": "warning", "entity": "inference-server",
                 "state": "firing", "active_for_s": pytest.approx(960.0, abs=1e-3),
                 "summary": "Pod ml/inference-server-7d9f8b6c5-x2k4q is in CrashLoopBackOff"}
    assert b["entity"] == "gpu-3" and b["severity"] == "critical" and b["summary"] == "GPU node gpu-3 is hot"
    assert resolve_entity({"service": "api-gateway"}, services, nodes) == "api-gateway"
    assert resolve_entity({"node": "gpu-1", "instance": "10.0.0.1:9100"}, services, nodes) == "gpu-1"
    assert resolve_entity({"job": "x"}, services, nodes) is None
    with pytest.raises(InputError, match="valid services"):
        resolve_entity({"pod": "postgres-0"}, services, nodes)
    assert parse_rfc3339("2026-11-28T10:15:02.123456789Z") == datetime(2026, 11, 28, 10, 15, 2, 123456,
                                                                         tzinfo=timezone.utc)


@pytest.mark.timeout(60)
def test_alertmanager_endpoint(client):
    r = client.post("/v1/alertmanager", json=alertmanager_payload())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["alerts_used"] == 2 and body["alerts_resolved"] == 1 and body["groupKey"]
    assert "KubePodCrashLooping on inference-server" in body["diagnosis"]["explanation"]
    assert body["action"]["category"]
    bad = alertmanager_payload()
    bad["alerts"][0]["labels"]["pod"] = "postgres-0"
    r = client.post("/v1/alertmanager", json=bad)
    assert r.status_code == 422 and "inference-server" in r.json()["detail"]
    bad = alertmanager_payload()
    bad["alerts"][0]["startsAt"] = "yesterday"
    r = client.post("/v1/alertmanager", json=bad)
    assert r.status_code == 422 and "RFC 3339" in r.json()["detail"]
    bad = alertmanager_payload()
    del bad["alerts"][0]["labels"]["alertname"]
    assert client.post("/v1/alertmanager", json=bad).status_code == 422


# ------------------------------------------------------------------------------------------------- errors
BAD_REQUESTS = [
    ("malformed JSON", "/v1/heal", b'{"telemetry": {', "JSON"),
    ("not an object", "/v1/heal", b"[1, 2]", "valid dictionary"),
    ("missing telemetry", "/v1/diagnose", b"{}", "telemetry"),
    ("logs not strings", "/v1/diagnose", json.dumps({"telemetry": {"logs": [1, 2]}}).encode(), "logs"),
    ("metric as string", "/v1/diagnose",
     json.dumps({"telemetry": {"metrics": {"gpu-1": {"temp": ["80"]}}}}).encode(), "metrics"),
    ("NaN sample", "/v1/heal", b'{"telemetry": {"metrics": {"gpu-1": {"temp": [NaN]}}}}', "finite"),
    ("unknown metric entity", "/v1/heal",
     json.dumps({"telemetry": {"metrics": {"db-7": {"cpu": [1.0]}}}}).encode(), "valid services and nodes"),
    ("unknown alarm entity", "/v1/diagnose",
     json.dumps({"telemetry": {"alarms": [{"name": "X", "entity": "db-7"}]}}).encode(), "valid services and nodes"),
    ("bad severity", "/v1/diagnose",
     json.dumps({"telemetry": {"alarms": [{"name": "X", "severity": "fatal"}]}}).encode(), "severity"),
    ("unknown top-level key", "/v1/heal", json.dumps({"telemetry": {}, "foo": 1}).encode(), "foo"),
    ("bad last_action", "/v1/heal", json.dumps({"telemetry": {}, "last_action": "reboot"}).encode(), "last_action"),
    ("unknown cordoned node", "/v1/heal", json.dumps({"telemetry": {}, "cordoned": ["gpu-99"]}).encode(), "gpu-99"),
    ("unknown history target", "/v1/heal",
     json.dumps({"telemetry": {}, "history": [{"category": "restart", "target": "db-7", "steps_ago": 1}]}).encode(),
     "db-7"),
    ("history target of the wrong kind", "/v1/heal",
     json.dumps({"telemetry": {}, "history": [{"category": "drain", "target": "api-gateway", "steps_ago": 2}]}).encode(),
     "drain takes a node"),
    ("history steps_ago 0", "/v1/heal",
     json.dumps({"telemetry": {}, "history": [{"category": "escalate", "steps_ago": 0}]}).encode(), "steps_ago"),
    ("two history actions in one step", "/v1/heal",
     json.dumps({"telemetry": {}, "history": [{"category": "escalate", "steps_ago": 1},
                                              {"category": "rollback", "target": "api-gateway", "steps_ago": 1}]}).encode(),
     "same steps_ago"),
    ("last_action disagrees with history", "/v1/heal",
     json.dumps({"telemetry": {}, "last_action": "restart",
                 "history": [{"category": "rollback", "target": "api-gateway", "steps_ago": 1}]}).encode(),
     "disagrees"),
    ("alertmanager no alerts", "/v1/alertmanager", json.dumps({"status": "firing"}).encode(), "alerts"),
    ("alertmanager bad version", "/v1/alertmanager",
     json.dumps({"version": "3", "status": "firing", "alerts": []}).encode(), "version"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name,path,body,needle", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_is_422_with_message(client, name, path, body, needle):
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, (name, r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and needle in detail, detail


@pytest.mark.timeout(60)
def test_limits_are_413_with_message(make_client):
    client, _ = make_client(max_body_bytes=20_000, max_log_lines=10, max_line_chars=100, max_metric_series=4,
                            max_samples_per_series=5, max_alarms=3)
    cases = [
        ({"telemetry": {"logs": ["x"] * 11}}, "max_log_lines"),
        ({"telemetry": {"logs": ["x" * 101]}}, "max_line_chars"),
        ({"telemetry": {"metrics": {"gpu-1": {f"m{i}": [1.0] for i in range(5)}}}}, "max_metric_series"),
        ({"telemetry": {"metrics": {"gpu-1": {"temp": [1.0] * 6}}}}, "max_samples_per_series"),
        ({"telemetry": {"alarms": [{"name": "A"}] * 4}}, "max_alarms"),
        ({"telemetry": {"logs": ["y" * 99] * 300}}, "max_body_bytes"),
    ]
    for payload, needle in cases:
        r = client.post("/v1/heal", json=payload)
        assert r.status_code == 413 and needle in r.json()["detail"], (needle, r.status_code, r.text)
    many = alertmanager_payload()
    many["alerts"] = many["alerts"][:1] * 4
    r = client.post("/v1/alertmanager", json=many)
    assert r.status_code == 413 and "max_alarms" in r.json()["detail"]

    # a streamed (chunked) body without Content-Length is cut off too
    def chunks():
        yield b'{"telemetry": {"logs": ['
        for _ in range(300):
            yield b'"' + b"z" * 90 + b'",'
        yield b'"z"]}}'

    r = client.post("/v1/diagnose", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]


@pytest.mark.timeout(60)
def test_bearer_token_auth(make_client, served, monkeypatch):
    window = {"telemetry": served["windows"][0]}
    open_client, _ = make_client()
    assert open_client.post("/v1/diagnose", json=window).status_code == 200  # auth is off by default
    monkeypatch.setenv(TOKEN_ENV, "s3cret-token")
    client, _ = make_client()
    for path, kw in (("/v1/diagnose", {"json": window}), ("/v1/heal", {"json": window}),
                     ("/v1/alertmanager", {"json": alertmanager_payload()})):
        r = client.post(path, **kw)
        assert r.status_code == 401 and "Bearer" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
        r = client.post(path, headers={"Authorization": "Bearer wrong"}, **kw)
        assert r.status_code == 401
        assert client.post(path, headers={"Authorization": "Bearer s3cret-token"}, **kw).status_code == 200
    assert client.get("/v1/faults").status_code == 401
    assert client.get("/healthz").status_code == 200 and client.get("/healthz").json()["auth"] is True
    assert client.get("/openapi.json").status_code == 200
    # a token in the config wins over the variable
    cfg_client, _ = make_client(auth_token="from-config")
    assert cfg_client.post("/v1/diagnose", json=window,
                           headers={"Authorization": "Bearer from-config"}).status_code == 200


@pytest.mark.timeout(30)
def test_serve_config_from_args():
    cfg = serve_config_from_args({"checkpoint": "x", "max_log_lines": "10", "min_confidence": "0.3",
                                  "encoder_checkpoint": "none"})
    assert cfg.max_log_lines == 10 and cfg.min_confidence == 0.3 and cfg.encoder_checkpoint is None
    with pytest.raises(ConfigError, match="renamed: use 'encoder_checkpoint'"):
        serve_config_from_args({"checkpoint": "x", "encoder": "results/encoder"})
    with pytest.raises(ConfigError, match="chekpoint: unknown config key; valid keys"):
        serve_config_from_args({"checkpoint": "x", "chekpoint": "y"})
    with pytest.raises(ConfigError, match="checkpoint is required"):
        serve_config_from_args({})
    with pytest.raises(ConfigError, match="top_k = 'many': Input should be a valid integer"):
        serve_config_from_args({"checkpoint": "x", "top_k": "many"})
    with pytest.raises(ConfigError, match="min_confidence"):
        serve_config_from_args({"checkpoint": "x", "min_confidence": 2})


# ------------------------------------------------------------------------------------------------ OpenAPI
def _operations(spec: dict) -> dict:
    return {(path, method): op for path, ops in spec["paths"].items() for method, op in ops.items()}


@pytest.mark.timeout(60)
def test_openapi_declares_bearer_auth_only_when_a_token_is_set(make_client, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    spec = make_client()[0].get("/openapi.json").json()
    assert "securitySchemes" not in spec.get("components", {})
    for (path, method), op in _operations(spec).items():
        assert "security" not in op and "401" not in op["responses"], (path, method)
        assert all(p.get("name", "").lower() != "authorization" for p in op.get("parameters", [])), (path, method)

    monkeypatch.setenv(TOKEN_ENV, "s3cret-token")
    spec = make_client()[0].get("/openapi.json").json()
    (scheme_name, scheme), = spec["components"]["securitySchemes"].items()
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for (path, method), op in _operations(spec).items():
        if path.startswith("/v1/"):
            assert op["security"] == [{scheme_name: []}] and "401" in op["responses"], (path, method)
        else:
            assert "security" not in op, (path, method)


@pytest.mark.timeout(60)
def test_openapi_schema_carries_the_topology_and_alertname(client, served):
    """What the app enforces is in the document: a client validating against it (jsonschema here) accepts a
    simulator window and the Alertmanager example, and rejects unknown entities and an alert without alertname."""
    import jsonschema

    spec = client.get("/openapi.json").json()
    topo = client.get("/healthz").json()["topology"]
    schemas = spec["components"]["schemas"]
    entities = topo["services"] + topo["nodes"]
    assert schemas["Telemetry"]["properties"]["metrics"]["propertyNames"]["enum"] == entities
    assert schemas["Alarm"]["properties"]["entity"]["anyOf"][0]["enum"] == entities
    assert schemas["HealRequest"]["properties"]["cordoned"]["items"]["enum"] == topo["nodes"]
    assert "alertname" in schemas["AlertLabels"]["required"]

    def validator(name):
        schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
        return jsonschema.Draft202012Validator(schema)

    heal, am = validator("HealRequest"), validator("AlertmanagerWebhook")
    window = served["windows"][-1]
    assert not list(heal.iter_errors({"telemetry": window, "cordoned": [topo["nodes"][0]]}))
    assert list(heal.iter_errors({"telemetry": {"metrics": {"db-7": {"cpu": [1.0]}}}}))
    assert list(heal.iter_errors({"telemetry": {"alarms": [{"name": "X", "entity": "db-7"}]}}))
    assert list(heal.iter_errors({"telemetry": {}, "cordoned": ["gpu-99"]}))
    payload = alertmanager_payload()
    assert not list(am.iter_errors(payload))
    del payload["alerts"][0]["labels"]["alertname"]
    errors = list(am.iter_errors(payload))
    assert errors and "alertname" in errors[0].message
    # and the app answers those the same way
    r = client.post("/v1/alertmanager", json=payload)
    assert r.status_code == 422 and "alerts[0].labels.alertname: Field required" in r.json()["detail"]


@pytest.mark.timeout(120)
def test_fault_types_and_faults_endpoint_follow_the_bundles_split(tmp_path):
    from ifshm_ray.encoding.config import EncoderConfig
    from ifshm_ray.encoding.semantic import SemanticEncoder
    from ifshm_ray.policy.bundle import load_policy_bundle
    from ifshm_ray.serve.service import HealingService, serve_encoder
    from ifshm_ray.serve.testing import untrained_policy_bundle
    from ifshm_ray.sim.catalog import load_catalog

    cat = load_catalog()
    bundle = load_policy_bundle(untrained_policy_bundle(tmp_path / "b", env_config={"split": "logo_gpu"}))

    async def diagnose_one(t):
        return {}

    service = HealingService(bundle, diagnose_one, ServeConfig(checkpoint=str(bundle.path)).validate())
    faults = service.faults()
    assert {f["name"] for f in faults if not f["known"]} == set(cat.unknown_in("logo_gpu"))
    assert {f["split"] for f in faults} == {"logo_gpu"}
    assert asyncio.run(service.health())["policy"]["split"] == "logo_gpu"
    # the untrained encoder's classes are the split's known types; a checkpoint of another split is refused
    enc = serve_encoder(model="tiny-llama", split="logo_gpu")
    assert enc.info()["fault_types"] == ["healthy"] + cat.known_in("logo_gpu")
    SemanticEncoder.build(EncoderConfig(model="tiny-llama", adapter="none", state_dim=16), ["healthy", "node_crash"],
                          split="handpicked").save(tmp_path / "enc")
    with pytest.raises(ValueError, match="the served policy bundle uses split 'logo_gpu', but the encoder checkpoint"):
        serve_encoder(model="tiny-llama", encoder=str(tmp_path / "enc"), split="logo_gpu")

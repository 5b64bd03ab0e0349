"""Property-based fuzzing (hypothesis) of the POST endpoints, in-process: no input may cause a server error; every
rejection is a 413 or 422 with a message; every accepted answer follows the response schema."""
from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ifshm_ray.serve.schemas import AlertmanagerResponse, Diagnosis, HealResponse

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])

SERVICES = ["api-gateway", "inference-server", "message-queue"]
NODES = ["ctl-0", "gpu-1", "gpu-5"]
ENTITIES = st.sampled_from(SERVICES + NODES + ["bogus-7", ""]) | st.text(max_size=8)

numbers = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10**20, 10**20) | st.booleans()
           | st.text(max_size=3) | st.none())
json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
alarm = st.fixed_dictionaries(
    {},
    optional={"name": st.text(max_size=20) | numbers, "severity": st.sampled_from(["info", "warning", "critical",
                                                                                     "fatal"]) | numbers,
              "entity": ENTITIES | numbers, "state": st.sampled_from(["pending", "firing", "gone"]) | numbers,
              "active_for_s": numbers, "summary": st.text(max_size=30) | numbers},
)
telemetry = st.fixed_dictionaries(
    {},
    optional={
        "logs": st.lists(st.text(max_size=60), max_size=6) | json_values,
        "metrics": st.dictionaries(ENTITIES, st.dictionaries(st.text(max_size=10), st.lists(numbers, max_size=4)
                                                             | json_values, max_size=3), max_size=3) | json_values,
        "alarms": st.lists(alarm, max_size=3) | json_values,
        "time_s": numbers, "window_s": numbers, "schema": st.text(max_size=10) | numbers,
    },
)
heal_body = (
    st.fixed_dictionaries({"telemetry": telemetry},
                          optional={"last_action": st.sampled_from(["observe", "drain", "reboot"]) | numbers,
                                    "cordoned": st.lists(ENTITIES, max_size=2) | json_values,
                                    "extra": json_values})
    | json_values
)
am_alert = st.fixed_dictionaries(
    {"status": st.sampled_from(["firing", "resolved"]) | numbers},
    optional={"labels": st.dictionaries(st.sampled_from(["alertname", "severity", "service", "pod", "node",
                                                         "instance", "job"]), ENTITIES | numbers, max_size=5),
              "annotations": st.dictionaries(st.sampled_from(["summary", "description"]), st.text(max_size=20)
                                             | numbers),
              "startsAt": st.sampled_from(["2026-11-28T10:15:02.123456789Z", "2026-11-28T10:15:02Z",
                                           "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "not a time", ""])
              | numbers,
              "endsAt": st.text(max_size=5), "fingerprint": st.text(max_size=5)},
)
am_body = st.fixed_dictionaries(
    {"status": st.sampled_from(["firing", "resolved"]) | numbers, "alerts": st.lists(am_alert, max_size=4)
     | json_values},
    optional={"version": st.sampled_from(["4", "3"]) | numbers, "groupKey": st.text(max_size=10) | numbers,
              "receiver": st.text(max_size=5), "commonLabels": st.dictionaries(st.text(max_size=5), st.text(max_size=5)
                                                                               | numbers, max_size=2),
              "commonAnnotations": json_values},
) | json_values


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from fastapi.testclient import TestClient

    from ifshm_ray.policy.bundle import load_policy_bundle
    from ifshm_ray.serve.config import ServeConfig
    from ifshm_ray.serve.http import create_app
    from ifshm_ray.serve.service import HealingService, serve_encoder
    from ifshm_ray.serve.testing import untrained_policy_bundle

    bundle = untrained_policy_bundle(tmp_path_factory.mktemp("bundle"))
    diagnoser = serve_encoder(model="tiny-llama")

    async def diagnose_one(t):
        return (await asyncio.to_thread(diagnoser.diagnose, [t]))[0]

    cfg = ServeConfig(checkpoint=str(bundle), max_body_bytes=4096, max_log_lines=4, max_alarms=3).validate()
    return TestClient(create_app(HealingService(load_policy_bundle(bundle), diagnose_one, cfg)),
                      raise_server_exceptions=False)


def check(r, response_model) -> None:
    assert r.status_code < 500, r.text
    if r.status_code == 200:
        response_model.model_validate(r.json())
    else:
        assert r.status_code in (413, 422), (r.status_code, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and detail, r.text


def post(client, path, body):
    return client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


@pytest.mark.timeout(150)
@SETTINGS
@given(body=heal_body)
def test_fuzz_heal(client, body):
    check(post(client, "/v1/heal", body), HealResponse)


@pytest.mark.timeout(150)
@SETTINGS
@given(body=heal_body)
def test_fuzz_diagnose(client, body):
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k == "telemetry"}
    check(post(client, "/v1/diagnose", body), Diagnosis)


@pytest.mark.timeout(150)
@SETTINGS
@given(body=am_body)
def test_fuzz_alertmanager(client, body):
    check(post(client, "/v1/alertmanager", body), AlertmanagerResponse)


@pytest.mark.timeout(60)
@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200), path=st.sampled_from(["/v1/heal", "/v1/diagnose", "/v1/alertmanager"]),
       ctype=st.sampled_from(["application/json", "text/plain", None]))
def test_fuzz_raw_bytes(client, raw, path, ctype):
    headers = {"content-type": ctype} if ctype else {}
    r = client.post(path, content=raw, headers=headers)
    assert r.status_code < 500, r.text
    if r.status_code != 200:
        assert r.status_code in (413, 422) and isinstance(r.json()["detail"], str)

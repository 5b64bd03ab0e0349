"""The telemetry schema (ifshm_ray.telemetry): one pydantic definition shared with the HTTP API, the checks of
validate_telemetry with messages that name the field, and simulator windows of every fault type passing them."""
from __future__ import annotations

import math

import pytest

from ifshm_ray.telemetry import Alarm, Telemetry, TelemetryError, telemetry_model, validate_telemetry

SERVICES, NODES = ["api-gateway", "inference-server"], ["gpu-1", "gpu-3"]


def test_one_definition_for_components_and_http_api():
    from ifshm_ray.serve import schemas

    assert schemas.Telemetry is Telemetry and schemas.Alarm is Alarm
    assert schemas.DiagnoseRequest.model_fields["telemetry"].annotation is Telemetry
    bound = telemetry_model(tuple(SERVICES), tuple(NODES))
    assert issubclass(bound, Telemetry) and telemetry_model(tuple(SERVICES), tuple(NODES)) is bound


@pytest.mark.parametrize("bad, message", [
    ([1, 2], "telemetry must be a JSON object, got list"),
    ({"logs": "one line"}, "logs: Input should be a valid list"),
    ({"logs": ["ok", 3]}, "logs[1]: Input should be a valid string (got 3)"),
    ({"metrics": []}, "metrics: Input should be a valid dictionary"),
    ({"metrics": {"gpu-1": [1.0]}}, "metrics['gpu-1']: Input should be a valid dictionary"),
    ({"metrics": {"gpu-1": {"temp": ["80"]}}},
     "metrics['gpu-1']['temp'][0]: Input should be a valid number (got '80')"),
    ({"metrics": {"gpu-1": {"temp": [1.0, math.nan]}}}, "metrics['gpu-1']['temp'][1]: Input should be a finite number"),
    ({"metrics": {"gpu-1": {"temp": [math.inf]}}}, "finite number"),
    ({"metrics": {"gpu-1": {"up": [True]}}}, "metrics['gpu-1']['up'][0]: Input should be a valid number (got True)"),
    ({"alarms": {}}, "alarms: Input should be a valid list"),
    ({"alarms": [{"severity": "critical"}]}, "alarms[0].name: Field required"),
    ({"alarms": [{"name": "X", "severity": "fatal"}]},
     "alarms[0].severity: Input should be 'info', 'warning' or 'critical' (got 'fatal')"),
    ({"alarms": [{"name": "X"}, {"name": "Y", "state": "gone"}]},
     "alarms[1].state: Input should be 'pending' or 'firing'"),
    ({"alarms": [{"name": "X", "active_for_s": -1}]},
     "alarms[0].active_for_s: Input should be greater than or equal to 0"),
    ({"time_s": "soon"}, "time_s: Input should be a valid number (got 'soon')"),
    ({"window_s": 0}, "window_s: Input should be greater than 0"),
])
def test_bad_windows_name_the_field(bad, message):
    with pytest.raises(TelemetryError) as e:
        validate_telemetry(bad)
    assert message in str(e.value)


def test_entities_are_checked_against_the_topology_and_listed():
    ok = {"metrics": {"gpu-1": {"temp": [70, 71.5]}}, "alarms": [{"name": "X", "entity": "api-gateway"}, {"name": "Y"}],
          "topology": {"services": SERVICES, "nodes": NODES}, "extra_key": 1}
    assert validate_telemetry(ok, services=SERVICES, nodes=NODES) is ok  # returned unchanged
    valid = "valid services and nodes: ['api-gateway', 'gpu-1', 'gpu-3', 'inference-server']"
    with pytest.raises(TelemetryError, match=r"metrics\['db-7'\]: unknown entity 'db-7'; " + valid.replace("[", r"\[")):
        validate_telemetry({"metrics": {"db-7": {"cpu": [1.0]}}}, services=SERVICES, nodes=NODES)
    with pytest.raises(TelemetryError, match=r"alarms\[0\].entity: unknown entity 'gpu-9'"):
        validate_telemetry({"alarms": [{"name": "X", "entity": "gpu-9"}]}, services=SERVICES, nodes=NODES)
    # without a topology any entity name is accepted
    assert validate_telemetry({"metrics": {"db-7": {"cpu": [1.0]}}})


def test_simulator_windows_of_every_fault_type_pass():
    from ifshm_ray.env import FaultInjectionEnv
    from ifshm_ray.sim.catalog import load_catalog

    faults = [f.name for f in load_catalog().faults]
    env = FaultInjectionEnv({"faults": faults})
    for i, fault in enumerate(faults):
        env.reset(seed=i, options={"faults": [fault]})
        for _ in range(3):
            *_, info = env.step((0, 0, 0))
            tel = info["telemetry"]
            validate_telemetry(tel, services=tel["topology"]["services"], nodes=tel["topology"]["nodes"])
            Telemetry.model_validate(tel)

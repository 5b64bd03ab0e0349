"""Bad input gives clear errors that name the valid choices."""
from __future__ import annotations

import pytest

from ifshm_ray.config import ConfigError, SimConfig, from_dict, load_yaml
from ifshm_ray.env import FaultInjectionEnv
from ifshm_ray.sim.core import SimError

pytestmark = pytest.mark.timeout(60)


def test_unknown_fault_name_in_config():
    with pytest.raises(SimError, match="gpu_xid79_fallen_off_bus"):
        FaultInjectionEnv({"faults": ["gpu_on_fire"]})


def test_unknown_fault_name_at_reset():
    env = FaultInjectionEnv({"render_telemetry": False})
    with pytest.raises(SimError, match="valid names"):
        env.reset(seed=0, options={"faults": ["nope"]})


def test_action_outside_space():
    env = FaultInjectionEnv({"render_telemetry": False})
    env.reset(seed=0)
    with pytest.raises(SimError, match="outside the action space.*observe"):
        env.step((42, 0, 0))
    with pytest.raises(SimError, match="triple"):
        env.step("restart")


def test_masked_action_strict_mode_names_valid_targets():
    env = FaultInjectionEnv({"render_telemetry": False, "strict_actions": True})
    env.reset(seed=0)
    with pytest.raises(SimError, match="valid targets for 'drain'.*gpu-0"):
        env.step((6, 0, 0))  # drain a service


def test_masked_action_lenient_mode_is_flagged():
    env = FaultInjectionEnv({"render_telemetry": False})
    env.reset(seed=0)
    *_, info = env.step((6, 0, 0))
    assert info["invalid_action"]


@pytest.mark.parametrize("bad, match", [
    ({"step_s": -1.0}, "step_s must be > 0"),
    ({"healthy_steps": 0}, "healthy_steps"),
    ({"stepz": 3}, "unknown config key.*valid keys"),
    ({"topology": {"gpu_nodes": 1}}, "gpu_nodes must be >= 2"),
    ({"topology": {"inference_replicas": 40}}, "must fit"),
    ({"compound_prob": 2.0}, r"compound_prob must be in \[0, 1\]"),
    ({"time_limit_s": "long"}, "must be of type float"),
])
def test_invalid_config_values(bad, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(SimConfig, bad)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(SimConfig, tmp_path / "nope.yaml")


def test_yaml_config_roundtrip(tmp_path):
    p = tmp_path / "sim.yaml"
    p.write_text("step_s: 20\ntopology:\n  gpu_nodes: 4\n")
    cfg = load_yaml(SimConfig, p)
    assert cfg.step_s == 20.0 and cfg.topology.gpu_nodes == 4

"""Bad input gives clear errors that name the valid choices."""
from __future__ import annotations

import numpy as np
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
    ({"step_s": -1.0}, "step_s = -1.0: Input should be greater than 0"),
    ({"healthy_steps": 0}, "healthy_steps"),
    ({"stepz": 3}, "unknown config key.*valid keys"),
    ({"topology": {"gpu_nodes": 1}}, "topology.gpu_nodes = 1: .*greater than or equal to 2"),
    ({"topology": {"inference_replicas": 40}}, "must fit"),
    ({"compound_prob": 2.0}, r"compound_prob = 2.0: Input should be less than or equal to 1"),
    ({"time_limit_s": "long"}, "valid number"),
])
def test_invalid_config_values(bad, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(SimConfig, bad)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(SimConfig, tmp_path / "nope.yaml")


def test_yaml_config_roundtrip(tmp_path):
    p = tmp_path / "sim.yaml"
    p.write_text("step_s: 20\ntopology:\n  gpu_nodes: 7\n")
    cfg = load_yaml(SimConfig, p)
    assert cfg.step_s == 20.0 and cfg.topology.gpu_nodes == 7


def test_batched_sim_rejects_bad_action_arrays_clearly():
    from ifshm_ray.sim.core import BatchedSim

    sim = BatchedSim(batch_size=2)
    sim.reset([0, 1], [1, 2])
    with pytest.raises(SimError, match=r"shape \(2, 3\)"):
        sim.step(np.zeros((1, 3), np.int64))
    with pytest.raises(SimError, match="integer indices"):
        sim.step(np.array([[0, 0, 0.5], [0, 0, 0]]))
    with pytest.raises(SimError, match="integer indices"):
        sim.step(np.array([["a", "b", "c"], ["d", "e", "f"]]))
    for bad in ([-1, 0, 0], [0, sim.topo.T, 0], [len(sim.cc.act_cost), 0, 0]):
        with pytest.raises(SimError, match="out of range: category in .* target in .* ratio level in"):
            sim.step(np.array([bad, [0, 0, 0]]))
    sim.step(np.array([[0.0, 0.0, 0.0], [0, 0, 0]]))  # whole floats are fine
    assert int(sim.step_idx[0]) == 1  # (the rejected calls changed nothing)

"""Demonstrations in the replay (``replay.demonstrations``): the blind runbook's incidents of the known types,
recorded in the policy's action space before training (``ifshm_ray/replay/demonstrations.py``)."""
from __future__ import annotations

import numpy as np
import pytest


def _section(**demo):
    from ifshm_ray.replay.config import ReplaySection

    return ReplaySection.from_dict({"enabled": True, "demonstrations": {"policy": "runbook", **demo}})


def test_config_checks():
    from ifshm_ray.config import ConfigError
    from ifshm_ray.replay.config import ReplaySection

    assert not ReplaySection().demonstrations.enabled  # off by default
    assert _section().demonstrations.enabled
    with pytest.raises(ConfigError, match="set replay.enabled"):
        ReplaySection.from_dict({"enabled": False, "demonstrations": {"policy": "runbook"}})
    with pytest.raises(ConfigError, match="must differ from the known stratum"):
        _section(stratum="known")
    with pytest.raises(ConfigError, match="must differ"):
        _section(stratum="novel")
    with pytest.raises(ConfigError):
        _section(policy="oracle")  # a reference that reads the hidden state is no demonstrator
    with pytest.raises(ConfigError):
        _section(incidents_per_type=0)


def test_env_config_keeps_the_training_observation():
    from ifshm_ray.replay.demonstrations import demo_env_config

    d = demo_env_config({"faults": "known", "seed": 3, "render_telemetry": False, "compound_prob": 0.1})
    assert d == {"render_telemetry": True, "mine_logs": False, "faults": "all", "compound_prob": 0.1}
    assert demo_env_config({"render_telemetry": True})["mine_logs"] is True  # a training env that mines its logs


def test_recorded_demonstrations_are_deterministic_filtered_and_valid(tmp_path):
    from ifshm_ray.env import FaultInjectionEnv
    from ifshm_ray.replay.demonstrations import demo_seed, record_demonstrations

    env_config = {"faults": "known", "render_telemetry": False, "split": "handpicked"}
    known = ["process_crash_loop", "gpu_thermal_throttling"]
    lines = []
    demo = _section(incidents_per_type=3, healed_only=False).demonstrations
    eps, summary = record_demonstrations(demo, env_config, known, run_seed=0, progress=lines.append)
    assert len(eps) == 6 and summary["episodes"] == 6 and len(lines) == 2
    assert summary["steps"] == sum(len(e) for e in eps)
    assert set(summary["per_type"]) == set(known)
    space = FaultInjectionEnv({"render_telemetry": False}).action_space
    for ep in eps:
        assert ep.is_done and len(ep) > 0
        assert all(space.contains(tuple(np.int64(x) for x in a)) for a in ep.actions)
    assert any(a[0] != 0 for ep in eps for a in ep.actions)  # the runbook acted (category 0 is observe)
    again, _ = record_demonstrations(demo, env_config, known, run_seed=0)
    assert [e.actions for e in again] == [e.actions for e in eps]
    other, _ = record_demonstrations(demo, env_config, known, run_seed=1)
    assert [e.actions for e in other] != [e.actions for e in eps]
    assert demo_seed(0, demo, known[0], 0) != demo_seed(0, demo, known[0], 1) != demo_seed(1, demo, known[0], 0)
    healed = _section(incidents_per_type=3).demonstrations
    kept, s = record_demonstrations(healed, env_config, known, run_seed=0)
    stored = sum(v["stored"] for v in s["per_type"].values())
    assert len(kept) == stored == round(sum(v["success"] * 3 for v in s["per_type"].values()))
    assert stored < 6  # the runbook does not heal every one of these (thermal throttling: its fix often fails)
    with pytest.raises(ValueError, match="not in the env's catalog"):
        record_demonstrations(healed, env_config, ["no_such_fault"], run_seed=0)

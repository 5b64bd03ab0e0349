"""Resuming from an algorithm checkpoint keeps the iteration count, weights and lifetime counters."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ifshm_ray.policy.algo import build_ppo_config
from ifshm_ray.policy.config import load_train_config


def tiny_cfg(**runners):
    cfg = load_train_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    for k, v in runners.items():
        setattr(cfg.runners, k, v)
    return cfg


def module_weights(algo) -> dict:
    return {k: np.array(v) for k, v in algo.learner_group.get_weights()["default_policy"].items()}


@pytest.mark.timeout(120)
def test_resume_preserves_iteration_and_weights(ray_session, tmp_path):
    cfg = tiny_cfg(num_env_runners=0)
    algo = build_ppo_config(cfg).build_algo()
    try:
        algo.train()
        algo.train()
        ckpt = algo.save_to_path(str(tmp_path / "ckpt"))
        saved = module_weights(algo)
        steps = algo.metrics.peek(("env_runners", "num_env_steps_sampled_lifetime"))
    finally:
        algo.stop()

    resumed = build_ppo_config(cfg).build_algo()
    try:
        fresh = module_weights(resumed)
        assert any(not np.array_equal(fresh[k], saved[k]) for k in saved), "test needs different init weights"
        resumed.restore_from_path(ckpt)
        assert resumed.iteration == 2
        restored = module_weights(resumed)
        for k in saved:
            np.testing.assert_array_equal(restored[k], saved[k])
        # The env runners act with the restored weights too.
        runner_state = resumed.get_module().get_state()
        for k in saved:
            np.testing.assert_allclose(np.array(runner_state[k]), saved[k])
        result = resumed.train()
        assert resumed.iteration == 3
        assert result["env_runners"]["num_env_steps_sampled_lifetime"] > steps
    finally:
        resumed.stop()

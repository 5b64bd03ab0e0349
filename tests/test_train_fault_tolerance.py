"""Killing an env-runner actor mid-training does not stop training (RLlib restarts it); the fault_tolerance section
of the training config reaches RLlib's config."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from ifshm_ray.policy.algo import build_ppo_config
from ifshm_ray.policy.config import load_train_config


def tiny_cfg():
    return load_train_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")


@pytest.mark.timeout(60)
def test_fault_tolerance_section_reaches_the_ppo_config():
    """Every fault_tolerance setting (non-default values here) is what RLlib's AlgorithmConfig holds (no Ray)."""
    cfg = tiny_cfg()
    want = {"restart_failed_env_runners": False, "max_num_env_runner_restarts": 7,
            "delay_between_env_runner_restarts_s": 0.5, "num_consecutive_env_runner_failures_tolerance": 3,
            "env_runner_health_probe_timeout_s": 4.0, "restart_failed_sub_environments": True}
    for key, value in want.items():
        setattr(cfg.fault_tolerance, key, value)
    config = build_ppo_config(cfg)
    assert {key: getattr(config, key) for key in want} == want


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_training_survives_killed_env_runner(ray_session):
    import ray

    cfg = tiny_cfg()
    cfg.runners.num_env_runners = 2
    cfg.runners.num_cpus_per_env_runner = 0.25
    cfg.fault_tolerance.delay_between_env_runner_restarts_s = 0.0
    cfg.fault_tolerance.env_runner_health_probe_timeout_s = 5.0
    algo = build_ppo_config(cfg).build_algo()
    try:
        algo.train()
        group = algo.env_runner_group
        assert group.num_healthy_remote_env_runners() == 2
        handles = group.foreach_env_runner(
            lambda er: ray.get_runtime_context().current_actor, local_env_runner=False
        )
        # no_restart=False: like a crashed worker process; Ray restarts the actor (max_restarts comes from
        # fault_tolerance.max_num_env_runner_restarts) and RLlib re-syncs its state. With no_restart=True Ray keeps
        # it dead and RLlib 2.60 never recreates it (training goes on with one runner fewer).
        ray.kill(handles[0], no_restart=False)

        steps_before = algo.metrics.peek(("env_runners", "num_env_steps_sampled_lifetime"))
        deadline = time.time() + 120
        iterations_after_kill = 0
        while time.time() < deadline:
            result = algo.train()  # must not raise
            iterations_after_kill += 1
            if iterations_after_kill >= 2 and group.num_healthy_remote_env_runners() == 2:
                break
        assert result["env_runners"]["num_env_steps_sampled_lifetime"] > steps_before
        assert group.num_healthy_remote_env_runners() == 2, "the killed env runner was not restarted"
        assert group.num_remote_worker_restarts() >= 1
    finally:
        algo.stop()

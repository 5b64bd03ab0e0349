"""policy/algo.py: env entry points resolve to what RLlib takes, and the local env is built from the class or
factory itself (no lookup in Tune's private registry)."""
from __future__ import annotations

from pathlib import Path

import pytest

from ifshm_ray.env import RLLIB_ENV_NAME, FaultInjectionEnv, FaultInjectionVectorEnv
from ifshm_ray.policy.algo import SingleEnvView, make_env, resolve_env
from ifshm_ray.policy.config import load_train_config

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def _cfg(entry_point: str, vectorize_mode: str):
    cfg = load_train_config(TINY)
    cfg.env.entry_point = entry_point
    cfg.runners.gym_env_vectorize_mode = vectorize_mode
    return cfg


@pytest.mark.parametrize("entry_point, mode, kind", [
    ("ifshm_ray.env:make_vector_env", "vector_entry_point", FaultInjectionVectorEnv),
    ("ifshm_ray.env:FaultInjectionVectorEnv", "vector_entry_point", FaultInjectionVectorEnv),
    ("ifshm_ray.env:FaultInjectionEnv", "sync", FaultInjectionEnv),
    (RLLIB_ENV_NAME, "sync", FaultInjectionEnv),
])
def test_make_env_builds_the_entry_points_env(entry_point, mode, kind):
    env = make_env(_cfg(entry_point, mode))
    assert isinstance(env.unwrapped, kind)
    if kind is FaultInjectionVectorEnv:
        assert isinstance(env, SingleEnvView) and env.unwrapped.num_envs == 1
        assert env.observation_space == env.unwrapped.single_observation_space
    assert env.observation_space["obs"].shape == (env.unwrapped.obs_layout["obs_dim"],)


def test_resolve_env_passes_classes_and_registers_factories():
    assert resolve_env("ifshm_ray.env:FaultInjectionVectorEnv") is FaultInjectionVectorEnv
    assert resolve_env("ifshm_ray.env:make_vector_env") == "ifshm_ray.env:make_vector_env"  # (RLlib takes names)
    with pytest.raises(ValueError, match="cannot be imported"):
        resolve_env("ifshm_ray.env:NoSuchEnv")


def test_unknown_registered_name_says_how_to_give_the_env():
    with pytest.raises(ValueError, match="package.module:Class"):
        make_env(_cfg("someone-elses-env-v0", "sync"))

"""Gymnasium environments over the simulator (registered with gymnasium and, via :func:`register`, with RLlib).

* :mod:`.fault_env`   -- ``FaultInjectionEnv`` (one cluster, raw telemetry) and ``FaultInjectionVectorEnv`` (B clusters
  in one batched simulator: the env training runs);
* :mod:`.features`    -- ``Featurizer``: the policy's numeric observation of the simulator's state, and its layout;
* :mod:`.observation` -- ``TelemetryObserver``: the same observation rebuilt from raw telemetry (what serving gets).
"""
import gymnasium as gym

from ifshm_ray.env.fault_env import (ENV_ID, RLLIB_ENV_NAME, FaultInjectionEnv, FaultInjectionVectorEnv,
                                     action_space_hash, make_vector_env, sample_valid_actions,
                                     split_env_config)

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="ifshm_ray.env.fault_env:FaultInjectionEnv")


def register() -> str:
    """Register the env with RLlib/Tune under :data:`RLLIB_ENV_NAME` (imports ray lazily) and return the name."""
    from ray.tune.registry import register_env

    register_env(RLLIB_ENV_NAME, lambda cfg: FaultInjectionEnv(dict(cfg)))
    return RLLIB_ENV_NAME


__all__ = ["ENV_ID", "RLLIB_ENV_NAME", "FaultInjectionEnv", "FaultInjectionVectorEnv", "action_space_hash",
           "make_vector_env", "sample_valid_actions", "register", "split_env_config"]

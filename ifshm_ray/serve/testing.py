"""Helpers for tests and benchmarks of the Serve app: an untrained policy bundle and realistic request payloads.

:func:`untrained_policy_bundle` writes a bundle of a freshly initialised hierarchical RLModule for
``FaultInjectionEnv`` with our own exporter (``export_policy_bundle(module=...)``): the same files and manifest a
``jobs/train.py`` run writes, in ~1 s instead of a training run. Its recommendations are not meaningful.
:func:`sample_windows` steps the simulator and returns ``info["telemetry"]`` windows (the request payloads).
"""
from __future__ import annotations

from pathlib import Path

SMALL_MODEL = {"encoder_hiddens": [32], "head_hiddens": [32], "vf_hiddens": [32], "category_embed_dim": 8}
ENV_ENTRY_POINT = "ifshm_ray.env:FaultInjectionEnv"


def untrained_policy_bundle(out: str | Path, env_config: dict | None = None, model_config: dict | None = None,
                            seed: int = 0) -> Path:
    """Export an untrained hierarchical policy for ``FaultInjectionEnv(env_config)`` into ``out``; returns the
    bundle directory."""
    import torch
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from ifshm_ray.env.fault_env import FaultInjectionEnv
    from ifshm_ray.policy.bundle import export_policy_bundle
    from ifshm_ray.policy.module import module_class

    env_config = dict(env_config or {"faults": "known"})
    model_config = dict(model_config or SMALL_MODEL)
    env = FaultInjectionEnv(env_config)
    torch.manual_seed(seed)
    module = RLModuleSpec(module_class=module_class("hierarchical"), observation_space=env.observation_space,
                          action_space=env.action_space, model_config=model_config).build()
    return export_policy_bundle(None, out, env=env, env_entry_point=ENV_ENTRY_POINT, env_config=env_config,
                                policy_kind="hierarchical", model_config=model_config, module=module,
                                training={"note": "untrained (ifshm_ray.serve.testing)"})


def sample_windows(n: int, seed: int = 0, env_config: dict | None = None, steps_per_episode: int = 6) -> list[dict]:
    """``n`` telemetry windows from simulator episodes (observe actions, so faults stay visible)."""
    from ifshm_ray.env.fault_env import FaultInjectionEnv

    env = FaultInjectionEnv(dict(env_config or {"faults": "known"}))
    out: list[dict] = []
    ep = 0
    while len(out) < n:
        env.reset(seed=seed + ep)
        ep += 1
        for _ in range(steps_per_episode):
            _, _, term, trunc, info = env.step((0, 0, 0))
            out.append(info["telemetry"])
            if term or trunc or len(out) >= n:
                break
    return out

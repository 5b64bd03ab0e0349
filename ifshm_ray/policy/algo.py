"""Builds the RLlib ``PPOConfig`` that joins the env, the hierarchical (or flat) RLModule and the IFSHM learner.

Used by ``jobs/train.py`` and ``benchmarks/bench_train.py``; see :mod:`ifshm_ray.policy.config` for the fields.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from ifshm_ray.policy.callbacks import HealingMetricsCallback
from ifshm_ray.policy.config import TrainConfig
from ifshm_ray.policy.learner import IFSHMPPOTorchLearner
from ifshm_ray.policy.module import module_class
from ifshm_ray.policy.replay import LCD_KEY, ReplayCallback
from ifshm_ray.policy.semi_mdp import LCD_SEMI_MDP_KEY


def _import_entry_point(entry_point: str) -> Callable[[dict], Any]:
    """The class or factory a ``"package.module:attr"`` entry point names."""
    mod, _, name = entry_point.partition(":")
    try:
        obj = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"env.entry_point {entry_point!r} cannot be imported: {exc}") from exc
    if not callable(obj):
        raise ValueError(f"env.entry_point {entry_point!r} is neither a class nor a callable.")
    return obj


def resolve_env(entry_point: str) -> Any:
    """What RLlib's ``config.environment(env=...)`` gets for an entry point: ``"package.module:Class"`` -> the class;
    ``"package.module:factory"`` -> registered with ``ray.tune.register_env`` under the entry point string, which is
    returned (RLlib takes classes or registered names only); any other string is taken as a registered env name
    (``ifshm-*`` names are registered here)."""
    if ":" in entry_point:
        obj = _import_entry_point(entry_point)
        if isinstance(obj, type):
            return obj
        from ray.tune.registry import register_env

        register_env(entry_point, obj)
        return entry_point
    if entry_point.startswith("ifshm-"):
        from ifshm_ray.env import register

        register()
    return entry_point


def env_creator(entry_point: str) -> Callable[[dict], Any]:
    """The class or factory that builds the env of an entry point here, from its env config: the one a
    ``"package.module:attr"`` entry point names, or :class:`~ifshm_ray.env.FaultInjectionEnv` for
    :data:`~ifshm_ray.env.RLLIB_ENV_NAME` (what :func:`ifshm_ray.env.register` registers it as). Other registered
    names cannot be built here: Tune has no public lookup of registered envs."""
    if ":" in entry_point:
        return _import_entry_point(entry_point)
    from ifshm_ray.env import RLLIB_ENV_NAME, FaultInjectionEnv

    if entry_point == RLLIB_ENV_NAME:
        return FaultInjectionEnv
    raise ValueError(f"env.entry_point {entry_point!r}: give the env as 'package.module:Class' or "
                     f"'package.module:factory' (or {RLLIB_ENV_NAME!r}); a name registered elsewhere with "
                     "ray.tune.register_env cannot be built locally for the policy's spaces")


class SingleEnvView:
    """The single-env spaces of a gymnasium VectorEnv (what the policy bundle records)."""

    def __init__(self, vec):
        self.action_space = vec.single_action_space
        self.observation_space = vec.single_observation_space
        self.unwrapped = vec.unwrapped
        self.close = vec.close


def make_env(cfg: TrainConfig):
    """One local env (or :class:`SingleEnvView` of a vector env) for spaces, target names and the action hash."""
    import gymnasium as gym

    env_config = {**env_config_of(cfg), "num_envs": 1} if cfg.runners.gym_env_vectorize_mode == "vector_entry_point" \
        else env_config_of(cfg)
    instance = env_creator(cfg.env.entry_point)(env_config)
    return SingleEnvView(instance) if isinstance(instance, gym.vector.VectorEnv) else instance


def env_config_of(cfg: TrainConfig) -> dict:
    """The env config dict, with ``seed`` defaulting to ``run.seed``."""
    env_config = dict(cfg.env.config)
    env_config.setdefault("seed", cfg.run.seed)
    return env_config


def semi_mdp(cfg: TrainConfig) -> bool:
    """Whether the run discounts by each step's length (``env.config.reward.duration_discount`` < 1): the simulator
    inside the step, the learner's GAE and the replay's returns across steps (:mod:`ifshm_ray.policy.semi_mdp`)."""
    dd = (cfg.env.config.get("reward") or {}).get("duration_discount")
    return dd is not None and float(dd) < 1.0


def build_ppo_config(cfg: TrainConfig) -> PPOConfig:
    """The full ``PPOConfig`` for a :class:`TrainConfig` (new API stack, torch)."""
    r, p, ppo, ft = cfg.runners, cfg.policy, cfg.ppo, cfg.fault_tolerance
    config = (
        PPOConfig()
        .environment(env=resolve_env(cfg.env.entry_point), env_config=env_config_of(cfg))
        .framework("torch")
        .env_runners(
            num_env_runners=r.num_env_runners,
            num_envs_per_env_runner=r.num_envs_per_env_runner,
            gym_env_vectorize_mode=r.gym_env_vectorize_mode,
            rollout_fragment_length=r.rollout_fragment_length,
            num_cpus_per_env_runner=r.num_cpus_per_env_runner,
        )
        .learners(
            num_learners=r.num_learners,
            num_gpus_per_learner=r.num_gpus_per_learner,
            learner_class=IFSHMPPOTorchLearner,
            learner_config_dict={
                "entropy_coeff_high": p.entropy_coeff_high,
                "entropy_coeff_low": p.entropy_coeff_low,
                **({LCD_KEY: cfg.replay.to_dict()} if cfg.replay.enabled else {}),
                **({LCD_SEMI_MDP_KEY: True} if semi_mdp(cfg) else {}),
            },
        )
        .rl_module(
            rl_module_spec=RLModuleSpec(module_class=module_class(p.kind),
                                        model_config=p.rl_module_config(env_config_of(cfg)))
        )
        .training(
            lr=ppo.lr,
            gamma=ppo.gamma,
            lambda_=ppo.lambda_,
            clip_param=ppo.clip_param,
            vf_loss_coeff=ppo.vf_loss_coeff,
            vf_clip_param=ppo.vf_clip_param,
            use_kl_loss=ppo.use_kl_loss,
            kl_coeff=ppo.kl_coeff,
            grad_clip=ppo.grad_clip,
            train_batch_size_per_learner=ppo.train_batch_size,
            minibatch_size=ppo.minibatch_size,
            num_epochs=ppo.num_epochs,
            # PPO's single entropy term is replaced by the learner's two level terms (see learner.py).
            entropy_coeff=0.0,
        )
        .callbacks(ReplayCallback if cfg.replay.enabled else HealingMetricsCallback)
        .fault_tolerance(
            restart_failed_env_runners=ft.restart_failed_env_runners,
            max_num_env_runner_restarts=ft.max_num_env_runner_restarts,
            delay_between_env_runner_restarts_s=ft.delay_between_env_runner_restarts_s,
            num_consecutive_env_runner_failures_tolerance=ft.num_consecutive_env_runner_failures_tolerance,
            env_runner_health_probe_timeout_s=ft.env_runner_health_probe_timeout_s,
            restart_failed_sub_environments=ft.restart_failed_sub_environments,
        )
        .reporting(metrics_num_episodes_for_smoothing=100)
        .debugging(seed=cfg.run.seed, log_level="WARN")
    )
    return config

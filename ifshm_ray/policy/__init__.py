"""The IFSHM recovery policy on RLlib's new API stack.

* :mod:`~ifshm_ray.policy.module`: ``HierarchicalRecoveryModule`` (pi_h(category) -> pi_l(target, ratio | category),
  masked) and ``FlatRecoveryModule`` (flat masked PPO baseline),
* :mod:`~ifshm_ray.policy.learner`: ``IFSHMPPOTorchLearner`` (PPO + two-level entropy + pluggable loss terms),
* :mod:`~ifshm_ray.policy.config` / :mod:`~ifshm_ray.policy.algo`: typed job config and the ``PPOConfig`` builder,
* :mod:`~ifshm_ray.policy.callbacks`: MTTR / success metrics from the episode-end info,
* :mod:`~ifshm_ray.policy.bundle`: export and ``load_policy_bundle`` for serving.

Names are imported lazily so that ``import ifshm_ray.policy.bundle`` does not pull in RLlib until it is needed.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "HierarchicalRecoveryModule": "ifshm_ray.policy.module",
    "FlatRecoveryModule": "ifshm_ray.policy.module",
    "module_class": "ifshm_ray.policy.module",
    "IFSHMPPOTorchLearner": "ifshm_ray.policy.learner",
    "TrainConfig": "ifshm_ray.policy.config",
    "load_train_config": "ifshm_ray.policy.config",
    "build_ppo_config": "ifshm_ray.policy.algo",
    "HealingMetricsCallback": "ifshm_ray.policy.callbacks",
    "load_policy_bundle": "ifshm_ray.policy.bundle",
    "export_policy_bundle": "ifshm_ray.policy.bundle",
    "PolicyBundleError": "ifshm_ray.policy.bundle",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ifshm_ray.policy' has no attribute {name!r}")

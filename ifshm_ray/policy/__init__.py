"""The IFSHM recovery policy on RLlib's new API stack. Import what you need from its modules:

* :mod:`~ifshm_ray.policy.module`: ``HierarchicalRecoveryModule`` (pi_h(category) -> pi_l(target, ratio | category),
  masked), ``FlatRecoveryModule`` (flat masked PPO baseline) and ``module_class``,
* :mod:`~ifshm_ray.policy.learner`: ``IFSHMPPOTorchLearner`` (PPO + two-level entropy + pluggable loss terms),
* :mod:`~ifshm_ray.policy.config`: the typed job config (``TrainConfig``, ``load_train_config``),
* :mod:`~ifshm_ray.policy.algo`: ``build_ppo_config`` (the ``PPOConfig`` builder) and ``make_env``,
* :mod:`~ifshm_ray.policy.callbacks`: ``HealingMetricsCallback`` (MTTR / success metrics from the episode-end info),
* :mod:`~ifshm_ray.policy.replay`: ``ReplayCallback`` and ``SILReplay`` (replay wired into training: episodes to the
  replay actor, scenario weights to the env runners, the learner's self-imitation term),
* :mod:`~ifshm_ray.policy.bundle`: ``export_policy_bundle``, ``load_policy_bundle`` and ``PolicyBundleError`` for
  serving.

The package itself imports none of them and re-exports nothing (no lazy name table either): ``jobs/train.py`` and
``jobs/tune.py`` import the config module at the top to parse and check their config before they need RLlib.
Measured on 2 cores (``python -c "import ifshm_ray.policy.config"``): 0.05 s, no torch or Ray; with plain imports of
the names above in this file, 4-6 s, loading torch and Ray.
"""

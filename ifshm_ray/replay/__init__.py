"""Replay for continual adaptation (issue 15): the pieces, plain classes and functions.

Modules (this package re-exports nothing: import from the module, so that ``import ifshm_ray.replay.config`` stays
free of torch and Ray):

* :mod:`.config`        -- ``ReplayConfig``, ``LevelSamplerConfig``, ``SILConfig``, ``CloneConfig``, ``ReplaySection``
  (the training config's ``replay:``; pydantic, a docstring per field)
* :mod:`.buffer`        -- ``StratifiedReplayBuffer``: RLlib's ``PrioritizedEpisodeReplayBuffer`` per stratum (the
  known types, each novel cluster) under one capacity in env steps, the known stratum keeping at least half
* :mod:`.actor`         -- ``ReplayActor`` and ``get_or_create_replay_actor``: the named Ray actor around it
  (``max_restarts``; reloads its last saved state when Ray restarts it; synchronous deterministic mode)
* :mod:`.level_sampler` -- ``LevelSampler``: prioritized level replay over fault types (value-l1 score, rank
  transform, staleness)
* :mod:`.sil`           -- ``sil_loss``: the self-imitation loss on the hierarchical log-probability
* :mod:`.clone`         -- ``clone_loss``, ``policy_kl``: CLEAR's behavioural cloning (policy KL to the behaviour's
  stored action distribution, value to its stored value), off by default (``replay.clone.weight`` 0)

Their wiring into RLlib training (callbacks, the learner's term) is :mod:`ifshm_ray.policy.replay`.
"""

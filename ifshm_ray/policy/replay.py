"""Replay wired into RLlib's new API stack: the env-runner and driver callback, and the learner's self-imitation term
(the policy layer imports the replay pieces of :mod:`ifshm_ray.replay`, never the reverse).

Three paths, all switched on by ``TrainConfig.replay.enabled`` (:class:`~ifshm_ray.replay.config.ReplaySection`);
the section travels to every process in ``learner_config_dict[LCD_KEY]`` (env runners read it from their
``AlgorithmConfig`` too):

* **Env runners -> replay actor** (:class:`ReplayCallback`, env-runner side). ``on_episode_end`` joins the
  finished episode's chunks into one complete episode, tags it with its stratum (the known stratum when its fault
  type is known in the job's split, or one of ``ReplaySection.known_types`` when given;
  ``ReplaySection.novel_stratum`` otherwise) and, with scenario replay, computes its value-l1
  score (mean |GAE| with the runner's current value function). ``on_sample_end`` sends everything finished in that
  sample in **one** ``push_many`` call. In the synchronous (deterministic) mode the runner waits for that call, so
  every push of an iteration has reached the actor before ``sample()`` returns; the learner's ``flush`` at the
  start of its update then adds them in a fixed order (by runner index, then push order).
* **Learner** (:class:`SILReplay`, used by :class:`~ifshm_ray.policy.learner.IFSHMPPOTorchLearner`). Before each
  update: ``flush`` and one prioritized sample of ``sil.batch_size`` steps (the mix: ``ReplaySection.mix``, or set
  by the meta-controller through the actor). Every minibatch's loss then adds ``sil.weight * L_sil`` on that
  sample, with the exact hierarchical log-probability ``log p(c) + log p(t|c) + log p(r|c)``
  (:func:`~ifshm_ray.replay.sil.hierarchical_logp`); after the update the last minibatch's (R - V)+ are written
  back as the sample's priorities. Logged under ``learners/<module>/``: ``loss/sil``, ``sil_policy_loss``,
  ``sil_value_loss``, ``sil_num_valid``, ``sil_num_clipped`` (steps past ``sil.clip_ratio``'s trust region, measured against
  log pi at the update's first minibatch), ``sil_batch_size`` and (``__all_modules__``) ``sil_priorities_written``.
  With ``ReplaySection.clone.weight`` > 0 (CLEAR, :mod:`ifshm_ray.replay.clone`) the same sample also gives
  ``clone.weight * L_clone`` on its rows of the cloned strata (default: the known one) that carry behaviour outputs:
  the env runners then keep each step's ``ACTION_DIST_INPUTS`` (what RLlib 2.x's env runners store in
  ``extra_model_outputs`` for PPO, with ``ACTION_LOGP``; no value) and add ``VF_PREDS``, V_b(s) of the runner's
  module at the episode's end (the weights that acted, except for an episode that spans a weight sync).
  Episodes pushed without them (the continual protocol's recorded incidents, acted by the runbook or the
  deterministic deployed policy, neither a sample of a stored distribution) are masked out of the cloning terms.
  Logged: ``loss/clone``, ``clone_policy_loss``, ``clone_value_loss``, ``clone_num_policy``, ``clone_num_value``.
* **Driver** (:class:`ReplayCallback`, algorithm side). ``on_train_result`` collects the per-episode level scores
  from every env runner (``env_runner_group.foreach_env_runner``), hands them to the level sampler held by the
  replay actor (so that its state is saved and restored with the replay), and pushes the new fault-type weights
  back to every env runner (``foreach_env_runner``; the env's simulator draws the next incidents with them:
  :meth:`ifshm_ray.sim.core.BatchedSim.set_fault_weights`). ``result["ifshm_replay"]`` holds the actor's stats
  and the weights. Recreated env runners get the current weights in ``on_env_runners_recreated``. With a
  meta-controller attached (:func:`attach_meta`, ``TrainConfig.meta.enabled``), the known-type incident outcomes
  (MTTR from the env's episode-end info) go to it, its replay mix is set on the actor, and its scenario weights
  (the level sampler's, moved towards known types whose MTTR regressed) are what the runners get.

With several learners (``runners.num_learners`` > 1) each draws its own sample; a stratum's priorities can be
written back for its latest sample only, so the others' are counted as stale (``num_stale_updates``), never
misapplied.

The replay actor itself is created by the training job (``jobs/train.py``), which also saves it with every
checkpoint; the callbacks and the learner find it by name (``ReplayConfig.actor_name``).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np
import ray
import tree
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.env.utils.infinite_lookback_buffer import InfiniteLookbackBuffer

from ifshm_ray.policy.callbacks import HealingMetricsCallback
from ifshm_ray.replay.buffer import STRATUM, has_key
from ifshm_ray.replay.config import ReplaySection
from ifshm_ray.sim.catalog import FAULT_FREE

logger = logging.getLogger(__name__)

LCD_KEY = "ifshm_replay"
"""Key of the replay section in ``AlgorithmConfig.learner_config_dict``."""
RESULT_KEY = "ifshm_replay"
"""Key of the replay's stats and level weights in a training result."""
_RUNNER_SCORES = "_ifshm_level_scores"
_RUNNER_PENDING = "_ifshm_replay_pending"
_RUNNER_WEIGHTS = "_ifshm_level_weights"
_RUNNER_OUTCOMES = "_ifshm_outcomes"


def replay_section(config: Any) -> ReplaySection | None:
    """The replay section of an ``AlgorithmConfig`` (None: replay is off)."""
    data = (getattr(config, "learner_config_dict", None) or {}).get(LCD_KEY)
    if not data:
        return None
    section = data if isinstance(data, ReplaySection) else ReplaySection.from_dict(dict(data), source="replay")
    return section if section.enabled else None


# ---------------------------------------------------------------------- episodes and the simulator behind them
def simulators(env: Any) -> list:
    """(simulator, row) of every sub-env of a runner's (or a local) fault-injection env, in sub-env order."""
    u = env.unwrapped
    if hasattr(u, "sim"):  # FaultInjectionVectorEnv: one batched simulator, row i = sub-env i
        return [(u.sim, i) for i in range(u.sim.B)]
    envs = getattr(u, "envs", None)
    if envs is not None:  # gymnasium SyncVectorEnv of FaultInjectionEnv
        return [(e.unwrapped.sim, 0) for e in envs]
    raise TypeError(f"replay needs the fault-injection simulator in the env runner (env {type(u).__name__}); "
                    "use runners.gym_env_vectorize_mode 'vector_entry_point' or 'sync'")


def episode_fault(env: Any, env_index: int) -> str:
    """The first injected fault type of sub-env ``env_index``'s current incident (``FAULT_FREE`` if none).
    Ground truth: used to tag the stratum and the scenario level, never given to the policy."""
    sim, row = simulators(env)[env_index]
    faults = sim.incident(row)["faults"]
    return faults[0]["fault"] if faults else FAULT_FREE


def known_types(env: Any) -> set[str]:
    """The fault types known in the env's split (``SimConfig.split``, else the catalog's default split)."""
    sim, _ = simulators(env)[0]
    return set(sim.catalog.known_in(sim.cfg.split or sim.catalog.default_split))


def join_chunks(chunks: Sequence[SingleAgentEpisode], extra_keys: Sequence[str] = ()) -> SingleAgentEpisode:
    """One complete episode (no lookback) from its chunks in time order, with the extra model outputs named in
    ``extra_keys`` that every chunk carries (none by default); of the infos only each step's ``elapsed_steps``."""
    if not chunks:
        raise ValueError("join_chunks needs at least one chunk")
    from ifshm_ray.env.fault_env import ELAPSED_STEPS_KEY

    obs, actions, rewards, infos = [], [], [], []
    keys = [k for k in extra_keys if all(k in ch.extra_model_outputs for ch in chunks)]
    extra: dict[str, list] = {k: [] for k in keys}
    for k, ch in enumerate(chunks):
        n = len(ch)
        start = 0 if k == 0 else 1  # a chunk starts with the observation the previous one ended with
        obs.extend(ch.get_observations(i) for i in range(start, n + 1))
        for i in range(start, n + 1):  # only each step's length (semi-MDP discounting), where the env reports it
            info = ch.get_infos(i) or {}
            infos.append({ELAPSED_STEPS_KEY: info[ELAPSED_STEPS_KEY]} if ELAPSED_STEPS_KEY in info else {})
        actions.extend(ch.get_actions(i) for i in range(n))
        rewards.extend(float(r) for r in ch.get_rewards())
        for key in keys:
            extra[key].extend(ch.get_extra_model_outputs(key, i) for i in range(n))
    last = chunks[-1]
    return SingleAgentEpisode(
        id_=last.id_, observations=obs, actions=actions, rewards=rewards, infos=infos if any(infos) else None,
        observation_space=last.observation_space, action_space=last.action_space,
        terminated=last.is_terminated, truncated=last.is_truncated, extra_model_outputs=extra or None,
        len_lookback_buffer=0,
    )


def gae(rewards: np.ndarray, values: np.ndarray, gamma: float, lambda_: float,
        elapsed: np.ndarray | None = None) -> np.ndarray:
    """Generalized advantage estimates of one episode: ``values`` has one more entry than ``rewards`` (the value
    after the last step: 0 for a terminated episode). With ``elapsed`` (each step's length in step intervals) step
    t is discounted by gamma ** elapsed[t] (semi-MDP, :mod:`ifshm_ray.policy.semi_mdp`)."""
    rewards = np.asarray(rewards, np.float64)
    values = np.asarray(values, np.float64)
    if values.shape != (len(rewards) + 1,):
        raise ValueError(f"values needs len(rewards) + 1 = {len(rewards) + 1} entries, got {values.shape}")
    disc = np.full(len(rewards), gamma) if elapsed is None else gamma ** np.asarray(elapsed, np.float64)
    adv = np.zeros(len(rewards))
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        delta = rewards[t] + disc[t] * values[t + 1] - values[t]
        running = delta + disc[t] * lambda_ * running
        adv[t] = running
    return adv


def _to_torch(struct: Any, device: Any = None):
    import torch

    return tree.map_structure(lambda x: torch.as_tensor(np.array(x), device=device), struct)


def episode_values(module: Any, episode: SingleAgentEpisode) -> np.ndarray:
    """V(s_0..s_T) of a complete episode under ``module`` (V(s_T) = 0 when it terminated)."""
    import torch

    n = len(episode)
    obs = tree.map_structure(lambda *x: np.stack(x), *[episode.get_observations(i) for i in range(n + 1)])
    with torch.no_grad():
        v = module.compute_values({Columns.OBS: _to_torch(obs)}).detach().cpu().numpy().astype(np.float64)
    if episode.is_terminated:
        v[-1] = 0.0
    return v


# ---------------------------------------------------------------------- the callback
class ReplayCallback(HealingMetricsCallback):
    """Healing metrics plus the replay paths (see the module doc). Replay off: exactly ``HealingMetricsCallback``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._actor = None
        self._known: set[str] | None = None
        self.meta = None  # the driver's MetaController (attach_meta), steering the replay mix and scenario weights

    def _get_actor(self, section: ReplaySection):
        if self._actor is None:
            self._actor = ray.get_actor(section.buffer.actor_name)
        return self._actor

    # ------------------------------------------------------------------ env runner side
    def on_episode_end(self, *, episode, prev_episode_chunks=None, env_runner=None, metrics_logger=None,
                       env=None, env_index: int = 0, rl_module=None, **kwargs: Any) -> None:
        super().on_episode_end(episode=episode, metrics_logger=metrics_logger, **kwargs)
        section = replay_section(getattr(env_runner, "config", None)) if env_runner is not None else None
        if section is None or env is None or getattr(env_runner.config, "in_evaluation", False):
            return  # evaluation episodes are measurements, not experience
        clone = section.clone.stores_behaviour
        # with CLEAR's cloning on (targets stored with the steps, no reference policy), each step keeps what the
        # acting policy output: its action distribution inputs (RLlib's env runners store them) and V_b(s)
        # (computed here: PPO's env runners compute no values)
        full = join_chunks([*(prev_episode_chunks or []), episode],
                           extra_keys=(Columns.ACTION_DIST_INPUTS,) if clone else ())
        values = None
        if clone and rl_module is not None and len(full) > 0:
            values = episode_values(rl_module, full)
            full.extra_model_outputs[Columns.VF_PREDS] = InfiniteLookbackBuffer(
                data=list(values[:-1].astype(np.float32)), lookback=0)
        fault = episode_fault(env, env_index)
        if self._known is None:
            self._known = set(section.known_types) if section.known_types is not None else known_types(env)
        known = fault in self._known or fault == FAULT_FREE
        stratum = section.buffer.known_stratum if known else section.novel_stratum
        pending = getattr(env_runner, _RUNNER_PENDING, None)
        if pending is None:
            pending = {}
            setattr(env_runner, _RUNNER_PENDING, pending)
        pending.setdefault(stratum, []).append(full)
        info = episode.get_infos(-1) or {}
        if info.get("mttr_s") is not None:  # the incident's outcome, for the meta-controller's known-type MTTRs
            outcomes = getattr(env_runner, _RUNNER_OUTCOMES, None)
            if outcomes is None:
                outcomes = []
                setattr(env_runner, _RUNNER_OUTCOMES, outcomes)
            outcomes.append((fault, known, float(info["mttr_s"]),
                             bool(info.get("success", False))))
        if section.scenario_replay and rl_module is not None and len(full) > 0:
            cfg = env_runner.config
            if values is None:
                values = episode_values(rl_module, full)
            from ifshm_ray.policy.semi_mdp import elapsed_of

            score = float(np.abs(gae(full.get_rewards(), values, cfg.gamma, cfg.lambda_,
                                     elapsed_of(full.get_infos(), len(full)))).mean())
            scores = getattr(env_runner, _RUNNER_SCORES, None)
            if scores is None:
                scores = []
                setattr(env_runner, _RUNNER_SCORES, scores)
            scores.append((fault, score))

    def on_sample_end(self, *, env_runner=None, metrics_logger=None, samples=None, **kwargs: Any) -> None:
        section = replay_section(getattr(env_runner, "config", None)) if env_runner is not None else None
        pending = getattr(env_runner, _RUNNER_PENDING, None) if env_runner is not None else None
        if section is None or not pending:
            return
        setattr(env_runner, _RUNNER_PENDING, {})
        groups = [(stratum, eps) for stratum, eps in sorted(pending.items())]
        ref = self._get_actor(section).push_many.remote(groups, source=int(getattr(env_runner, "worker_index", 0)))
        if section.buffer.deterministic:
            ray.get(ref)  # the push has arrived before sample() returns (the learner's flush is the barrier)
        if metrics_logger is not None:
            metrics_logger.log_value("ifshm/replay_pushed_episodes", sum(len(e) for _, e in groups), reduce="sum")

    # ------------------------------------------------------------------ driver side
    def on_train_result(self, *, algorithm, metrics_logger=None, result: dict, **kwargs: Any) -> None:
        section = replay_section(algorithm.config)
        if section is None:
            return
        actor = self._get_actor(section)
        group = algorithm.env_runner_group
        out: dict[str, Any] = {}
        local = group.num_remote_env_runners() == 0
        collected = group.foreach_env_runner(_pop_runner_data, local_env_runner=local)
        if self.meta is not None:
            for data in collected:  # runner order (local first, then remote by index): deterministic
                for fault, known, mttr_s, _ in data["outcomes"]:
                    if known:
                        self.meta.record_known(fault, mttr_s)
            mix = self.meta.replay_mix()
            if mix is not None:
                ray.get(actor.set_mix.remote(mix))
                out["mix"] = mix
        if section.scenario_replay:
            by_level: dict[str, list[float]] = defaultdict(list)
            for data in collected:
                for fault, score in data["scores"]:
                    by_level[fault].append(score)
            weights = ray.get(actor.update_levels.remote({k: float(np.mean(v)) for k, v in by_level.items()},
                                                         {k: len(v) for k, v in by_level.items()}))
            if weights and self.meta is not None:
                weights = self.meta.scenario_weights(weights)
            if weights:
                set_weights(group, weights, local_env_runner=local)
            out["level_weights"] = weights
            out["level_scores"] = {k: float(np.mean(v)) for k, v in sorted(by_level.items())}
        if self.meta is not None:
            out["meta"] = self.meta.stats()
        out["stats"] = ray.get(actor.stats.remote())
        result[RESULT_KEY] = out

    def on_env_runners_recreated(self, *, algorithm, env_runner_group, env_runner_indices, is_evaluation,
                                 **kwargs: Any) -> None:
        section = replay_section(algorithm.config)
        if section is None or not section.scenario_replay or is_evaluation:
            return
        weights = ray.get(self._get_actor(section).level_weights.remote())
        if weights:
            env_runner_group.foreach_env_runner(lambda r: _set_runner_weights(r, weights), local_env_runner=False,
                                                remote_worker_ids=list(env_runner_indices))


def _pop_runner_data(runner: Any) -> dict[str, list]:
    """An env runner's level scores and incident outcomes since the last call (then cleared)."""
    out = {"scores": getattr(runner, _RUNNER_SCORES, None) or [],
           "outcomes": getattr(runner, _RUNNER_OUTCOMES, None) or []}
    setattr(runner, _RUNNER_SCORES, [])
    setattr(runner, _RUNNER_OUTCOMES, [])
    return out


def attach_meta(algo: Any, meta: Any) -> int:
    """Give the driver's :class:`ReplayCallback` (s) of an algorithm a meta-controller; returns how many."""
    cbs = algo.callbacks if isinstance(algo.callbacks, (list, tuple)) else [algo.callbacks]
    n = 0
    for cb in cbs:
        if isinstance(cb, ReplayCallback):
            cb.meta = meta
            n += 1
    if not n:
        raise ValueError("the algorithm has no ReplayCallback: build it with replay.enabled")
    return n


def _set_runner_weights(runner: Any, weights: Mapping[str, float]) -> int:
    env = getattr(runner, "env", None)
    if env is None:
        return 0
    sims = {id(sim): sim for sim, _ in simulators(env)}
    done = 0
    for sim in sims.values():
        covered = {k: float(w) for k, w in weights.items() if k in sim.fault_names}
        uncovered = [n for n in sim.fault_names if n not in weights]
        if uncovered:
            # this simulator also draws types the level sampler does not cover (the continual protocol's stream of
            # a new fault): those keep their probabilities, and the level weights share out only the rest among the
            # covered (known) types: scenario replay is rehearsal of the known types and never reweights the stream
            current = sim.fault_probabilities()
            fixed = {n: current[n] for n in uncovered}
            rest, total = 1.0 - sum(fixed.values()), sum(covered.values())
            if rest <= 1e-12 or total <= 0:
                continue  # nothing left to share (a stream of the new type alone)
            covered = {**fixed, **{k: rest * w / total for k, w in covered.items()}}
        sim.set_fault_weights(covered)
        done += 1
    setattr(runner, _RUNNER_WEIGHTS, dict(weights))
    return done


def set_weights(group: Any, weights: Mapping[str, float], local_env_runner: bool = False) -> list[int]:
    """Push fault-type weights to every (healthy) env runner of an ``EnvRunnerGroup``; returns the number of
    simulators set per runner."""
    weights = dict(weights)
    return group.foreach_env_runner(lambda r: _set_runner_weights(r, weights), local_env_runner=local_env_runner)


# ---------------------------------------------------------------------- the learner's term
class SILReplay:
    """The self-imitation term of :class:`~ifshm_ray.policy.learner.IFSHMPPOTorchLearner` (see the module doc)."""

    def __init__(self, section: ReplaySection) -> None:
        self.section = section
        self._actor = None
        self._teacher = None  # the cloning reference's module (clone.reference), loaded on first use
        self.batch = None  # the current update's replay sample (torch tensors), or None
        self.handle = None
        self.priorities = None
        self.num_written = 0

    def _get_actor(self):
        if self._actor is None:
            self._actor = ray.get_actor(self.section.buffer.actor_name)
        return self._actor

    def before_update(self, device: Any = None) -> None:
        """Flush the staged pushes (synchronous mode) and draw this update's prioritized sample."""
        actor = self._get_actor()
        if self.section.buffer.deterministic:
            ray.get(actor.flush.remote())
        self.batch, self.handle, self.priorities = None, None, None
        sample = ray.get(actor.sample_or_none.remote(self.section.sil.batch_size, self.section.mix))
        if sample is None:
            return
        cols = sample.columns
        self.batch = {
            Columns.OBS: _to_torch(cols[Columns.OBS], device),
            Columns.ACTIONS: _to_torch(cols[Columns.ACTIONS], device),
            Columns.RETURNS_TO_GO: _to_torch(cols[Columns.RETURNS_TO_GO], device).float(),
            "weights": _to_torch(sample.weights, device).float(),
        }
        self.handle = sample.handle
        clone = self.section.clone
        if not clone.enabled:
            return
        known = self.section.buffer.known_stratum
        cloned = np.array([clone.applies_to(str(s), known) for s in cols[STRATUM]], dtype=bool)
        if clone.reference is not None:  # a fixed teacher: its outputs on every cloned row
            inputs, values = self._teacher_outputs(self.batch[Columns.OBS], self.batch[Columns.ACTIONS])
            mask = _to_torch(cloned, device)
            self.batch.update({Columns.ACTION_DIST_INPUTS: inputs, Columns.VF_PREDS: values,
                               "clone_policy_mask": mask, "clone_value_mask": mask})
        else:  # CLEAR: the behaviour outputs and which rows have them (and are in a cloned stratum)
            n = len(cloned)
            for key, name in ((Columns.ACTION_DIST_INPUTS, "clone_policy"), (Columns.VF_PREDS, "clone_value")):
                has = cols.get(has_key(key), np.zeros(n, dtype=bool))
                self.batch[f"{name}_mask"] = _to_torch(cloned & has, device)
                if key in cols:
                    self.batch[key] = _to_torch(cols[key], device).float()

    def _teacher_outputs(self, obs: Any, actions: Any) -> tuple[Any, Any]:
        """(action distribution inputs, values) of the cloning reference's module on ``obs`` (constants; the
        hierarchical module's conditionals at the replayed steps' categories, as ``forward_train`` takes them)."""
        import torch

        from ifshm_ray.policy.bundle import PolicyBundleError, load_policy_bundle

        if self._teacher is None:
            path = self.section.clone.reference
            try:
                module = load_policy_bundle(path).module
            except (PolicyBundleError, OSError) as e:
                raise FileNotFoundError(f"replay.clone.reference {path!r}: not a policy bundle ({e})") from None
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)
            self._teacher = module
        with torch.no_grad():
            dev = next(self._teacher.parameters()).device
            o = tree.map_structure(lambda x: x.to(dev), obs)
            a = tree.map_structure(lambda x: x.to(dev), actions)
            inputs = self._teacher.forward_train({Columns.OBS: o, Columns.ACTIONS: a})[Columns.ACTION_DIST_INPUTS]
            values = self._teacher.compute_values({Columns.OBS: o})
        device = next(iter(tree.flatten(obs))).device
        return inputs.float().to(device), values.float().to(device)

    def losses(self, module: Any) -> tuple[dict[str, tuple[Any, float]], dict[str, Any]]:
        """``({name: (loss, weight)}, logs)`` on the current sample under ``module``: ``sil`` (L_sil, weighted
        ``sil.weight``) and, with CLEAR's cloning on, ``clone`` (L_clone, weighted ``clone.weight``); ({}, {})
        without a sample."""
        import torch

        from ifshm_ray.policy.module import HierarchicalRecoveryModule
        from ifshm_ray.replay.clone import clone_loss_from_config, policy_kl
        from ifshm_ray.replay.sil import hierarchical_logp, sil_loss_from_config

        if self.batch is None:
            return {}, {}
        b = self.batch
        fwd = module.forward_train({Columns.OBS: b[Columns.OBS], Columns.ACTIONS: b[Columns.ACTIONS]})
        inputs = fwd[Columns.ACTION_DIST_INPUTS]
        actions = b[Columns.ACTIONS]
        if isinstance(module, HierarchicalRecoveryModule):
            d = module.dims
            sizes = [d.num_categories, d.num_targets, d.num_ratios]
            cat, tgt, rat = torch.split(inputs, sizes, dim=-1)
            c, t, r = (a.long() for a in actions)

            def pick(logits, idx):
                return torch.log_softmax(logits, -1).gather(-1, idx[:, None]).squeeze(-1)

            logp = hierarchical_logp(pick(cat, c), pick(tgt, t), pick(rat, r))
        else:
            sizes = [inputs.shape[-1]]
            logp = module.get_train_action_dist_cls().from_logits(inputs).logp(actions)
        values = module.compute_values({Columns.OBS: b[Columns.OBS]})
        if "sil_logp_old" not in b:  # the update's first minibatch: log pi before any of its gradient steps
            b["sil_logp_old"] = logp.detach()
        terms = sil_loss_from_config(logp, values, b[Columns.RETURNS_TO_GO], b["weights"], self.section.sil,
                                     logp_old=b["sil_logp_old"])
        self.priorities = terms.priorities.detach().cpu().numpy()
        logs = {"sil_policy_loss": terms.policy_loss, "sil_value_loss": terms.value_loss,
                "sil_num_valid": torch.tensor(float(terms.num_valid)),
                "sil_num_clipped": torch.tensor(float(terms.num_clipped)),
                "sil_batch_size": torch.tensor(float(len(logp)))}
        out = {"sil": (terms.loss, self.section.sil.weight)}
        if self.section.clone.enabled:
            pmask, vmask = b["clone_policy_mask"], b["clone_value_mask"]
            behaviour = b.get(Columns.ACTION_DIST_INPUTS)
            kl = (policy_kl(behaviour, inputs, sizes) if behaviour is not None
                  else torch.zeros_like(values))
            vb = b.get(Columns.VF_PREDS, torch.zeros_like(values))
            ct = clone_loss_from_config(kl, values, vb, b["weights"], pmask, vmask, self.section.clone)
            out["clone"] = (ct.loss, self.section.clone.weight)
            logs.update({"clone_policy_loss": ct.policy_loss, "clone_value_loss": ct.value_loss,
                         "clone_num_policy": torch.tensor(float(ct.num_policy)),
                         "clone_num_value": torch.tensor(float(ct.num_value))})
        return out, logs

    def loss(self, module: Any) -> tuple[Any, dict[str, Any]]:
        """(L_sil, logs) on the current sample under ``module``; (None, {}) without a sample."""
        out, logs = self.losses(module)
        return (out["sil"][0], logs) if out else (None, {})

    def after_update(self) -> int:
        """Write the last minibatch's (R - V)+ back as the sample's priorities; returns the rows written."""
        self.num_written = 0
        if self.handle is not None and self.priorities is not None:
            self.num_written = int(ray.get(self._get_actor().update_priorities.remote(self.handle,
                                                                                      self.priorities)))
        self.batch, self.handle, self.priorities = None, None, None
        return self.num_written

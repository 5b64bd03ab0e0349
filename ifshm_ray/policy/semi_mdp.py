"""Semi-MDP discounting in the learner: GAE with a discount per step.

A simulator step lasts its action's duration plus one step interval: observing lasts 30 s, a restart a few minutes,
a page 20 minutes or more. With ``env.config.reward.duration_discount`` (= ``ppo.gamma``) the simulator already
discounts the unhealthy time *inside* a step (``sim/core.py``); this module is the other half: the value of the
next state is discounted by ``gamma ** elapsed_steps`` (``elapsed_steps = 1 + duration / step_s``, reported by the
env in ``info["elapsed_steps"]``) instead of ``gamma``, and GAE's recursion by ``(gamma ** elapsed_steps) *
lambda``. Without it a 20-minute page is one step away from its outcome, as cheap to wait through as a 30 s look.

:class:`SemiMDPGAE` replaces RLlib's :class:`GeneralAdvantageEstimation` in the learner connector pipeline
(:class:`~ifshm_ray.policy.learner.IFSHMPPOTorchLearner` swaps it in when ``learner_config_dict["semi_mdp_gae"]``
is set, which :func:`~ifshm_ray.policy.algo.build_ppo_config` does with a duration discount).
:func:`elapsed_of` reads the same step lengths for the replay's returns-to-go (``replay/buffer.py``) and level-replay
scores (``policy/replay.py``).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from ray.rllib.connectors.common.numpy_to_tensor import NumpyToTensor
from ray.rllib.connectors.learner.general_advantage_estimation import GeneralAdvantageEstimation
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.numpy import convert_to_numpy
from ray.rllib.utils.postprocessing.zero_padding import unpad_data_if_necessary

from ifshm_ray.env.fault_env import ELAPSED_STEPS_KEY

LCD_SEMI_MDP_KEY = "semi_mdp_gae"
"""``learner_config_dict`` key: True to discount by each step's length (the learner swaps in :class:`SemiMDPGAE`)."""


def elapsed_of(infos: Sequence[dict], n: int) -> np.ndarray:
    """[n] the length (in step intervals) of steps 0..n-1 from an episode's infos (``infos[t + 1]`` is step t's:
    ``infos[0]`` is the reset's). A step without the key (or past the end of ``infos``) counts as 1."""
    out = np.ones(n, np.float64)
    for t in range(n):
        if t + 1 < len(infos):
            v = (infos[t + 1] or {}).get(ELAPSED_STEPS_KEY)
            if v is not None:
                out[t] = float(v)
    if (out < 1.0).any() or not np.isfinite(out).all():
        raise ValueError(f"info[{ELAPSED_STEPS_KEY!r}] must be finite and >= 1 (a step lasts at least one step "
                         f"interval); got {out[(out < 1.0) | ~np.isfinite(out)][:5].tolist()}")
    return out


def step_discounts(episode: Any, gamma: float) -> np.ndarray:
    """[len(episode)] ``gamma ** elapsed_steps`` of every step of an RLlib episode (from its infos)."""
    n = len(episode)
    return gamma ** elapsed_of(episode.get_infos(), n)


def semi_mdp_value_targets(values: np.ndarray, rewards: np.ndarray, terminateds: np.ndarray,
                           truncateds: np.ndarray, discounts: np.ndarray, lambda_: float) -> np.ndarray:
    """RLlib's ``compute_value_targets`` (same conventions: episodes elongated by one artificial step, a terminated
    step has no bootstrap, a truncated one stops the recursion) with a discount per step:
    ``delta_t = r_t + d_t (1 - term_t) V_{t+1} - V_t``, ``A_t = delta_t + d_t lambda prop_t A_{t+1}``.
    With every ``d_t = gamma`` it equals RLlib's."""
    values = np.asarray(values, np.float64)
    d = np.asarray(discounts, np.float64)
    non_terminal = 1.0 - np.asarray(terminateds, np.float64)
    propagate = non_terminal * (1.0 - np.asarray(truncateds, np.float64))
    next_values = np.append(values[1:], 0.0)
    td = np.asarray(rewards, np.float64) + d * non_terminal * next_values - values
    adv = np.zeros(len(td), np.float64)
    running = 0.0
    for t in reversed(range(len(td))):
        running = td[t] + d[t] * lambda_ * propagate[t] * running
        adv[t] = running
    return (adv + values).astype(np.float32)


class SemiMDPGAE(GeneralAdvantageEstimation):
    """GAE with ``gamma ** info["elapsed_steps"]`` per step (see the module doc). Same place in the pipeline, the same
    outputs (advantages standardised per module, value targets) as RLlib's piece; stateless modules only."""

    def __call__(self, *, rl_module, episodes, batch, **kwargs):
        device = None
        sa_episodes = list(self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False))
        vf_preds = rl_module.foreach_module(
            func=lambda mid, module: (module.compute_values(batch[mid])
                                      if mid in batch and isinstance(module, ValueFunctionAPI) else None),
            return_dict=True)
        for module_id, preds in vf_preds.items():
            if preds is None:
                continue
            module = rl_module[module_id]
            if module.is_stateful():
                raise ValueError("SemiMDPGAE supports stateless RLModules only (no max_seq_len padding)")
            device = preds.device
            preds = convert_to_numpy(preds)
            eps = [e for e in sa_episodes if e.module_id in (None, module_id)]
            lens = [len(e) for e in eps]
            preds = unpad_data_if_necessary(lens, preds)
            col = lambda c: unpad_data_if_necessary(lens, convert_to_numpy(batch[module_id][c]))  # noqa: E731
            discounts = np.concatenate([step_discounts(e, self.gamma) for e in eps]) if eps else np.zeros(0)
            targets = semi_mdp_value_targets(preds, col(Columns.REWARDS), col(Columns.TERMINATEDS),
                                             col(Columns.TRUNCATEDS), discounts, self.lambda_)
            adv = targets - preds
            adv = (adv - adv.mean()) / max(1e-4, adv.std())
            batch[module_id][Postprocessing.ADVANTAGES] = adv
            batch[module_id][Postprocessing.VALUE_TARGETS] = targets
        if self._numpy_to_tensor_connector is None:
            self._numpy_to_tensor_connector = NumpyToTensor(as_learner_connector=True, device=device)
        tensors = self._numpy_to_tensor_connector(
            rl_module=rl_module,
            batch={mid: {Postprocessing.ADVANTAGES: b[Postprocessing.ADVANTAGES],
                         Postprocessing.VALUE_TARGETS: b[Postprocessing.VALUE_TARGETS]}
                   for mid, b in batch.items() if vf_preds.get(mid) is not None},
            episodes=episodes)
        for mid, b in tensors.items():
            batch[mid].update(b)
        return batch

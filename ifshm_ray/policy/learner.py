"""PPO learner with the IFSHM multi-task loss (new API stack, torch).

``total = L_PPO(clip) + vf_loss_coeff * L_V - entropy_coeff_high * H_high - entropy_coeff_low * H_low
          + sum_k coeff_k * L_k``

* ``L_PPO`` and ``L_V`` (and PPO's KL term) come from :class:`PPOTorchLearner` via ``super()``.
* PPO's own entropy term (``PPOConfig.training(entropy_coeff=...)``) works on the whole action distribution and
  cannot tell the levels apart, so this learner **requires** ``entropy_coeff == 0`` (``build()`` refuses
  anything else) and adds the two level terms itself, read from ``learner_config_dict``:
  ``entropy_coeff_high`` (multiplies ``H_high = H(pi_h)``) and ``entropy_coeff_low`` (multiplies
  ``H_low = E_c[H(t|c) + H(r|c)]``; see :mod:`ifshm_ray.policy.module` for exact vs sampled).
* Further terms (replay, prompt tuning, clustering, ...): ``learner_config_dict["extra_losses"]`` maps a name
  to ``{"fn": "package.module:function", "coeff": float}``; ``fn(learner, module_id=..., config=..., batch=...,
  fwd_out=...)`` returns a scalar tensor. Subclasses may instead override :meth:`extra_loss_terms`.
* Semi-MDP discounting: with ``learner_config_dict["semi_mdp_gae"]`` (set with ``reward.duration_discount``) RLlib's
  GAE piece is replaced by :class:`ifshm_ray.policy.semi_mdp.SemiMDPGAE` (each step discounted by gamma ** its
  length in step intervals).
* Self-imitation (issue 15): with ``learner_config_dict["ifshm_replay"]`` (an enabled ``ReplaySection``) every
  update draws one prioritized sample from the replay actor and adds ``sil.weight * L_sil`` (logged as
  ``loss/sil``, ``sil_*``), then writes (R - V)+ back as priorities (:class:`ifshm_ray.policy.replay.SILReplay`).
  With ``replay.clone.weight`` > 0, CLEAR's behavioural cloning on the same sample adds ``clone.weight * L_clone``
  (logged as ``loss/clone``, ``clone_policy_loss``, ``clone_value_loss``, ``clone_num_policy``,
  ``clone_num_value``; :mod:`ifshm_ray.replay.clone`).

Every term is logged per module under ``learners/<module_id>/``: ``policy_loss``, ``vf_loss``, ``entropy``
(RLlib's, the sampled joint entropy), ``mean_kl_loss``, and ``entropy_high``, ``entropy_low``,
``entropy_loss``, ``loss/<name>`` for each extra term, ``total_loss``.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict

from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.utils.annotations import override
from ray.rllib.utils.framework import try_import_torch
from ray.rllib.utils.typing import ModuleID, TensorType

from ifshm_ray.policy.module import ENTROPY_HIGH, ENTROPY_LOW
from ifshm_ray.policy.semi_mdp import LCD_SEMI_MDP_KEY, SemiMDPGAE

torch, nn = try_import_torch()

ENTROPY_HIGH_KEY = "entropy_high"
ENTROPY_LOW_KEY = "entropy_low"
ENTROPY_LOSS_KEY = "entropy_loss"
TOTAL_LOSS_KEY = "total_loss"


def _resolve(path: str) -> Callable:
    mod, _, name = path.partition(":")
    if not name:
        raise ValueError(f"extra loss fn must be 'package.module:function'; got {path!r}.")
    return getattr(importlib.import_module(mod), name)


class IFSHMPPOTorchLearner(PPOTorchLearner):
    """PPO + two-level entropy bonus + pluggable extra loss terms. See module docstring."""

    @override(PPOTorchLearner)
    def build(self) -> None:
        super().build()
        if self.config.entropy_coeff not in (0, 0.0):
            raise ValueError(
                f"IFSHMPPOTorchLearner adds its own per-level entropy terms; set "
                f"PPOConfig.training(entropy_coeff=0.0) (got {self.config.entropy_coeff!r}) and use "
                "learner_config_dict={'entropy_coeff_high': ..., 'entropy_coeff_low': ...} instead."
            )
        lcd = self.config.learner_config_dict or {}
        self._entropy_coeff_high = float(lcd.get("entropy_coeff_high", 0.0))
        self._entropy_coeff_low = float(lcd.get("entropy_coeff_low", 0.0))
        self._extra_losses: dict[str, tuple[Callable, float]] = {}
        for name, spec in (lcd.get("extra_losses") or {}).items():
            if not isinstance(spec, dict) or "fn" not in spec or "coeff" not in spec:
                raise ValueError(f"learner_config_dict['extra_losses'][{name!r}] needs keys 'fn' and 'coeff'.")
            fn = spec["fn"] if callable(spec["fn"]) else _resolve(spec["fn"])
            self._extra_losses[name] = (fn, float(spec["coeff"]))
        if lcd.get(LCD_SEMI_MDP_KEY):  # GAE with each step's own discount (the env reports the steps' lengths)
            from ray.rllib.connectors.learner.general_advantage_estimation import GeneralAdvantageEstimation

            if self._learner_connector is None or not any(isinstance(p, GeneralAdvantageEstimation)
                                                          for p in self._learner_connector.connectors):
                raise ValueError("semi_mdp_gae: the learner connector pipeline has no GAE piece to replace "
                                 "(config.add_default_connectors_to_learner_pipeline must stay on)")
            self._learner_connector.remove(GeneralAdvantageEstimation)
            self._learner_connector.append(SemiMDPGAE(gamma=self.config.gamma, lambda_=self.config.lambda_))
        from ifshm_ray.policy.replay import SILReplay, replay_section

        section = replay_section(self.config)
        self._sil = SILReplay(section) if section is not None else None

    @override(PPOTorchLearner)
    def before_gradient_based_update(self, *, timesteps: Dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        if self._sil is not None:
            self._sil.before_update(device=self._device)

    @override(PPOTorchLearner)
    def after_gradient_based_update(self, *, timesteps: Dict[str, Any]) -> None:
        super().after_gradient_based_update(timesteps=timesteps)
        if self._sil is not None:
            from ray.rllib.core import ALL_MODULES

            self.metrics.log_value((ALL_MODULES, "sil_priorities_written"), self._sil.after_update(), window=1)

    def extra_loss_terms(
        self, *, module_id: ModuleID, config: Any, batch: Dict[str, Any], fwd_out: Dict[str, TensorType]
    ) -> Dict[str, tuple]:
        """Hook for more loss terms: returns ``{name: (scalar_loss, coeff)}``. Default: the configured ones."""
        return {
            name: (fn(self, module_id=module_id, config=config, batch=batch, fwd_out=fwd_out), coeff)
            for name, (fn, coeff) in self._extra_losses.items()
        }

    @override(PPOTorchLearner)
    def compute_loss_for_module(
        self, *, module_id: ModuleID, config: Any, batch: Dict[str, Any], fwd_out: Dict[str, TensorType]
    ) -> TensorType:
        total = super().compute_loss_for_module(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)

        if Columns.LOSS_MASK in batch:
            mask = batch[Columns.LOSS_MASK]
            num_valid = torch.sum(mask)

            def masked_mean(x):
                return torch.sum(x[mask]) / num_valid
        else:
            masked_mean = torch.mean

        if ENTROPY_HIGH not in fwd_out or ENTROPY_LOW not in fwd_out:
            raise KeyError(
                f"forward_train of module {module_id!r} must return {ENTROPY_HIGH!r} and {ENTROPY_LOW!r} "
                "(use ifshm_ray.policy.module.HierarchicalRecoveryModule or FlatRecoveryModule)."
            )
        ent_high = masked_mean(fwd_out[ENTROPY_HIGH])
        ent_low = masked_mean(fwd_out[ENTROPY_LOW])
        entropy_loss = -(self._entropy_coeff_high * ent_high + self._entropy_coeff_low * ent_low)
        total = total + entropy_loss

        logs = {ENTROPY_HIGH_KEY: ent_high, ENTROPY_LOW_KEY: ent_low, ENTROPY_LOSS_KEY: entropy_loss}
        for name, (loss, coeff) in self.extra_loss_terms(
            module_id=module_id, config=config, batch=batch, fwd_out=fwd_out
        ).items():
            total = total + coeff * loss
            logs[f"loss/{name}"] = loss
        if self._sil is not None:
            replay_terms, replay_logs = self._sil.losses(self.module[module_id])
            for name, (loss, coeff) in replay_terms.items():  # sil, and clone when CLEAR's cloning is on
                total = total + coeff * loss
                logs[f"loss/{name}"] = loss
            logs.update(replay_logs)
        logs[TOTAL_LOSS_KEY] = total
        self.metrics.log_dict({k: v.detach() for k, v in logs.items()}, key=module_id, window=1)
        return total

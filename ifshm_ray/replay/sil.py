"""The self-imitation loss (Oh et al. 2018, "Self-Imitation Learning"), as small torch functions.

For replayed steps (s, a, R) with R the discounted return the episode actually got from s, V(s) the value
estimate and w the importance weight of the prioritized sample:

    d_i      = (R_i - V(s_i))+                      (only steps that turned out better than expected count)
    L_policy = sum_i w_i * stopgrad(d_i) * (-log pi(a_i|s_i)) / N
    L_value  = sum_i w_i * 0.5 * d_i^2 / N
    L_sil    = L_policy + value_weight * L_value,       N = max(#{i: R_i > V_i}, min_valid)

and the new priority of each step is d_i (the form of the TD error this loss uses). With ``adv_normalize`` (the
default) the policy term's stopgrad(d_i) is divided by the root mean square of R - V over the sample, so that the
term's gradient has the scale of PPO's, whose advantages RLlib standardizes per batch: this project's returns are
sums of per-step costs in the tens to hundreds (pilot: mean episode return -84), against the clipped Atari rewards
of the paper, so an unnormalized d outweighs PPO's policy gradient by an order of magnitude or more (measured in
the continual pilot: entropy collapsed and the known types were forgotten). Priorities stay the raw d_i. ``log pi(a|s)`` is the exact
hierarchical log-probability ``log p(c) + log p(t|c) + log p(r|c)`` (:func:`hierarchical_logp`). Two options
of the official code (junhyukoh/self-imitation-learning) are kept, both off or mild by default:
``adv_clip`` clips d at an upper bound (the value term then becomes a Huber loss with that bound, whose gradient
is the official one), and ``max_nlogp`` caps the value of -log pi (its gradient is kept, as in the official code).
Where R <= V nothing reaches the gradients.

``clip_ratio`` (optional, off by default) adds PPO's trust region to the policy term: given ``logp_old``, log pi(a|s)
of the module at the start of the learner update, a step whose ratio pi / pi_old has passed ``1 + clip_ratio``
stops contributing gradient (its term is kept as a constant). Since (R - V)+ >= 0 this is the gradient of PPO's
clipped surrogate min(r A, clip(r, 1 - eps, 1 + eps) A) in log form: the same gradient as the unclipped term
while the step is inside the region (at r = 1 the two are equal), none once it is past it. The learner runs
several epochs of minibatches over one replayed sample per update; without the clip a few replayed episodes that
the policy finds unlikely (another actor's, for example the runbook's) are pulled on at every one of them.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from ifshm_ray.replay.config import SILConfig


@dataclasses.dataclass
class SILTerms:
    """The loss and its parts (scalars), the new priorities (detached, one per step) and N."""

    loss: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    priorities: torch.Tensor
    num_valid: int
    num_clipped: int = 0
    """Steps with R > V whose policy term was outside the trust region (``clip_ratio``) and gave no gradient."""


def hierarchical_logp(logp_category: torch.Tensor, logp_target: torch.Tensor,
                      logp_ratio: torch.Tensor) -> torch.Tensor:
    """log pi(a|s) of the hierarchical action a = (c, t, r): log p(c) + log p(t|c) + log p(r|c)."""
    return logp_category + logp_target + logp_ratio


def sil_loss(logp: torch.Tensor, values: torch.Tensor, returns: torch.Tensor, weights: torch.Tensor | None = None,
             *, value_weight: float = 0.01, adv_clip: float | None = None, max_nlogp: float | None = None,
             min_valid: int = 1, adv_normalize: bool = False, clip_ratio: float | None = None,
             logp_old: torch.Tensor | None = None) -> SILTerms:
    """The self-imitation loss of a replayed batch (1-D tensors of equal length; see the module doc)."""
    if not (logp.shape == values.shape == returns.shape) or logp.dim() != 1:
        raise ValueError(f"logp, values and returns must be 1-D of one length, got {tuple(logp.shape)}, "
                         f"{tuple(values.shape)}, {tuple(returns.shape)}")
    if clip_ratio is not None and (logp_old is None or logp_old.shape != logp.shape):
        raise ValueError("clip_ratio needs logp_old of the same shape as logp (log pi at the update's start)")
    if weights is None:
        weights = torch.ones_like(returns)
    weights = weights.to(returns.dtype).detach()
    returns = returns.detach()
    diff = returns - values
    mask = (diff > 0).to(returns.dtype)
    num_valid = int(mask.sum().item())
    denom = float(max(num_valid, min_valid))
    d = torch.relu(diff)  # (R - V)+, differentiable in V
    if adv_clip is not None:
        value_per_step = torch.where(d <= adv_clip, 0.5 * d.pow(2), adv_clip * (d - 0.5 * adv_clip))
        d = torch.clamp(d, max=adv_clip)
    else:
        value_per_step = 0.5 * d.pow(2)
    adv = d.detach()
    priorities = adv
    if adv_normalize:  # RMS of R - V over the whole sample (one row: |R - V|, so its weight is 1), clipped as d is,
        # floored as RLlib floors the std of PPO's advantages (1e-4), so that near-zero noise keeps a small weight
        spread = diff.detach() if adv_clip is None else torch.clamp(diff.detach(), min=-adv_clip, max=adv_clip)
        adv = adv / spread.pow(2).mean().sqrt().clamp_min(1e-4)
    nlogp = -logp
    if max_nlogp is not None:
        nlogp = nlogp + (torch.clamp(nlogp, max=max_nlogp) - nlogp).detach()
    num_clipped = 0
    if clip_ratio is not None:  # past the trust region: the term stays, its gradient goes
        outside = ((logp.detach() - logp_old.detach()) > math.log1p(clip_ratio)) & (mask > 0)
        num_clipped = int(outside.sum().item())
        nlogp = torch.where(outside, nlogp.detach(), nlogp)
    policy_loss = (weights * adv * nlogp).sum() / denom
    value_loss = (weights * value_per_step).sum() / denom
    return SILTerms(loss=policy_loss + value_weight * value_loss, policy_loss=policy_loss, value_loss=value_loss,
                    priorities=priorities, num_valid=num_valid, num_clipped=num_clipped)


def sil_loss_from_config(logp: torch.Tensor, values: torch.Tensor, returns: torch.Tensor,
                         weights: torch.Tensor | None, config: SILConfig,
                         logp_old: torch.Tensor | None = None) -> SILTerms:
    """:func:`sil_loss` with the numbers of a :class:`SILConfig` (its ``weight`` scales the term in the learner)."""
    return sil_loss(logp, values, returns, weights, value_weight=config.value_weight, adv_clip=config.adv_clip,
                    max_nlogp=config.max_nlogp, min_valid=config.min_valid, adv_normalize=config.adv_normalize,
                    clip_ratio=config.clip_ratio, logp_old=logp_old)

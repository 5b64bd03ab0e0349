"""CLEAR's behavioural cloning on replayed experience (Rolnick et al. 2019, "Experience Replay for Continual
Learning"), as small torch functions.

For replayed steps s_i whose behaviour outputs were stored when the step was taken (the acting policy's action
distribution inputs and its value estimate V_b), w_i the importance weight of the prioritized sample and m_i, n_i
the masks of the rows that have them (and belong to a cloned stratum):

    L_policy = sum_i w_i m_i KL(pi_b(.|s_i) || pi(.|s_i)) / max(sum_i m_i, 1)
    L_value  = sum_i w_i n_i (V(s_i) - V_b(s_i))^2 / max(sum_i n_i, 1)
    L_clone  = L_policy + value_weight * L_value

KL of the hierarchical policy. The module's distribution is a product of three categoricals over its action
distribution inputs ``[c logits | t logits given c | r logits given c]`` with the target and ratio conditioned on
one category: the sampled one when acting, the stored one in training (:mod:`ifshm_ray.policy.module`; there
"exact" means the joint log-probability ``log p(c) + log p(t|c) + log p(r|c)``, and for the low-level entropy
the expectation over all categories). What the env runners store per step is the acting output, so the
behaviour's conditionals are known for the category it drew only. The KL of the joint action by the chain rule is

    KL(pi_b || pi) = KL(pi_b(c) || pi(c)) + E_{c ~ pi_b}[KL(pi_b(t|c) || pi(t|c)) + KL(pi_b(r|c) || pi(r|c))]

and :func:`policy_kl` computes the category term exactly and the expectation with the stored category ``c*``
(the current policy's conditionals are taken at ``c*`` too, as ``forward_train`` does for PPO): since ``c*`` was
drawn from pi_b, this is an unbiased one-sample estimate of the joint KL and of its gradient (the same estimate
as ``low_entropy: sampled``). It is zero where the current policy equals the behaviour. For the flat policy the
inputs are one categorical over all combinations and the KL is exact.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from ifshm_ray.replay.config import CloneConfig


@dataclasses.dataclass
class CloneTerms:
    """The loss and its parts (scalars) and the number of rows each part averages over."""

    loss: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    num_policy: int
    num_value: int


def categorical_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last axis of two logit tensors of one shape. Entries masked in p (a logit of
    ``MASK_LOGIT``: probability exactly 0 in float32) contribute exactly 0."""
    if p_logits.shape != q_logits.shape:
        raise ValueError(f"logits must have one shape, got {tuple(p_logits.shape)} and {tuple(q_logits.shape)}")
    logp = torch.log_softmax(p_logits, dim=-1)
    logq = torch.log_softmax(q_logits, dim=-1)
    p = logp.exp()
    return torch.where(p > 0, p * (logp - logq), torch.zeros_like(p)).sum(-1)


def policy_kl(behaviour_inputs: torch.Tensor, current_inputs: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Per row, the sum over the blocks of ``sizes`` (the module's ``ACTION_DIST_INPUTS`` layout: ``(C, T, R)`` for
    the hierarchical policy, ``(C*T*R,)`` for the flat one) of KL(behaviour block || current block); see the module
    doc for why this is the joint KL (estimate). The behaviour inputs are constants."""
    sizes = [int(s) for s in sizes]
    if behaviour_inputs.shape != current_inputs.shape or behaviour_inputs.shape[-1] != sum(sizes):
        raise ValueError(f"action distribution inputs of shapes {tuple(behaviour_inputs.shape)} and "
                         f"{tuple(current_inputs.shape)} do not fit the blocks {sizes}")
    b = torch.split(behaviour_inputs.detach().to(current_inputs.dtype), sizes, dim=-1)
    c = torch.split(current_inputs, sizes, dim=-1)
    return sum(categorical_kl(pb, pc) for pb, pc in zip(b, c))


def clone_loss(kl: torch.Tensor, values: torch.Tensor, behaviour_values: torch.Tensor,
               weights: torch.Tensor | None = None, policy_mask: torch.Tensor | None = None,
               value_mask: torch.Tensor | None = None, *, value_weight: float = 0.5) -> CloneTerms:
    """The cloning loss of a replayed batch (1-D tensors of one length; see the module doc). A row outside a mask
    reaches neither the loss nor the gradients, whatever its (placeholder) behaviour outputs."""
    if not (kl.shape == values.shape == behaviour_values.shape) or kl.dim() != 1:
        raise ValueError(f"kl, values and behaviour_values must be 1-D of one length, got {tuple(kl.shape)}, "
                         f"{tuple(values.shape)}, {tuple(behaviour_values.shape)}")
    n = kl.shape[0]
    ones = torch.ones(n, dtype=torch.bool, device=kl.device)
    policy_mask = ones if policy_mask is None else policy_mask.to(torch.bool)
    value_mask = ones if value_mask is None else value_mask.to(torch.bool)
    if policy_mask.shape != (n,) or value_mask.shape != (n,):
        raise ValueError(f"masks must have shape ({n},), got {tuple(policy_mask.shape)} and {tuple(value_mask.shape)}")
    if weights is None:
        weights = torch.ones_like(values)
    weights = weights.to(values.dtype).detach()
    num_policy, num_value = int(policy_mask.sum().item()), int(value_mask.sum().item())
    zero = torch.zeros_like(values)
    per_policy = torch.where(policy_mask, weights * kl, zero)
    diff = values - behaviour_values.detach().to(values.dtype)
    per_value = torch.where(value_mask, weights * diff.pow(2), zero)
    policy_loss = per_policy.sum() / max(num_policy, 1)
    value_loss = per_value.sum() / max(num_value, 1)
    return CloneTerms(loss=policy_loss + value_weight * value_loss, policy_loss=policy_loss, value_loss=value_loss,
                      num_policy=num_policy, num_value=num_value)


def clone_loss_from_config(kl: torch.Tensor, values: torch.Tensor, behaviour_values: torch.Tensor,
                           weights: torch.Tensor | None, policy_mask: torch.Tensor | None,
                           value_mask: torch.Tensor | None, config: CloneConfig) -> CloneTerms:
    """:func:`clone_loss` with the numbers of a :class:`CloneConfig` (its ``weight`` scales the term in the
    learner)."""
    return clone_loss(kl, values, behaviour_values, weights, policy_mask, value_mask,
                      value_weight=config.value_weight)

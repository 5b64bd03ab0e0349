"""Action distributions of the hierarchical and flat policies (RLlib ``Distribution`` API).

* Hierarchical: the module writes ``ACTION_DIST_INPUTS = [category logits (C) | target logits (T) | ratio logits
  (R)]`` where the target and ratio logits are those *conditioned on the sampled (or stored) category*. A
  :class:`TorchMultiDistribution` of three categoricals over these inputs then gives
  ``logp = log p(c) + log p(t|c) + log p(r|c)``, which is the exact joint log-probability of the action.
* Flat: one categorical over all ``C*T*R`` combinations; :class:`FlatTupleCategorical` maps the Tuple action
  ``(c, t, r)`` to its flat index ``(c*T + t)*R + r`` and back, so RLlib's PPO loss can call ``logp(actions)``
  on the Tuple actions stored in the episodes.
"""
from __future__ import annotations

from typing import Any

from ray.rllib.core.distribution.distribution import Distribution
from ray.rllib.core.distribution.torch.torch_distribution import (
    TorchCategorical,
    TorchDeterministic,
    TorchMultiDistribution,
)
from ray.rllib.utils.framework import try_import_torch

torch, nn = try_import_torch()

#: Logit given to masked-out choices. Finite on purpose: exp() is exactly 0 in float32, but sums of several
#: masked log-probs stay finite (FLOAT_MIN would overflow to -inf and poison gradients with NaN).
MASK_LOGIT = -1e9


def hierarchical_dist_cls(num_categories: int, num_targets: int, num_ratios: int) -> type[Distribution]:
    """The partial ``TorchMultiDistribution`` class over ``[c | t|c | r|c]`` logits."""
    return TorchMultiDistribution.get_partial_dist_cls(
        child_distribution_cls_struct=(TorchCategorical, TorchCategorical, TorchCategorical),
        input_lens=(num_categories, num_targets, num_ratios),
    )


def flat_to_tuple(index: "torch.Tensor", num_targets: int, num_ratios: int) -> tuple:
    """Flat combination index -> ``(category, target, ratio)`` tensors."""
    c = torch.div(index, num_targets * num_ratios, rounding_mode="floor")
    rest = index - c * num_targets * num_ratios
    t = torch.div(rest, num_ratios, rounding_mode="floor")
    r = rest - t * num_ratios
    return c, t, r


def tuple_to_flat(action: Any, num_targets: int, num_ratios: int) -> "torch.Tensor":
    """``(category, target, ratio)`` (tuple of tensors or a ``(B, 3)`` tensor) -> flat combination index."""
    if isinstance(action, torch.Tensor) and action.dim() >= 1 and action.shape[-1] == 3:
        c, t, r = action[..., 0], action[..., 1], action[..., 2]
    else:
        c, t, r = action
    return (c.long() * num_targets + t.long()) * num_ratios + r.long()


class FlatTupleCategorical(TorchCategorical):
    """A categorical over flat (category, target, ratio) combinations whose samples are Tuple actions."""

    def __init__(self, logits: "torch.Tensor", num_targets: int, num_ratios: int) -> None:
        super().__init__(logits=logits)
        self.num_targets = num_targets
        self.num_ratios = num_ratios

    def logp(self, value: Any, **kwargs) -> "torch.Tensor":
        if not (isinstance(value, torch.Tensor) and value.dim() == self.logits.dim() - 1):
            value = tuple_to_flat(value, self.num_targets, self.num_ratios)
        return super().logp(value, **kwargs)

    def sample(self, *, sample_shape=None) -> tuple:
        return flat_to_tuple(super().sample(sample_shape=sample_shape), self.num_targets, self.num_ratios)

    def to_deterministic(self) -> TorchMultiDistribution:
        idx = torch.argmax(self.logits, dim=-1)
        c, t, r = flat_to_tuple(idx, self.num_targets, self.num_ratios)
        return TorchMultiDistribution((TorchDeterministic(c), TorchDeterministic(t), TorchDeterministic(r)))

    @classmethod
    def from_logits(cls, logits: "torch.Tensor", num_targets: int, num_ratios: int, **kwargs):
        return cls(logits=logits, num_targets=num_targets, num_ratios=num_ratios)


def flat_dist_cls(num_targets: int, num_ratios: int) -> type[Distribution]:
    """The partial :class:`FlatTupleCategorical` class for a topology with ``T`` targets and ``R`` ratios."""
    return FlatTupleCategorical.get_partial_dist_cls(num_targets=num_targets, num_ratios=num_ratios)


def categorical_entropy(logits: "torch.Tensor") -> "torch.Tensor":
    """Entropy over the last axis of (possibly masked) logits; masked entries contribute exactly 0."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)

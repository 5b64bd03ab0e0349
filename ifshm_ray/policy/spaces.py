"""Shapes of the hierarchical action/observation spaces and the action-space hash.

The environment contract (``ifshm_ray.env``) gives::

    observation_space = Dict({"obs": Box((F,)), "action_mask": Box((C*T,)), "ratio_mask": Box((C*R,))})
    action_space      = Tuple((Discrete(C), Discrete(T), Discrete(R)))

Everything in :mod:`ifshm_ray.policy` reads ``C, T, R, F`` from the spaces through :func:`space_dims`, so the
policy works for any topology size. This module imports neither torch nor ray.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Sequence

import gymnasium as gym

OBS_KEY = "obs"
ACTION_MASK_KEY = "action_mask"
RATIO_MASK_KEY = "ratio_mask"


@dataclass(frozen=True)
class SpaceDims:
    """Sizes of the hierarchical spaces: categories ``C``, targets ``T``, ratio levels ``R``, features ``F``."""

    num_categories: int
    num_targets: int
    num_ratios: int
    num_features: int

    @property
    def num_joint_actions(self) -> int:
        """Number of (category, target, ratio) combinations (the flat policy's action count)."""
        return self.num_categories * self.num_targets * self.num_ratios


def space_dims(observation_space: gym.Space, action_space: gym.Space) -> SpaceDims:
    """Checks the spaces against the env contract and returns their sizes.

    Raises:
        ValueError: with a message that names the part of the space that does not fit.
    """
    if not (isinstance(action_space, gym.spaces.Tuple) and len(action_space) == 3
            and all(isinstance(s, gym.spaces.Discrete) for s in action_space)):
        raise ValueError(
            "The hierarchical policy needs action_space = Tuple((Discrete(C), Discrete(T), Discrete(R))); "
            f"got {action_space!r}."
        )
    if not isinstance(observation_space, gym.spaces.Dict) or not {
        OBS_KEY, ACTION_MASK_KEY, RATIO_MASK_KEY
    } <= set(observation_space.spaces):
        raise ValueError(
            f"The hierarchical policy needs a Dict observation space with keys {OBS_KEY!r}, "
            f"{ACTION_MASK_KEY!r} and {RATIO_MASK_KEY!r}; got {observation_space!r}."
        )
    c, t, r = (int(s.n) for s in action_space)
    obs_shape = observation_space[OBS_KEY].shape
    if obs_shape is None or len(obs_shape) != 1:
        raise ValueError(f"observation_space[{OBS_KEY!r}] must be a flat Box (F,); got shape {obs_shape}.")
    for key, expected in ((ACTION_MASK_KEY, c * t), (RATIO_MASK_KEY, c * r)):
        shape = observation_space[key].shape
        if shape != (expected,):
            raise ValueError(
                f"observation_space[{key!r}] must have shape ({expected},) for C={c}, T={t}, R={r}; got {shape}."
            )
    return SpaceDims(num_categories=c, num_targets=t, num_ratios=r, num_features=int(obs_shape[0]))


def action_space_signature(
    action_space: gym.Space,
    *,
    categories: Sequence[str] | None = None,
    ratio_levels: Sequence[float] | None = None,
    target_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The JSON-serialisable description of what each action index means.

    ``categories`` and ``ratio_levels`` default to :mod:`ifshm_ray.sim.actions`. ``target_names`` (the topology's
    services then nodes) is included when known, so a bundle trained on another topology is refused.
    """
    from ifshm_ray.sim import actions as sim_actions

    sizes = [int(s.n) for s in action_space]
    return {
        "sizes": sizes,
        "categories": list(categories if categories is not None else sim_actions.CATEGORIES),
        "ratio_levels": [float(x) for x in (ratio_levels if ratio_levels is not None else sim_actions.RATIO_LEVELS)],
        "targets": list(target_names) if target_names is not None else None,
    }


def hash_signature(signature: dict[str, Any]) -> str:
    """A stable sha256 hex digest of an :func:`action_space_signature`."""
    return hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()


def env_target_names(env: gym.Env) -> list[str] | None:
    """The env's target names (services then nodes) if it exposes them, else ``None``.

    Looks for ``target_names`` or ``topology.targets`` on the unwrapped env.
    """
    base = getattr(env, "unwrapped", env)
    names = getattr(base, "target_names", None)
    if names is None:
        topo = getattr(base, "topology", None)
        names = getattr(topo, "targets", None) if topo is not None else None
    if names is None:
        return None
    return [n if isinstance(n, str) else str(getattr(n, "name", n)) for n in names]

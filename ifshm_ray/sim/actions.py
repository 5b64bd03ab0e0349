"""Hierarchical recovery actions: categories, their parameters and what each one means.

An action is a triple ``(category, target, ratio)``:

* ``category`` indexes :data:`CATEGORIES` (the high-level decision),
* ``target`` indexes the topology's target list: every service first, then every node
  (``Topology.targets``); categories that take no target (``observe``, ``escalate``) use target 0,
* ``ratio`` indexes :data:`RATIO_LEVELS`; only ``scale`` and ``reallocate`` read it, the other
  categories ignore it (their ratio mask allows level 0 only).

Which (category, target) pairs are valid is given per topology by ``Topology.target_mask``;
the environment puts that mask into every observation.
"""
from __future__ import annotations

from dataclasses import dataclass

CATEGORIES: tuple[str, ...] = (
    "observe",        # wait one step and watch (no-op)
    "restart",        # restart a service's pods/processes (rolling)
    "migrate",        # live-migrate a service's replicas off degraded nodes
    "scale",          # scale a service's replicas by a ratio
    "rollback",       # roll back the service's last deploy / config push
    "reallocate",     # change a service's resource limits (memory, CPU, GPU memory) by a ratio
    "drain",          # cordon + drain a node, repair/reboot it out of rotation
    "clear_storage",  # prune images/logs and expand the volume on a node
    "reroute",        # shift traffic / DNS / upstreams away from a degraded path
    "escalate",       # page a human; costs the human response time; never a success of the system
)
CATEGORY_INDEX: dict[str, int] = {name: i for i, name in enumerate(CATEGORIES)}

#: What each category may target: "none", "service" or "node".
CATEGORY_TARGET_KIND: dict[str, str] = {
    "observe": "none",
    "restart": "service",
    "migrate": "service",
    "scale": "service",
    "rollback": "service",
    "reallocate": "service",
    "drain": "node",
    "clear_storage": "node",
    "reroute": "service",
    "escalate": "none",
}

#: Multipliers for ``scale`` (replica count) and ``reallocate`` (resource limits).
RATIO_LEVELS: tuple[float, ...] = (0.5, 1.5, 2.0, 3.0)
#: Categories whose ratio parameter matters.
RATIO_CATEGORIES: frozenset[str] = frozenset({"scale", "reallocate"})

NUM_CATEGORIES = len(CATEGORIES)
NUM_RATIOS = len(RATIO_LEVELS)


@dataclass(frozen=True)
class Action:
    """A decoded hierarchical action."""

    category: str
    target: str | None
    ratio: float | None

    def to_dict(self) -> dict:
        return {"category": self.category, "target": self.target, "ratio": self.ratio}

"""Simulator entity names -> live components: which real thing on this machine a policy's target means.

The trained policy names its targets in the simulator's vocabulary (``api-gateway``, ``inference-server``,
``feature-store``, ``gpu-0``, ...; :class:`ifshm_ray.sim.topology.Topology`'s ``targets``). A binding file
(``data/binding.yaml`` is the committed one) lists the live components and binds simulator entities to them::

    components:
      nginx: {kind: nginx, summary: "nginx in front of the Serve app"}
      model: {kind: serve_deployment, app: target, deployment: Model}
    entities:
      api-gateway: nginx
      inference-server: model

A simulator entity that is not bound has no live counterpart: the executor escalates (pages) instead of guessing.
:func:`load_binding` checks every entity name against the simulator's and every component reference against the
``components`` section, and says what to change.
"""
from __future__ import annotations

from pathlib import Path
from pydantic import model_validator

from ifshm_ray.config import ConfigError, ConfigModel, TopologyConfig, read_yaml
from ifshm_ray.live.config import ComponentKind

DEFAULT_BINDING = Path(__file__).resolve().parent / "data" / "binding.yaml"


class LiveComponent(ConfigModel):
    """One live component of the target stack."""

    kind: ComponentKind
    """What it is; the executor's handlers act per kind, and its deny-list refuses some kinds outright."""
    summary: str = ""
    """One line for people: what this component is in the live stack."""
    app: str | None = None
    """Serve application name (``serve_deployment`` only)."""
    deployment: str | None = None
    """Serve deployment name inside ``app`` (``serve_deployment`` only)."""
    prune_folder: str | None = None
    """The one folder ``clear_storage`` may empty, relative to the stack's run directory (``host`` only)."""

    @model_validator(mode="after")
    def _fields_for_kind(self) -> "LiveComponent":
        if self.kind == "serve_deployment" and not (self.app and self.deployment):
            raise ValueError("a serve_deployment needs both 'app' and 'deployment' (the Serve names)")
        if self.kind != "serve_deployment" and (self.app or self.deployment):
            raise ValueError(f"'app'/'deployment' are for kind serve_deployment only, not {self.kind!r}")
        if self.prune_folder is not None:
            if self.kind != "host":
                raise ValueError(f"'prune_folder' is for kind host only, not {self.kind!r}")
            p = Path(self.prune_folder)
            if p.is_absolute() or ".." in p.parts or not p.parts:
                raise ValueError(f"prune_folder {self.prune_folder!r} must be a relative path inside the run "
                                 "directory, without '..'")
        return self


class Binding(ConfigModel):
    """The whole binding file: live components and the simulator entities bound to them."""

    components: dict[str, LiveComponent]
    """Live component name -> what it is."""
    entities: dict[str, str]
    """Simulator entity (service or node name) -> live component name."""

    @model_validator(mode="after")
    def _references(self) -> "Binding":
        missing = {e: c for e, c in self.entities.items() if c not in self.components}
        if missing:
            raise ValueError(f"entities bound to components that are not defined: {missing}; defined components: "
                             f"{sorted(self.components)}")
        return self

    def component_for(self, entity: str) -> tuple[str, LiveComponent] | None:
        """``(component name, component)`` bound to a simulator entity, or None when it has no live binding."""
        name = self.entities.get(entity)
        return None if name is None else (name, self.components[name])

    def check_entities(self, sim_targets: list[str], source: str = "<binding>") -> None:
        """Raise :class:`ConfigError` when an entity is not one of the simulator's targets."""
        unknown = sorted(set(self.entities) - set(sim_targets))
        if unknown:
            raise ConfigError(f"{source}: entities {unknown} are not simulator entities; valid names: "
                              f"{list(sim_targets)} (see ifshm_ray/sim/topology.py)")


def simulator_targets(topology: TopologyConfig | None = None) -> list[str]:
    """The simulator's entity names (services, then nodes) for a topology (default: the default topology)."""
    from ifshm_ray.sim.topology import Topology  # numpy only; imported here so this module stays light

    return list(Topology(topology or TopologyConfig()).targets)


def load_binding(path: str | Path | None = None, topology: TopologyConfig | None = None) -> Binding:
    """The binding file at ``path`` (None: the committed ``data/binding.yaml``), checked against the simulator's
    entity names for ``topology``; every problem is a :class:`ConfigError` naming the file."""
    p = Path(path) if path is not None else DEFAULT_BINDING
    binding = Binding.from_dict(read_yaml(p, what="binding file"), source=str(p))
    binding.check_entities(simulator_targets(topology), source=str(p))
    return binding

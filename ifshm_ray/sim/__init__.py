"""The cloud AI platform fault-injection simulator (pure Python + numpy; imports neither torch nor ray).

Main entry points:

* :class:`~ifshm_ray.sim.core.BatchedSim` - B simulated clusters stepped together (B = 1 for a single env);
* :func:`~ifshm_ray.sim.catalog.load_catalog` - the fault catalog (faults, log templates, alert rules) as data;
* :class:`~ifshm_ray.sim.render.Renderer` - raw telemetry (logs, metric windows, alarms) of one cluster;
* :class:`~ifshm_ray.sim.render.TemplateMiner` - rendered log lines back to template counts.

Labelled telemetry for the encoder: run :class:`ifshm_ray.env.FaultInjectionEnv` (``info["telemetry"]`` every
step, ``env.unwrapped.incident()`` the ground truth) or :func:`ifshm_ray.encoding.simdata.labelled_windows`.
"""
from ifshm_ray.sim.actions import CATEGORIES, RATIO_LEVELS, Action
from ifshm_ray.sim.catalog import Catalog, CatalogError, load_catalog
from ifshm_ray.sim.core import BatchedSim, SimError
from ifshm_ray.sim.topology import Topology

__all__ = ["CATEGORIES", "RATIO_LEVELS", "Action", "BatchedSim", "Catalog", "CatalogError", "SimError", "Topology",
           "load_catalog"]

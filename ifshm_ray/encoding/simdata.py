"""Labelled telemetry windows from the simulator (fault type per window), for fine-tuning and benchmarks.

For every seed and every requested fault type, one episode of :class:`ifshm_ray.env.FaultInjectionEnv` is run
with the no-op action (``observe``) so the fault stays active; the windows (``info["telemetry"]``) from the step at
which the fault becomes visible on are labelled with the fault's name (``env.unwrapped.incident()``, the ground
truth). A window that ends before the injection is labelled ``healthy`` (at most one per episode, and at most
``healthy_per_seed`` per seed; default ``windows_per_episode``, so ``healthy`` is as frequent as a fault). The episode seed is derived from (seed, fault) so that seed ranges split cleanly
into train / validation / test episodes.

"known" is the named split's (``ifshm_ray/sim/data/splits.yaml``): the ``split`` argument, else the env config's
``split``, else ``SimConfig``'s default.

Only the env's documented interface is used (``info["telemetry"]``, ``incident()``, ``reset(options={"faults"})``).
"""
from __future__ import annotations

import zlib
from typing import Iterator, Sequence

HEALTHY = "healthy"


def known_faults(split: str) -> list[str]:
    """The known fault types of the named ``split`` (catalog order)."""
    from ifshm_ray.sim.catalog import load_catalog

    return load_catalog().known_in(split)


def with_split(env_config: dict | None, split: str | None) -> dict:
    """``env_config`` with ``split`` set (None: as it is); a different split already there is refused."""
    env_config = dict(env_config or {})
    if split is not None:
        if env_config.get("split", split) != split:
            raise ValueError(f"split {split!r} but the env config says split {env_config['split']!r}")
        env_config["split"] = split
    return env_config


def episode_seed(seed: int, fault: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(fault.encode())) % (2**31 - 1)


def labelled_windows(seeds: Sequence[int], faults: Sequence[str] | str = "known", windows_per_episode: int = 4,
                     healthy_per_seed: int | None = None, max_steps: int = 40, env_config: dict | None = None,
                     settle_s: float | None = None, split: str | None = None) -> Iterator[dict]:
    """Yield ``{"seed", "fault", "label", "time_s", "telemetry"}`` dicts (see the module docstring).

    ``faults``: 'known' / 'unknown' / 'all' of ``split`` (else the env config's split), or fault names.

    ``settle_s``: a fault window must end at least this long after the fault became visible (default: one window
    length), so that its telemetry holds the symptoms; earlier windows look healthy and would be label noise."""
    from ifshm_ray.env.fault_env import FaultInjectionEnv
    from ifshm_ray.sim.catalog import load_catalog

    env = FaultInjectionEnv(with_split(env_config, split))
    catalog = load_catalog(env.sim_cfg.catalog)
    names = catalog.select(faults, split=env.sim_cfg.split) if isinstance(faults, str) else list(faults)
    noop = (0, 0, 0)
    healthy_per_seed = windows_per_episode if healthy_per_seed is None else healthy_per_seed
    for seed in seeds:
        healthy_left = healthy_per_seed
        for fault in names:
            env.reset(seed=episode_seed(seed, fault), options={"faults": fault})
            truth = env.incident()["faults"][0]
            taken = 0
            settle = settle_s
            for _ in range(max_steps):
                _, _, term, trunc, info = env.step(noop)
                tel = info["telemetry"]
                t = float(info["time_s"])
                if t <= truth["injected_at_s"] and healthy_left > 0:
                    healthy_left -= 1
                    yield {"seed": int(seed), "fault": fault, "label": HEALTHY, "time_s": t, "telemetry": tel}
                elif t >= truth["visible_at_s"] + (settle if settle is not None else tel.get("window_s", 30.0)):
                    yield {"seed": int(seed), "fault": fault, "label": fault, "time_s": t, "telemetry": tel}
                    taken += 1
                if taken >= windows_per_episode or term or trunc:
                    break

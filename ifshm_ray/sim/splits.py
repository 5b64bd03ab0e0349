"""The random named splits of ``data/splits.yaml``: how they were drawn, so that a test can redraw them.

The three random splits were drawn ONCE, with the seed recorded in ``splits.yaml`` (``random_draw.seed``), by::

    python -m ifshm_ray.sim.splits draw --seed 20261130

and frozen there; they are never redrawn (to reach a number or otherwise). The draw: the population is the sorted
list of the catalog's fault names at the time of the draw (recorded in ``random_draw.population``, so that fault types
added to the catalog later neither change the draw nor silently join a held-out set: they are known in every random
split); one ``numpy.random.default_rng(seed)`` then draws each split's held-out types in turn, ``size`` names without
replacement per split (the splits are independent: a type can be held out in more than one).

``python -m ifshm_ray.sim.splits list`` prints every named split with its held-out and known counts.
"""
from __future__ import annotations

import argparse
from typing import Sequence

import numpy as np

RANDOM_SPLIT_PREFIX = "random"


def draw_random_splits(population: Sequence[str], seed: int, count: int = 3, size: int = 6) -> dict[str, list[str]]:
    """``{"random1": [...], ..., "random<count>": [...]}``: ``size`` held-out fault names per split, drawn from the
    sorted ``population`` by one ``default_rng(seed)`` (each list in population order)."""
    pop = sorted(set(population))
    if len(pop) != len(population):
        raise ValueError("the population lists a fault name twice")
    if not 0 < size < len(pop):
        raise ValueError(f"size must be in 1..{len(pop) - 1} (every split keeps a known type), got {size}")
    rng = np.random.default_rng(int(seed))
    out = {}
    for i in range(1, count + 1):
        idx = sorted(rng.choice(len(pop), size=size, replace=False).tolist())
        out[f"{RANDOM_SPLIT_PREFIX}{i}"] = [pop[j] for j in idx]
    return out


def main(argv: list[str] | None = None) -> None:
    from ifshm_ray.sim.catalog import load_catalog

    p = argparse.ArgumentParser(description="Draw (once) or list the named known/unknown splits of the catalog.")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("draw", help="draw the random splits from the current catalog's fault names (print YAML)")
    d.add_argument("--seed", type=int, required=True)
    d.add_argument("--count", type=int, default=3)
    d.add_argument("--size", type=int, default=6)
    sub.add_parser("list", help="every named split with its held-out and known fault types")
    a = p.parse_args(argv)
    cat = load_catalog()
    if a.cmd == "draw":
        import yaml

        population = sorted(cat.names)
        drawn = draw_random_splits(population, a.seed, a.count, a.size)
        print(yaml.safe_dump({"random_draw": {"seed": a.seed, "population": population}, "splits": drawn},
                             sort_keys=False, width=118))
    else:
        for name, sp in cat.splits.items():
            print(f"{name}: {len(cat.unknown_in(name))} held out, {len(cat.known_in(name))} known -- "
                  f"{sp.get('description', '')}\n  unknown: {', '.join(cat.unknown_in(name))}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""What a page costs in the step reward, near the episode's time limit and against PPO's discount.

    python benchmarks/page_cost.py [--human drawn] [--split handpicked] [--left 300,900,1800] [--keys 3]
                                   [--gamma 0.99] [--draws 400000]

(a) **Near the time limit.** For every fault type of the split (known and held-out) and ``--keys`` episode keys, two
single simulators observe until ``left`` seconds before ``SimConfig.time_limit_s``; then one pages (``escalate``)
and the other keeps observing, both until the episode ends. Reported per fault set and ``left``: the mean return of
each from that moment, the share of incidents where paging returned less, the mean page duration and the share of
pages that ran past the limit. (b) **Against the discount.** A page is one decision whose whole unhealthy time
lands in one reward, while being stuck is a stream of ``observe`` steps discounted per decision: with ``--gamma``
being stuck forever costs ``(observe step / 60) * unhealthy_weight / (1 - gamma)``. Reported: that bound, and for
``--draws`` pages of the drawn human (:class:`ifshm_ray.sim.human.HumanModel`) and the fixed one, the page's
one-step cost and the share of pages costing more than being stuck forever. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from ifshm_ray.config import SimConfig
from ifshm_ray.sim.actions import CATEGORY_INDEX
from ifshm_ray.sim.catalog import load_catalog
from ifshm_ray.sim.core import BatchedSim
from ifshm_ray.sim.human import HumanModel

ESC, OBS = CATEGORY_INDEX["escalate"], CATEGORY_INDEX["observe"]


def _from(cfg: SimConfig, fault: str, key: int, left: float, first: int) -> tuple[float, float] | None:
    """(return from ``left`` s before the limit on, duration of the first action), first action ``first`` then
    observe; None when the episode ends before or is healthy then."""
    sim = BatchedSim(cfg, batch_size=1)
    sim.reset([0], [key], faults=[fault])
    while sim.t[0] < cfg.time_limit_s - left:
        res = sim.step(np.array([[OBS, 0, 0]]))
        if res.terminated[0] or res.truncated[0]:
            return None
    if sim.healthy[0]:
        return None
    total, dur, act = 0.0, None, first
    while True:
        t0 = float(sim.t[0])
        res = sim.step(np.array([[act, 0, 0]]))
        dur = float(sim.t[0]) - t0 - cfg.step_s if dur is None else dur
        total += float(res.reward[0])
        act = OBS
        if res.terminated[0] or res.truncated[0]:
            return total, dur


def near_limit(cfg: SimConfig, lefts: list[float], keys: int) -> dict:
    cat = load_catalog()
    out: dict = {}
    for label, faults in (("known", cat.known_in(cfg.split)), ("unknown", cat.unknown_in(cfg.split))):
        for left in lefts:
            rows = []
            for i, f in enumerate(faults):
                for k in range(keys):
                    key = 1000 + 17 * k + i
                    page, idle = _from(cfg, f, key, left, ESC), _from(cfg, f, key, left, OBS)
                    if page is not None and idle is not None:
                        rows.append((page[0], idle[0], page[1]))
            a = np.array(rows)
            out[f"{label}/left_{left:g}s"] = {
                "incidents": len(a), "page_return": float(a[:, 0].mean()), "observe_return": float(a[:, 1].mean()),
                "page_returns_less": float(np.mean(a[:, 0] < a[:, 1])), "page_mean_s": float(a[:, 2].mean()),
                "page_past_limit": float(np.mean(a[:, 2] > left))}
    return out


def against_discount(cfg: SimConfig, gamma: float, n: int) -> dict:
    sim = BatchedSim(cfg, batch_size=1)
    cost = float(sim._act_cost_scaled[ESC])
    w = cfg.reward.unhealthy_weight
    stuck = (cfg.step_s + float(sim.cc.act_duration[OBS])) / 60.0 * w / (1.0 - gamma)
    out = {"gamma": gamma, "escalate_action_cost": cost, "stuck_forever_cost": stuck}
    model = HumanModel.load(cfg.human.params)
    keys = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(7919)
    for label, unf in (("drawn_known", False), ("drawn_unknown", True)):
        d = model.draw(keys, np.ones(n, np.uint64), np.full(n, unf))["total_s"]
        c = d / 60.0 * w + cost
        out[label] = {"page_mean_s": float(d.mean()), "page_median_s": float(np.median(d)),
                      "page_cost_mean": float(c.mean()), "share_costing_more_than_stuck_forever": float(np.mean(c > stuck))}
    fx = cfg.human_response_s + cfg.human_fix_s
    out["fixed"] = {"page_s": fx, "page_cost": fx / 60.0 * w + cost}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--human", choices=("fixed", "drawn"), default="drawn")
    ap.add_argument("--split", default="handpicked")
    ap.add_argument("--time-limit-s", type=float, default=SimConfig().time_limit_s)
    ap.add_argument("--left", default="300,900,1800", help="seconds before the time limit, comma-separated")
    ap.add_argument("--keys", type=int, default=3, help="episode keys per fault type")
    ap.add_argument("--gamma", type=float, default=0.99, help="PPO's per-decision discount (configs/demo*.yaml)")
    ap.add_argument("--draws", type=int, default=400_000)
    args = ap.parse_args()
    if not 0.0 <= args.gamma < 1.0:
        ap.error(f"--gamma must be in [0, 1), got {args.gamma}")
    lefts = [float(x) for x in args.left.split(",")]
    if any(not 0.0 < x < args.time_limit_s for x in lefts):
        ap.error(f"--left values must lie in (0, time limit {args.time_limit_s}), got {lefts}")
    cfg = SimConfig(split=args.split, human={"model": args.human}, time_limit_s=args.time_limit_s)
    print(json.dumps({"human": args.human, "split": args.split, "time_limit_s": args.time_limit_s,
                      "near_limit": near_limit(cfg, lefts, args.keys),
                      "against_discount": against_discount(cfg, args.gamma, args.draws)}))


if __name__ == "__main__":
    main()

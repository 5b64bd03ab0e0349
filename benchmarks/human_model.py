#!/usr/bin/env python
"""How policies page and heal under one model of the paged human (``SimConfig.human.model``: fixed or drawn).

    python benchmarks/human_model.py --human drawn --split handpicked --faults known,unknown --episodes 3 --seed 0 \
        --arm drawn_s0=checkpoint:RUN0 --arm drawn_s1=checkpoint:RUN1 \
        --arm fixed_s0=checkpoint:SWEEP_RUN0 --arm fixed_s1=checkpoint:SWEEP_RUN1 \
        --arm runbook --arm escalate-first --arm oracle \
        --group drawn=drawn_s0+drawn_s1 --group fixed=fixed_s0+fixed_s1 \
        --pair drawn:fixed --pair drawn:runbook --out results/human_model/drawn

Every arm (a reference of :data:`ifshm_ray.baselines.BASELINES` or ``checkpoint:PATH``, labelled ``LABEL=SPEC``)
meets the incidents of ``jobs/evaluate.py`` with the same ``--seed``, ``--episodes`` and ``--split`` (episode seeds
from :func:`ifshm_ray.eval.harness.make_jobs`; the harness's own :func:`~ifshm_ray.eval.harness.run_episode`, in this
process), with the simulator's human model set by ``--human``. Beside the harness's metrics
(:func:`~ifshm_ray.eval.harness.summarise`: MTTR, success, escalation, time-out, ...) each fault set gets
``escalate_first_rate``: the share of incidents whose first action other than observe was ``escalate`` (read from the
actions the policy returned; the episode records of the harness only count actions), and ``first_action``: the share
of each first category (``none``: the policy only observed).

A ``--group NAME=A+B`` pools arms (training seeds of one configuration): its metrics are
:func:`~ifshm_ray.eval.harness.summarise` over the members' episodes pooled. A ``--pair A:B`` (arms or groups) gives,
per fault set, the paired difference A - B of MTTR, success, escalation and escalate-first over the same incidents:
the mean over units (a group's members, matched by position with the other side's; a single arm is one unit, paired
with every member of the other side) of each unit's mean paired difference, with the two-level bootstrap interval
of :func:`ifshm_ray.eval.stats.nested_mean_ci` (units, then incidents). Prints one JSON object (also
``OUT/summary.json``; every arm's episode records in ``OUT/<set>/<arm>.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(v, "1")

import numpy as np  # noqa: E402

from ifshm_ray.baselines import BASELINES  # noqa: E402
from ifshm_ray.baselines.policies import Policy  # noqa: E402
from ifshm_ray.config import ConfigError, SimConfig, add_override_arg, load_config, to_dict  # noqa: E402
from ifshm_ray.env import FaultInjectionEnv  # noqa: E402
from ifshm_ray.eval.harness import make_jobs, make_policy, run_episode, summarise  # noqa: E402
from ifshm_ray.eval.stats import episode_key, nested_mean_ci  # noqa: E402
from ifshm_ray.sim.actions import CATEGORIES, CATEGORY_INDEX  # noqa: E402
from ifshm_ray.sim.catalog import CatalogError, load_catalog  # noqa: E402

SETS = ("known", "unknown", "compound")
"""Fault sets with incidents (fault-free episodes have no escalation to count)."""
PAIR_KEYS = ("mttr_s", "success", "escalated", "escalate_first")
"""Episode fields of the paired differences."""
KEEP = ("mttr_mean_s", "mttr_p50_s", "mttr_p95_s", "mttr_ci95", "time_to_mitigate_mean_s", "success_rate",
        "recovered_rate", "escalation_rate", "timeout_rate", "harmful_action_rate", "mean_return", "episodes")
"""Metrics of :func:`summarise` kept in the summary."""


class _Recorder(Policy):
    """Passes a policy's actions through and keeps the first category other than observe of the episode."""

    def __init__(self, inner: Policy):
        self.inner, self.first = inner, None
        self.name = getattr(inner, "name", "policy")

    def reset(self, env, episode_seed: int | None = None) -> None:
        self.first = None
        self.inner.reset(env, episode_seed=episode_seed)

    def act(self, obs, info, env):
        a = self.inner.act(obs, info, env)
        if self.first is None and int(a[0]) != CATEGORY_INDEX["observe"]:
            self.first = CATEGORIES[int(a[0])]
        return a


def run_arm(spec: str, sim_cfg: SimConfig, jobs: list, seed: int) -> list[dict]:
    """The episode records of one arm on ``jobs`` (as :func:`ifshm_ray.eval.harness.run_chunk`, plus
    ``first_action`` and ``escalate_first``)."""
    cfg = to_dict(sim_cfg)
    cfg["faults"] = "all"
    needs_text = spec not in ("oracle", "random")
    if spec.startswith("checkpoint:"):  # only an LLM-state bundle reads rendered telemetry (as the harness)
        from ifshm_ray.policy.bundle import read_manifest

        needs_text = read_manifest(spec.split(":", 1)[1]).get("encoder") is not None
    if spec == "nearest-known":  # its calibration incidents must not be evaluation incidents (as the harness)
        from ifshm_ray.baselines.config import NearestKnownConfig
        from ifshm_ray.baselines.nearest import calibration_seeds

        cal = calibration_seeds(NearestKnownConfig(), load_catalog(sim_cfg.catalog).known_in(sim_cfg.split))
        if {s for _, s in jobs} & cal:
            raise SystemExit("error: evaluation episode seeds clash with nearest-known's calibration seeds; "
                             "use another --seed")
    env = FaultInjectionEnv({**cfg, "render_telemetry": needs_text, "mine_logs": needs_text})
    pol = _Recorder(make_policy(spec, seed, env))
    out = []
    for f, s in jobs:
        r = run_episode(env, pol, f, s)
        r["first_action"] = pol.first or "none"
        r["escalate_first"] = pol.first == "escalate"
        out.append(r)
    return out


def set_summary(recs: list[dict], label: str, fault_set: str, sim_cfg: SimConfig) -> dict:
    m = summarise(recs, label, fault_set, sim_cfg.time_limit_s, catalog=sim_cfg.catalog, split=sim_cfg.split)
    out = {k: m.get(k) for k in KEEP}
    faulty = [r for r in recs if not r.get("fault_free")]
    out["escalate_first_rate"] = float(np.mean([r["escalate_first"] for r in faulty])) if faulty else None
    firsts = [r["first_action"] for r in faulty]
    out["first_action"] = {c: firsts.count(c) / len(firsts) for c in sorted(set(firsts))} if firsts else {}
    return out


def paired(a_units: list[list[dict]], b_units: list[list[dict]], key: str) -> dict | None:
    """A - B over the same incidents (see the module docstring): {"mean", "ci95", "units", "pairs"}."""
    if len(a_units) > 1 and len(b_units) > 1 and len(a_units) != len(b_units):
        raise SystemExit(f"error: --pair of groups of {len(a_units)} and {len(b_units)} members: match them")
    n = max(len(a_units), len(b_units))
    units = []
    for i in range(n):
        a, b = a_units[i % len(a_units)], b_units[i % len(b_units)]
        bk = {episode_key(r): r.get(key) for r in b}
        d = [float(r[key]) - float(bk[episode_key(r)]) for r in a
             if episode_key(r) in bk and _num(r.get(key)) and _num(bk[episode_key(r)])]
        if not d:
            return None
        units.append(d)
    ci = nested_mean_ci([units])
    return {"mean": float(np.mean([np.mean(u) for u in units])), "ci95": ci, "units": n,
            "pairs": int(sum(len(u) for u in units))}


def _num(x) -> bool:
    return x is not None and not (isinstance(x, float) and np.isnan(x))


def parse_label(item: str) -> tuple[str, str]:
    label, sep, spec = item.partition("=")
    if not sep:
        label, spec = item, item
    if not (spec in BASELINES or spec.startswith("checkpoint:")):
        raise SystemExit(f"error: --arm {item!r}: a reference ({', '.join(BASELINES)}) or checkpoint:PATH, "
                         "optionally LABEL=...")
    if spec.startswith("checkpoint:") and not Path(spec.split(":", 1)[1]).exists():
        raise SystemExit(f"error: --arm {item!r}: no such path")
    return label, spec


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--human", choices=("fixed", "drawn"), default="drawn", help="SimConfig.human.model")
    p.add_argument("--arm", action="append", default=None,
                   help="LABEL=SPEC or a reference name (repeatable; default: runbook and escalate-first, so that "
                        "`make bench` runs it without arguments)")
    p.add_argument("--group", action="append", default=[], help="NAME=ARM+ARM...: pooled arms (repeatable)")
    p.add_argument("--pair", action="append", default=[], help="A:B (arms or groups): paired A - B (repeatable)")
    p.add_argument("--faults", default="known,unknown", help=f"comma-separated fault sets of {SETS}")
    p.add_argument("--split", default="handpicked", help="named known/unknown split")
    p.add_argument("--episodes", type=int, default=3, help="episodes per fault type (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the incidents (default 0)")
    p.add_argument("--config", default=None, help="simulator config YAML (SimConfig); default config when absent")
    p.add_argument("--out", default="results/human_model/bench", help="output folder")
    add_override_arg(p)
    a = p.parse_args(argv)
    a.arm = a.arm or ["runbook", "escalate-first"]
    if a.episodes < 1:
        raise SystemExit("error: --episodes must be >= 1")
    arms = dict(parse_label(x) for x in a.arm)
    if len(arms) != len(a.arm):
        raise SystemExit("error: two --arm share a label")
    groups = {}
    for g in a.group:
        name, _, members = g.partition("=")
        groups[name] = [m for m in members.split("+") if m]
        if not groups[name] or any(m not in arms for m in groups[name]) or name in arms:
            raise SystemExit(f"error: --group {g!r}: NAME=ARM+ARM... of --arm labels, NAME not an arm label")
    pairs = [tuple(x.split(":", 1)) for x in a.pair]
    for x, (l, r) in zip(a.pair, pairs or []):
        if l not in arms and l not in groups or r not in arms and r not in groups:
            raise SystemExit(f"error: --pair {x!r}: A:B of arm or group labels")
    sets = [s.strip() for s in a.faults.split(",") if s.strip()]
    if not sets or any(s not in SETS for s in sets):
        raise SystemExit(f"error: --faults {a.faults!r}: comma-separated of {SETS}")
    try:
        sim_cfg = load_config(SimConfig, a.config, list(a.overrides) + [f"human.model={a.human}"])
        sim_cfg = sim_cfg.model_copy(update={"split": a.split})
        catalog = load_catalog(sim_cfg.catalog)
        catalog.check_split(sim_cfg.split)
    except (ConfigError, CatalogError) as e:
        raise SystemExit(f"error: {e}")
    from ifshm_ray.policy.bundle import PolicyBundleError, check_bundle_split

    for label, spec in arms.items():
        if spec.startswith("checkpoint:"):
            try:
                check_bundle_split(spec.split(":", 1)[1], sim_cfg.split, "benchmarks/human_model.py")
            except PolicyBundleError as e:
                raise SystemExit(f"error: arm {label!r}: {e}")
    out = Path(a.out)
    res: dict = {"command": " ".join(["python", "benchmarks/human_model.py"] + (argv or sys.argv[1:])),
                 "human_model": a.human, "split": a.split, "seed": a.seed, "episodes_per_type": a.episodes,
                 "arms": {}, "groups": {}, "pairs": {}, "wall_s": {}}
    recs: dict = {}
    for fs in sets:
        jobs = make_jobs(fs, catalog, sim_cfg.split, a.episodes, a.seed)
        (out / fs).mkdir(parents=True, exist_ok=True)
        for label, spec in arms.items():
            t0 = time.time()
            r = run_arm(spec, sim_cfg, jobs, a.seed)
            recs.setdefault(fs, {})[label] = r
            (out / fs / f"{label}.json").write_text(json.dumps(r))
            res["arms"].setdefault(label, {})[fs] = set_summary(r, label, fs, sim_cfg)
            res["wall_s"][f"{fs}/{label}"] = round(time.time() - t0, 1)
            m = res["arms"][label][fs]
            print(f"[{a.human}/{fs}/{label}] MTTR {m['mttr_mean_s']:.0f}s success {m['success_rate']:.0%} "
                  f"escalated {m['escalation_rate']:.0%} escalate-first {m['escalate_first_rate']:.0%} "
                  f"({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
        for name, members in groups.items():
            res["groups"].setdefault(name, {})[fs] = set_summary(
                [x for m in members for x in recs[fs][m]], name, fs, sim_cfg)
        for l, r in pairs:
            units = {side: [recs[fs][m] for m in groups[side]] if side in groups else [recs[fs][side]]
                     for side in (l, r)}
            res["pairs"].setdefault(f"{l} - {r}", {})[fs] = {k: paired(units[l], units[r], k) for k in PAIR_KEYS}
    (out / "summary.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()

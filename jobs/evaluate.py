#!/usr/bin/env python
"""Evaluate recovery policies on the fault-injection simulator.

Run (local embedded Ray; or under `ray job submit`, where it joins the cluster):

    python jobs/evaluate.py --faults known,unknown,compound,fault_free --episodes 20 --seed 0 \
        --split handpicked --out results/eval_handpicked

The default --policy is every reference: oracle, runbook (blind: the rules written for the split's known fault
types and the generic ones), runbook-full, runbook-instant (blind), nearest-known, escalate-first, random.
--faults is one fault set (known, unknown, all of the split; compound: two faults at once; fault_free: no fault,
false alarms only) or fault names; several sets are given comma-separated.
With one policy and one set it writes OUT/metrics.json; with several policies, OUT/<policy>/metrics.json for each
plus a combined report.md and PNG plots (MTTR per fault per policy, detection vs repair, the paired MTTR difference
of each policy to each baseline with its bootstrap 95% interval); with several sets, OUT/<set>/... for each.
A trained policy is given as
`checkpoint:PATH` (PATH = a policy bundle or the --out directory of jobs/train.py), labelled `ppo` unless given as
`NAME=checkpoint:PATH`; labels must be unique (two checkpoints need a NAME each). Every policy meets the same
incidents (seeds depend on seed, fault and episode index).
`gated:PATH` (label `gated` unless named) evaluates the checkpoint behind the meta-controller's gate
(ifshm_ray/eval/gated.py: PATH holds meta_state.json and diagnoser.json); its episodes say who acted and its
metrics.json has `deferral_rate` and `actor_shares`.
`--split NAME` (default: the simulator config's `split`, `handpicked` unless set) picks the named known/unknown split
(ifshm_ray/sim/data/splits.yaml) that `--faults known|unknown` refer to; a checkpoint trained on another split is
refused (bundles that record no split count as `handpicked`).
Expect about 0.05 s per episode for oracle/random and 0.2 s for the runbook (it reads rendered telemetry).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ifshm_ray.baselines import BASELINES
from ifshm_ray.config import ConfigError, SimConfig, add_override_arg, load_config
from ifshm_ray.eval.harness import FAULT_SETS, evaluate_set, make_jobs
from ifshm_ray.eval.report import metrics_line, summary_table, write_report
from ifshm_ray.policy.bundle import PolicyBundleError, check_bundle_split
from ifshm_ray.sim.catalog import CatalogError, load_catalog


@dataclass
class Args:
    policy: str
    """Comma-separated: reference baselines (BASELINES), checkpoint:PATH or NAME=checkpoint:PATH."""
    faults: str
    """Comma-separated fault sets (known, unknown, all, compound, fault_free) or fault names from the catalog."""
    split: str | None
    """Named known/unknown split; None: the simulator config's ``split``."""
    episodes: int
    """Episodes per fault type."""
    seed: int
    """Seed of the incidents (and of the random policy)."""
    config: str | None
    """Simulator/topology config YAML (ifshm_ray.config.SimConfig); default config when absent."""
    out: str
    """Output directory."""
    no_ray: bool
    """Run in this process instead of Ray tasks."""
    task_cpus: float
    """CPUs reserved per Ray task."""
    overrides: list[str]
    """``--set KEY=VALUE`` overrides of the simulator config, e.g. ``step_s=60``."""


def parse_args(argv=None) -> Args:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default=",".join(BASELINES),
                   help=f"comma-separated policies: {', '.join(BASELINES)}, checkpoint:PATH "
                        "(or NAME=checkpoint:PATH); default: every reference baseline")
    p.add_argument("--faults", default="known",
                   help="comma-separated fault sets (known, unknown, all, compound, fault_free) or fault names")
    p.add_argument("--split", default=None,
                   help="named known/unknown split (ifshm_ray/sim/data/splits.yaml) that --faults known|unknown "
                        "refer to; default: the simulator config's split (handpicked unless set)")
    p.add_argument("--episodes", type=int, default=20, help="episodes per fault type (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the incidents (default 0)")
    p.add_argument("--config", default=None, help="simulator config YAML (SimConfig); default config when absent")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-ray", action="store_true", help="run in this process instead of Ray tasks")
    p.add_argument("--task-cpus", type=float, default=1.0, help="CPUs per Ray task (default 1)")
    add_override_arg(p)  # simulator config values, e.g. --set step_s=60 --set reward.harm_penalty=5
    a = p.parse_args(argv)
    return Args(a.policy, a.faults, a.split, a.episodes, a.seed, a.config, a.out, a.no_ray, a.task_cpus, a.overrides)


def parse_policies(spec: str) -> dict[str, str]:
    """``--policy`` as ``{label: policy}``; a label given twice (two unlabelled checkpoints, or a repeated baseline)
    is refused, since one policy's results would replace the other's."""
    out: dict[str, str] = {}
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        label, _, pol = item.rpartition("=") if "=" in item.split(":", 1)[0] else ("", "", item)
        if not (pol in BASELINES or pol.startswith(("checkpoint:", "gated:"))):
            raise SystemExit(f"error: unknown policy {pol!r}; valid: {list(BASELINES)}, checkpoint:PATH, "
                             f"gated:PATH or NAME=checkpoint:PATH")
        if pol.startswith(("checkpoint:", "gated:")):
            path = pol.split(":", 1)[1]
            if not Path(path).exists():
                raise SystemExit(f"error: checkpoint path {path!r} does not exist")
        label = label or ("ppo" if pol.startswith("checkpoint:") else "gated" if pol.startswith("gated:") else pol)
        if label in out:
            raise SystemExit(f"error: two policies are labelled {label!r} ({out[label]} and {pol}); give each "
                             "checkpoint its own label, e.g. a=checkpoint:PATH_A,b=checkpoint:PATH_B")
        out[label] = pol
    if not out:
        raise SystemExit("error: --policy is empty")
    return out


def main(argv=None) -> dict[str, dict]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.episodes < 1:
        raise SystemExit("error: --episodes must be >= 1")
    policies = parse_policies(args.policy)
    try:
        sim_cfg = load_config(SimConfig, args.config, args.overrides)
        if args.split is not None:
            sim_cfg = sim_cfg.model_copy(update={"split": args.split})
        catalog = load_catalog(sim_cfg.catalog)
        catalog.check_split(sim_cfg.split)
        items = [x.strip() for x in args.faults.split(",") if x.strip()]
        if items and all(x in FAULT_SETS for x in items):
            sets = {x: x for x in dict.fromkeys(items)}
        elif any(x in FAULT_SETS for x in items):
            raise SystemExit(f"error: --faults mixes fault sets and fault names: {args.faults!r}; give either "
                             f"sets ({', '.join(FAULT_SETS)}) or names")
        else:
            sets = {"custom": catalog.select(args.faults)}
        jobs = {name: make_jobs(spec, catalog, sim_cfg.split, args.episodes, args.seed)
                for name, spec in sets.items()}
    except (ConfigError, CatalogError) as e:
        raise SystemExit(f"error: {e}")
    for label, pol in policies.items():  # a policy trained on another split must not be scored on this one
        if pol.startswith(("checkpoint:", "gated:")):
            try:
                check_bundle_split(pol.split(":", 1)[1], sim_cfg.split, f"jobs/evaluate.py (--split {sim_cfg.split})")
            except PolicyBundleError as e:
                raise SystemExit(f"error: policy {label!r}: {e}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # ray setup: join a cluster when RAY_ADDRESS is set (ray job submit), else start an embedded local Ray
    if not args.no_ray:
        import ray

        if not ray.is_initialized():
            ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)

    all_results: dict[str, dict[str, dict]] = {}
    all_records: dict[str, dict[str, list]] = {}
    for fault_set, set_jobs in jobs.items():
        results: dict[str, dict] = {}
        records: dict[str, list] = {}
        for label, pol in policies.items():
            t0 = time.time()

            def progress(done: int, total: int, label=label, t0=t0, fault_set=fault_set) -> None:
                print(f"[{fault_set}/{label}] {done}/{total} episodes ({time.time() - t0:.0f}s)", flush=True)

            try:
                m, recs = evaluate_set(pol, label, fault_set, set_jobs, args.episodes, args.seed, sim_cfg,
                                       use_ray=not args.no_ray, num_cpus_per_task=args.task_cpus, progress=progress)
            except (ValueError, RuntimeError, FileNotFoundError) as e:  # bad bundle, topology mismatch, ...
                raise SystemExit(f"error: policy {label!r}: {e}")
            target = out if len(jobs) == 1 else out / fault_set
            target = target if len(policies) == 1 else target / label
            target.mkdir(parents=True, exist_ok=True)
            (target / "metrics.json").write_text(json.dumps(m, indent=2))
            (target / "episodes.json").write_text(json.dumps(recs))
            results[label], records[label] = m, recs
            print(f"[{fault_set}/{label}] {metrics_line(m)}", flush=True)
        all_results[fault_set], all_records[fault_set] = results, records
    if len(policies) > 1 or len(jobs) > 1:
        path = write_report(out, all_results, " ".join(["python", "jobs/evaluate.py"] + (argv or sys.argv[1:])),
                            episodes=all_records)
        for results in all_results.values():
            print(summary_table(results))
        print(f"report: {path}")
    return all_results if len(jobs) > 1 else next(iter(all_results.values()))


if __name__ == "__main__":
    main()

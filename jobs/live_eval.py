#!/usr/bin/env python
"""Live evaluation (issue 13): bring the live stack up on this machine, inject faults from the committed plan file
(ifshm_ray/live/data/faults.yaml), let each arm (the project's runbook on live telemetry through the safe executor,
or nobody) handle them, measure wall-clock detection and recovery, write OUT/metrics.json, OUT/report.md,
OUT/audit.jsonl and OUT/incidents.parquet, and tear everything down.

    scripts/install_live.sh            # once: the Debian packages into .cache/live (no system change)
    python jobs/live_eval.py --config configs/live.yaml --out results/live \
        --set eval.faults=[path-errors,model-cache-full,negative-control] --set eval.arms=[runbook]

Settings: ifshm_ray/live/config.py (LiveConfig; the `stack` and `eval` sections); `--set key=value` overrides.
Acting needs `executor.execute: true` (configs/live.yaml sets it for this job; the executor's default is dry-run).
Every process of the stack lives at most `stack.max_lifetime_s`; the job stops them all on exit, also on error.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from ifshm_ray.baselines.policies import RunbookPolicy
from ifshm_ray.config import ConfigError, SimConfig, TopologyConfig, add_override_arg, load_config, to_dict
from ifshm_ray.live.binding import load_binding
from ifshm_ray.live.config import LiveConfig
from ifshm_ray.live.incident import (LoadSloProbe, make_collector, make_executor, restore_steady_state, run_incident,
                                     summarise)
from ifshm_ray.live.injectors import load_fault_plans
from ifshm_ray.live.recording import IncidentRecorder
from ifshm_ray.live.stack import LiveStack, StackError
from ifshm_ray.sim.topology import Topology

log = logging.getLogger("live_eval")


def report_md(metrics: dict) -> str:
    lines = ["# Live evaluation", "", f"Stack up in {metrics['stack']['startup_s']:.1f} s; baseline "
             f"{metrics['stack']['baseline']}.", "",
             "| fault | arm | incidents | recovered | MTTR mean (s) | 95% CI | detect mean (s) | actions |",
             "|---|---|---|---|---|---|---|---|"]
    for s in metrics["summary"].values():
        ci = "" if s["mttr_ci95_s"] is None else f"[{s['mttr_ci95_s'][0]:.1f}, {s['mttr_ci95_s'][1]:.1f}]"
        acts = "; ".join(", ".join(f"{c} {t} ({o})" for c, t, o in a) or "none" for a in s["actions"])
        lines.append(f"| {s['fault']} | {s['arm']} | {s['incidents']} | {s['recovered']} | {s['mttr_mean_s']} | "
                     f"{ci} | {s['detect_mean_s']} | {acts} |")
    lines += ["", "A not-recovered incident counts at the cap (`eval.arm_cap_s`). Detection: the first firing "
              "alert's webhook at the receiver, after the injection."]
    skipped = [r for r in metrics["incidents"] if "skipped" in r]
    if skipped:
        lines += ["", "Skipped:"] + [f"- {r['fault']}/{r['arm']}: {r['skipped']}" for r in skipped]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/live.yaml")
    parser.add_argument("--out", default=None, help="output folder (default: eval.out of the config)")
    parser.add_argument("--seed", type=int, default=0)
    add_override_arg(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        cfg = load_config(LiveConfig, args.config, args.overrides)
        binding = load_binding(cfg.binding)
        plans = load_fault_plans(cfg.faults)
        names = cfg.eval.faults or [f.name for f in plans.faults]
        selected = [plans.get(n) for n in names]
    except (ConfigError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out or cfg.eval.out)
    out.mkdir(parents=True, exist_ok=True)
    sim = SimConfig()
    topology = Topology(TopologyConfig())
    recorder = IncidentRecorder(out / "incidents.parquet")
    records: list[dict] = []
    t0 = time.time()
    try:
        with LiveStack(cfg, seed=args.seed, sim=sim) as stack:
            probe = LoadSloProbe(stack, sim, window_s=cfg.slo.green_s)
            executor = make_executor(stack, cfg, binding, probe, str(out / "audit.jsonl"))
            collector = make_collector(stack, binding, topology)
            stack_info = {"startup_s": stack.timings["total"], "timings": stack.timings,
                          "baseline": vars(stack.baseline), "model_cache_tmpfs": stack.mounted}
            for plan in selected:
                for arm in cfg.eval.arms:
                    for rep in range(cfg.eval.repeats):
                        try:
                            rec = run_incident(stack, cfg, binding, plan, arm, topology=topology,
                                               executor=executor, collector=collector, probe=probe,
                                               recorder=recorder, repeat=rep,
                                               policy_factory=RunbookPolicy if arm == "runbook" else None)
                        except Exception as e:  # noqa: BLE001  (one failed incident must not end the run)
                            log.exception("incident %s/%s/%d failed", plan.name, arm, rep)
                            rec = {"fault": plan.name, "arm": arm, "repeat": rep, "recovered": False,
                                   "skipped": f"error: {e!r}"}
                            try:
                                rec["restored"] = restore_steady_state(stack, cfg)
                            except Exception as e2:  # noqa: BLE001
                                rec["restore_error"] = repr(e2)
                        records.append(rec)
                        recorder.write()
                        (out / "incidents.json").write_text(json.dumps(records, indent=1, default=str))
            stack_info["health_at_end"] = stack.health()
        stack_info["stopped"] = True
    except StackError as e:
        print(f"error: the live stack failed: {e}", file=sys.stderr)
        return 1
    metrics = {"config": to_dict(cfg), "seed": args.seed, "wall_s": round(time.time() - t0, 1),
               "stack": stack_info, "incidents": records, "summary": summarise(records)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=str))
    (out / "report.md").write_text(report_md(metrics))
    print(report_md(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())

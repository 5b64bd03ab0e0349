#!/usr/bin/env python
"""Live evaluation (issue 13): bring the live stack up on this machine, inject faults from the committed plan file
(ifshm_ray/live/data/faults.yaml), let each arm handle them through the safe executor (``policy``: a trained
policy bundle behind the healer's /v1/heal, in its own process outside the target Ray; ``runbook``: the project's
runbook on the live telemetry; ``none``: nobody), ``eval.repeats`` times each, measure wall-clock detection and
recovery, write OUT/metrics.json, OUT/report.md (per fault and arm: MTTR with bootstrap CIs, success, escalations,
time-outs, actions; the policy's wrong picks with the telemetry it saw), OUT/timelines/*.png (one per incident),
OUT/audit.jsonl, OUT/incidents.parquet (every decision window) and OUT/replay.json (the policy arm's windows sent
again to /v1/heal: the same decisions?), and tear everything down.

    scripts/install_live.sh            # once: the Debian packages into .cache/live (no system change)
    python jobs/live_eval.py --config configs/live_eval.yaml --out results/live \
        --set healer.checkpoint=results/train/policy_bundle \
        --set eval.faults=[path-errors,model-cache-full,negative-control] --set eval.arms=[policy,runbook]

Settings: ifshm_ray/live/config.py (LiveConfig; the `stack` and `eval` sections); `--set key=value` overrides.
Acting needs `executor.execute: true` (configs/live.yaml sets it for this job; the executor's default is dry-run).
Every process of the stack lives at most `stack.max_lifetime_s`; the job stops them all on exit, also on error.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from pathlib import Path

from ifshm_ray.baselines.policies import RunbookPolicy
from ifshm_ray.config import ConfigError, SimConfig, TopologyConfig, add_override_arg, load_config, to_dict
from ifshm_ray.live.binding import load_binding
from ifshm_ray.live.config import LiveConfig
from ifshm_ray.live.healer import HealerArm, HealerProcess
from ifshm_ray.live.incident import (LoadSloProbe, incident_outcome, make_collector, make_executor, paired_arms,
                                     restore_steady_state, run_incident, summarise, summarise_arms)
from ifshm_ray.live.injectors import load_fault_plans
from ifshm_ray.live.recording import IncidentRecorder
from ifshm_ray.live.plots import plot_incidents
from ifshm_ray.live.recording import read_windows
from ifshm_ray.live.replay import http_heal, replay_windows
from ifshm_ray.live.stack import LiveStack, StackError, free_port, load_duration_s
from ifshm_ray.sim.topology import Topology

log = logging.getLogger("live_eval")


def _ci(ci) -> str:
    return "" if ci is None else f"[{ci[0]:.1f}, {ci[1]:.1f}]"


def _actions_text(actions: list) -> str:
    """One incident's actions, a run of the same (category, target, outcome) written once with its count."""
    runs: list[list] = []
    for a in actions:
        a = tuple(a)
        if runs and runs[-1][0] == a:
            runs[-1][1] += 1
        else:
            runs.append([a, 1])
    return ", ".join(f"{c} {t or ''}".strip() + f" ({o})" + (f" x{n}" if n > 1 else "")
                     for (c, t, o), n in runs) or "none"


def report_md(metrics: dict) -> str:
    ev = metrics["config"]["eval"]
    lines = ["# Live evaluation", "", f"Stack up in {metrics['stack']['startup_s']:.1f} s; baseline "
             f"{metrics['stack']['baseline']}; healer: {metrics.get('healer') or 'none'}.", "",
             f"Arms {ev['arms']}, {ev['repeats']} repeat(s) per fault and arm, cap {ev['arm_cap_s']} s per incident. "
             "MTTR: wall clock from the injection to the load generator's view being green for "
             f"{metrics['config']['slo']['green_s']} s; a not-recovered incident counts at the cap. 95% intervals: "
             "percentile bootstrap over the incidents (ifshm_ray/eval/stats.py). Escalated: the executor paged a "
             "human (not healed, at the cap); timed out: not recovered by the cap, nobody paged.", "",
             "## Per arm (every fault but the negative control)", "",
             "| arm | incidents | success | escalated | timed out | MTTR mean (s) | 95% CI | detect mean (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for s in metrics["per_arm"].values():
        lines.append(f"| {s['arm']} | {s['incidents']} | {s['recovered']}/{s['incidents']} | {s['escalations']} | "
                     f"{s['timeouts']} | {s['mttr_mean_s']} | {_ci(s['mttr_ci95_s'])} | {s['detect_mean_s']} |")
    if metrics.get("paired"):
        lines += ["", "Paired by fault and repeat (the same injected fault; every fault but the negative control): "
                  + "; ".join(f"{k}: {v['mean_diff_s']} s, 95% CI {_ci(v['ci95_s'])} ({v['pairs']} pairs)"
                              for k, v in metrics["paired"].items() if v["pairs"]) + "."]
    lines += ["", "## Per fault and arm", "",
              "| fault | arm | incidents | success | escalated | timed out | MTTR mean (s) | 95% CI | detect mean (s) "
              "| first action (s) | actions (per incident) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in metrics["summary"].values():
        acts = "; ".join(_actions_text(a) for a in s["actions"])
        lines.append(f"| {s['fault']} | {s['arm']} | {s['incidents']} | {s['recovered']}/{s['incidents']} | "
                     f"{s['escalations']} | {s['timeouts']} | {s['mttr_mean_s']} | {_ci(s['mttr_ci95_s'])} | "
                     f"{s['detect_mean_s']} | {s['first_action_mean_s']} | {acts} |")
    wrong = metrics.get("policy_wrong_picks") or []
    if wrong:
        lines += ["", "## Where the simulator-trained policy picked differently from the fault's expected answer", "",
                  "The first action the policy took (not observe) per incident, against the plan file's `expected`, "
                  "with the firing alerts and the diagnosis in the window it decided on (a sim-to-real finding), "
                  "and how many of the simulator's series that window lacked (the healer read them at the "
                  "simulator's steady state: `imputed_metrics` of its answer, in `incidents.parquet`).", "",
                  "| incident | expected | policy's first action | outcome | firing alerts it saw | diagnosis "
                  "| series read at the steady state |", "|---|---|---|---|---|---|---|"]
        for w in wrong:
            lines.append(f"| {w['fault']} #{w['repeat']} | {w['expected']} | {w['action']} | {w['outcome']} | "
                         f"{', '.join(w['firing']) or 'none'} | {w['diagnosis']} | {w.get('imputed')} |")
    bad = (metrics.get("stack") or {}).get("collector_out_of_range")
    if bad:
        lines += ["", f"Shares read outside [0, 1] (a PromQL mapping error; windows per series): {bad}"]
    rp = metrics.get("replay")
    if rp and "error" in rp:
        lines += ["", f"Replay through /v1/heal failed: {rp['error']}"]
    elif rp:
        lines += ["", f"Replay of the policy arm's {rp['windows']} recorded windows through /v1/heal: "
                  f"{rp['matches']} gave the recorded decision ({len(rp['mismatches'])} differed)."]
    lines += ["", "Detection: the first firing alert's webhook at the receiver, after the injection. Timelines: "
              "`timelines/<fault>__<arm>__r<repeat>.png`."]
    skipped = [r for r in metrics["incidents"] if "skipped" in r]
    if skipped:
        lines += ["", "Skipped:"] + [f"- {r['fault']}/{r['arm']}: {r['skipped']}" for r in skipped]
    return "\n".join(lines) + "\n"


def policy_wrong_picks(records: list[dict]) -> list[dict]:
    """Policy-arm incidents whose first action (not observe) differs from the fault's expected answer (for the
    negative control, expected ``observe``: any action at all)."""
    out = []
    for r in records:
        if r.get("arm") != "policy" or "skipped" in r:
            continue
        first = next((a for a in r["actions"] if a["category"] != "observe"), None)
        picked = first["category"] if first else "observe"
        if picked != r["expected"]:
            out.append({"fault": r["fault"], "repeat": r["repeat"], "expected": r["expected"],
                        "action": "observe (no action)" if first is None else
                        f"{first['category']} {first.get('target') or ''}".strip()
                        + (" (the runbook's: the gate deferred)" if first.get("actor") == "runbook" else ""),
                        "outcome": first["outcome"] if first else incident_outcome(r),
                        "firing": first.get("firing", []) if first else [],
                        "diagnosis": first.get("diagnosis") if first else None,
                        "imputed": first.get("imputed") if first else None})
    return out


def summaries(records: list[dict], cfg: LiveConfig, negative: tuple[str, ...]) -> dict:
    """Everything metrics.json derives from the incident records: per fault and arm, per arm (without the negative
    control), the policy arm paired with the others, the policy's wrong picks."""
    others = tuple(a for a in cfg.eval.arms if a != "policy")
    return {"summary": summarise(records, cfg.eval.stats),
            "per_arm": summarise_arms(records, cfg.eval.stats, exclude_faults=negative),
            "paired": (paired_arms(records, "policy", others, cfg.eval.stats, exclude_faults=negative)
                       if "policy" in cfg.eval.arms else {}),
            "policy_wrong_picks": policy_wrong_picks(records)}


def resummarise(run_dir: Path) -> int:
    """Recompute metrics.json's summaries and report.md of a finished run from its recorded incidents with this
    code (e.g. after a change of how incidents are counted); the incidents themselves are kept as recorded."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        print(f"error: {path} does not exist (a jobs/live_eval.py --out folder?)", file=sys.stderr)
        return 2
    metrics = json.loads(path.read_text())
    cfg = LiveConfig.model_validate(metrics["config"])
    plans = load_fault_plans(cfg.faults)
    negative = tuple(p.name for p in plans.faults if p.expected == "observe")
    metrics.update(summaries(metrics["incidents"], cfg, negative))
    metrics["resummarised_unix_s"] = round(time.time(), 1)
    path.write_text(json.dumps(metrics, indent=1, default=str))
    (run_dir / "report.md").write_text(report_md(metrics))
    print(report_md(metrics))
    return 0


def planned_s(cfg: LiveConfig, faults: int) -> float:
    """An upper bound of the run's wall time: start-up, then per incident the settle wait, the cap, the executor's
    verification wait and the green window (measured here: ~85 s per capped incident at a 60 s cap)."""
    per = cfg.eval.settle_s + cfg.eval.arm_cap_s + cfg.executor.verify_after_s + 5.0 + cfg.slo.green_s
    startup = cfg.stack.startup_timeout_s + (cfg.healer.startup_timeout_s if "policy" in cfg.eval.arms else 0.0)
    return startup + faults * len(cfg.eval.arms) * cfg.eval.repeats * per


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/live_eval.yaml")
    parser.add_argument("--out", default=None, help="output folder (default: eval.out of the config)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resummarise", metavar="RUN_DIR", help="only recompute RUN_DIR's metrics.json summaries and "
                        "report.md from its recorded incidents (nothing is started)")
    add_override_arg(parser)
    args = parser.parse_args(argv)
    if args.resummarise:
        return resummarise(Path(args.resummarise))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        cfg = load_config(LiveConfig, args.config, args.overrides)
        binding = load_binding(cfg.binding)
        plans = load_fault_plans(cfg.faults)
        names = cfg.eval.faults or [f.name for f in plans.faults]
        selected = [plans.get(n) for n in names]
        if "policy" in cfg.eval.arms and not cfg.healer.checkpoint:
            raise ConfigError("the policy arm needs healer.checkpoint (a policy bundle: jobs/train.py --out)")
        if cfg.healer.checkpoint and not Path(cfg.healer.checkpoint).exists():
            raise ConfigError(f"healer.checkpoint {cfg.healer.checkpoint} does not exist")
        need = planned_s(cfg, len(selected))
        if need > cfg.stack.max_lifetime_s:
            raise ConfigError(f"{len(selected)} faults x {len(cfg.eval.arms)} arms x {cfg.eval.repeats} repeats may "
                              f"take {need:.0f} s, longer than stack.max_lifetime_s = {cfg.stack.max_lifetime_s:g} "
                              "(every process of the stack ends by itself then): raise it (--set "
                              f"stack.max_lifetime_s={need:.0f}) or run fewer incidents")
        if need > load_duration_s(cfg):
            raise ConfigError(f"the run may take {need:.0f} s, longer than the load generator runs "
                              f"(loadgen.max_duration_s = {cfg.loadgen.max_duration_s:g}): every window after it "
                              "would have no requests; raise it or leave it unset (the stack's lifetime)")
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
    healer_proc = None
    healer_info = None
    replay = None
    try:
        with contextlib.ExitStack() as stack_ctx:
            if "policy" in cfg.eval.arms:
                healer_proc = stack_ctx.enter_context(HealerProcess(
                    cfg.healer, cfg.healer.checkpoint, free_port(), out / "healer.log", cfg.stack.max_lifetime_s))
                h = healer_proc.health()
                healer_info = {"url": healer_proc.url, "policy": h["policy"], "encoder_trained":
                               (h.get("encoder") or {}).get("trained"), "serve": cfg.healer.serve}
                if cfg.healer.receive_alerts:
                    cfg = cfg.model_copy(update={"stack": cfg.stack.model_copy(
                        update={"healer_url": healer_proc.url})})
            stack = stack_ctx.enter_context(LiveStack(cfg, seed=args.seed, sim=sim))
            probe = LoadSloProbe(stack, sim, window_s=cfg.slo.green_s)
            executor = make_executor(stack, cfg, binding, probe, str(out / "audit.jsonl"))
            collector = make_collector(stack, binding, topology)
            stack_info = {"startup_s": stack.timings["total"], "timings": stack.timings,
                          "baseline": vars(stack.baseline), "model_cache_tmpfs": stack.mounted,
                          "latency_slo_ms": sim.slo_latency_factor * stack.baseline.p95_s * 1000.0}
            arm_healer = HealerArm(healer_proc.url, cfg.healer.request_timeout_s) if healer_proc else None
            skipped_run = 0
            for plan in selected:
                for rep in range(cfg.eval.repeats):
                    for arm in cfg.eval.arms:  # arms interleaved: a drift of the box over time hits each alike
                        try:
                            rec = run_incident(stack, cfg, binding, plan, arm, topology=topology,
                                               executor=executor, collector=collector, probe=probe,
                                               recorder=recorder, repeat=rep,
                                               policy_factory=RunbookPolicy if arm == "runbook" else None,
                                               healer=arm_healer if arm == "policy" else None,
                                               fallback_factory=RunbookPolicy if arm == "policy" else None)
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
                        dead = sorted(k for k, v in stack.health().items() if not v and k != "entry")
                        if dead:  # a stack process ended (e.g. at max_lifetime_s): later incidents cannot run
                            raise StackError(f"stack processes ended during the run: {dead}")
                        skipped_run = skipped_run + 1 if str(rec.get("skipped", "")).startswith("not green") else 0
                        if skipped_run >= cfg.eval.max_skipped_in_a_row:
                            raise StackError(
                                f"{skipped_run} incidents in a row skipped, the stack not green before injecting "
                                f"(last: {rec['skipped']}); stopping (eval.max_skipped_in_a_row). A loaded box "
                                "raises latency over the SLO measured at start: run with fewer jobs beside it, or "
                                "a longer eval.settle_s")
            stack_info["health_at_end"] = stack.health()
            stack_info["collector_out_of_range"] = dict(collector.out_of_range)
            if healer_proc is not None and recorder.rows:
                try:
                    replay = replay_windows(read_windows(recorder.write()), http_heal(healer_proc.url,
                                                                                      cfg.healer.request_timeout_s))
                except Exception as e:  # noqa: BLE001  (the measured incidents are still reported)
                    replay = {"error": repr(e)}
                (out / "replay.json").write_text(json.dumps(replay, indent=1))
        stack_info["stopped"] = True
    except (StackError, RuntimeError) as e:
        print(f"error: the live stack or the healer failed: {e}", file=sys.stderr)
        if not records:
            return 1
        stack_info = {**(locals().get("stack_info") or {"startup_s": float("nan"), "baseline": None,
                                                         "latency_slo_ms": None}), "error": str(e)}
    timelines = []
    if cfg.eval.timelines:
        timelines = [str(p.relative_to(out)) for p in plot_incidents(
            records, out / "timelines", latency_threshold_ms=stack_info["latency_slo_ms"])]
    negative = tuple(p.name for p in selected if p.expected == "observe")
    metrics = {"config": to_dict(cfg), "seed": args.seed, "wall_s": round(time.time() - t0, 1),
               "stack": stack_info, "healer": healer_info, "incidents": records,
               **summaries(records, cfg, negative), "replay": replay, "timelines": timelines}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=str))
    (out / "report.md").write_text(report_md(metrics))
    print(report_md(metrics))
    return 1 if "error" in stack_info else 0


if __name__ == "__main__":
    sys.exit(main())

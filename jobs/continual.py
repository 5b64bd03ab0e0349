#!/usr/bin/env python
"""The continual-adaptation protocol of issue 15: phase 1 on the split's known types, then a stream of the unknown
types one at a time, with the arms (full system, fine-tuning without replay, uniform replay, gate only, frozen)
meeting the same stream and the same paired evaluations. See :mod:`ifshm_ray.meta.continual` for the protocol.

    .venv/bin/python jobs/continual.py --config configs/continual_tiny.yaml --out results/continual_tiny

Outputs in ``--out``: ``metrics.json`` (issue 15's keys, per arm, paired comparisons with bootstrap 95% intervals),
``curves.png`` (unknown- and known-type MTTR per arm against the new-type episodes seen, the blind runbook as a
line), ``runs.json`` (every evaluation and stream record; rewritten after each seed, so that a run stopped
part-way can be summarised over its finished seeds with ``--summarise-only``), ``config.yaml`` (resolved), and per seed
``seed_N/phase1/`` and ``seed_N/<arm>/`` (``jobs/train.py`` folders; a gated arm's folder holds ``meta_state.json``
and ``diagnoser.json``, so ``jobs/evaluate.py --policy gated:OUT/seed_N/<arm>`` evaluates it behind its gate).
One progress line per step. ``configs/continual_tiny.yaml`` is a smoke run of a few minutes on 2 cores; its numbers
mean nothing about adaptation. ``configs/continual_ablations.yaml``: the ablation arms (without self-imitation,
strata, scenario replay, the runbook's actions) beside the full system, 3 seeds. ``configs/continual_pseudo.yaml``:
tuning on known families held out as pseudo-unknown (``pseudo_unknown``; the split's real unknown types are never
run; a pseudo run's arm folders hold ``blind_known.json``, so that ``gated:`` evaluations stay blind to them).
``eval.every_blocks``: evaluate after every N-th block of a type only (and its last), for big runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

from ifshm_ray.config import ConfigError, add_override_arg, load_config

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="Protocol config YAML (ifshm_ray.meta.continual.ContinualConfig); required "
                                    "except with --merge.")
    p.add_argument("--out", required=True, help="Output folder.")
    add_override_arg(p)
    p.add_argument("--summarise-only", action="store_true",
                   help="Recompute OUT/metrics.json and OUT/curves.png from OUT/runs.json of a finished run (after "
                        "a change of the summary's code), without running anything; wall_s and command are kept.")
    p.add_argument("--merge", nargs="+", metavar="RUN_DIR[:ARM,...]", default=None,
                   help="Join the arms (all, or those named after ':') of two or more finished runs (their runs.json "
                        "and config.yaml) into OUT and "
                        "summarise them as one run, without running anything. They must have met the same seeds, "
                        "streams, evaluations and references (checked): an arm run later on its own, with the same "
                        "config but its arms, is paired with the earlier run's arms. --config is not read.")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="Ray cluster to join (default: $RAY_ADDRESS); unset: a local Ray.")
    return p


def plot_curves(curves: dict, runbook_unknown: float | None, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for arm, c in curves.items():
        ax1.plot(c["episodes"], [v / 60 for v in c["unknown_mttr_s"]], marker="o", label=f"{arm} (ungated)")
        if c["unknown_mttr_gated_s"]:
            ax1.plot(c["episodes"], [v / 60 for v in c["unknown_mttr_gated_s"]], marker="x", linestyle="--",
                     label=f"{arm} (gated)")
        ax2.plot(c["episodes"], [v / 60 for v in c["known_mttr_s"]], marker="o", label=arm)
    if runbook_unknown is not None:
        ax1.axhline(runbook_unknown / 60, color="k", linestyle=":", label="blind runbook")
    ax1.set_title("unknown types (paired evaluation)")
    ax2.set_title("known types (forgetting)")
    for ax in (ax1, ax2):
        ax.set_xlabel("new-type stream incidents seen")
        ax.set_ylabel("MTTR (min)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _write_summary(cfg, runs: list[dict], out: Path, wall_s: float, command: str) -> tuple[dict, Path]:
    from ifshm_ray.meta.continual import jsonable, learning_curves, summarise_protocol

    metrics = summarise_protocol(cfg, runs)
    curves = learning_curves(runs, [a.name for a in cfg.arms])
    metrics["curves"] = curves
    metrics["wall_s"] = wall_s
    metrics["command"] = command
    metrics = jsonable(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics, plot_curves(curves, metrics.get("runbook_unknown_mttr_s"), out / "curves.png")


def _summarise_only(cfg, out: Path, parser: argparse.ArgumentParser) -> dict:
    runs_path, metrics_path = out / "runs.json", out / "metrics.json"
    if not runs_path.is_file():
        parser.error(f"--summarise-only: {runs_path} does not exist (a finished jobs/continual.py --out folder?)")
    try:
        runs = json.loads(runs_path.read_text())
        old = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    except json.JSONDecodeError as e:
        parser.error(f"--summarise-only: {e}")
    if not runs or sorted(a.name for a in cfg.arms) != sorted(runs[0]["arms"]):
        parser.error(f"--summarise-only: the config's arms {[a.name for a in cfg.arms]} are not those of "
                     f"{runs_path} ({sorted(runs[0]['arms']) if runs else 'no runs'}): pass the run's config.yaml")
    metrics, png = _write_summary(cfg, runs, out, float(old.get("wall_s", 0.0)), old.get("command", ""))
    print(f"metrics: {metrics_path}, curves: {png} (summarised again from {runs_path})", flush=True)
    return metrics


def _merge(sources: list[str], out: Path, parser: argparse.ArgumentParser, command: str,
           overrides: list[str] | None = None) -> dict:
    from ifshm_ray.meta.continual import ContinualConfig, merge_runs

    configs, runs_lists, metas = [], [], []
    for i, spec in enumerate(sources):
        src, _, picked = spec.partition(":")
        sources[i] = src
        d = Path(src)
        try:
            raw = yaml.safe_load((d / "config.yaml").read_text())
            if picked:  # RUN_DIR:arm,arm: only these arms of that run
                names = [n for n in picked.split(",") if n]
                absent = sorted(set(names) - {a["name"] for a in raw["arms"]})
                if absent:
                    parser.error(f"--merge {spec}: no arm {absent} in {d / 'config.yaml'}")
                raw["arms"] = [a for a in raw["arms"] if a["name"] in names]
            # through the config class, so that a field added since a run (at its default) does not part them
            configs.append(ContinualConfig.from_dict(raw, source=str(d / "config.yaml")).to_dict())
            runs = json.loads((d / "runs.json").read_text())
            if picked:
                runs = [{**r, "arms": {k: v for k, v in r["arms"].items() if k in names}} for r in runs]
            runs_lists.append(runs)
            metas.append(json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").is_file() else {})
        except FileNotFoundError as e:
            parser.error(f"--merge: {e.filename} does not exist (a finished jobs/continual.py --out folder?)")
        except (json.JSONDecodeError, yaml.YAMLError, ConfigError) as e:
            parser.error(f"--merge {src}: {e}")
    try:
        cfg_dict, runs = merge_runs(configs, runs_lists)
        if overrides:  # summary settings of the joined run (compare_with, bootstrap)
            from ifshm_ray.config import merge, parse_overrides

            cfg_dict = merge(cfg_dict, parse_overrides(overrides))
        cfg = ContinualConfig.from_dict(cfg_dict, source="merged config")
    except (ValueError, ConfigError) as e:
        parser.error(f"--merge: {e}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg_dict, sort_keys=False))
    (out / "runs.json").write_text(json.dumps(runs))
    sources_line = "; ".join(f"{src}: {m.get('command', '?')}" for src, m in zip(sources, metas))
    wall = sum(float(m.get("wall_s", 0.0)) for m in metas)
    metrics, png = _write_summary(cfg, runs, out, wall, f"{command} (merging {sources_line})")
    print(f"metrics: {out / 'metrics.json'}, curves: {png} (arms {[a.name for a in cfg.arms]} of "
          f"{len(sources)} runs)", flush=True)
    return metrics


def main(argv: list[str] | None = None) -> dict:
    parser = make_parser()
    args = parser.parse_args(argv)
    from ifshm_ray.meta.continual import ContinualConfig, Protocol, jsonable

    if args.merge:
        command = " ".join(["python", "jobs/continual.py"] + (argv if argv is not None else sys.argv[1:]))
        return _merge(args.merge, Path(args.out).resolve(), parser, command, args.overrides)
    if not args.config:
        parser.error("--config is required (except with --merge)")

    config_path = Path(args.config)
    if not config_path.is_file() and (REPO_ROOT / config_path).is_file():
        config_path = REPO_ROOT / config_path
    try:
        cfg = load_config(ContinualConfig, config_path, args.overrides)
    except ConfigError as e:
        parser.error(str(e))
    train_config = Path(cfg.train_config)
    if not train_config.is_file() and (REPO_ROOT / train_config).is_file():
        cfg.train_config = str(REPO_ROOT / train_config)
    if not Path(cfg.train_config).is_file():
        parser.error(f"{config_path}: train_config {cfg.train_config!r} does not exist")
    out = Path(args.out).resolve()
    if args.summarise_only:
        return _summarise_only(cfg, out, parser)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    import ray

    owns_ray = not ray.is_initialized()
    if owns_ray:
        if args.address:
            ray.init(address=args.address)
        else:
            ray.init(address="local", num_cpus=cfg.ray_num_cpus, include_dashboard=False)
    t0 = time.time()
    try:
        proto = Protocol(cfg, out)
        runs = []
        for s in cfg.seeds:
            runs.append(proto.run_seed(s))
            # the seeds finished so far: a run stopped later can still be summarised (--summarise-only)
            tmp = out / "runs.json.tmp"
            tmp.write_text(json.dumps(jsonable(runs)))
            tmp.replace(out / "runs.json")
    finally:
        if owns_ray:
            ray.shutdown()
    command = " ".join(["python", "jobs/continual.py"] + (argv if argv is not None else sys.argv[1:]))
    metrics, png = _write_summary(cfg, runs, out, time.time() - t0, command)
    keys = ("unknown_mttr_before_s", "unknown_mttr_zero_shot_gated_s", "unknown_mttr_after_s",
            "no_meta_unknown_mttr_s", "runbook_unknown_mttr_s", "known_mttr_phase1_s", "known_mttr_phase2_s",
            "cumulative_unhealthy_s", "no_meta_cumulative_unhealthy_s", "gate_false_positive_rate", "gate_recall")
    for k in keys:
        print(f"{k}: {metrics.get(k)}")
    print(f"metrics: {out / 'metrics.json'}, curves: {png} ({metrics['wall_s']:.0f} s)", flush=True)
    return metrics


if __name__ == "__main__":
    main()

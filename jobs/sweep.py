#!/usr/bin/env python
"""The PPO training budget over named splits and seeds: train, evaluate, aggregate; resumable.

    python jobs/sweep.py --config configs/sweep.yaml                 # runs what is not done yet, then the report
    python jobs/sweep.py --config configs/sweep.yaml --report-only   # only the report from the finished runs
    python jobs/sweep.py --config configs/sweep.yaml --dry-run       # lists the runs and which are done

Each run (a ``group`` of configs/sweep.yaml x one of its splits x one seed) is
1. ``jobs/train.py --config GROUP.config --seed S --set env.config.split=SPLIT --iterations ITER`` into
   ``OUT/runs/<group>/<split>/seed<S>/`` (its own embedded Ray, 1 torch thread: ``parallel`` runs share the box), then
2. ``jobs/evaluate.py --no-ray --policy <group>=checkpoint:RUN --split SPLIT --faults <eval.faults> --episodes N
   --seed <eval.seed>`` into ``RUN/eval/`` (the same incidents as the references' runs of jobs/evaluate_splits.py
   with the same seed: paired).
A run whose ``RUN/eval/done.json`` exists is skipped, so the sweep can be stopped and started again; a run that
failed leaves its log (``RUN/train.log``, ``RUN/eval.log``) and the sweep goes on with the others (exit 1 at the
end). The run order interleaves seeds (every group's seeds 0 and 1 on every split before seed 2), so that a stopped
sweep has covered the budget evenly.

The report (``OUT/sweep.md``, ``OUT/sweep.json``, ``OUT/sweep_mttr.png``; another stem with ``report``) gives, per
group, split and fault set, the mean over training seeds of each seed's metrics with the standard deviation over
seeds, the number of seeds done, and a bootstrap 95% interval of the mean MTTR over all seeds' episodes pooled; with
``references`` (the output folder of jobs/evaluate_splits.py) the references' rows on the same splits and sets sit
beside them; then the means over splits and the paired differences to every reference.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from ifshm_ray.baselines import BASELINES
from ifshm_ray.config import ConfigError, ConfigModel, add_override_arg, load_config
from ifshm_ray.eval.aggregate import aggregate_seeds
from ifshm_ray.eval.config import StatsConfig
from ifshm_ray.eval.stats import bootstrap_mean_ci, nested_mean_ci

ROOT = Path(__file__).resolve().parents[1]
SETS = ("known", "unknown", "compound", "fault_free")


class SweepGroup(ConfigModel):
    """One trained policy kind over some splits and seeds."""

    name: str
    """Label of the policy in reports (e.g. hier, flat); also the run folder's name."""
    config: str
    """Training config YAML of jobs/train.py (e.g. configs/demo.yaml)."""
    splits: list[str] = Field(min_length=1)
    """Named splits (ifshm_ray/sim/data/splits.yaml) to train and evaluate on."""
    seeds: list[int] = Field(min_length=1)
    """Training seeds."""


class EvalSpec(ConfigModel):
    """How every trained policy is evaluated (match the references' run for paired incidents)."""

    faults: list[str] = Field(default_factory=lambda: list(SETS))
    """Fault sets (known, unknown, compound, fault_free)."""
    episodes: int = Field(3, ge=1)
    """Episodes per fault type."""
    seed: int = 0
    """Seed of the incidents (jobs/evaluate_splits.py's --seed of the references)."""


class SweepConfig(ConfigModel):
    """What jobs/sweep.py runs."""

    out: str = "results/sweep"
    """Output folder (runs/, and the report: <report>.md, <report>.json, <report>_mttr.png)."""
    report: str = Field("sweep", pattern=r"^[A-Za-z0-9_.-]+$")
    """File stem of the report in ``out``: several sweep configs can share one ``out`` (and so each other's finished
    runs, a group's runs being ``out/runs/<group>/<split>/seed<S>``) with a report each."""
    iterations: int = Field(250, ge=1)
    """PPO iterations of every run (run.iterations): equal env steps across runs, independent of machine load."""
    max_wall_s: float = Field(1800.0, gt=0)
    """Safety cap on one run's training wall time (run.max_wall_s); iterations is the budget."""
    parallel: int = Field(2, ge=1)
    """Runs at once (each: one process, 1 torch thread, its own embedded Ray with num_cpus 1)."""
    groups: list[SweepGroup] = Field(min_length=1)
    """The budget."""
    eval: EvalSpec = Field(default_factory=EvalSpec)
    """Evaluation of each trained policy."""
    references: list[str] = Field(default_factory=lambda: ["results/eval_splits"])
    """Output folders of jobs/evaluate_splits.py / jobs/evaluate.py whose references' rows (same incident seed) join
    the report; the first folder holding a (policy, split, set) wins. Empty: none."""
    stats: StatsConfig = Field(default_factory=StatsConfig)
    """Bootstrap settings of the pooled-episode MTTR interval."""

    @model_validator(mode="after")
    def _check(self) -> "SweepConfig":
        from ifshm_ray.sim.catalog import CatalogError, load_catalog

        cat = load_catalog()
        for g in self.groups:
            if not _repo_path(g.config).is_file():
                raise ValueError(f"groups[{g.name}].config: {g.config!r} does not exist")
            for s in g.splits:
                try:
                    cat.check_split(s)
                except CatalogError as e:
                    raise ValueError(f"groups[{g.name}].splits: {e}") from None
        bad = [f for f in self.eval.faults if f not in SETS]
        if bad:
            raise ValueError(f"eval.faults: {bad} are not fault sets; valid: {list(SETS)}")
        return self


def _repo_path(p: str | Path) -> Path:
    p = Path(p)
    return p if p.is_absolute() or p.exists() else ROOT / p


def plan(cfg: SweepConfig) -> list[tuple[SweepGroup, str, int]]:
    """All runs, seeds interleaved: (seed rank 0 of every group and split), (rank 1 ...), ..."""
    runs, rank = [], 0
    while True:
        layer = [(g, sp, g.seeds[rank]) for g in cfg.groups if rank < len(g.seeds) for sp in g.splits]
        if not layer:
            return runs
        runs += layer
        rank += 1


def run_dir(cfg: SweepConfig, g: SweepGroup, split: str, seed: int) -> Path:
    return _repo_path(cfg.out) / "runs" / g.name / split / f"seed{seed}"


def is_done(d: Path) -> bool:
    return (d / "eval" / "done.json").is_file()


def _run_logged(cmd: list[str], log_path: Path, env: dict) -> int:
    """Runs ``cmd`` from the repo root with its command line and all its output in ``log_path``; its exit code."""
    with open(log_path, "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode


def execute(cfg: SweepConfig, g: SweepGroup, split: str, seed: int, config_path: str) -> tuple[str, bool, str]:
    """Train and evaluate one run (subprocesses); (name, ok, message)."""
    d = run_dir(cfg, g, split, seed)
    name = f"{g.name}/{split}/seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("RAY_ADDRESS", None)  # each run has its own embedded Ray
    t0 = time.time()
    if not (d / "summary.json").is_file():
        cmd = [sys.executable, str(ROOT / "jobs" / "train.py"), "--config", str(_repo_path(g.config)),
               "--out", str(d), "--seed", str(seed), "--iterations", str(cfg.iterations),
               "--max-wall-s", str(cfg.max_wall_s), "--num-cpus", "1", "--set", f"env.config.split={split}",
               "--set", "runners.torch_threads=1"]
        rc = _run_logged(cmd, d / "train.log", env)
        if rc != 0:
            return name, False, f"training failed (exit {rc}): see {d / 'train.log'}"
    t1 = time.time()
    ev = d / "eval"
    cmd = [sys.executable, str(ROOT / "jobs" / "evaluate.py"), "--no-ray", "--policy", f"{g.name}=checkpoint:{d}",
           "--split", split, "--faults", ",".join(cfg.eval.faults), "--episodes", str(cfg.eval.episodes),
           "--seed", str(cfg.eval.seed), "--out", str(ev)]
    rc = _run_logged(cmd, d / "eval.log", env)
    if rc != 0:
        return name, False, f"evaluation failed (exit {rc}): see {d / 'eval.log'}"
    (ev / "done.json").write_text(json.dumps({"train_s": t1 - t0, "eval_s": time.time() - t1,
                                              "iterations": cfg.iterations, "sweep_config": config_path}))
    return name, True, f"train {t1 - t0:.0f}s, eval {time.time() - t1:.0f}s"


def _set_metrics(ev: Path, fault_set: str, n_sets: int) -> dict | None:
    p = (ev / fault_set / "metrics.json") if n_sets > 1 else ev / "metrics.json"
    return json.loads(p.read_text()) if p.is_file() else None


def _episodes(ev: Path, fault_set: str, n_sets: int) -> list[dict]:
    p = (ev / fault_set / "episodes.json") if n_sets > 1 else ev / "episodes.json"
    return json.loads(p.read_text()) if p.is_file() else []


CELL_KEYS = ("mttr_mean_s", "mttr_p50_s", "mttr_p95_s", "time_to_mitigate_mean_s", "success_rate",
             "escalation_rate", "timeout_rate", "harmful_action_rate", "false_action_rate")


def _keyed(eps: list[dict]) -> list[tuple]:
    """(fault, episode seed, MTTR) of the episodes with an MTTR: what pairs a trained run's episode with a
    reference's on the same incident."""
    return [(e["fault"], int(e["seed"]), float(e["mttr_s"])) for e in eps
            if e.get("mttr_s") is not None and not np.isnan(e["mttr_s"])]


def collect(cfg: SweepConfig) -> dict:
    """{group: {split: {set: cell}}} over the finished runs; a cell has the seed-mean metrics, their std, seeds, and
    ``mttr_ci95_pooled`` (bootstrap interval of the mean MTTR over every seed's episodes)."""
    table: dict = {}
    n_sets = len(cfg.eval.faults)
    for g in cfg.groups:
        for sp in g.splits:
            done = [s for s in g.seeds if is_done(run_dir(cfg, g, sp, s))]
            if not done:
                continue
            for fs in cfg.eval.faults:
                per_seed, eps, by_seed = [], [], []
                for s in done:
                    ev = run_dir(cfg, g, sp, s) / "eval"
                    m = _set_metrics(ev, fs, n_sets)
                    if m is not None:
                        per_seed.append(m)
                        seed_eps = _episodes(ev, fs, n_sets)
                        eps += seed_eps
                        by_seed.append(_keyed(seed_eps))
                if not per_seed:
                    continue
                agg = aggregate_seeds(per_seed)
                cell = {k: agg.get(k) for k in CELL_KEYS}
                cell.update({k + "_std": agg.get(k + "_std") for k in CELL_KEYS if k + "_std" in agg})
                mttr = [e["mttr_s"] for e in eps if e.get("mttr_s") is not None]
                cell["mttr_ci95_pooled"] = bootstrap_mean_ci(mttr, cfg.stats) if mttr else None
                cell["seeds"] = done
                cell["episodes"] = len(eps)
                cell["_eps"] = by_seed  # (per seed: (fault, seed, MTTR) of its episodes; not written)
                table.setdefault(g.name, {}).setdefault(sp, {})[fs] = cell
    return table


def references(cfg: SweepConfig) -> dict:
    """{policy: {split: {set: metrics}}} from the ``metrics.json`` files under the ``references`` folders (outputs of
    jobs/evaluate_splits.py or jobs/evaluate.py, any layout: each file names its policy, fault set and split); the
    first folder that has a (policy, split, set) wins. Files evaluated with another incident seed are left out
    (not paired), and so are trained policies (``hashes`` of a bundle) and sets or splits not in the sweep."""
    out: dict = {}
    splits = {sp for g in cfg.groups for sp in g.splits}
    for folder in cfg.references:
        root = _repo_path(folder)
        for p in sorted(root.rglob("metrics.json")) if root.is_dir() else []:
            try:
                m = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            pol, fs, sp = m.get("policy"), m.get("fault_set"), m.get("split", "handpicked")
            if pol not in BASELINES or fs not in cfg.eval.faults or sp not in splits:
                continue
            if m.get("seed") != cfg.eval.seed:
                continue
            cell = out.setdefault(pol, {}).setdefault(sp, {}).setdefault(fs, m)
            if cell is m and "_eps" not in m and (p.parent / "episodes.json").is_file():
                eps = json.loads((p.parent / "episodes.json").read_text())
                m["_eps"] = [_keyed(eps)]  # (one run: one "seed")
    return out


def _s(x) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:,.0f}"


def _p(x) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.0f}%"


def write_report(cfg: SweepConfig, table: dict, refs: dict, command: str) -> str:
    out = _repo_path(cfg.out)
    splits = list(dict.fromkeys(sp for g in cfg.groups for sp in g.splits))
    lines = [f"# PPO training budget over splits (`{command}`)", "",
             f"{cfg.iterations} PPO iterations per run; each run evaluated on {cfg.eval.episodes} episodes per fault "
             f"type, incident seed {cfg.eval.seed}. Trained policies: mean over training seeds (± std over seeds; "
             "n = seeds done) and a bootstrap 95% interval of the mean MTTR over all seeds' episodes pooled. "
             "References (one run each, same incidents) from " + ", ".join(f"`{r}`" for r in cfg.references) + ".", ""]
    for fs in cfg.eval.faults:
        lines += [f"## {fs}", "", "| policy | split | n | MTTR s (± seeds) | MTTR 95% CI | p50 s | p95 s | mitigate s | "
                  "success | escalated | time-out | harmful | false actions |", "|" + "---|" * 13]
        for sp in splits:
            for name in dict.fromkeys(g.name for g in cfg.groups):
                c = table.get(name, {}).get(sp, {}).get(fs)
                if c is None:
                    continue
                ci = c.get("mttr_ci95_pooled")
                std = c.get("mttr_mean_s_std")
                lines.append(f"| {name} | {sp} | {len(c['seeds'])} | {_s(c['mttr_mean_s'])}"
                             + (f" ± {_s(std)}" if std is not None else "")
                             + f" | {'-' if not ci else _s(ci[0]) + '-' + _s(ci[1])} | "
                             f"{_s(c['mttr_p50_s'])} | {_s(c['mttr_p95_s'])} | "
                             f"{_s(c['time_to_mitigate_mean_s'])} | {_p(c['success_rate'])} | "
                             f"{_p(c['escalation_rate'])} | {_p(c['timeout_rate'])} | "
                             f"{_p(c['harmful_action_rate'])} | {_p(c['false_action_rate'])} |")
            for pol, by_split in sorted(refs.items(), key=lambda kv: BASELINES.index(kv[0])):
                c = by_split.get(sp, {}).get(fs)
                if c is None:
                    continue
                ci = c.get("mttr_ci95")
                lines.append(f"| {pol} | {sp} | ref | {_s(c.get('mttr_mean_s'))} | "
                             f"{'-' if not ci else _s(ci[0]) + '-' + _s(ci[1])} | "
                             f"{_s(c.get('mttr_p50_s'))} | {_s(c.get('mttr_p95_s'))} | "
                             f"{_s(c.get('time_to_mitigate_mean_s'))} | {_p(c.get('success_rate'))} | "
                             f"{_p(c.get('escalation_rate'))} | {_p(c.get('timeout_rate'))} | "
                             f"{_p(c.get('harmful_action_rate'))} | {_p(c.get('false_action_rate'))} |")
        lines.append("")
    lines += mean_over_splits(cfg, table, refs, splits)
    lines += paired_over_splits(cfg, table, refs, splits)
    text = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{cfg.report}.md").write_text(text)
    return text


MEAN_COLS = (("mttr_mean_s", "MTTR s", "s"), ("mttr_p50_s", "p50 s", "s"), ("mttr_p95_s", "p95 s", "s"),
             ("time_to_mitigate_mean_s", "mitigate s", "s"),
             ("success_rate", "success", "p"), ("escalation_rate", "escalated", "p"),
             ("timeout_rate", "time-out", "p"), ("harmful_action_rate", "harmful", "p"),
             ("false_action_rate", "false actions", "p"))


def _nanmean(xs) -> float | None:
    v = [float(x) for x in xs if x is not None and not (isinstance(x, float) and np.isnan(x))]
    return float(np.mean(v)) if v else None


def mean_over_splits(cfg: SweepConfig, table: dict, refs: dict, splits: list[str]) -> list[str]:
    """Per fault set: every policy's metrics averaged over the splits that *every* policy with a cell in that set
    has (so that the rows compare the same incidents; p50 and p95 are means of the per-split (trained: per-seed)
    percentiles), the trained groups' seed counts beside them, and a 95%
    interval of the mean MTTR: two-level bootstrap within each split (training seeds, then their episodes;
    :func:`~ifshm_ray.eval.stats.nested_mean_ci`)."""
    lines: list[str] = []
    rows = {name: table.get(name, {}) for name in dict.fromkeys(g.name for g in cfg.groups)}
    rows.update(sorted(refs.items(), key=lambda kv: BASELINES.index(kv[0])))
    for fs in cfg.eval.faults:
        have = {pol: {sp for sp in splits if fs in by_split.get(sp, {})} for pol, by_split in rows.items()}
        have = {pol: sps for pol, sps in have.items() if sps}
        common = [sp for sp in splits if all(sp in sps for sps in have.values())]
        if not common:
            continue
        lines += [f"## {fs}, mean over the splits every policy has ({', '.join(common)})", "",
                  "| policy | seeds per split | " + MEAN_COLS[0][1] + " | MTTR 95% CI | "
                  + " | ".join(c[1] for c in MEAN_COLS[1:]) + " |",
                  "|" + "---|" * (3 + len(MEAN_COLS))]
        for pol in have:
            cells = [rows[pol][sp][fs] for sp in common]
            seeds = [len(c["seeds"]) for c in cells if "seeds" in c]
            vals = [_nanmean(c.get(k) for c in cells) for k, _, _ in MEAN_COLS]
            ci = (nested_mean_ci([[[m for _, _, m in u] for u in c["_eps"]] for c in cells], cfg.stats)
                  if all(c.get("_eps") for c in cells) else None)
            txt = [(_s if kind == "s" else _p)(v) for v, (_, _, kind) in zip(vals, MEAN_COLS)]
            txt.insert(1, f"[{_s(ci[0])}, {_s(ci[1])}]" if ci else "-")
            lines.append(f"| {pol} | {'ref' if not seeds else '-'.join(map(str, sorted(set(seeds))))} | "
                         + " | ".join(txt) + " |")
        lines.append("")
    return lines



def paired_over_splits(cfg: SweepConfig, table: dict, refs: dict, splits: list[str]) -> list[str]:
    """Per fault set with MTTRs: each trained group's MTTR minus each reference's on the same incidents (every seed's
    episode paired with the reference's episode of the same fault and seed on the same split), averaged per seed, over
    the seeds, then over the splits both have; 95% interval: two-level bootstrap within each split (training seeds,
    then their pairs: :func:`~ifshm_ray.eval.stats.nested_mean_ci`)."""
    lines: list[str] = []
    groups = [g for g in dict.fromkeys(g.name for g in cfg.groups) if g in table]
    ref_names = sorted(refs, key=BASELINES.index)
    for fs in [f for f in cfg.eval.faults if f != "fault_free"]:
        rows = []
        for g in groups:
            cells = []
            for r in ref_names:
                diffs = []
                for sp in splits:
                    a = table[g].get(sp, {}).get(fs, {}).get("_eps")
                    b = refs[r].get(sp, {}).get(fs, {}).get("_eps")
                    if not a or not b:
                        continue
                    ref_mttr = {(f, sd): m for f, sd, m in b[0]}
                    d = [[m - ref_mttr[(f, sd)] for f, sd, m in unit if (f, sd) in ref_mttr] for unit in a]
                    if all(d):
                        diffs.append(d)
                if not diffs:
                    cells.append("-")
                    continue
                mean = float(np.mean([np.mean([np.mean(u) for u in d]) for d in diffs]))
                ci = nested_mean_ci(diffs, cfg.stats)
                cells.append(f"{mean:+,.0f} [{ci[0]:+,.0f}, {ci[1]:+,.0f}] ({len(diffs)})")
            rows.append(f"| {g} | " + " | ".join(cells) + " |")
        lines += [f"## {fs}: paired MTTR difference, trained - reference (s; mean over splits [95% CI] (splits))", "",
                  "| trained | " + " | ".join(f"vs {r}" for r in ref_names) + " |",
                  "|" + "---|" * (1 + len(ref_names)), *rows, ""]
    return lines


def plot(cfg: SweepConfig, table: dict, refs: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(dict.fromkeys(sp for g in cfg.groups for sp in g.splits))
    sets = list(cfg.eval.faults)
    pols = list(dict.fromkeys(g.name for g in cfg.groups)) + [p for p in refs if p != "random"]
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4.5), squeeze=False)
    for ax, fs in zip(axes[0], sets):
        w = 0.8 / max(1, len(pols))
        for k, pol in enumerate(pols):
            src = table.get(pol) if pol in table else refs.get(pol, {})
            ys = [(src or {}).get(sp, {}).get(fs, {}).get("mttr_mean_s") for sp in splits]
            xs = np.arange(len(splits)) + k * w
            ax.bar(xs, [np.nan if y is None else y for y in ys], w, label=pol)
        ax.set_xticks(np.arange(len(splits)) + 0.4 - w / 2)
        ax.set_xticklabels(splits, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{fs}: mean MTTR (s)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(_repo_path(cfg.out) / f"{cfg.report}_mttr.png", dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/sweep.yaml", help="sweep config YAML (SweepConfig)")
    p.add_argument("--report-only", action="store_true", help="only write the report from the finished runs")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether each is done; run nothing")
    p.add_argument("--max-runs", type=int, default=None, help="run at most this many of the missing runs")
    add_override_arg(p)
    a = p.parse_args(argv)
    try:
        cfg = load_config(SweepConfig, _repo_path(a.config), a.overrides)
    except (ConfigError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    out = _repo_path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = plan(cfg)
    todo = [r for r in runs if not is_done(run_dir(cfg, *r))]
    if a.max_runs is not None:
        todo = todo[:a.max_runs]
    print(f"[sweep] {len(runs)} runs in the budget, {len(runs) - len([r for r in runs if not is_done(run_dir(cfg, *r))])}"
          f" done, {len(todo)} to run now, {cfg.parallel} at once, {cfg.iterations} iterations each", flush=True)
    if a.dry_run:
        for g, sp, s in runs:
            print(f"  {'done' if is_done(run_dir(cfg, g, sp, s)) else 'todo'}  {g.name}/{sp}/seed{s}")
        return 0
    failed = 0
    if todo and not a.report_only:
        t0 = time.time()
        with ThreadPoolExecutor(cfg.parallel) as pool:
            futs = [pool.submit(execute, cfg, g, sp, s, str(a.config)) for g, sp, s in todo]
            for k, f in enumerate(futs):
                name, ok, msg = f.result()
                failed += not ok
                print(f"[sweep] {k + 1}/{len(todo)} {name}: {'ok' if ok else 'FAILED'} ({msg}); "
                      f"{time.time() - t0:.0f}s elapsed", flush=True)
    table, refs = collect(cfg), references(cfg)
    command = " ".join(["python", "jobs/sweep.py"] + (argv if argv is not None else sys.argv[1:]))
    public = {g: {sp: {fs: {k: v for k, v in c.items() if not k.startswith("_")} for fs, c in by_set.items()}
                  for sp, by_set in by_split.items()} for g, by_split in table.items()}
    report = {"command": command, "config": cfg.model_dump(), "table": public}
    (out / f"{cfg.report}.json").write_text(json.dumps(report, indent=2, default=str))
    print(write_report(cfg, table, refs, command))
    if table:
        plot(cfg, table, refs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

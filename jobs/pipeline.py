#!/usr/bin/env python
"""The main job, end to end: fine-tune the LLM encoder (when configured), train the recovery policy, evaluate it
against the reference baselines on the known, unknown, compound and fault-free incidents, write the report.
`make demo` runs it with configs/pipeline.yaml.

    python jobs/pipeline.py --config configs/pipeline.yaml --out results/demo
    python jobs/pipeline.py --config configs/pipeline.yaml --out results/demo --plan    # what it would do, how long
    python jobs/pipeline.py --config configs/pipeline.yaml --out /tmp/smoke --smoke   # tiny budget (tests)
    python jobs/pipeline.py --out results/quick --set eval_episodes=5 --set 'train_seeds=[0, 1]'   # any config value

Every stage uses the config's `split` (a named known/unknown split, ifshm_ray/sim/data/splits.yaml): the encoder is
fine-tuned on its known types, the policies are trained on them (`env.config.split`), and evaluation's known/unknown
sets are its; a reused training run or encoder of another split is refused.
At its start it prints what it will do and how long that is expected to take, per stage, computed from the config
and the measured rates of `timings` (configs/stage_timings.yaml; :func:`estimate`).
Stages (each prints progress): 0) `jobs/finetune_encoder.py` when `encoder_config` is set (reused when its output
exists); 1) `jobs/train.py` once per training seed (subprocess, its own embedded Ray, or the
cluster under `ray job submit`); 2) evaluation of every trained policy and every baseline on each fault set
(`ifshm_ray.eval.harness.make_jobs` + `evaluate_set`, the path of jobs/evaluate.py: the same incidents for every
policy), on Ray; 3) report.md with tables (MTTR with its bootstrap 95% interval, time to mitigate, success,
escalations apart from time-outs, harmful and false-action rates; mean and spread over training seeds:
`ifshm_ray.eval.aggregate`), the paired MTTR difference of each policy to each baseline, and PNG plots.
Outputs: OUT/train/<label>_seed<s>/ (training runs, <label> a key of `train_configs`),
OUT/eval_<set>/<policy>/metrics.json and episodes.json (several training seeds: metrics.json has their mean and spread
and `mttr_ci95` over the pooled episodes, each seed's metrics in metrics_per_seed.json beside it), OUT/report.md,
OUT/*.png, OUT/summary.json (headline metrics, the expected and the measured time of each stage); the fine-tuned
encoder in `encoder_checkpoint` (results/encoder by default).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ifshm_ray.baselines import BASELINES
from ifshm_ray.config import ConfigError, ConfigModel, SimConfig, add_override_arg, load_config
from ifshm_ray.eval.aggregate import aggregate_seeds
from ifshm_ray.eval.harness import FAULT_SETS, evaluate_set, make_jobs
from ifshm_ray.eval.report import metrics_line, summary_table, write_report
from ifshm_ray.eval.stats import bootstrap_mean_ci

ROOT = Path(__file__).resolve().parents[1]
TRAINED = "checkpoint"
"""Key of a trained policy (any training config) in the evaluation timings."""
SUMMARY_KEYS = ("mttr_mean_s", "mttr_mean_s_std", "mttr_ci95", "time_to_mitigate_mean_s", "success_rate",
                "success_rate_std", "escalation_rate", "timeout_rate", "false_action_rate", "harmful_action_rate")
"""Per policy and fault set in summary.json."""


class EncoderTiming(ConfigModel):
    """Fine-tuning the encoder (jobs/finetune_encoder.py): wall = fixed_s + s_per_window_epoch x training windows x
    epochs; the training windows are finetune.train_seeds x (known types + 1 healthy) x windows_per_episode."""

    fixed_s: float = Field(ge=0)
    """Everything but the training loop: simulator data set, linear baseline, test scoring, real-data scoring."""
    s_per_window_epoch: float = Field(gt=0)
    """Wall seconds of the training loop per training window and epoch (finetune.num_workers workers)."""


class TrainingTiming(ConfigModel):
    """One jobs/train.py run: wall = startup_s + min(iterations x train_batch_size / rate, run.max_wall_s)."""

    env_steps_per_s: float = Field(gt=0)
    """PPO env steps per second of a policy on numeric features (configs/demo.yaml's runner layout)."""
    semantic_factor: float = Field(1.0, ge=1.0)
    """Cost of an iteration with the LLM semantic state (policy.encoder_checkpoint set) relative to numeric."""
    startup_s: float = Field(ge=0)
    """Start-up (imports, Ray, semantic table, algorithm build) and the final checkpoint and export."""


class EvaluationTiming(ConfigModel):
    """The evaluation stage: wall = startup_s + sum over policies and sets of (episodes x cpu_s_per_episode + chunks x
    setup_cpu_s) / cores, + nearest_known_build_cpu_s when nearest-known's prototypes are not cached yet."""

    startup_s: float = Field(ge=0)
    """Ray start and the first import in its workers."""
    cpu_s_per_episode: dict[str, dict[str, float]]
    """Policy (a reference of BASELINES, or ``checkpoint`` for a trained policy) -> fault set (known, unknown,
    compound, fault_free) -> CPU seconds per episode (benchmarks/bench_eval.py)."""
    setup_cpu_s: dict[str, float]
    """Policy -> CPU seconds to build its env and policy, paid once per evaluation chunk (Ray task)."""
    nearest_known_build_cpu_s: float = Field(ge=0)
    """Building nearest-known's prototypes on a machine without them cached (once per split and simulator config)."""

    @model_validator(mode="after")
    def _complete(self) -> "EvaluationTiming":
        want = set(BASELINES) | {TRAINED}
        for key, have in (("cpu_s_per_episode", self.cpu_s_per_episode), ("setup_cpu_s", self.setup_cpu_s)):
            if want - set(have):
                raise ValueError(f"{key} lacks {sorted(want - set(have))} (every reference and {TRAINED!r})")
        sets = set(FAULT_SETS) - {"all"}  # (all = known + unknown)
        for pol, per_set in self.cpu_s_per_episode.items():
            if sets - set(per_set):
                raise ValueError(f"cpu_s_per_episode.{pol} lacks {sorted(sets - set(per_set))}")
        return self


class StageTimings(ConfigModel):
    """Measured rates of each stage on 2 cores (configs/stage_timings.yaml gives the command behind each)."""

    cores: int = Field(2, ge=1)
    """Cores the rates were measured on (the evaluation's CPU seconds are spread over the machine's cores)."""
    encoder: EncoderTiming
    training: TrainingTiming
    evaluation: EvaluationTiming


class PipelineConfig(ConfigModel):
    """What `make demo` runs."""

    renamed_keys = {"encoder_out": "encoder_checkpoint"}

    train_configs: dict[str, str] = Field(default_factory=dict)
    """Label -> training config YAML (jobs/train.py); e.g. {ppo: configs/demo.yaml}. Empty: baselines only."""
    train_seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    """Training seeds per trained policy (headline numbers: mean and spread over them)."""
    train_seeds_by_label: dict[str, list[int]] = Field(default_factory=dict)
    """Per-label override of train_seeds, e.g. {llm_state: [0, 1, 2]}; labels not named use train_seeds."""
    train_iterations: int | None = Field(None, ge=1)
    """Override every training config's run.iterations (equal env steps across policies); None keeps them."""
    train_max_wall_s: float | None = Field(None, gt=0)
    """Override every training config's run.max_wall_s; None keeps them."""
    sim_config: str | None = None
    """Simulator config YAML for evaluation (must match the topology the policies were trained on; its ``split``, if
    it names one, must be ``split``)."""
    split: str = "handpicked"
    """Named known/unknown split (ifshm_ray/sim/data/splits.yaml) of every stage: encoder fine-tuning
    (``--set split=``), training (``--set env.config.split=``; a training config naming another split is refused)
    and evaluation (``fault_sets`` known / unknown are this split's)."""
    baselines: list[str] = Field(default_factory=lambda: list(BASELINES))
    """Reference policies to evaluate next to the trained ones (ifshm_ray.baselines.BASELINES: oracle, runbook
    (blind), runbook-full, runbook-instant, nearest-known, escalate-first, random)."""
    fault_sets: list[Literal[FAULT_SETS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["known", "unknown", "compound", "fault_free"], min_length=1)
    """Fault sets to evaluate on (ifshm_ray.eval.harness.make_jobs): known / unknown / all of the split, compound
    (two faults at once, every type of the catalog with a drawn partner) and fault_free (false alarms only; as many
    episodes as the known set)."""
    eval_episodes: int = Field(20, ge=1)
    """Episodes per fault type (per known type for fault_free)."""
    eval_seed: int = 1000
    """Seed of the evaluation incidents (distinct from training seeds)."""
    smoke_train_config: str = "configs/tiny.yaml"
    """Training config used with --smoke."""
    encoder_config: str | None = None
    """Encoder fine-tuning config (jobs/finetune_encoder.py), run before training when the training configs read the
    encoder (policy.encoder_checkpoint); None: no encoder stage. Skipped with --smoke."""
    encoder_checkpoint: str = "results/encoder"
    """Where the fine-tuned encoder goes: the path that the semantic training configs' policy.encoder_checkpoint names.
    An encoder already there (its metrics.json) is reused when it was fine-tuned with encoder_config and the current
    fault catalog (its config hash); one fine-tuned otherwise stops the pipeline with a message. Delete the folder to
    fine-tune again."""

    timings: str = "configs/stage_timings.yaml"
    """Measured rates of each stage (:class:`StageTimings`) from which the start-up message computes the expected
    time of the run."""

    @field_validator("fault_sets")
    @classmethod
    def _sets_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"a fault set is listed twice: {value}")
        return value

    @field_validator("baselines")
    @classmethod
    def _known_baselines(cls, value: list[str]) -> list[str]:
        bad = [b for b in value if b not in BASELINES]
        if bad:
            raise ValueError(f"unknown baseline(s) {bad}; valid: {list(BASELINES)}")
        return value

    @model_validator(mode="after")
    def _paths_and_labels(self) -> "PipelineConfig":
        for label, path in self.train_configs.items():
            if not _repo_path(path).is_file():
                raise ValueError(f"train_configs.{label}: {path!r} does not exist")
        if not _repo_path(self.timings).is_file():
            raise ValueError(f"timings: {self.timings!r} does not exist")
        if self.encoder_config and not _repo_path(self.encoder_config).is_file():
            raise ValueError(f"encoder_config: {self.encoder_config!r} does not exist")
        unknown = set(self.train_seeds_by_label) - set(self.train_configs)
        if unknown:
            raise ValueError(f"train_seeds_by_label names {sorted(unknown)}, not in train_configs "
                             f"{sorted(self.train_configs)}")
        from ifshm_ray.sim.catalog import CatalogError, load_catalog

        try:
            load_catalog().check_split(self.split)
        except CatalogError as e:
            raise ValueError(f"split: {e}") from None
        named = {f"train_configs.{label}": (path, ("env", "config", "split"))
                 for label, path in self.train_configs.items()}
        named.update({"sim_config": (self.sim_config, ("split",))} if self.sim_config else {})
        named.update({"encoder_config": (self.encoder_config, ("split",))} if self.encoder_config else {})
        for key, (path, where) in named.items():
            other = _yaml_value(_repo_path(path), where)
            if other is not None and other != self.split:
                raise ValueError(f"{key}: {path!r} names split {other!r} ({'.'.join(where)}), the pipeline's split "
                                 f"is {self.split!r}; every stage uses the pipeline's split: drop it there or set "
                                 f"split: {other}")
        return self


def _yaml_value(path: Path, keys: tuple[str, ...]):
    """The value at ``keys`` of a YAML file's mapping (None when absent)."""
    from ifshm_ray.config import read_yaml

    node = read_yaml(path)
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node


def _repo_path(path: str) -> Path:
    """A config path as given when it exists (or is absolute), else relative to the repository root."""
    return Path(path) if Path(path).is_absolute() or Path(path).exists() else ROOT / path


def train(label: str, cfg_path: str, seed: int, out: Path, cfg: PipelineConfig, smoke: bool,
          reuse: bool = False) -> Path:
    run_dir = out / "train" / f"{label}_seed{seed}"
    if reuse and (run_dir / "policy_bundle" / "manifest.json").is_file():
        from ifshm_ray.policy.bundle import PolicyBundleError, check_bundle_split

        try:
            check_bundle_split(run_dir, cfg.split, "the pipeline")
        except PolicyBundleError as e:
            raise SystemExit(f"error: --reuse {label} seed {seed}: {e}")
        print(f"[train] {label} seed {seed}: reusing the finished run in {run_dir}", flush=True)
        return run_dir
    cmd = [sys.executable, str(ROOT / "jobs" / "train.py"), "--config", cfg_path, "--out", str(run_dir),
           "--seed", str(seed), "--set", f"env.config.split={cfg.split}"]
    if cfg.train_iterations is not None and not smoke:
        cmd += ["--iterations", str(cfg.train_iterations)]
    if cfg.train_max_wall_s is not None and not smoke:
        cmd += ["--max-wall-s", str(cfg.train_max_wall_s)]
    print(f"[train] {label} seed {seed}: {' '.join(cmd)}", flush=True)
    t0 = time.time()
    r = subprocess.run(cmd, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"error: training {label} seed {seed} failed (exit {r.returncode}); see output above")
    print(f"[train] {label} seed {seed} done in {time.time() - t0:.0f}s", flush=True)
    return run_dir


def finetune_encoder(cfg: PipelineConfig, expected_s: float | None = None) -> dict:
    """Stage 0: the fine-tuned encoder the semantic training configs read; reused when already there.
    ``expected_s``: the start-up estimate of fine-tuning (printed)."""
    enc_out = ROOT / cfg.encoder_checkpoint  # (an absolute encoder_checkpoint stays absolute)
    if (enc_out / "metrics.json").is_file():
        from ifshm_ray.encoding.config import load_config as load_encoder_config

        have = json.loads((enc_out / "metrics.json").read_text()).get("config_hash")
        want = load_encoder_config(_repo_path(cfg.encoder_config), {"split": cfg.split}).training_hash()
        from ifshm_ray.sim.catalog import LEGACY_SPLIT

        if have is None and cfg.split != LEGACY_SPLIT:  # written before hashes (and splits): a handpicked encoder
            raise SystemExit(f"error: {enc_out} holds an encoder fine-tuned before splits were recorded (so on split "
                             f"{LEGACY_SPLIT!r}), the pipeline's split is {cfg.split!r}; delete that folder to "
                             "fine-tune again, or set encoder_checkpoint to another folder")
        if have is None:
            print(f"[encoder] reusing the fine-tuned encoder in {enc_out}: it records no config hash (fine-tuned "
                  f"before hashes were written), so it cannot be checked against {cfg.encoder_config}; delete it to "
                  "fine-tune again", flush=True)
        elif have != want:
            raise SystemExit(f"error: {enc_out} holds an encoder fine-tuned with another configuration (hash {have}) "
                             f"than {cfg.encoder_config} with the current fault catalog and split {cfg.split!r} "
                             f"({want}); delete that folder "
                             "to fine-tune again, or set encoder_checkpoint to another folder (and the training "
                             "configs' policy.encoder_checkpoint with it)")
        else:
            print(f"[encoder] reusing the fine-tuned encoder in {enc_out} (it matches {cfg.encoder_config}; delete "
                  "it to fine-tune again)", flush=True)
    else:
        cmd = [sys.executable, str(ROOT / "jobs" / "finetune_encoder.py"), "--config", cfg.encoder_config,
               "--out", str(enc_out), "--set", f"split={cfg.split}"]
        expect = f" (expected ~{expected_s / 60:.0f} min)" if expected_s else ""
        print(f"[encoder] fine-tuning{expect}: {' '.join(cmd)}", flush=True)
        t0 = time.time()
        r = subprocess.run(cmd, cwd=ROOT)
        if r.returncode != 0:
            raise SystemExit(f"error: encoder fine-tuning failed (exit {r.returncode}); see output above")
        print(f"[encoder] done in {time.time() - t0:.0f}s", flush=True)
    return json.loads((enc_out / "metrics.json").read_text())


def encoder_section(m: dict) -> str:
    """Markdown: the encoder's diagnosis scores next to the linear baseline."""
    def f(key: str) -> str:
        v = m.get(key)
        return "-" if v is None else f"{v:.3f}"

    lines = ["## LLM semantic encoder", "",
             f"Model `{m.get('model')}`, mode `{m.get('mode')}`, adapter `{m.get('adapter')}`. Fault-mode diagnosis "
             f"on held-out simulator seeds (known fault types of split `{m.get('split', 'handpicked')}`):", "",
             "| | accuracy | macro-F1 |", "|---|---|---|",
             f"| fine-tuned encoder | {f('accuracy')} | {f('macro_f1')} |",
             f"| linear baseline (template counts + metric features) | {f('baseline_accuracy')} | "
             f"{f('baseline_macro_f1')} |", ""]
    if m.get("real_n"):
        lines += [f"Real OpenStack fault-injection samples (n = {m['real_n']}, nothing scored was trained on), "
                  "accuracy with its 95% Wilson interval:", "", "| | accuracy | 95% CI |", "|---|---|---|"]
        for key, name in (("real_zero_shot", "zero-shot (simulator fault -> failure_mode map)"),
                          ("real_loo", "leave-one-out head on the frozen semantic states")):
            if m.get(f"{key}_accuracy") is not None:
                lo, hi = m[f"{key}_accuracy_ci95"]
                lines.append(f"| {name} | {m[key + '_accuracy']:.2f} | {lo:.2f}-{hi:.2f} |")
        lines += [f"| majority class | {m.get('real_majority_class_accuracy', float('nan')):.2f} | |", ""]
    return "\n".join(lines)


def eval_jobs(cfg: PipelineConfig, catalog, smoke: bool) -> dict[str, list]:
    """Fault set -> its episodes ``[(fault, seed), ...]`` (ifshm_ray.eval.harness.make_jobs: the incidents of
    jobs/evaluate.py with the same split, episodes and seed); with ``smoke`` the first 3 of 1 episode per type."""
    if smoke:
        return {fs: make_jobs(fs, catalog, cfg.split, 1, cfg.eval_seed)[:3] for fs in cfg.fault_sets}
    return {fs: make_jobs(fs, catalog, cfg.split, cfg.eval_episodes, cfg.eval_seed) for fs in cfg.fault_sets}


def _train_config(cfg: PipelineConfig, path: str, smoke: bool):
    """The training config a run will use (the pipeline's split and iteration / wall overrides applied)."""
    from ifshm_ray.policy.config import load_train_config

    over = {"env.config.split": cfg.split}
    if cfg.train_iterations is not None and not smoke:
        over["run.iterations"] = cfg.train_iterations
    if cfg.train_max_wall_s is not None and not smoke:
        over["run.max_wall_s"] = cfg.train_max_wall_s
    return load_train_config(_repo_path(path), over)


def estimate(cfg: PipelineConfig, sim_cfg: SimConfig, jobs: dict[str, list], smoke: bool = False,
             cores: int | None = None) -> dict:
    """Expected wall seconds of each stage on ``cores`` cores (default: this machine's), from the config and the
    measured rates of ``cfg.timings`` (:class:`StageTimings`; see configs/stage_timings.yaml for how each was
    measured): ``{"encoder_s", "train_s", "train_max_s", "eval_s", "total_s", "total_max_s", "cores", ...}``
    with what each figure counts (``encoder``, ``train_runs``, ``eval_episodes``). ``train_max_s`` / ``total_max_s``
    take every training run at its wall cap (run.max_wall_s). The encoder counts 0 when ``encoder_checkpoint``
    already holds one (it is reused or the pipeline stops with a message)."""
    from ifshm_ray.baselines.nearest import prototypes_path
    from ifshm_ray.sim.catalog import load_catalog

    t = load_config(StageTimings, _repo_path(cfg.timings))
    cores = max(1, cores or os.cpu_count() or t.cores)
    catalog = load_catalog(sim_cfg.catalog)
    out: dict = {"cores": cores, "timings": cfg.timings}
    # stage 0: the encoder
    out["encoder_s"], out["encoder"] = 0.0, None
    if cfg.encoder_config and not smoke:
        if (ROOT / cfg.encoder_checkpoint / "metrics.json").is_file():  # (as finetune_encoder looks)
            out["encoder"] = f"reused from {cfg.encoder_checkpoint}"
        else:
            from ifshm_ray.encoding.config import load_config as load_encoder_config

            ft = load_encoder_config(_repo_path(cfg.encoder_config), {"split": cfg.split}).finetune
            windows = ft.train_seeds * (len(catalog.known_in(cfg.split)) + 1) * ft.windows_per_episode
            out["encoder_s"] = t.encoder.fixed_s + t.encoder.s_per_window_epoch * windows * ft.epochs
            out["encoder"] = f"{windows} windows x {ft.epochs} epochs"
    # stage 1: training, one run after the other
    runs = []
    for label, path in cfg.train_configs.items():
        seeds = cfg.train_seeds_by_label.get(label, cfg.train_seeds)
        tc = _train_config(cfg, cfg.smoke_train_config if smoke else path, smoke)
        rate = t.training.env_steps_per_s / (t.training.semantic_factor if tc.policy.encoder_checkpoint else 1.0)
        loop = tc.run.iterations * tc.ppo.train_batch_size / rate
        runs.append({"label": label, "runs": 1 if smoke else len(seeds), "iterations": tc.run.iterations,
                     "max_wall_s": tc.run.max_wall_s, "semantic": bool(tc.policy.encoder_checkpoint),
                     "run_s": t.training.startup_s + min(loop, tc.run.max_wall_s),
                     "run_max_s": t.training.startup_s + tc.run.max_wall_s})
        if smoke:
            break  # (--smoke trains one run of smoke_train_config)
    out["train_runs"] = runs
    out["train_s"] = sum(r["runs"] * r["run_s"] for r in runs)
    out["train_max_s"] = sum(r["runs"] * r["run_max_s"] for r in runs)
    # stage 2: evaluation, every policy on every set, Ray tasks over the cores
    ev = t.evaluation
    policies = {b: (b, 1) for b in cfg.baselines}
    policies.update({label: (TRAINED, r["runs"]) for label, r in zip(cfg.train_configs, runs)})
    cpu, episodes = 0.0, 0
    for fs, fs_jobs in jobs.items():
        for key, n_runs in policies.values():
            if fs == "all":  # known + unknown of the split, each at its own rate
                k, u = len(catalog.known_in(cfg.split)), len(catalog.unknown_in(cfg.split))
                per_ep = (k * ev.cpu_s_per_episode[key]["known"] + u * ev.cpu_s_per_episode[key]["unknown"]) / (k + u)
            else:
                per_ep = ev.cpu_s_per_episode[key][fs]
            chunks = 1 if smoke else min(len(fs_jobs), 4 * cores)  # (as main and harness.evaluate split them)
            cpu += n_runs * (len(fs_jobs) * per_ep + chunks * ev.setup_cpu_s[key])
            episodes += n_runs * len(fs_jobs)
    if "nearest-known" in cfg.baselines and not prototypes_path(sim_cfg).is_file():
        cpu += ev.nearest_known_build_cpu_s * cores  # (built once, in the driver, before the episodes start)
    out["eval_episodes"] = episodes
    out["eval_s"] = ev.startup_s + cpu / cores
    out["total_s"] = out["encoder_s"] + out["train_s"] + out["eval_s"]
    out["total_max_s"] = out["encoder_s"] + out["train_max_s"] + out["eval_s"]
    return out


def plan_message(cfg: PipelineConfig, est: dict, out: Path, smoke: bool) -> str:
    """The start-up message: what the run will do and how long each stage is expected to take."""
    def mins(x: float) -> str:
        return f"{x / 60:.0f}" if x >= 60 else f"{x / 60:.1f}"

    train = "; ".join(f"{r['label']} x {r['runs']} run(s): {r['iterations']} iterations"
                      + (" with the LLM semantic state" if r["semantic"] else "")
                      + f", capped at {r['max_wall_s']:.0f} s each" for r in est["train_runs"]) or "nothing to train"
    enc = ("" if not est["encoder"] else f"encoder ~{mins(est['encoder_s'])} min ({est['encoder']}), ")
    capped = (f" (at most ~{mins(est['total_max_s'])} min if training runs to its wall caps)"
              if est["total_max_s"] > est["total_s"] + 30 else "")
    return (f"ifshm-ray pipeline -> {out} (smoke={smoke}, split {cfg.split}): expected ~{mins(est['total_s'])} min on "
            f"{est['cores']} cores{capped}: {enc}training ~{mins(est['train_s'])} min ({train}), evaluation "
            f"~{mins(est['eval_s'])} min ({est['eval_episodes']} episodes: {len(cfg.baselines)} references + "
            f"{len(cfg.train_configs)} trained on {', '.join(cfg.fault_sets)}). Estimated from the config and the "
            f"measured rates in {est['timings']}.")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/pipeline.yaml", help="pipeline config YAML")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--smoke", action="store_true",
                   help="tiny budget: tiny training, the first 3 episodes of each set in one Ray task per policy")
    p.add_argument("--plan", action="store_true", help="print what the run would do and how long, then stop")
    p.add_argument("--task-cpus", type=float, default=1.0, help="CPUs per evaluation Ray task")
    p.add_argument("--reuse", action="store_true", help="reuse finished training runs found in OUT/train (re-evaluate)")
    add_override_arg(p)
    a = p.parse_args(argv)
    try:
        cfg = load_config(PipelineConfig, _repo_path(a.config), a.overrides)
        sim_cfg = load_config(SimConfig, cfg.sim_config, {"split": cfg.split})
        from ifshm_ray.sim.catalog import load_catalog

        jobs = eval_jobs(cfg, load_catalog(sim_cfg.catalog), a.smoke)
        est = estimate(cfg, sim_cfg, jobs, a.smoke)
    except ConfigError as e:
        p.error(str(e))  # exit 2 with the message, no traceback
    out = Path(a.out).resolve()
    print(plan_message(cfg, est, out, a.smoke), flush=True)
    if a.plan:
        return {"estimate": est}
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    stages: dict[str, float] = {}
    seeds_of = {k: cfg.train_seeds_by_label.get(k, cfg.train_seeds) for k in cfg.train_configs}

    # ---- 0. the encoder (only when a training config reads it)
    encoder_metrics = finetune_encoder(cfg, est["encoder_s"]) if cfg.encoder_config and not a.smoke else None
    stages["encoder_s"] = time.time() - t_start

    # ---- 1. train
    trained: dict[str, list[Path]] = {}
    for label, tcfg in cfg.train_configs.items():
        seeds = seeds_of[label][:1] if a.smoke else seeds_of[label]
        path = cfg.smoke_train_config if a.smoke else tcfg
        trained[label] = [train(label, path, s, out, cfg, a.smoke, a.reuse) for s in seeds]
    stages["train_s"] = time.time() - t_start - stages["encoder_s"]

    # ---- 2. evaluate (one local Ray, or the cluster under `ray job submit`)
    t_eval = time.time()
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)
    from ifshm_ray.policy.bundle import PolicyBundleError, check_bundle_split

    for label, dirs in trained.items():  # (each was trained with env.config.split = the pipeline's split)
        for d in dirs:
            try:
                check_bundle_split(d, cfg.split, "the pipeline's evaluation")
            except PolicyBundleError as e:
                raise SystemExit(f"error: {label}: {e}")
    results: dict[str, dict[str, dict]] = {}
    records: dict[str, dict[str, list]] = {}
    episodes = 1 if a.smoke else cfg.eval_episodes
    policies = {b: [b] for b in cfg.baselines}
    policies.update({label: [f"checkpoint:{d}" for d in dirs] for label, dirs in trained.items()})
    for fs, fs_jobs in jobs.items():
        results[fs], records[fs] = {}, {}
        for label, specs in policies.items():
            per_seed, pooled = [], []
            for spec in specs:
                t0 = time.time()
                try:
                    m, recs = evaluate_set(spec, label, fs, fs_jobs, episodes, cfg.eval_seed, sim_cfg,
                                           num_cpus_per_task=a.task_cpus, chunks=1 if a.smoke else None,
                                           progress=lambda d, n, l=label, t0=t0, fs=fs: print(
                                               f"[eval {fs}] {l}: {d}/{n} episodes ({time.time() - t0:.0f}s)",
                                               flush=True))
                except (ValueError, RuntimeError, FileNotFoundError) as e:  # bad bundle, topology mismatch, ...
                    raise SystemExit(f"error: policy {label!r} ({spec}): {e}")
                per_seed.append(m)
                seed_tag = {"training_seed": seeds_of[label][len(per_seed) - 1]} if label in trained else {}
                pooled += [{**r, **seed_tag} for r in recs]
            if label in trained:  # training cost next to the result (equal env steps; wall-clock reported)
                for x, d in zip(per_seed, trained[label]):
                    ts = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
                    x["train_env_steps"] = ts.get("env_steps_lifetime")
                    x["train_wall_s"] = ts.get("total_wall_s")
                    x["train_iterations"] = ts.get("iteration")
                    if ts.get("semantic_cache"):  # LM item-embedding cache while sampling (semantic policies)
                        x["train_lm_hit_rate"] = ts["semantic_cache"].get("hit_rate")
            m = aggregate_seeds(per_seed)
            if len(per_seed) > 1:  # the interval of the mean MTTR over every seed's episodes
                m["mttr_ci95"] = bootstrap_mean_ci([r["mttr_s"] for r in pooled if not r.get("fault_free")])
                m["mttr_ci95_of"] = f"the episodes of {len(per_seed)} training seeds pooled"
            d = out / f"eval_{fs}" / label
            d.mkdir(parents=True, exist_ok=True)
            (d / "metrics.json").write_text(json.dumps(m, indent=2))
            (d / "episodes.json").write_text(json.dumps(pooled))
            if len(per_seed) > 1:
                (d / "metrics_per_seed.json").write_text(json.dumps(per_seed, indent=2))
            results[fs][label], records[fs][label] = m, pooled
            print(f"[eval {fs}] {label}: {metrics_line(m)}", flush=True)
        print(summary_table(results[fs]), flush=True)
    stages["eval_s"] = time.time() - t_eval
    report = write_report(out, results, " ".join(["python", "jobs/pipeline.py"] + (argv or sys.argv[1:])),
                          episodes=records)
    text = report.read_text() + "\n" + timing_section(est, stages)
    if encoder_metrics is not None:
        text += "\n" + encoder_section(encoder_metrics)
    report.write_text(text)
    summary: dict = {fs: {k: {key: v.get(key) for key in SUMMARY_KEYS} for k, v in r.items()}
                     for fs, r in results.items()}
    summary["split"] = cfg.split
    summary["wall_s"] = time.time() - t_start
    summary["stages_s"] = stages
    summary["expected_s"] = {k: est[k] for k in ("encoder_s", "train_s", "eval_s", "total_s", "total_max_s")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"report: {report} ({time.time() - t_start:.0f}s in all; expected ~{est['total_s']:.0f}s)", flush=True)
    return results


def timing_section(est: dict, stages: dict[str, float]) -> str:
    """Markdown: each stage's expected (start-up estimate) and measured wall time."""
    rows = ["## Run time", "", f"Expected from the config and the rates in `{est['timings']}` on {est['cores']} "
            "cores, and measured:", "", "| stage | expected (s) | measured (s) |", "|---|---|---|"]
    for key, name in (("encoder_s", "encoder"), ("train_s", "training"), ("eval_s", "evaluation")):
        rows.append(f"| {name} | {est[key]:.0f} | {stages.get(key, float('nan')):.0f} |")
    rows.append(f"| total | {est['total_s']:.0f} | {sum(stages.values()):.0f} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()

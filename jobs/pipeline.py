#!/usr/bin/env python
"""The main job, end to end: fine-tune the LLM encoder (when configured), train the recovery policy, evaluate it
against the baselines on known and unknown faults, write the report. `make demo` runs it with configs/pipeline.yaml.

    python jobs/pipeline.py --config configs/pipeline.yaml --out results/demo
    python jobs/pipeline.py --config configs/pipeline.yaml --out /tmp/smoke --smoke   # tiny budget (tests)
    python jobs/pipeline.py --out results/quick --set eval_episodes=5 --set 'train_seeds=[0, 1]'   # any config value

Every stage uses the config's `split` (a named known/unknown split, ifshm_ray/sim/data/splits.yaml): the encoder is
fine-tuned on its known types, the policies are trained on them (`env.config.split`), and evaluation's known/unknown
sets are its; a reused training run or encoder of another split is refused.
Stages (each prints progress): 0) `jobs/finetune_encoder.py` when `encoder_config` is set (reused when its output
exists); 1) `jobs/train.py` once per training seed (subprocess, its own embedded Ray, or the
cluster under `ray job submit`); 2) `jobs/evaluate.py`-equivalent evaluation of every trained policy and every
baseline on each fault set, on Ray; 3) report.md with tables (mean and spread over training seeds:
`ifshm_ray.eval.aggregate`) and PNG plots.
Outputs: OUT/train/<label>_seed<s>/ (training runs, <label> a key of `train_configs`),
OUT/eval_<set>/<policy>/metrics.json (several training seeds: their mean and spread, each seed's metrics in
metrics_per_seed.json beside it), OUT/report.md, OUT/*.png, OUT/summary.json; the fine-tuned encoder in
`encoder_checkpoint` (results/encoder by default). With the default config it takes about 30 minutes on 2 cores
(encoder ~15, training ~13).
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
from ifshm_ray.eval.harness import evaluate, summarise
from ifshm_ray.eval.report import summary_table, write_report

ROOT = Path(__file__).resolve().parents[1]


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
    """Baseline policies to evaluate next to the trained ones (oracle, runbook, runbook-instant, random)."""
    fault_sets: list[Literal["known", "unknown", "all"]] = Field(default_factory=lambda: ["known", "unknown"])
    """Fault sets to evaluate on."""
    eval_episodes: int = Field(20, ge=1)
    """Episodes per fault type."""
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


def finetune_encoder(cfg: PipelineConfig) -> dict:
    """Stage 0: the fine-tuned encoder the semantic training configs read; reused when already there."""
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
        print(f"[encoder] fine-tuning (about 15 minutes on 2 cores with configs/encoder.yaml): {' '.join(cmd)}",
              flush=True)
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


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/pipeline.yaml", help="pipeline config YAML")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--smoke", action="store_true", help="tiny budget: tiny training, 1 episode on 3 faults per set")
    p.add_argument("--task-cpus", type=float, default=1.0, help="CPUs per evaluation Ray task")
    p.add_argument("--reuse", action="store_true", help="reuse finished training runs found in OUT/train (re-evaluate)")
    add_override_arg(p)
    a = p.parse_args(argv)
    try:
        cfg = load_config(PipelineConfig, _repo_path(a.config), a.overrides)
        sim_cfg = load_config(SimConfig, cfg.sim_config, {"split": cfg.split})
    except ConfigError as e:
        p.error(str(e))  # exit 2 with the message, no traceback
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    seeds_of = {k: cfg.train_seeds_by_label.get(k, cfg.train_seeds) for k in cfg.train_configs}
    n_runs = 1 if a.smoke else sum(len(v) for v in seeds_of.values())
    enc = cfg.encoder_config and not a.smoke
    print(f"ifshm-ray pipeline -> {out} (smoke={a.smoke}): "
          + (f"fine-tune the encoder ({cfg.encoder_config}, ~15 min on 2 cores unless {cfg.encoder_checkpoint} "
             "exists), " if enc else "")
          + f"train {seeds_of} (label: seeds; {n_runs} run(s), ~12-14 min each on 2 "
          f"cores at the demo budget), then evaluate on {cfg.fault_sets} (~3 min)", flush=True)

    # ---- 0. the encoder (only when a training config reads it)
    encoder_metrics = finetune_encoder(cfg) if cfg.encoder_config and not a.smoke else None

    # ---- 1. train
    trained: dict[str, list[Path]] = {}
    for label, tcfg in cfg.train_configs.items():
        seeds = seeds_of[label][:1] if a.smoke else seeds_of[label]
        path = cfg.smoke_train_config if a.smoke else tcfg
        trained[label] = [train(label, path, s, out, cfg, a.smoke, a.reuse) for s in seeds]

    # ---- 2. evaluate (one local Ray, or the cluster under `ray job submit`)
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)
    from ifshm_ray.sim.catalog import load_catalog

    cat = load_catalog(sim_cfg.catalog)
    results: dict[str, dict[str, dict]] = {}
    from ifshm_ray.policy.bundle import PolicyBundleError, check_bundle_split

    for label, dirs in trained.items():  # (each was trained with env.config.split = the pipeline's split)
        for d in dirs:
            try:
                check_bundle_split(d, cfg.split, "the pipeline's evaluation")
            except PolicyBundleError as e:
                raise SystemExit(f"error: {label}: {e}")
    for fs in cfg.fault_sets:
        faults = cat.select(fs, split=cfg.split)
        if a.smoke:
            faults = faults[:3]
        episodes = 1 if a.smoke else cfg.eval_episodes
        results[fs] = {}
        policies = {b: [b] for b in cfg.baselines}
        policies.update({label: [f"checkpoint:{d}" for d in dirs] for label, dirs in trained.items()})
        for label, specs in policies.items():
            per_seed = []
            for spec in specs:
                t0 = time.time()
                recs = evaluate(spec, faults, episodes, cfg.eval_seed, sim_cfg, num_cpus_per_task=a.task_cpus,
                                progress=lambda d, n, l=label, t0=t0, fs=fs: print(
                                    f"[eval {fs}] {l}: {d}/{n} episodes ({time.time() - t0:.0f}s)", flush=True))
                m = summarise(recs, label, fs, sim_cfg.time_limit_s, catalog=sim_cfg.catalog, split=cfg.split)
                m["wall_s"] = time.time() - t0
                m["split"] = cfg.split
                per_seed.append(m)
            if label in trained:  # training cost next to the result (equal env steps; wall-clock reported)
                for x, d in zip(per_seed, trained[label]):
                    ts = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
                    x["train_env_steps"] = ts.get("env_steps_lifetime")
                    x["train_wall_s"] = ts.get("total_wall_s")
                    x["train_iterations"] = ts.get("iteration")
                    if ts.get("semantic_cache"):  # LM item-embedding cache while sampling (semantic policies)
                        x["train_lm_hit_rate"] = ts["semantic_cache"].get("hit_rate")
            m = aggregate_seeds(per_seed)
            d = out / f"eval_{fs}" / label
            d.mkdir(parents=True, exist_ok=True)
            (d / "metrics.json").write_text(json.dumps(m, indent=2))
            if len(per_seed) > 1:
                (d / "metrics_per_seed.json").write_text(json.dumps(per_seed, indent=2))
            results[fs][label] = m
        print(summary_table(results[fs]), flush=True)
    report = write_report(out, results, " ".join(["python", "jobs/pipeline.py"] + (argv or sys.argv[1:])))
    if encoder_metrics is not None:
        report.write_text(report.read_text() + "\n" + encoder_section(encoder_metrics))
    summary = {fs: {k: {"mttr_mean_s": v["mttr_mean_s"], "success_rate": v["success_rate"],
                        "mttr_mean_s_std": v.get("mttr_mean_s_std")} for k, v in r.items()}
               for fs, r in results.items()}
    summary["split"] = cfg.split
    summary["wall_s"] = time.time() - t_start
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"report: {report} ({time.time() - t_start:.0f}s in all)", flush=True)
    return results


if __name__ == "__main__":
    main()

"""Ray Tune sweep over PPO and hierarchy hyperparameters of the IFSHM recovery policy (ASHA, or PBT).

How to run
----------
::

    .venv/bin/python jobs/tune.py --config configs/tune.yaml --out results/tune                # ASHA (default)
    .venv/bin/python jobs/tune.py --config configs/tune.yaml --out results/tune --scheduler pbt
    .venv/bin/python jobs/tune.py --config configs/tune_tiny.yaml --out /tmp/tune              # smoke (~1-2 min)

On a cluster: ``ray job submit --address http://<head>:8265 -- python jobs/tune.py --config configs/tune.yaml
--out /shared/runs/tune`` (it joins the cluster through ``$RAY_ADDRESS``).

The config file has three sections:

* ``base``: a training config exactly as ``jobs/train.py`` reads it (sections env, policy, ppo, runners,
  fault_tolerance, run; see ``ifshm_ray/policy/config.py``), or the path of such a YAML file. Every trial builds
  its ``PPOConfig`` with the same builder as ``jobs/train.py`` (``ifshm_ray.policy.algo.build_ppo_config``).
* ``space``: ``"section.key": {<domain>: args}`` over any training-config field, with domains ``loguniform`` /
  ``uniform`` ([low, high]), ``choice`` (list), ``randint`` ([low, high)), ``grid`` (list). E.g. ``ppo.lr``,
  ``ppo.clip_param``, ``policy.entropy_coeff_high`` / ``policy.entropy_coeff_low`` (one per level of the hierarchy),
  ``policy.encoder_hiddens`` / ``policy.head_hiddens`` / ``policy.vf_hiddens``, ``ppo.train_batch_size``,
  ``ppo.minibatch_size``.
* ``tune``: the sweep (:class:`SweepSection`): scheduler (``asha`` | ``pbt``), samples, iterations, metric, resources.

What to expect
--------------
One line per finished trial, then the table. Outputs in ``--out``:
``results.csv`` and ``results.md`` (one row per trial: parameters, final metrics, iterations, status),
``best.json`` (best trial's parameters and metrics), ``best_config.yaml`` (its full training config:
``jobs/train.py --config OUT/best_config.yaml`` retrains it), ``best_checkpoint/`` (its RLlib checkpoint) and
``policy_bundle/`` (exported from that checkpoint: ``serve run ifshm_ray.serve:build_app checkpoint=OUT``),
``tune/`` (Tune's experiment directory). With PBT, only the continuous parameters (``loguniform`` / ``uniform``)
are mutated; the others (network sizes, batch sizes) stay as sampled, so checkpoints stay loadable.
"""
from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python jobs/tune.py` puts jobs/ (not the repo) on sys.path
    sys.path.insert(0, str(REPO_ROOT))

from ifshm_ray.policy.config import train_config_from_dict  # noqa: E402

logger = logging.getLogger("tune")

METRICS = ("episode_return_mean", "mttr_s", "success_rate", "harmful_actions", "env_steps_lifetime",
           "env_steps_per_s")
DOMAINS = ("loguniform", "uniform", "choice", "randint", "grid")


@dataclass
class SweepSection:
    scheduler: str = "asha"
    """``asha`` (asynchronous successive halving: stops weak trials early) or ``pbt`` (population based training)."""
    num_samples: int = 8
    """Trials (ASHA) or population size (PBT). With ``grid`` domains: repeats of the grid."""
    max_iterations: int = 20
    """Training iterations per trial at most (ASHA's max_t)."""
    metric: str = "episode_return_mean"
    """Result key the schedulers compare; one of ``episode_return_mean``, ``mttr_s``, ``success_rate``, ..."""
    mode: str = "max"
    """``max`` or ``min`` (``min`` for ``mttr_s``)."""
    grace_period: int = 2
    """ASHA: iterations every trial runs before it can be stopped."""
    reduction_factor: float = 3.0
    """ASHA: keep the top 1/reduction_factor at each rung."""
    perturbation_interval: int = 4
    """PBT: iterations between exploit/explore steps."""
    max_concurrent_trials: int = 2
    """Trials running at once (0: as many as the resources allow)."""
    cpus_per_trial: float = 1.0
    """CPUs of the trial process (it holds the learner); env runners add ``runners.num_cpus_per_env_runner`` each."""
    gpus_per_trial: float = 0.0
    """GPUs of the trial process (learner on GPU when ``runners.num_gpus_per_learner`` > 0)."""
    checkpoint_every: int = 1
    """Save a trial checkpoint every N iterations (PBT needs them at least every ``perturbation_interval``)."""
    seed: int = 0
    """Seed of the search (parameter sampling); each trial's training seed is ``base.run.seed``."""

    def validate(self) -> "SweepSection":
        if self.scheduler not in ("asha", "pbt"):
            raise ValueError(f"tune.scheduler must be 'asha' or 'pbt'; got {self.scheduler!r}.")
        if self.mode not in ("max", "min"):
            raise ValueError(f"tune.mode must be 'max' or 'min'; got {self.mode!r}.")
        if self.metric not in METRICS:
            raise ValueError(f"tune.metric must be one of {list(METRICS)}; got {self.metric!r}.")
        for name in ("num_samples", "max_iterations", "grace_period", "perturbation_interval", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"tune.{name} must be >= 1; got {getattr(self, name)!r}.")
        if self.grace_period > self.max_iterations:
            raise ValueError(f"tune.grace_period ({self.grace_period}) must be <= tune.max_iterations "
                             f"({self.max_iterations}).")
        if self.cpus_per_trial <= 0:
            raise ValueError(f"tune.cpus_per_trial must be > 0 (fractions allowed); got {self.cpus_per_trial}.")
        return self


@dataclass
class TuneJobConfig:
    base: dict = field(default_factory=dict)
    """The training config every trial starts from (jobs/train.py's format)."""
    space: dict = field(default_factory=dict)
    """``"section.key": {domain: args}`` (see the module docstring)."""
    tune: SweepSection = field(default_factory=SweepSection)
    """The sweep settings."""


def load_tune_config(path: str | Path) -> TuneJobConfig:
    """Reads and validates a sweep config (the base training config and the space are checked too)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist (see configs/tune*.yaml).")
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - {"base", "space", "tune"}
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {sorted(unknown)}; allowed: ['base', 'space', 'tune'].")
    base = data.get("base") or {}
    if isinstance(base, str):
        base_path = Path(base) if Path(base).is_absolute() else REPO_ROOT / base
        base = yaml.safe_load(base_path.read_text()) or {}
    sweep = data.get("tune") or {}
    allowed = {f.name for f in dataclasses.fields(SweepSection)}
    if set(sweep) - allowed:
        raise ValueError(f"{path}: unknown key(s) {sorted(set(sweep) - allowed)} in 'tune'; allowed: {sorted(allowed)}.")
    cfg = TuneJobConfig(base=base, space=data.get("space") or {}, tune=SweepSection(**sweep).validate())
    for key, spec in cfg.space.items():
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DOMAINS:
            raise ValueError(f"{path}: space[{key!r}] must be one {{domain: args}} with domain in {list(DOMAINS)}; "
                             f"got {spec!r}.")
        apply_params(base, {key: _example(spec)})  # the key must name a training-config field
    train_config_from_dict(base, source=f"{path}:base")
    return cfg


def _example(spec: dict) -> Any:
    """A value of the domain (its first argument), to check that the key names a training-config field."""
    return next(iter(spec.values()))[0]


def apply_params(base: dict, params: dict) -> dict:
    """A copy of the training config ``base`` with ``{"section.key": value}`` set; checks the result."""
    out = copy.deepcopy(base)
    for key, value in params.items():
        section, sep, name = key.partition(".")
        if not sep or not name:
            raise ValueError(f"space key {key!r} must look like 'section.key', e.g. 'ppo.lr'.")
        out.setdefault(section, {})
        if not isinstance(out[section], dict):
            raise ValueError(f"space key {key!r}: base section {section!r} is not a mapping.")
        out[section][name] = value
    train_config_from_dict(out, source="sweep parameters")
    return out


def search_space(space: dict) -> dict:
    """Tune domains from the YAML space."""
    from ray import tune

    out = {}
    for key, spec in space.items():
        domain, args = next(iter(spec.items()))
        if domain == "loguniform":
            out[key] = tune.loguniform(float(args[0]), float(args[1]))
        elif domain == "uniform":
            out[key] = tune.uniform(float(args[0]), float(args[1]))
        elif domain == "randint":
            out[key] = tune.randint(int(args[0]), int(args[1]))
        elif domain == "grid":
            out[key] = tune.grid_search(list(args))
        else:
            out[key] = tune.choice(list(args))
    return out


# ---------------------------------------------------------------------------------------------- the trial
def train_trial(config: dict, base: dict, checkpoint_every: int = 1) -> None:
    """One trial: build the PPO algorithm from ``base`` (a training config) + this trial's parameters (``config``:
    ``{"section.key": value}``), train, report every iteration, checkpoint every ``checkpoint_every``."""
    import torch
    from ray import tune

    from ifshm_ray.policy.algo import build_ppo_config
    from ifshm_ray.policy.callbacks import HARMFUL_KEY, MTTR_KEY, SUCCESS_KEY

    torch.set_num_threads(1)
    cfg = train_config_from_dict(apply_params(base, config), source="trial")
    algo = build_ppo_config(cfg).build_algo()
    start = tune.get_checkpoint()
    if start is not None:  # PBT exploit, or a restored trial
        with start.as_directory() as d:
            algo.restore_from_path(d)
    every = int(checkpoint_every)
    try:
        while True:
            t0 = time.time()
            result = algo.train()
            dt = time.time() - t0
            er = result.get("env_runners", {})
            steps = int(er.get("num_env_steps_sampled", 0))
            row = {"episode_return_mean": er.get("episode_return_mean"), "mttr_s": er.get(MTTR_KEY),
                   "success_rate": er.get(SUCCESS_KEY), "harmful_actions": er.get(HARMFUL_KEY),
                   "env_steps_lifetime": int(er.get("num_env_steps_sampled_lifetime", 0)),
                   "env_steps_per_s": steps / dt if dt > 0 else 0.0}
            # Metrics not known yet (no episode finished) are left out; the schedulers skip such results.
            row = {k: float(v) for k, v in row.items() if v is not None and math.isfinite(float(v))}
            if algo.iteration % every == 0:
                with tempfile.TemporaryDirectory(prefix="ifshm_tune_") as d:
                    algo.save_to_path(d)
                    tune.report(row, checkpoint=tune.Checkpoint.from_directory(d))
            else:
                tune.report(row)
    finally:
        algo.stop()


# ------------------------------------------------------------------------------------------------ results
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return ""
    return str(v)


def write_tables(rows: list[dict], out: Path) -> tuple[Path, Path]:
    """``results.csv`` and ``results.md`` (rows sorted as given)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    csv_path, md_path = out / "results.csv", out / "results.md"
    with csv_path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in rows]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Ray Tune sweep (ASHA or PBT) over the IFSHM policy's PPO and hierarchy "
                                            "hyperparameters. See the module docstring.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default="configs/tune.yaml", help="Sweep config (sections base, space, tune).")
    p.add_argument("--out", default="results/tune", help="Output dir: results.csv/.md, best_*, policy_bundle/.")
    p.add_argument("--scheduler", choices=("asha", "pbt"), default=None, help="Overrides tune.scheduler.")
    p.add_argument("--num-samples", type=int, default=None, help="Overrides tune.num_samples.")
    p.add_argument("--max-iterations", type=int, default=None, help="Overrides tune.max_iterations.")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="Ray cluster to join (default: $RAY_ADDRESS); unset = start a local embedded Ray "
                        "(or use the one this process already started).")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local embedded Ray (default: all).")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    # ---- config ----------------------------------------------------------------------------------------------
    job = load_tune_config(args.config)
    sw = job.tune
    if args.scheduler:
        sw.scheduler = args.scheduler
    if args.num_samples:
        sw.num_samples = args.num_samples
    if args.max_iterations:
        sw.max_iterations = args.max_iterations
    sw.validate()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    base_cfg = train_config_from_dict(job.base, source=f"{args.config}:base")

    # ---- Ray -------------------------------------------------------------------------------------------------
    import ray
    from ray import tune

    own_ray = False
    if not ray.is_initialized():
        if args.address:
            ray.init(address=args.address)
        else:
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
            ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False)
        own_ray = True
    if __name__ != "__main__":  # imported (e.g. by the tests as `tune`): workers cannot import jobs/tune.py by name
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # Trials report a metric only once an episode has finished; the schedulers skip results without it.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")

    # ---- search space, scheduler, resources -----------------------------------------------------------------
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

    space = search_space(job.space)
    if sw.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=sw.max_iterations,
                                  grace_period=sw.grace_period, reduction_factor=sw.reduction_factor)
    else:
        mutations = {k: v for k, v in space.items() if next(iter(job.space[k])) in ("loguniform", "uniform")}
        if not mutations:
            raise SystemExit("--scheduler pbt needs at least one loguniform/uniform parameter in 'space' to mutate.")
        if sw.checkpoint_every > sw.perturbation_interval:
            raise SystemExit("tune.checkpoint_every must be <= tune.perturbation_interval for PBT.")
        scheduler = PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=sw.perturbation_interval,
                                            hyperparam_mutations=mutations, require_attrs=False,
                                            synch=False)
    r = base_cfg.runners
    bundles = [{"CPU": sw.cpus_per_trial, **({"GPU": sw.gpus_per_trial} if sw.gpus_per_trial else {})}]
    bundles += [{"CPU": r.num_cpus_per_env_runner}] * r.num_env_runners
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, base=job.base, checkpoint_every=sw.checkpoint_every),
        tune.PlacementGroupFactory(bundles))
    search_alg = None
    if not any(next(iter(s)) == "grid" for s in job.space.values()):
        from ray.tune.search import BasicVariantGenerator

        search_alg = BasicVariantGenerator(random_state=sw.seed)
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(metric=sw.metric, mode=sw.mode, scheduler=scheduler, search_alg=search_alg,
                                    num_samples=sw.num_samples, max_concurrent_trials=sw.max_concurrent_trials or None),
        run_config=tune.RunConfig(
            name="sweep", storage_path=str(out / "tune"), stop={"training_iteration": sw.max_iterations},
            # PBT restores trials from other trials' (possibly older) checkpoints: keep them all.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2 if sw.scheduler == "asha" else None),
            verbose=1,
        ),
    )
    t0 = time.time()
    grid = tuner.fit()

    # ---- results table -------------------------------------------------------------------------------------
    rows = []
    for res in grid:
        m = res.metrics or {}
        row = {"trial_id": m.get("trial_id"), "status": "error" if res.error else "ok",
               "iterations": m.get("training_iteration")}
        row.update({k: res.config.get(k) for k in job.space})
        row.update({k: m.get(k) for k in METRICS})
        rows.append(row)
    sign = -1.0 if sw.mode == "max" else 1.0
    rows.sort(key=lambda r: (r[sw.metric] is None, sign * (r[sw.metric] or 0.0)))
    csv_path, md_path = write_tables(rows, out)
    print(md_path.read_text(), flush=True)

    # ---- best trial: checkpoint, config, policy bundle -----------------------------------------------------
    summary: dict = {"trials": len(rows), "errors": sum(r["status"] == "error" for r in rows),
                     "scheduler": sw.scheduler, "metric": sw.metric, "mode": sw.mode,
                     "results_csv": str(csv_path), "results_md": str(md_path), "wall_s": time.time() - t0}
    scored = [res for res in grid if not res.error and res.metrics and res.metrics.get(sw.metric) is not None
              and res.checkpoint is not None]
    if not scored:
        logger.warning("no trial reported %s with a checkpoint; no best checkpoint written (more iterations, or "
                       "shorter episodes: env.config.time_limit_s)", sw.metric)
    else:
        best = max(scored, key=lambda res: -sign * res.metrics[sw.metric])
        params = {k: best.config.get(k) for k in job.space}
        best_train = apply_params(job.base, params)
        (out / "best_config.yaml").write_text(yaml.safe_dump(best_train, sort_keys=False))
        ckpt_dir = out / "best_checkpoint"
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        with best.checkpoint.as_directory() as d:
            shutil.copytree(d, ckpt_dir)

        from ifshm_ray.policy.algo import env_config_of, make_env
        from ifshm_ray.policy.bundle import export_policy_bundle

        best_cfg = train_config_from_dict(best_train, source="best trial")
        env = make_env(best_cfg)
        bundle = export_policy_bundle(
            None, out, env=env, env_entry_point=best_cfg.env.entry_point, env_config=env_config_of(best_cfg),
            policy_kind=best_cfg.policy.kind, model_config=best_cfg.policy.rl_module_config(), checkpoint_dir=ckpt_dir,
            training={"iterations": best.metrics.get("training_iteration"), "seed": best_cfg.run.seed,
                      "config": best_cfg.to_dict(), "tune_params": params},
        )
        env.close()
        summary.update({"best_params": params, "best_metrics": {k: best.metrics.get(k) for k in METRICS},
                        "best_iterations": best.metrics.get("training_iteration"),
                        "best_checkpoint": str(ckpt_dir), "policy_bundle": str(bundle)})
    (out / "best.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"done: {len(rows)} trials in {summary['wall_s']:.0f} s; best {summary.get('best_params')} -> "
          f"{summary.get('best_checkpoint')}", flush=True)
    if own_ray:
        ray.shutdown()
    return summary


if __name__ == "__main__":
    main()

"""Ray Tune sweep over PPO and hierarchy hyperparameters of the IFSHM recovery policy (ASHA, or PBT).

How to run
----------
::

    .venv/bin/python jobs/tune.py --config configs/tune.yaml --out results/tune                # ASHA (default)
    .venv/bin/python jobs/tune.py --config configs/tune.yaml --out results/tune --scheduler pbt
    .venv/bin/python jobs/tune.py --config configs/tune_tiny.yaml --out /tmp/tune              # smoke (~1-2 min)
    .venv/bin/python jobs/tune.py --out results/tune_mttr --set tune.metric=mttr_s --set tune.mode=min   # any value

On a cluster: ``ray job submit --address http://<head>:8265 -- python jobs/tune.py --config configs/tune.yaml
--out /shared/runs/tune`` (it joins the cluster through ``$RAY_ADDRESS``).

The config file has three sections (typed and checked when loaded: :class:`ifshm_ray.policy.tune.TuneJobConfig`,
which also holds the trainable every trial runs, :func:`ifshm_ray.policy.tune.train_trial`):

* ``base``: a training config exactly as ``jobs/train.py`` reads it (sections env, policy, ppo, runners,
  fault_tolerance, run; see ``ifshm_ray/policy/config.py``), or the path of such a YAML file. Every trial builds
  its ``PPOConfig`` with the same builder as ``jobs/train.py`` (``ifshm_ray.policy.algo.build_ppo_config``).
* ``space``: ``"section.key": {<domain>: args}`` over any training-config field, with domains ``loguniform`` /
  ``uniform`` ([low, high]), ``choice`` (list), ``randint`` ([low, high)), ``grid`` (list). E.g. ``ppo.lr``,
  ``ppo.clip_param``, ``policy.entropy_coeff_high`` / ``policy.entropy_coeff_low`` (one per level of the hierarchy),
  ``policy.encoder_hiddens`` / ``policy.head_hiddens`` / ``policy.vf_hiddens``, ``ppo.train_batch_size``,
  ``ppo.minibatch_size``.
* ``tune``: the sweep (``SweepSection``): scheduler (``asha`` | ``pbt``), samples, iterations, metric, resources.

What to expect
--------------
One line per finished trial, then the table. Outputs in ``--out``:
``results.csv`` and ``results.md`` (one row per trial: parameters, final metrics, iterations, status),
``best.json`` (best trial's parameters and metrics), ``best_config.yaml`` (its full training config:
``jobs/train.py --config OUT/best_config.yaml`` retrains it), ``best_checkpoint/`` (its RLlib checkpoint) and
``policy_bundle/`` (exported from that checkpoint: ``serve run ifshm_ray.serve.app:build_app checkpoint=OUT``),
``tune/`` (Tune's experiment directory). With PBT, only the continuous parameters (``loguniform`` / ``uniform``)
are mutated; the others (network sizes, batch sizes) stay as sampled, so checkpoints stay loadable.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from ifshm_ray.config import ConfigError, add_override_arg
from ifshm_ray.policy.config import train_config_from_dict
from ifshm_ray.policy.tune import METRICS, TuneJobConfig, apply_params, search_space, train_trial

logger = logging.getLogger("tune")


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


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Ray Tune sweep (ASHA or PBT) over the IFSHM policy's PPO and hierarchy "
                                            "hyperparameters. See the module docstring.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default="configs/tune.yaml", help="Sweep config (sections base, space, tune).")
    p.add_argument("--out", default="results/tune", help="Output dir: results.csv/.md, best_*, policy_bundle/.")
    p.add_argument("--scheduler", choices=("asha", "pbt"), default=None, help="Same as --set tune.scheduler=...")
    p.add_argument("--num-samples", type=int, default=None, help="Same as --set tune.num_samples=...")
    p.add_argument("--max-iterations", type=int, default=None, help="Same as --set tune.max_iterations=...")
    add_override_arg(p)
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="Ray cluster to join (default: $RAY_ADDRESS); unset = start a local embedded Ray "
                        "(or use the one this process already started).")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local embedded Ray (default: all).")
    return p


def main(argv: list[str] | None = None) -> dict:
    parser = make_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    # ---- config: the YAML file, then --set overrides, then the shorthand flags -----------------------------
    overrides = list(args.overrides)
    for flag, key in ((args.scheduler, "scheduler"), (args.num_samples, "num_samples"),
                      (args.max_iterations, "max_iterations")):
        if flag is not None:
            overrides.append(f"tune.{key}={flag}")
    try:
        job = TuneJobConfig.load(args.config, overrides)
    except ConfigError as e:
        parser.error(str(e))  # exit 2 with the message, no traceback
    sw = job.tune
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
            ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False)
        own_ray = True
    # Trials report a metric only once an episode has finished; the schedulers skip results without it.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")

    # ---- search space, scheduler, resources -----------------------------------------------------------------
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

    space = search_space(job.space)
    if sw.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=sw.max_iterations,
                                  grace_period=sw.grace_period, reduction_factor=sw.reduction_factor)
    else:  # the config check made sure there is a continuous parameter to mutate
        mutations = {k: space[k] for k in job.mutable_keys()}
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
    if not job.has_grid():
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
            policy_kind=best_cfg.policy.kind, model_config=best_cfg.policy.rl_module_config(env_config_of(best_cfg)),
            checkpoint_dir=ckpt_dir,
            split=best_cfg.split,
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

"""Train the IFSHM hierarchical recovery policy with PPO (RLlib new API stack) on the fault-injection env.

How to run
----------
Locally (starts an embedded Ray on this machine)::

    .venv/bin/python jobs/train.py --config configs/demo.yaml --out results/demo

On a Ray cluster (joins it; the working dir is uploaded)::

    ray job submit --address http://<head>:8265 --working-dir . \
        --runtime-env-json '{"excludes": [".venv", "results", ".git"]}' \
        -- python jobs/train.py --config configs/cluster_train.yaml --out /shared/runs/ifshm

Any config value can be overridden on the command line (repeatable; the value is read as YAML)::

    .venv/bin/python jobs/train.py --config configs/demo.yaml --out results/lr --set ppo.lr=1e-3 --set run.seed=3

Continue a run (iteration count, weights, optimizer state preserved; ``run.iterations`` is the *total*)::

    .venv/bin/python jobs/train.py --config configs/demo.yaml --out results/demo --resume results/demo

What to expect
--------------
One line per iteration: mean episode return, MTTR (simulated seconds, from the env's episode-end info), success
rate, harmful actions, env-steps/s of the whole iteration (sampling + learning) and wall time. ``configs/demo.yaml``
finishes within 15 minutes on 2 cores; MTTR should fall and the success rate rise over the run.

Outputs in ``--out``:
  ``metrics.jsonl`` (one JSON line per iteration, fixed keys), ``tb/`` (TensorBoard: ``charts/*``, ``losses/*``),
  ``checkpoints/iter_NNNNNN/`` (RLlib algorithm checkpoints, the newest ``run.keep_checkpoints`` kept),
  ``policy_bundle/`` (RLModule + manifest, which records the run's split ``env.config.split``; load with
  ``ifshm_ray.policy.bundle.load_policy_bundle(out)``),
  ``config.yaml`` (the resolved config), ``summary.json`` (final metrics).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import yaml

from ifshm_ray.config import ConfigError, add_override_arg
from ifshm_ray.policy.config import TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[1]

logger = logging.getLogger("train")

CHECKPOINT_PREFIX = "iter_"


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train the IFSHM recovery policy (PPO, RLlib new API stack). See the module docstring.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", default="configs/demo.yaml",
                   help="YAML training config (sections env, policy, ppo, runners, fault_tolerance, run).")
    p.add_argument("--out", default="results/train",
                   help="Output dir: metrics.jsonl, tb/, checkpoints/, policy_bundle/, summary.json.")
    p.add_argument("--resume", default=None,
                   help="Continue from an algorithm checkpoint dir, or from a previous --out dir (its newest "
                        "checkpoint). run.iterations counts the total, including the resumed iterations.")
    p.add_argument("--seed", type=int, default=None, help="Same as --set run.seed=... (torch, numpy, RLlib, envs).")
    p.add_argument("--iterations", type=int, default=None, help="Same as --set run.iterations=...")
    p.add_argument("--max-wall-s", type=float, default=None, help="Same as --set run.max_wall_s=...")
    add_override_arg(p)
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="Ray cluster to join (default: $RAY_ADDRESS, set by `ray job submit`); "
                        "unset = start a local embedded Ray.")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="CPUs of the local embedded Ray (default: all of this machine's).")
    return p


def find_checkpoint(path: Path) -> Path:
    """An algorithm checkpoint dir, or the newest ``checkpoints/iter_*`` of an --out dir."""
    if (path / "rllib_checkpoint.json").is_file():
        return path
    ckpts = sorted((path / "checkpoints").glob(CHECKPOINT_PREFIX + "*"))
    ckpts = [c for c in ckpts if (c / "rllib_checkpoint.json").is_file()]
    if not ckpts:
        raise FileNotFoundError(f"--resume {path}: no RLlib checkpoint there nor under {path / 'checkpoints'}.")
    return ckpts[-1]


def main(argv: list[str] | None = None) -> dict:
    parser = make_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    # ---- config: the YAML file, then --set overrides, then the shorthand flags --------------------------------
    config_path = Path(args.config)
    if not config_path.is_file() and (REPO_ROOT / config_path).is_file():
        config_path = REPO_ROOT / config_path  # e.g. `--config configs/demo.yaml` from another directory
    overrides = list(args.overrides)
    for flag, key in ((args.seed, "seed"), (args.iterations, "iterations"), (args.max_wall_s, "max_wall_s")):
        if flag is not None:
            overrides.append(f"run.{key}={flag}")
    try:
        cfg = TrainConfig.load(config_path, overrides)
    except ConfigError as e:  # the file, the key, its value and what is allowed
        parser.error(str(e))  # exit 2 with the message, no traceback
    try:  # the LLM state must know the run's split: an encoder of another split knows some held-out types
        from ifshm_ray.encoding.rl_state import check_semantic_split

        check_semantic_split(cfg.policy.encoder_checkpoint, cfg.policy.semantic_table, cfg.split)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    out = Path(args.out).resolve()
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)

    # ---- seeding -------------------------------------------------------------------------------------------
    import torch

    random.seed(cfg.run.seed)
    np.random.seed(cfg.run.seed)
    torch.manual_seed(cfg.run.seed)
    prev_threads = torch.get_num_threads()
    if cfg.runners.torch_threads > 0:  # the learner (num_learners=0) and the local env runner live in this process
        torch.set_num_threads(cfg.runners.torch_threads)

    # ---- Ray: join a cluster (ray job submit sets RAY_ADDRESS) or start a local one ---------------------
    import ray

    owns_ray = not ray.is_initialized()  # False: main() called in-process with Ray already up (tests, notebooks)
    if owns_ray and args.address:
        ray.init(address=args.address)
    elif owns_ray:  # env runners import ifshm_ray from the installed package (pip install -e .)
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False)
    logger.info("Ray resources: %s", ray.cluster_resources())

    semantic_meta = None
    if cfg.policy.encoder_checkpoint and not cfg.policy.semantic_table:
        # PPO with the LLM state: embed every log template / alarm text once (the LM never runs in the loop), in
        # the encoder actor pool (an actor process: this driver's seeded RNG streams stay untouched)
        from ifshm_ray.encoding.rl_state import build_table
        from ifshm_ray.policy.algo import env_config_of as _env_config_of

        print(f"embedding the simulator's log templates and alarm texts with {cfg.policy.encoder_checkpoint} ...",
              flush=True)
        cfg.policy.semantic_table = str(build_table(cfg.policy.encoder_checkpoint, _env_config_of(cfg), out))
    if cfg.policy.semantic_table:
        from ifshm_ray.encoding.rl_state import load_table

        semantic_meta = load_table(cfg.policy.semantic_table)["meta"]
        print(f"LLM semantic state: {semantic_meta['items']} items from {semantic_meta['encoder']} "
              f"({semantic_meta['lm_passes']} LM passes, {semantic_meta['build_s']} s)", flush=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    from ifshm_ray.policy.algo import build_ppo_config, env_config_of, make_env
    from ifshm_ray.policy.bundle import export_policy_bundle
    from ifshm_ray.policy.callbacks import HARMFUL_KEY, MTTR_KEY, SUCCESS_KEY

    # ---- the shared replay actor (issue 15), before the algorithm: env runners and learners find it by name ----
    replay_actor = None
    resume_ckpt = find_checkpoint(Path(args.resume).resolve()) if args.resume else None
    if cfg.replay.enabled:
        replay_actor = start_replay_actor(cfg, out, resume_ckpt)

    # ---- algorithm ----------------------------------------------------------------------------------------
    algo = build_ppo_config(cfg).build_algo()
    if resume_ckpt is not None:
        algo.restore_from_path(str(resume_ckpt))
        logger.info("Resumed from %s at iteration %d", resume_ckpt, algo.iteration)
    meta = start_meta_controller(cfg, algo, resume_ckpt) if cfg.meta.enabled else None

    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(out / "tb"))
    metrics_fh = (out / "metrics.jsonl").open("a" if args.resume else "w")

    def save_checkpoint() -> Path:
        path = out / "checkpoints" / f"{CHECKPOINT_PREFIX}{algo.iteration:06d}"
        algo.save_to_path(str(path))
        if replay_actor is not None:  # the replay's state goes with every checkpoint (and state_dir/LATEST to it)
            ray.get(replay_actor.save.remote(str(path)))
        if meta is not None:
            meta.save(path)
        old = sorted((out / "checkpoints").glob(CHECKPOINT_PREFIX + "*"))[: -cfg.run.keep_checkpoints]
        for p in old:
            shutil.rmtree(p, ignore_errors=True)
        return path

    # ---- training loop ------------------------------------------------------------------------------------
    t_start = time.time()
    row: dict = {}
    last_ckpt: Path | None = None
    while algo.iteration < cfg.run.iterations and time.time() - t_start < cfg.run.max_wall_s:
        t0 = time.time()
        result = algo.train()
        dt = time.time() - t0
        er = result.get("env_runners", {})
        lrn = result.get("learners", {}).get("default_policy", {})
        steps = int(er.get("num_env_steps_sampled", 0))
        row = {
            "iteration": algo.iteration,
            "env_steps": steps,
            "env_steps_lifetime": int(er.get("num_env_steps_sampled_lifetime", 0)),
            "env_steps_per_s": steps / dt if dt > 0 else 0.0,
            "iteration_wall_s": dt,
            "wall_s": time.time() - t_start,
            "episode_return_mean": er.get("episode_return_mean"),
            "episode_len_mean": er.get("episode_len_mean"),
            "mttr_s": er.get(MTTR_KEY),
            "success_rate": er.get(SUCCESS_KEY),
            "harmful_actions": er.get(HARMFUL_KEY),
            "num_healthy_env_runners": result.get("num_healthy_workers",
                                                  algo.env_runner_group.num_healthy_remote_workers()),
            "policy_loss": lrn.get("policy_loss"),
            "vf_loss": lrn.get("vf_loss"),
            "entropy_high": lrn.get("entropy_high"),
            "entropy_low": lrn.get("entropy_low"),
            "total_loss": lrn.get("total_loss"),
            "mean_kl": lrn.get("mean_kl_loss"),
            "vf_explained_var": lrn.get("vf_explained_var"),
        }
        if replay_actor is not None:
            rep = result.get("ifshm_replay", {})
            row.update({
                "replay_env_steps": rep.get("stats", {}).get("num_steps"),
                "replay_pushed_episodes": er.get("ifshm/replay_pushed_episodes"),
                "sil_loss": lrn.get("loss/sil"),
                "sil_num_valid": lrn.get("sil_num_valid"),
                **({"sil_num_clipped": lrn.get("sil_num_clipped")} if cfg.replay.sil.clip_ratio is not None else {}),
                **({"clone_loss": lrn.get("loss/clone"), "clone_policy_loss": lrn.get("clone_policy_loss"),
                    "clone_value_loss": lrn.get("clone_value_loss"),
                    "clone_num_policy": lrn.get("clone_num_policy")} if cfg.replay.clone.enabled else {}),
                "sil_priorities_written": result.get("learners", {}).get("__all_modules__", {})
                .get("sil_priorities_written"),
                "level_weights": rep.get("level_weights"),
            })
        row = {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in row.items()}
        metrics_fh.write(json.dumps(row) + "\n")
        metrics_fh.flush()
        for key in ("episode_return_mean", "mttr_s", "success_rate", "harmful_actions", "env_steps_per_s"):
            if row[key] is not None:
                writer.add_scalar(f"charts/{key}", row[key], algo.iteration)
        for key in ("policy_loss", "vf_loss", "entropy_high", "entropy_low", "total_loss", "mean_kl",
                    "vf_explained_var"):
            if row[key] is not None:
                writer.add_scalar(f"losses/{key}", row[key], algo.iteration)

        def fmt(v, spec):
            return "n/a" if v is None else format(v, spec)

        print(
            f"iter {algo.iteration:4d}/{cfg.run.iterations} | return {fmt(row['episode_return_mean'], '7.2f')} | "
            f"MTTR {fmt(row['mttr_s'], '6.1f')} s | success {fmt(row['success_rate'], '5.2f')} | "
            f"harmful {fmt(row['harmful_actions'], '4.2f')} | {row['env_steps_per_s']:6.0f} env-steps/s | "
            f"{row['env_steps_lifetime']} steps | {row['wall_s']:6.1f} s",
            flush=True,
        )
        if algo.iteration % cfg.run.checkpoint_every == 0:
            last_ckpt = save_checkpoint()

    # ---- final checkpoint and policy bundle ---------------------------------------------------------------
    if last_ckpt is None or last_ckpt.name != f"{CHECKPOINT_PREFIX}{algo.iteration:06d}":
        last_ckpt = save_checkpoint()
    env = make_env(cfg)
    bundle = export_policy_bundle(
        algo,
        out,
        env=env,
        env_entry_point=cfg.env.entry_point,
        env_config=env_config_of(cfg),
        policy_kind=cfg.policy.kind,
        model_config=cfg.policy.rl_module_config(env_config_of(cfg)),
        checkpoint_dir=last_ckpt,
        encoder=semantic_meta,
        split=cfg.split,
        training={"iterations": algo.iteration, "env_steps": row.get("env_steps_lifetime"), "seed": cfg.run.seed,
                  "config": cfg.to_dict()},
    )
    env.close()
    if meta is not None:  # Serve's /v1/heal gate reads it from the bundle
        meta.save(bundle)
    summary = {**row, "checkpoint": str(last_ckpt), "policy_bundle": str(bundle), "total_wall_s": time.time() - t_start}
    if semantic_meta is not None:
        summary["semantic_cache"] = semantic_cache_stats(algo, semantic_meta)
        print(f"LLM semantic state cache: {summary['semantic_cache']}", flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"done: {algo.iteration} iterations, checkpoint {last_ckpt}, policy bundle {bundle}", flush=True)

    writer.close()
    metrics_fh.close()
    algo.stop()
    if replay_actor is not None:  # its state is in the last checkpoint; a later --resume reloads it
        summary["replay"] = ray.get(replay_actor.stats.remote())
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        ray.kill(replay_actor, no_restart=True)
    if owns_ray:
        ray.shutdown()
    torch.set_num_threads(prev_threads)
    return summary


def start_meta_controller(cfg: TrainConfig, algo, resume_ckpt: Path | None):
    """The meta-controller of this run: from the checkpoint when resuming (if it holds one), else new with the
    configured novelty calibration; attached to the algorithm's replay callback."""
    from ifshm_ray.meta.controller import STATE_FILE, MetaController
    from ifshm_ray.meta.novelty import NoveltyCalibration
    from ifshm_ray.policy.replay import attach_meta

    if resume_ckpt is not None and (resume_ckpt / STATE_FILE).is_file():
        meta = MetaController.load(resume_ckpt)
        logger.info("meta-controller state restored from %s", resume_ckpt)
    else:
        cal = NoveltyCalibration.load(cfg.meta.calibration) if cfg.meta.calibration else None
        meta = MetaController(cfg.meta, cal)
    attach_meta(algo, meta)
    return meta


def scenario_levels(cfg: TrainConfig, sim) -> list[str] | None:
    """The level sampler's levels: the fault types ``sim`` draws that are known (in its split, or in
    ``replay.known_types`` when given); scenario replay re-creates known types only (rehearsal), never the
    held-out ones. None without scenario replay."""
    if not cfg.replay.scenario_replay:
        return None
    known = set(cfg.replay.known_types if cfg.replay.known_types is not None
                else sim.catalog.known_in(sim.cfg.split or sim.catalog.default_split))
    return [f for f in sim.fault_names if f in known]


def start_replay_actor(cfg: TrainConfig, out: Path, resume_ckpt: Path | None):
    """The named replay actor (``replay.buffer.actor_name``), restartable: it records every save in
    ``out/replay/LATEST`` and a restarted actor reloads that. Resuming: the checkpoint's replay state is loaded.
    Scenario replay: its level sampler runs over the env's fault types that are known in its split (or in
    ``replay.known_types`` when given)."""
    import ray

    from ifshm_ray.policy.algo import make_env
    from ifshm_ray.replay.actor import STATE_FILE, get_or_create_replay_actor
    from ifshm_ray.policy.replay import simulators

    env = make_env(cfg)
    sim = simulators(env)[0][0]
    levels = scenario_levels(cfg, sim)
    known = set(cfg.replay.known_types if cfg.replay.known_types is not None
                else sim.catalog.known_in(sim.cfg.split or sim.catalog.default_split))
    known = [f for f in sim.fault_names if f in known]
    env.close()
    actor = get_or_create_replay_actor(cfg.replay.buffer, state_dir=str(out / "replay"), levels=levels,
                                       level_config=cfg.replay.level_sampler)
    if resume_ckpt is not None and (resume_ckpt / STATE_FILE).is_file():
        ray.get(actor.load.remote(str(resume_ckpt)))
        logger.info("replay state restored from %s", resume_ckpt)
    elif cfg.replay.demonstrations.enabled:  # a resumed run has them in its restored state already
        store_demonstrations(cfg, actor, known, out)
    logger.info("replay actor %s: %s", cfg.replay.buffer.actor_name, ray.get(actor.stats.remote()))
    return actor


def store_demonstrations(cfg: TrainConfig, actor, known: list[str], out: Path) -> dict:
    """Record ``replay.demonstrations`` on the env's known types and push them into their stratum of the replay
    actor (before the algorithm exists: the first update can sample them); their summary goes to
    ``out/demonstrations.json``."""
    import ray

    from ifshm_ray.policy.algo import env_config_of
    from ifshm_ray.replay.demonstrations import record_demonstrations

    demo = cfg.replay.demonstrations
    print(f"demonstrations: {demo.incidents_per_type} incidents per known type ({len(known)} types) by "
          f"{demo.policy} ...", flush=True)
    episodes, summary = record_demonstrations(demo, env_config_of(cfg), known, cfg.run.seed,
                                              progress=lambda m: print(m, flush=True))
    if not episodes:
        raise RuntimeError(f"demonstrations: {demo.policy} healed none of the {summary['per_type']} incidents; "
                           "nothing to store (set replay.demonstrations.healed_only: false to keep failed ones)")
    ray.get(actor.push_many.remote([(demo.stratum, episodes)], source=0))
    if cfg.replay.buffer.deterministic:
        ray.get(actor.flush.remote())
    summary["stored_steps"] = ray.get(actor.stats.remote()).get("strata", {}).get(demo.stratum)
    (out / "demonstrations.json").write_text(json.dumps(summary, indent=2))
    print(f"demonstrations: {summary['episodes']} episodes ({summary['steps']} steps) in stratum "
          f"{demo.stratum!r}", flush=True)
    return summary


def semantic_cache_stats(algo, meta: dict) -> dict:
    """Item-embedding lookups made by the env runners' policies while sampling vs LM passes (table build)."""
    def counts(runner):
        block = getattr(getattr(runner, "module", None), "_semantic", None)
        return (block.windows, block.lookups) if block is not None else (0, 0)

    try:
        got = algo.env_runner_group.foreach_env_runner(counts, local_env_runner=True)
    except Exception as exc:  # noqa: BLE001 - statistics only; never fail a finished training run for them
        logger.warning("could not read the semantic lookup counters: %s", exc)
        got = []
    windows, lookups = sum(g[0] for g in got), sum(g[1] for g in got)
    passes = int(meta["lm_passes"])
    return {"lm_passes": passes, "windows": windows, "item_lookups": lookups,
            "items_per_window": round(lookups / windows, 2) if windows else None,
            "hit_rate": round(1.0 - passes / (lookups + passes), 6) if lookups else None}


if __name__ == "__main__":
    main()

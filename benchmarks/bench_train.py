"""Training throughput of the tuned PPO configuration vs RLlib's PPO defaults on the same env; ONE JSON line.

How to run::

    .venv/bin/python benchmarks/bench_train.py                     # ~6 min on 2 cores (2 x 150 s + start-up;
                                                                   # a default iteration is indivisible, ~40-60 s)
    .venv/bin/python benchmarks/bench_train.py --budget-s 60       # quicker, noisier

What it measures, in one process and one local Ray (2 CPUs), one after the other, each for the same wall-clock
training budget (``--budget-s`` of ``algo.train()`` time; building the algorithm is not counted):

* ``default``: ``PPOConfig()`` defaults (2 env runners x 1 env, gymnasium sync vectorisation, train batch 4000,
  minibatch 128, 30 epochs, lr 5e-5) with only what the problem needs set: the env
  (``ifshm_ray.env:FaultInjectionEnv``), the hierarchical RLModule (its default sizes), the IFSHM learner and the
  metrics callback.
* ``tuned``: ``configs/demo.yaml`` (``--config``): no remote env runner (sampling in the driver, no weight sync),
  32 envs in one batched simulator (``make_vector_env``), batch 2048, minibatch 512, 4 epochs, small MLP,
  ``torch.set_num_threads(1)`` (with 2 threads on a busy 2-core box every tiny matmul waits on a spinning OpenMP
  thread: ~70x slower forward passes measured). By default the default run also gets 1 torch thread, so ``ratio``
  isolates the RLlib knobs; ``--default-torch-threads 0`` keeps torch's own default for it (measured here on a busy
  box: 6.3 env-steps/s, one 4000-step iteration in ~630 s).

Both use the same simulator and the same observation (``render_telemetry: false``: the policy reads only the numeric
observation; the raw telemetry text is not needed for training).

Output keys: ``tuned_env_steps_per_s``, ``default_env_steps_per_s``, ``ratio`` (tuned / default; target >= 3),
``tuned_mttr_s`` / ``default_mttr_s`` (mean MTTR of the last 100 training episodes when the budget ran out; None if
no episode ended), ``*_success_rate``, ``*_iterations``, ``*_env_steps``, ``budget_s``, ``torch_threads``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_for(algo, budget_s: float) -> dict:
    """Calls ``algo.train()`` until ``budget_s`` seconds of training wall time have passed (at least once)."""
    from ifshm_ray.policy.callbacks import MTTR_KEY, SUCCESS_KEY

    wall = 0.0
    steps = 0
    iters = 0
    result: dict = {}
    while wall < budget_s or iters == 0:
        t0 = time.perf_counter()
        result = algo.train()
        wall += time.perf_counter() - t0
        steps += int(result["env_runners"].get("num_env_steps_sampled", 0))
        iters += 1
    er = result.get("env_runners", {})
    return {
        "env_steps_per_s": steps / wall,
        "env_steps": steps,
        "iterations": iters,
        "train_wall_s": wall,
        "mttr_s": er.get(MTTR_KEY),
        "success_rate": er.get(SUCCESS_KEY),
    }


def default_config(seed: int):
    """RLlib's PPO defaults + only what this problem requires (env, module, learner, callback)."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from ifshm_ray.env import FaultInjectionEnv
    from ifshm_ray.policy.callbacks import HealingMetricsCallback
    from ifshm_ray.policy.learner import IFSHMPPOTorchLearner
    from ifshm_ray.policy.module import HierarchicalRecoveryModule

    return (
        PPOConfig()
        .environment(env=FaultInjectionEnv,
                     env_config={"faults": "known", "render_telemetry": False, "seed": seed})
        .rl_module(rl_module_spec=RLModuleSpec(module_class=HierarchicalRecoveryModule))
        .learners(learner_class=IFSHMPPOTorchLearner,
                  learner_config_dict={"entropy_coeff_high": 0.01, "entropy_coeff_low": 0.01})
        .callbacks(HealingMetricsCallback)
        .debugging(seed=seed, log_level="ERROR")
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description="Tuned vs default PPO training throughput (prints one JSON line).")
    p.add_argument("--config", default=str(REPO_ROOT / "configs" / "demo.yaml"), help="The tuned training config.")
    p.add_argument("--budget-s", type=float, default=150.0, help="Training wall seconds per configuration.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--default-torch-threads", type=int, default=1,
                   help="torch threads during the default run. 1 (default): both runs use 1 thread, so the ratio "
                        "measures the RLlib knobs only. 0: torch's own default (2 here); on a busy 2-core box one "
                        "default iteration (4000 steps, 30 epochs x 31 minibatches) then takes minutes.")
    args = p.parse_args(argv)

    import ray
    import torch

    from ifshm_ray.policy.algo import build_ppo_config
    from ifshm_ray.policy.config import load_train_config

    default_threads = args.default_torch_threads or torch.get_num_threads()
    torch.set_num_threads(default_threads)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # RLlib defaults first.
        algo = default_config(args.seed).build_algo()
        default = run_for(algo, args.budget_s)
        algo.stop()

        cfg = load_train_config(args.config)
        cfg.run.seed = args.seed
        if cfg.runners.torch_threads > 0:
            torch.set_num_threads(cfg.runners.torch_threads)
        algo = build_ppo_config(cfg).build_algo()
        tuned = run_for(algo, args.budget_s)
        algo.stop()
    finally:
        ray.shutdown()

    out = {
        "bench": "train",
        "tuned_env_steps_per_s": round(tuned["env_steps_per_s"], 1),
        "default_env_steps_per_s": round(default["env_steps_per_s"], 1),
        "ratio": round(tuned["env_steps_per_s"] / default["env_steps_per_s"], 2),
        "tuned_mttr_s": tuned["mttr_s"],
        "default_mttr_s": default["mttr_s"],
        "tuned_success_rate": tuned["success_rate"],
        "default_success_rate": default["success_rate"],
        "tuned_iterations": tuned["iterations"],
        "default_iterations": default["iterations"],
        "tuned_env_steps": tuned["env_steps"],
        "default_env_steps": default["env_steps"],
        "budget_s": args.budget_s,
        "torch_threads": {"default": default_threads, "tuned": cfg.runners.torch_threads or default_threads},
        "tuned_config": str(args.config),
    }
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()

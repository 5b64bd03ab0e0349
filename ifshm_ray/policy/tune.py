"""Ray Tune sweeps of the recovery policy: the sweep's configuration and the trainable every trial runs.

``jobs/tune.py`` is the job (scheduler, resources, results table, best trial); this module holds what Tune's trial
processes import: :func:`train_trial` (imported by reference from the installed package, so Ray workers need no
copy of the job script) and the typed sweep config it reads.

A sweep config (``configs/tune*.yaml``) has three sections:

* ``base``: a training config exactly as ``jobs/train.py`` reads it (sections env, policy, ppo, runners,
  fault_tolerance, run; see :mod:`ifshm_ray.policy.config`), or the path of such a YAML file;
* ``space``: ``"section.key": {<domain>: args}`` over any training-config field, with the domains of
  :data:`DOMAINS`: ``loguniform`` / ``uniform`` ([low, high]), ``choice`` (list), ``randint`` ([low, high)),
  ``grid`` (list);
* ``tune``: the sweep itself (:class:`SweepSection`).
"""
from __future__ import annotations

import copy
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from ifshm_ray.config import ConfigError, ConfigModel, read_yaml
from ifshm_ray.policy.config import train_config_from_dict

Metric = Literal["episode_return_mean", "mttr_s", "success_rate", "harmful_actions", "env_steps_lifetime",
                 "env_steps_per_s"]
METRICS: tuple[str, ...] = get_args(Metric)
"""What every trial reports each iteration (the keys of the results table)."""
Domain = Literal["loguniform", "uniform", "choice", "randint", "grid"]
DOMAINS: tuple[str, ...] = get_args(Domain)
"""Search-space domains; ``loguniform`` and ``uniform`` are the continuous ones (PBT mutates only those)."""
CONTINUOUS = ("loguniform", "uniform")

_REPO_ROOT = Path(__file__).resolve().parents[2]


class SweepSection(ConfigModel):
    """The sweep: scheduler, budget, the metric it optimises and each trial's resources."""

    scheduler: Literal["asha", "pbt"] = "asha"
    """``asha`` (asynchronous successive halving: stops weak trials early) or ``pbt`` (population based training)."""
    num_samples: int = Field(8, ge=1)
    """Trials (ASHA) or population size (PBT). With ``grid`` domains: repeats of the grid."""
    max_iterations: int = Field(20, ge=1)
    """Training iterations per trial at most (ASHA's max_t)."""
    metric: Metric = "episode_return_mean"
    """Result key the schedulers compare; one of ``episode_return_mean``, ``mttr_s``, ``success_rate``, ..."""
    mode: Literal["max", "min"] = "max"
    """``max`` or ``min`` (``min`` for ``mttr_s``)."""
    grace_period: int = Field(2, ge=1)
    """ASHA: iterations every trial runs before it can be stopped."""
    reduction_factor: float = Field(3.0, gt=1.0)
    """ASHA: keep the top 1/reduction_factor at each rung."""
    perturbation_interval: int = Field(4, ge=1)
    """PBT: iterations between exploit/explore steps."""
    max_concurrent_trials: int = Field(2, ge=0)
    """Trials running at once (0: as many as the resources allow)."""
    cpus_per_trial: float = Field(1.0, gt=0.0)
    """CPUs of the trial process (it holds the learner); env runners add ``runners.num_cpus_per_env_runner`` each."""
    gpus_per_trial: float = Field(0.0, ge=0.0)
    """GPUs of the trial process (learner on GPU when ``runners.num_gpus_per_learner`` > 0)."""
    checkpoint_every: int = Field(1, ge=1)
    """Save a trial checkpoint every N iterations (PBT needs them at least every ``perturbation_interval``)."""
    seed: int = 0
    """Seed of the search (parameter sampling); each trial's training seed is ``base.run.seed``."""

    @model_validator(mode="after")
    def _consistent(self) -> "SweepSection":
        if self.grace_period > self.max_iterations:
            raise ValueError(f"grace_period ({self.grace_period}) must be <= max_iterations ({self.max_iterations})")
        if self.scheduler == "pbt" and self.checkpoint_every > self.perturbation_interval:
            raise ValueError(f"with scheduler pbt, checkpoint_every ({self.checkpoint_every}) must be <= "
                             f"perturbation_interval ({self.perturbation_interval})")
        return self


class TuneJobConfig(ConfigModel):
    """A sweep: the training config every trial starts from, the space over its fields, and the sweep settings."""

    base: dict = Field(default_factory=dict)
    """The training config every trial starts from (``jobs/train.py``'s format), or the path of such a YAML file
    (as given, else relative to the repository root); always a mapping once loaded."""
    space: dict[str, dict[Domain, list]] = Field(default_factory=dict)
    """``"section.key": {domain: args}``: ``loguniform`` / ``uniform`` ([low, high]), ``choice`` (list of values),
    ``randint`` ([low, high)), ``grid`` (list of values). Each key must name a training-config field."""
    tune: SweepSection = Field(default_factory=SweepSection)
    """The sweep settings."""

    @field_validator("base", mode="before")
    @classmethod
    def _read_base(cls, value: Any) -> Any:
        if isinstance(value, str):
            path = Path(value) if Path(value).is_file() else _REPO_ROOT / value
            return read_yaml(path, "base training config")
        return {} if value is None else value

    @field_validator("space")
    @classmethod
    def _one_domain_each(cls, space: dict) -> dict:
        for key, spec in space.items():
            if len(spec) != 1:
                raise ValueError(f"space[{key!r}] must be one {{domain: args}}, got {len(spec)} domains")
            domain, args = next(iter(spec.items()))
            if not args:
                raise ValueError(f"space[{key!r}]: {domain} needs a non-empty list")
            if domain in (*CONTINUOUS, "randint") and not (
                    len(args) == 2 and all(isinstance(a, (int, float)) for a in args) and args[0] < args[1]):
                raise ValueError(f"space[{key!r}]: {domain} takes [low, high] with low < high, got {args}")
        return space

    @model_validator(mode="after")
    def _space_fits_base(self) -> "TuneJobConfig":
        train_config_from_dict(self.base, source="base")
        for key, spec in self.space.items():
            try:  # the key names a training-config field, and the domain's first value is valid there
                apply_params(self.base, {key: next(iter(spec.values()))[0]})
            except ValueError as e:
                raise ValueError(f"space[{key!r}]: {e}") from None
        if self.tune.scheduler == "pbt" and not self.mutable_keys():
            raise ValueError("scheduler pbt needs at least one loguniform/uniform parameter in space to mutate")
        return self

    def mutable_keys(self) -> list[str]:
        """The continuous parameters (``loguniform`` / ``uniform``): the ones PBT perturbs."""
        return [k for k, spec in self.space.items() if next(iter(spec)) in CONTINUOUS]

    def has_grid(self) -> bool:
        return any(next(iter(spec)) == "grid" for spec in self.space.values())


def apply_params(base: dict, params: dict) -> dict:
    """A copy of the training config ``base`` with ``{"section.key": value}`` set; checks the result."""
    out = copy.deepcopy(base)
    for key, value in params.items():
        section, sep, name = key.partition(".")
        if not sep or not name:
            raise ConfigError(f"space key {key!r} must look like 'section.key', e.g. 'ppo.lr'")
        out.setdefault(section, {})
        if not isinstance(out[section], dict):
            raise ConfigError(f"space key {key!r}: base section {section!r} is not a mapping")
        out[section][name] = value
    train_config_from_dict(out, source="sweep parameters")
    return out


def search_space(space: dict) -> dict:
    """Tune domains from the config's ``space``."""
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
def trial_metrics(result: dict, iteration_s: float) -> dict[str, float]:
    """The :data:`METRICS` of one ``algo.train()`` result; metrics not known yet (no episode finished) are left out
    (the schedulers skip such results)."""
    from ifshm_ray.policy.callbacks import HARMFUL_KEY, MTTR_KEY, SUCCESS_KEY

    er = result.get("env_runners", {})
    steps = int(er.get("num_env_steps_sampled", 0))
    row = {"episode_return_mean": er.get("episode_return_mean"), "mttr_s": er.get(MTTR_KEY),
           "success_rate": er.get(SUCCESS_KEY), "harmful_actions": er.get(HARMFUL_KEY),
           "env_steps_lifetime": int(er.get("num_env_steps_sampled_lifetime", 0)),
           "env_steps_per_s": steps / iteration_s if iteration_s > 0 else 0.0}
    return {k: float(v) for k, v in row.items() if v is not None and math.isfinite(float(v))}


def train_trial(config: dict, base: dict, checkpoint_every: int = 1) -> None:
    """One trial (a Tune function trainable): build the PPO algorithm from ``base`` (a training config) + this
    trial's parameters (``config``: ``{"section.key": value}``), train, report every iteration, checkpoint every
    ``checkpoint_every``; resumes from Tune's checkpoint (PBT exploit, or a restored trial)."""
    import torch
    from ray import tune

    from ifshm_ray.policy.algo import build_ppo_config

    torch.set_num_threads(1)
    cfg = train_config_from_dict(apply_params(base, config), source="trial")
    algo = build_ppo_config(cfg).build_algo()
    start = tune.get_checkpoint()
    if start is not None:
        with start.as_directory() as d:
            algo.restore_from_path(d)
    try:
        while True:
            t0 = time.time()
            result = algo.train()
            row = trial_metrics(result, time.time() - t0)
            if algo.iteration % int(checkpoint_every) == 0:
                with tempfile.TemporaryDirectory(prefix="ifshm_tune_") as d:
                    algo.save_to_path(d)
                    tune.report(row, checkpoint=tune.Checkpoint.from_directory(d))
            else:
                tune.report(row)
    finally:
        algo.stop()

"""Run a policy on the simulator for a set of faults and summarise MTTR, time to mitigate, detection, repair,
success, escalations, time-outs, harm and false actions.

Episode seeds depend only on (seed, fault, episode index), so every policy meets exactly the same incidents.
Fault sets (:func:`make_jobs`): ``known`` / ``unknown`` / ``all`` of the split, fault names, ``compound`` (two faults
at once: every fault type of the catalog, known and unknown in the split, paired with a partner drawn from the
episode seed) and ``fault_free`` (episodes forced with the pseudo fault :data:`~ifshm_ray.sim.catalog.FAULT_FREE`:
no fault, benign noise and false alarms only; as many episodes as the known set has).
"""
from __future__ import annotations

import logging
import math
import time
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from ifshm_ray.baselines import BASELINES, make_baseline
from ifshm_ray.baselines.policies import Policy, runbook_sha256
from ifshm_ray.config import SimConfig, to_dict
from ifshm_ray.env import FaultInjectionEnv
from ifshm_ray.eval.config import StatsConfig
from ifshm_ray.eval.stats import bootstrap_mean_ci
from ifshm_ray.sim.catalog import FAULT_FREE, Catalog, load_catalog

FAULT_SETS = ("known", "unknown", "all", "compound", "fault_free")
"""Named fault sets of :func:`make_jobs` (besides a list of fault names)."""

Fault = str | tuple[str, ...]
"""One episode's forced fault: a name, :data:`FAULT_FREE`, or a tuple of names (a compound incident)."""

log = logging.getLogger(__name__)


def episode_seed(seed: int, fault: str, i: int) -> int:
    return (seed * 1_000_003 + zlib.crc32(fault.encode()) * 7919 + i) % (2**31 - 1)


def fault_label(fault: Fault) -> str:
    """A record's ``fault``: the name, ``none`` for a fault-free episode, ``a+b`` for a compound incident."""
    return fault if isinstance(fault, str) else "+".join(fault)


def make_jobs(fault_set: str | list[str], catalog: Catalog, split: str, episodes: int, seed: int
              ) -> list[tuple[Fault, int]]:
    """The episodes ``[(fault, seed), ...]`` of a fault set (see the module docstring) for ``split``."""
    if fault_set == "compound":
        pool = catalog.known_in(split) + catalog.unknown_in(split)
        pool = [n for n in catalog.names if n in set(pool)]
        if len(pool) < 2:
            raise ValueError("the compound set needs at least two fault types")
        jobs = []
        for f in pool:
            others = [g for g in pool if g != f]
            for i in range(episodes):
                s = episode_seed(seed, "compound:" + f, i)
                jobs.append(((f, others[zlib.crc32(f"{s}".encode()) % len(others)]), s))
        return jobs
    if fault_set == "fault_free":
        n = episodes * len(catalog.known_in(split))
        return [(FAULT_FREE, episode_seed(seed, FAULT_FREE, i)) for i in range(n)]
    names = catalog.select(fault_set, split=split)
    return [(f, episode_seed(seed, f, i)) for f in names for i in range(episodes)]


def make_policy(spec: str, seed: int = 0, env: FaultInjectionEnv | None = None) -> Policy:
    """``oracle | runbook | runbook-full | runbook-instant | nearest-known | escalate-first | random |
    checkpoint:PATH``; the baselines use ``env``'s simulator config (its split: the blind runbooks and nearest-known
    know only its known fault types). A checkpoint must fit ``env``'s action space (topology) and observation size,
    otherwise a clear error says so. ``gated:PATH``: the checkpoint behind the meta-controller's gate
    (:mod:`ifshm_ray.eval.gated`)."""
    if spec.startswith("gated:"):
        from ifshm_ray.eval.gated import make_gated_policy

        path = spec.split(":", 1)[1]
        return make_gated_policy(make_policy("checkpoint:" + path, seed, env), path, env)
    if spec.startswith("checkpoint:"):
        from ifshm_ray.policy.bundle import PolicyBundleError, action_space_hash_of_env, load_policy_bundle

        path = spec.split(":", 1)[1]
        expected = action_space_hash_of_env(env) if env is not None else None
        bundle = load_policy_bundle(path, expected_action_space_hash=expected)
        if env is not None:
            want = env.observation_space["obs"].shape
            have = getattr(bundle.module.observation_space, "spaces", {}).get("obs")
            if have is not None and have.shape != want:
                raise PolicyBundleError(f"{path}: policy observation size {have.shape} != env's {want}: it was "
                                        "trained with another simulator config, catalog or observation version (bundles from "
                                        "before observation v2, which dropped the hidden healthy streak, must be "
                                        "retrained with jobs/train.py); evaluate with the same")
        return _BundlePolicy(bundle, spec)
    if spec in BASELINES:
        return make_baseline(spec, seed, env.sim_cfg if env is not None else None)
    raise ValueError(f"unknown policy {spec!r}; valid: {list(BASELINES)}, checkpoint:PATH or gated:PATH")


class _BundlePolicy(Policy):
    def __init__(self, bundle, name: str):
        self.bundle, self.name = bundle, name

    def act(self, obs, info, env):
        return np.asarray(self.bundle.act(obs, deterministic=True), np.int64)


def run_episode(env: FaultInjectionEnv, policy: Policy, fault: Fault, seed: int) -> dict:
    """One episode; its record. ``mitigate_s`` (time to mitigate): from injection to the start of the first of
    ``healthy_steps`` consecutive windows whose reported metrics hold every SLO (the observation's SLO-green feature)
    after the SLOs first broke (the window start, as MTTR counts from the end of the healing action); 0 when they
    never broke; when the episode recovers before K green windows were reported, the start of the green run seen (or
    the MTTR); the time limit when they never hold again; NaN without a fault. The policy sees nothing of the
    ground truth this reads (``env.incident()``)."""
    names = [fault] if isinstance(fault, str) else list(fault)
    obs, info = env.reset(seed=seed, options={"faults": names})
    policy.reset(env, episode_seed=seed)
    truth = env.unwrapped.incident()["faults"]
    t_inj = min((f["injected_at_s"] for f in truth), default=float("nan"))
    green_i = env.unwrapped.obs_layout["slo_green"]
    k, step_s = env.unwrapped.sim_cfg.healthy_steps, env.unwrapped.sim_cfg.step_s
    broke, run, run_t0, mitigated = False, 0, float("nan"), float("nan")
    done = False
    ret = 0.0
    while not done:
        a = policy.act(obs, info, env)
        obs, r, term, trunc, info = env.step(a)
        ret += r
        done = term or trunc
        if truth and math.isnan(mitigated) and info["time_s"] > t_inj:
            if obs["obs"][green_i] < 0.5:
                broke, run = True, 0
            elif broke:
                run += 1
                run_t0 = max(info["time_s"] - step_s, t_inj) if run == 1 else run_t0
                if run >= k:
                    mitigated = run_t0 - t_inj
    if truth and math.isnan(mitigated):
        if not broke:
            mitigated = 0.0
        elif term and info.get("success"):  # recovered (which needs the SLOs green) before K green windows were
            # reported: mitigated at the start of the green run seen, else no later than recovery
            mitigated = run_t0 - t_inj if run > 0 else float(info["mttr_s"])
        else:
            mitigated = float(env.unwrapped.sim_cfg.time_limit_s - t_inj)
    fault_free = not truth
    detect = info["detect_s"]
    rec = {"fault": fault_label(fault), "faults": [] if fault_free else names, "seed": seed,
           "fault_free": fault_free, "mttr_s": float("nan") if fault_free else info["mttr_s"],
           "mitigate_s": mitigated, "detect_s": detect,
           "repair_s": (info["mttr_s"] - detect) if (info["recovered"] and not math.isnan(detect)) else float("nan"),
           "recovered": info["recovered"], "success": info["success"], "escalated": info["escalated"],
           "timed_out": bool(trunc and not info["escalated"] and not fault_free),
           "harmful_actions": info["harmful_actions"], "actions": info["actions"],
           "false_action": bool(fault_free and info["actions"] > 0), "return": ret}
    from ifshm_ray.eval.gated import gate_fields

    rec.update(gate_fields(policy))  # a gated policy: who acted, deferred, novel, unknown score
    return rec


def run_chunk(policy_spec: str, sim_cfg: dict, jobs: list[tuple[Fault, int]], policy_seed: int) -> list[dict]:
    """Episodes ``jobs`` = [(fault, seed), ...] for one policy (runs inside a Ray task or locally)."""
    needs_text = policy_spec not in ("oracle", "random")
    if policy_spec.startswith("checkpoint:"):  # a numeric-state policy's features are the same without the text
        from ifshm_ray.policy.bundle import read_manifest  # (tested); only the LLM state reads rendered telemetry

        needs_text = read_manifest(policy_spec.split(":", 1)[1]).get("encoder") is not None
    env = FaultInjectionEnv({**sim_cfg, "render_telemetry": needs_text, "mine_logs": needs_text})
    policy = make_policy(policy_spec, policy_seed, env)
    return [run_episode(env, policy, f, s) for f, s in jobs]


def evaluate(policy_spec: str, faults: list[str], episodes: int, seed: int, sim_cfg: SimConfig,
             use_ray: bool = True, chunks: int | None = None, num_cpus_per_task: float = 1.0,
             progress: Callable[[int, int], None] | None = None,
             jobs: list[tuple[Fault, int]] | None = None) -> list[dict]:
    """All episodes of one policy: ``episodes`` per fault (or the given ``jobs``, :func:`make_jobs`), in parallel
    Ray tasks when ``use_ray``."""
    cfg = to_dict(sim_cfg)
    cfg.pop("faults", None)
    cfg["faults"] = list(faults) if jobs is None else "all"
    if jobs is None:
        jobs = [(f, episode_seed(seed, f, i)) for f in faults for i in range(episodes)]
    if policy_spec == "nearest-known":  # calibration incidents must not be evaluation incidents; warm the cache
        from ifshm_ray.baselines.config import NearestKnownConfig
        from ifshm_ray.baselines.nearest import calibration_seeds, load_prototypes

        cal = calibration_seeds(NearestKnownConfig(), load_catalog(sim_cfg.catalog).known_in(sim_cfg.split))
        clash = sorted({s for _, s in jobs} & cal)
        if clash:
            raise ValueError(f"evaluation episode seeds {clash[:5]} are nearest-known calibration seeds; evaluate "
                             "with another --seed")
        load_prototypes(sim_cfg)
    if policy_spec.startswith(("checkpoint:", "gated:")):  # fail fast, here, with a clear message (topology, obs
        from pathlib import Path  # size, files)

        kind, _, where = policy_spec.partition(":")
        policy_spec = f"{kind}:" + str(Path(where).expanduser().resolve())  # for workers
        make_policy(policy_spec, seed, FaultInjectionEnv({**cfg, "render_telemetry": False}))
    if not use_ray:
        out = []
        for i in range(0, len(jobs), max(episodes, 1)):
            out += run_chunk(policy_spec, cfg, jobs[i:i + max(episodes, 1)], seed)
            if progress:
                progress(len(out), len(jobs))
        return out
    import ray

    n = chunks or max(1, min(len(jobs), 4 * int(ray.available_resources().get("CPU", 2))))
    parts = [jobs[i::n] for i in range(n) if jobs[i::n]]
    task = ray.remote(num_cpus=num_cpus_per_task)(run_chunk)
    pending = [task.remote(policy_spec, cfg, p, seed) for p in parts]
    out: list[dict] = []
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        out += ray.get(ready[0])
        if progress:
            progress(len(out), len(jobs))
    order = {(fault_label(f), s): i for i, (f, s) in enumerate(jobs)}
    out.sort(key=lambda r: order[(r["fault"], r["seed"])])
    return out


def evaluate_set(policy_spec: str, label: str, fault_set: str, jobs: list[tuple[Fault, int]], episodes: int,
                 seed: int, sim_cfg: SimConfig, use_ray: bool = True, num_cpus_per_task: float = 1.0,
                 progress: Callable[[int, int], None] | None = None, chunks: int | None = None
                 ) -> tuple[dict, list[dict]]:
    """One policy on one fault set's episodes ``jobs`` (:func:`make_jobs` with ``episodes`` per fault type and
    ``seed``): its metrics (:func:`summarise` on the split of ``sim_cfg``, with ``wall_s`` and ``seed``) and its
    episode records. The one path of ``jobs/evaluate.py`` and ``jobs/pipeline.py``; ``chunks``: Ray tasks (default
    :func:`evaluate`'s)."""
    t0 = time.time()
    faults = sorted({f for f, _ in jobs if isinstance(f, str)})
    recs = evaluate(policy_spec, faults, episodes, seed, sim_cfg, use_ray=use_ray, chunks=chunks,
                    num_cpus_per_task=num_cpus_per_task, progress=progress, jobs=jobs)
    m = summarise(recs, label, fault_set, sim_cfg.time_limit_s, catalog=sim_cfg.catalog, split=sim_cfg.split)
    m["wall_s"] = time.time() - t0
    m["seed"] = seed
    return m, recs


def summarise(records: list[dict], policy: str, fault_set: str, time_limit_s: float,
              catalog: str | Path | None = None, split: str | None = None, stats: StatsConfig | None = None) -> dict:
    """metrics.json content. Failed episodes (not recovered, or escalated) count in MTTR as they ended; an episode
    that never recovered counts at the time limit. MTTR, time to mitigate, detection and repair are over the
    episodes with a fault; ``false_action_rate`` is the share of fault-free episodes with any action other than
    observe (None without fault-free episodes); escalations and time-outs (neither recovered nor escalated by the
    time limit) are counted apart. ``mttr_ci95``: the seeded bootstrap interval of the mean MTTR (``stats``).
    ``catalog``: the fault catalog the episodes ran on (``SimConfig.catalog``; None: the packaged one), whose hash
    is recorded as ``catalog_sha256``."""
    if not records:
        raise ValueError("summarise needs at least one episode record")
    faulty = [r for r in records if not r.get("fault_free")]
    clean = [r for r in records if r.get("fault_free")]
    mttr = np.array([r["mttr_s"] for r in faulty], dtype=float)
    det = np.array([r["detect_s"] for r in faulty], dtype=float)
    rep = np.array([r["repair_s"] for r in faulty], dtype=float)
    acts = sum(r["actions"] for r in records)
    per_fault = {}
    for f in dict.fromkeys(r["fault"] for r in records):
        rs = [r for r in records if r["fault"] == f]
        per_fault[f] = {"mttr_mean_s": _nanmean([r["mttr_s"] for r in rs]),
                        "mitigate_mean_s": _nanmean([r.get("mitigate_s", float("nan")) for r in rs]),
                        "success_rate": float(np.mean([r["success"] for r in rs])),
                        "detect_mean_s": _nanmean([r["detect_s"] for r in rs]),
                        "repair_mean_s": _nanmean([r["repair_s"] for r in rs]),
                        "episodes": len(rs)}
    cat = load_catalog(catalog)

    def rate(rs, key):
        return float(np.mean([bool(r.get(key)) for r in rs])) if rs else None

    def pct(q):
        return float(np.percentile(mttr, q)) if len(mttr) else None

    return {
        "policy": policy, "fault_set": fault_set, "split": split, "episodes": len(records),
        "fault_free_episodes": len(clean),
        "mttr_mean_s": float(mttr.mean()) if len(mttr) else None, "mttr_p50_s": pct(50), "mttr_p95_s": pct(95),
        "mttr_ci95": bootstrap_mean_ci(mttr, stats),
        "time_to_mitigate_mean_s": _nanmean([r.get("mitigate_s", float("nan")) for r in faulty]),
        "detect_mean_s": _nanmean(det), "repair_mean_s": _nanmean(rep),
        "success_rate": rate(faulty, "success"), "recovered_rate": rate(faulty, "recovered"),
        "escalation_rate": rate(faulty, "escalated"), "timeout_rate": rate(faulty, "timed_out"),
        "false_action_rate": rate(clean, "false_action"),
        "harmful_action_rate": float(sum(r["harmful_actions"] for r in records) / acts) if acts else 0.0,
        "mean_return": float(np.mean([r["return"] for r in records])),
        "catalog_sha256": cat.sha256, "runbook_sha256": runbook_sha256(),
        "time_limit_s": time_limit_s,
        "note": "episodes that never recovered count in MTTR at the time limit; escalated ones at the human's fix; "
                "fault-free episodes count only in false_action_rate",
        "per_fault": per_fault,
        **_gate_summary(records),
    }


def _gate_summary(records: list[dict]) -> dict:
    from ifshm_ray.eval.gated import gate_summary

    return gate_summary(records)


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else float("nan")

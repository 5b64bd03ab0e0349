"""Where the observation a policy bundle gets from recorded live windows leaves what it met in the simulator, and
which of those differences change its decisions (issue 13, sim-to-real). Prints Markdown.

    python -m ifshm_ray.live.sim_gap --windows results/live/incidents.parquet --checkpoint BUNDLE \
        [--episodes 40] [--max-steps 40] [--seed 1000]

1. **Reference**: the bundle's own observations in the simulator: ``--episodes`` episodes of its env config (the
   fault types it was trained on), the bundle acting deterministically, at most ``--max-steps`` steps each; per
   feature the range [min, max] it met.
2. **Live**: every policy-arm window of ``--windows`` (``jobs/live_eval.py``'s ``incidents.parquet``) turned into
   the observation with its recorded history, as the healer does (:class:`~ifshm_ray.serve.service.HealingService`'s
   observer: the series a window lacks read at the simulator's steady state, ``missing_metrics: steady_state``), and
   as it did before that (``zero``: read as 0). Features outside the simulator's range, by share of windows.
3. **Decisions**: per incident, the first window's decision and escalate probability under ``zero`` and
   ``steady_state``, and, on every window, counterfactuals that put one live difference back to the simulator's:
   no log lines, the first ``--log-cap`` log lines only, ``gpu-0``'s CPU at its steady state (diagnostics only: the
   healer never does this).

Every number comes from the recorded windows and the simulator under fixed seeds (deterministic).
"""
from __future__ import annotations

import argparse
import copy
import json
from collections import Counter

import numpy as np


def feature_names(observer, categories) -> list[str]:
    """One name per observation column (``target.feature``, ``pending.<alert>``, ``tpl.<template>``, ...), in the
    layout of :func:`ifshm_ray.env.features.obs_layout`."""
    from ifshm_ray.env.features import TARGET_FEAT, obs_layout
    from ifshm_ray.sim.core import NODE_METRICS

    sim, topo = observer.sim, observer.topology
    svc = ["log_latency_slo", "error_rate", "throughput_deficit", "unready", "cpu", "memory", "restarts"]
    svc += [f"unused{k}" for k in range(len(NODE_METRICS) - len(svc))]
    tail = ["alerts_pending", "alerts_firing", "log_lines", "is_node", "cordoned"]
    names = []
    for i, t in enumerate(topo.targets):
        names += [f"{t}.{c}" for c in (svc if i < topo.S else list(NODE_METRICS)) + tail]
    names += [f"pending.{a.name}" for a in sim.alerts] + [f"firing.{a.name}" for a in sim.alerts]
    names += [f"tpl.{t.id}" for t in sim.catalog.templates] + ["slo_green", "alert_age"]
    lay = obs_layout(sim)
    for k in range(lay["memory_slots"]):
        names += [f"memory{k}.category.{c}" for c in categories] + [f"memory{k}.target.{t}" for t in topo.targets]
        names += [f"memory{k}.steps_ago"]
    assert len(names) == lay["obs_dim"] and TARGET_FEAT == len(svc) + len(tail), (len(names), lay["obs_dim"])
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--windows", required=True, help="incidents.parquet of jobs/live_eval.py")
    p.add_argument("--checkpoint", required=True, help="the policy bundle the healer served")
    p.add_argument("--episodes", type=int, default=40, help="simulator episodes of the reference")
    p.add_argument("--max-steps", type=int, default=40, help="steps per reference episode at most")
    p.add_argument("--seed", type=int, default=1000, help="reset seed of the first reference episode")
    p.add_argument("--log-cap", type=int, default=5, help="log lines kept by the 'first lines only' counterfactual")
    p.add_argument("--rows", type=int, default=40, help="features listed per table at most")
    args = p.parse_args(argv)

    from ifshm_ray.env.fault_env import FaultInjectionEnv, split_env_config
    from ifshm_ray.env.observation import TelemetryObserver
    from ifshm_ray.live.recording import read_windows
    from ifshm_ray.policy.bundle import load_policy_bundle
    from ifshm_ray.serve.config import ServeConfig
    from ifshm_ray.env.observation import steady_state_metrics

    pol = load_policy_bundle(args.checkpoint)
    env_cfg = pol.manifest["env"]["config"]
    sim_cfg = split_env_config(env_cfg)[0]
    d = ServeConfig(checkpoint=args.checkpoint)  # (the healer's steady-state settings, its defaults)
    ss = steady_state_metrics(sim_cfg, episodes=d.steady_state_episodes, steps=d.steady_state_steps,
                              seed=d.steady_state_seed)
    observers = {"zero": TelemetryObserver(sim_cfg), "steady_state": TelemetryObserver(sim_cfg, fill=ss)}
    names = feature_names(observers["zero"], pol.categories)

    env = FaultInjectionEnv({**env_cfg, "render_telemetry": False})
    ref, picks = [], Counter()
    for ep in range(args.episodes):
        o, _ = env.reset(seed=args.seed + ep)
        for _ in range(args.max_steps):
            ref.append(o["obs"])
            a = pol.act(o, deterministic=True)
            picks[pol.categories[a[0]]] += 1
            o, _, term, trunc, _ = env.step(a)
            if term or trunc:
                break
    ref = np.array(ref)
    lo, hi = ref.min(0), ref.max(0)

    windows = [w for w in read_windows(args.windows) if w.get("request") is not None]
    if not windows:
        raise SystemExit(f"{args.windows}: no policy-arm window with a /v1/heal request")

    def observe(mode: str, tel: dict, req: dict) -> dict:
        return observers[mode].observe(tel, last_action=req.get("last_action"), history=req.get("history"))

    def name(a) -> str:
        c = pol.categories[a[0]]
        return c if c in ("observe", "escalate") else f"{c} {pol.target_names[a[1]]}"

    def escalate_prob(o: dict) -> float:
        dist = pol.action_distribution(o, top_k=1)
        return next(x["prob"] for x in dist["categories"] if pol.categories[x["index"]] == "escalate")

    print(f"# Live windows against the simulator: `{args.windows}`\n")
    print(f"Bundle `{args.checkpoint}` (env config {env_cfg}). Reference: {len(ref)} simulator observations of "
          f"{args.episodes} episodes (seeds {args.seed}-{args.seed + args.episodes - 1}, the bundle acting; its "
          f"categories there: {dict(picks.most_common())}). Live: {len(windows)} policy-arm windows of "
          f"{len({w['incident'] for w in windows})} incidents.\n")
    for mode in ("zero", "steady_state"):
        live = np.array([observe(mode, w["telemetry"], w["request"])["obs"] for w in windows])
        out = (live < lo - 1e-6) | (live > hi + 1e-6)
        share = out.mean(0)
        order = [j for j in np.argsort(-share, kind="stable") if share[j] > 0]
        print(f"## Features outside the simulator's range, series a window lacks read as `{mode}`\n")
        print(f"{len(order)} of {len(names)} features leave the range in some window; "
              f"{int((share == 1).sum())} in every window.\n")
        print("| feature | share of live windows | simulator [min, max] | live median |\n|---|---|---|---|")
        for j in order[:args.rows]:
            print(f"| {names[j]} | {share[j]:.2f} | [{lo[j]:.3f}, {hi[j]:.3f}] | {np.median(live[:, j]):.3f} |")
        if len(order) > args.rows:
            print(f"| ({len(order) - args.rows} more) | | | |")
        print()

    def variant(tel: dict, v: str) -> dict:
        tel = copy.deepcopy(tel)
        if v == "no log lines":
            tel["logs"] = []
        elif v == "first log lines only":
            tel["logs"] = tel["logs"][:args.log_cap]
        elif v == "gpu-0 CPU at the steady state" and tel["metrics"].get("gpu-0", {}).get("node_cpu_utilisation"):
            tel["metrics"]["gpu-0"]["node_cpu_utilisation"] = [ss["gpu-0"]["node_cpu_utilisation"]]
        return tel

    print("## Decisions\n")
    print("First window of each incident (its history is empty, so this is exact):\n")
    print("| incident | read as 0 (before) | steady state (the healer now) |\n|---|---|---|")
    by_inc: dict[str, list[dict]] = {}
    for w in windows:
        by_inc.setdefault(w["incident"], []).append(w)
    for inc, ws in by_inc.items():
        w = min(ws, key=lambda x: x["window_index"])
        cells = []
        for mode in ("zero", "steady_state"):
            o = observe(mode, w["telemetry"], w["request"])
            cells.append(f"{name(pol.act(o))} (escalate p={escalate_prob(o):.2f})")
        print(f"| {inc} | {cells[0]} | {cells[1]} |")
    variants = ["as recorded", "no log lines", "first log lines only", "gpu-0 CPU at the steady state"]
    print(f"\nEvery window, steady state, with one live difference put back to the simulator's (diagnostics; "
          f"'first log lines only' keeps {args.log_cap}; the history is the recorded one):\n")
    print("| incident | " + " | ".join(variants) + " |\n" + "|---" * (len(variants) + 1) + "|")
    for inc, ws in by_inc.items():
        cells = []
        for v in variants:
            got = Counter(name(pol.act(observe("steady_state", variant(w["telemetry"], v), w["request"])))
                          for w in sorted(ws, key=lambda x: x["window_index"]))
            cells.append(", ".join(f"{k} x{n}" for k, n in got.most_common()))
        print(f"| {inc} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Combined Markdown report and PNG plots for several evaluated policies: per fault set a summary table (MTTR with
its bootstrap 95% interval, p50, p95, time to mitigate, success, escalations and time-outs apart, harmful and false
actions), the per-fault table, and the paired MTTR difference of each policy to each reference baseline with its
bootstrap 95% interval (table and heat-map PNG)."""
from __future__ import annotations

import math
from pathlib import Path

from ifshm_ray.baselines import BASELINES
from ifshm_ray.eval.config import StatsConfig
from ifshm_ray.eval.stats import paired_difference


def _fmt(x: float, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:.0f}%" if pct else f"{x:.0f}"


def summary_table(metrics: dict[str, dict]) -> str:
    """One Markdown table row per (policy, fault set)."""
    rows = ["| policy | faults | split | episodes | MTTR mean (s) [95% CI] | p50 | p95 | mitigate (s) | detect (s) | "
            "repair (s) | success | escalated | timed out | harmful actions | false actions |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in metrics.items():
        def pm(key: str, pct: bool = False) -> str:  # mean, and the spread over training seeds when there is one
            sd = m.get(key + "_std")
            return _fmt(m[key], pct) + (f" ± {_fmt(sd, pct)}" if sd is not None else "")

        label = m["policy"] + (f" ({m['training_seeds']} seeds)" if m.get("training_seeds") else "")
        ci = m.get("mttr_ci95")
        ci_s = f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""
        rows.append(f"| {label} | {m['fault_set']} | {m.get('split') or '-'} | {m['episodes']} | "
                    f"{pm('mttr_mean_s')}{ci_s} | {_fmt(m['mttr_p50_s'])} | {_fmt(m['mttr_p95_s'])} | "
                    f"{_fmt(m.get('time_to_mitigate_mean_s'))} | {pm('detect_mean_s')} | {pm('repair_mean_s')} | "
                    f"{pm('success_rate', True)} | {_fmt(m['escalation_rate'], True)} | "
                    f"{_fmt(m.get('timeout_rate'), True)} | {_fmt(m['harmful_action_rate'], True)} | "
                    f"{_fmt(m.get('false_action_rate'), True)} |")
    trained = [m for m in metrics.values() if m.get("train_env_steps") is not None]
    if trained:
        rows += ["", "| trained policy | training env steps | training wall (s) | LM cache hit rate |",
                 "|---|---|---|---|"]
        for m in trained:
            rows.append(f"| {m['policy']} | {_fmt(m['train_env_steps'])} | {_fmt(m['train_wall_s'])} | "
                        f"{_fmt(m.get('train_lm_hit_rate'), True)} |")
    return "\n".join(rows)


def metrics_line(m: dict) -> str:
    """One policy's metrics on one fault set in a line (progress output of the evaluation jobs)."""
    return (f"MTTR {_sec(m['mttr_mean_s'])} (p95 {_sec(m['mttr_p95_s'])}), mitigate "
            f"{_sec(m.get('time_to_mitigate_mean_s'))}, success {_fmt(m['success_rate'], True)}, escalated "
            f"{_fmt(m['escalation_rate'], True)}, timed out {_fmt(m.get('timeout_rate'), True)}, false actions "
            f"{_fmt(m.get('false_action_rate'), True)}"
            + (f", deferred {_fmt(m['deferral_rate'], True)}" if "deferral_rate" in m else ""))


def _sec(x) -> str:
    s = _fmt(x)
    return s if s == "-" else s + "s"


def per_fault_table(metrics: dict[str, dict]) -> str:
    names = list(metrics)
    faults = list(dict.fromkeys(f for m in metrics.values() for f in m["per_fault"]))
    rows = ["| fault | " + " | ".join(f"{n} MTTR (success)" for n in names) + " |",
            "|---|" + "---|" * len(names)]
    for f in faults:
        cells = []
        for n in names:
            pf = metrics[n]["per_fault"].get(f)
            cells.append("-" if pf is None else f"{_fmt(pf['mttr_mean_s'])} ({_fmt(pf['success_rate'], True)})")
        rows.append(f"| {f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def paired_differences(episodes: dict[str, list[dict]], stats: StatsConfig | None = None) -> dict:
    """``{(policy, baseline): paired_difference}`` of MTTR for every policy and every reference baseline among
    ``episodes`` (label -> episode records; a label is a baseline when it names one of :data:`BASELINES`)."""
    base = [b for b in episodes if b in BASELINES]
    out = {}
    for p in episodes:
        for b in base:
            if p != b:
                d = paired_difference(episodes[p], episodes[b], "mttr_s", stats)
                if d is not None:
                    out[(p, b)] = d
    return out


def _axes(diffs: dict) -> tuple[list[str], list[str]]:
    """Rows (policies) and columns (baselines) of a paired-difference table, both in the policies' order."""
    pols = list(dict.fromkeys(p for p, _ in diffs))
    bset = {b for _, b in diffs}
    return pols, [p for p in pols if p in bset] + [b for b in dict.fromkeys(b for _, b in diffs) if b not in pols]


def paired_table(diffs: dict) -> str:
    """Markdown: rows policies, columns baselines, cells mean MTTR difference (policy - baseline) [95% CI]."""
    pols, base = _axes(diffs)
    rows = ["| policy vs baseline | " + " | ".join(base) + " |", "|---|" + "---|" * len(base)]
    for p in pols:
        cells = []
        for b in base:
            d = diffs.get((p, b))
            cells.append("-" if d is None else f"{d['mean']:+.0f} [{d['ci95'][0]:+.0f}, {d['ci95'][1]:+.0f}]")
        rows.append(f"| {p} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot_paired(diffs: dict, path: Path, title: str) -> None:
    """Heat map of the mean paired MTTR difference (minutes), each cell annotated with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    pols, base = _axes(diffs)
    z = np.full((len(pols), len(base)), np.nan)
    for (p, b), d in diffs.items():
        z[pols.index(p), base.index(b)] = d["mean"] / 60.0
    lim = max(float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0, 1e-6)
    fig, ax = plt.subplots(figsize=(1.6 * len(base) + 3, 0.6 * len(pols) + 2))
    im = ax.imshow(z, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for (p, b), d in diffs.items():
        ax.text(base.index(b), pols.index(p), f"{d['mean'] / 60:+.1f}\n[{d['ci95'][0] / 60:+.1f}, "
                f"{d['ci95'][1] / 60:+.1f}]", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(base)))
    ax.set_xticklabels(base, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(pols)))
    ax.set_yticklabels(pols, fontsize=8)
    ax.set_xlabel("baseline")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="mean MTTR difference, policy - baseline (min)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_per_fault(metrics: dict[str, dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(metrics)
    faults = list(dict.fromkeys(f for m in metrics.values() for f in m["per_fault"]))
    x = np.arange(len(faults))
    w = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(8, 0.55 * len(faults) + 3), 5))
    for i, n in enumerate(names):
        vals = [_nan(metrics[n]["per_fault"].get(f, {}).get("mttr_mean_s")) for f in faults]
        ax.bar(x + i * w - 0.4 + w / 2, np.array(vals) / 60.0, w, label=n)
    ax.set_xticks(x)
    ax.set_xticklabels(faults, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("mean time to recovery (min)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_detect_repair(metrics: dict[str, dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(metrics)
    det = np.nan_to_num([_nan(metrics[n]["detect_mean_s"]) / 60 for n in names])
    mttr = np.nan_to_num([_nan(metrics[n]["mttr_mean_s"]) / 60 for n in names])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(names, det, label="detection (injection -> first action)")
    ax.bar(names, np.maximum(mttr - det, 0), bottom=det, label="repair + failures (rest of MTTR)")
    ax.set_ylabel("minutes")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _nan(x) -> float:
    return float("nan") if x is None else float(x)


def write_report(out: Path, results: dict[str, dict[str, dict]], command: str,
                 episodes: dict[str, dict[str, list[dict]]] | None = None, stats: StatsConfig | None = None) -> Path:
    """results: fault_set -> policy -> metrics; ``episodes``: fault_set -> policy -> episode records (for the
    paired differences; none without). Writes report.md and PNGs into ``out``."""
    out = Path(out)
    lines = ["# ifshm-ray evaluation report", "", f"Command: `{command}`", "",
             "MTTR runs from fault injection to the first of K consecutive healthy steps (root cause cleared, SLOs "
             "held); time to mitigate to the first of K steps whose reported metrics hold the SLOs again. Episodes "
             "that never recover count at the time limit; escalations count until the human's fix and never as "
             "success; time-outs are episodes neither recovered nor escalated. False actions: share of fault-free "
             "episodes with any action other than observe. Intervals: seeded percentile bootstrap, 95%.", ""]
    for fault_set, metrics in results.items():
        lines += [f"## {fault_set} faults", "", summary_table(metrics), "", "### Per fault", "",
                  per_fault_table(metrics), ""]
        diffs = paired_differences(episodes[fault_set], stats) if episodes and fault_set in episodes else {}
        if diffs:
            p3 = out / f"mttr_paired_difference_{fault_set}.png"
            plot_paired(diffs, p3, f"Paired MTTR difference to each baseline ({fault_set} faults)")
            lines += ["### Paired MTTR difference to each baseline (s, policy - baseline, mean [95% CI])", "",
                      paired_table(diffs), "", f"![Paired MTTR difference]({p3.name})", ""]
        if all(m.get("mttr_mean_s") is None for m in metrics.values()):
            continue  # (fault-free only: no MTTR to plot)
        p1 = out / f"mttr_per_fault_{fault_set}.png"
        p2 = out / f"detect_repair_{fault_set}.png"
        plot_per_fault(metrics, p1, f"MTTR per fault ({fault_set} faults)")
        plot_detect_repair(metrics, p2, f"Detection vs repair ({fault_set} faults)")
        lines += [f"![MTTR per fault]({p1.name})", "", f"![Detection and repair]({p2.name})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path

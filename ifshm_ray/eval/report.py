"""Combined Markdown report and PNG plots for several evaluated policies."""
from __future__ import annotations

import math
from pathlib import Path


def _fmt(x: float, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:.0f}%" if pct else f"{x:.0f}"


def summary_table(metrics: dict[str, dict]) -> str:
    """One Markdown table row per (policy, fault set)."""
    rows = ["| policy | faults | episodes | MTTR mean (s) | p50 | p95 | detect (s) | repair (s) | success | "
            "harmful actions | escalated |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in metrics.items():
        def pm(key: str, pct: bool = False) -> str:  # mean, and the spread over training seeds when there is one
            sd = m.get(key + "_std")
            return _fmt(m[key], pct) + (f" ± {_fmt(sd, pct)}" if sd is not None else "")

        label = m["policy"] + (f" ({m['training_seeds']} seeds)" if m.get("training_seeds") else "")
        rows.append(f"| {label} | {m['fault_set']} | {m['episodes']} | {pm('mttr_mean_s')} | "
                    f"{_fmt(m['mttr_p50_s'])} | {_fmt(m['mttr_p95_s'])} | {pm('detect_mean_s')} | "
                    f"{pm('repair_mean_s')} | {pm('success_rate', True)} | "
                    f"{_fmt(m['harmful_action_rate'], True)} | {_fmt(m['escalation_rate'], True)} |")
    trained = [m for m in metrics.values() if m.get("train_env_steps") is not None]
    if trained:
        rows += ["", "| trained policy | training env steps | training wall (s) | LM cache hit rate |",
                 "|---|---|---|---|"]
        for m in trained:
            rows.append(f"| {m['policy']} | {_fmt(m['train_env_steps'])} | {_fmt(m['train_wall_s'])} | "
                        f"{_fmt(m.get('train_lm_hit_rate'), True)} |")
    return "\n".join(rows)


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
        vals = [metrics[n]["per_fault"].get(f, {}).get("mttr_mean_s", np.nan) for f in faults]
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
    det = np.nan_to_num([metrics[n]["detect_mean_s"] / 60 for n in names])
    mttr = np.array([metrics[n]["mttr_mean_s"] / 60 for n in names])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(names, det, label="detection (injection -> first action)")
    ax.bar(names, np.maximum(mttr - det, 0), bottom=det, label="repair + failures (rest of MTTR)")
    ax.set_ylabel("minutes")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, results: dict[str, dict[str, dict]], command: str) -> Path:
    """results: fault_set -> policy -> metrics. Writes report.md and PNGs into ``out``."""
    out = Path(out)
    lines = ["# ifshm-ray evaluation report", "", f"Command: `{command}`", "",
             "MTTR runs from fault injection to the first of K consecutive healthy steps. Episodes that never "
             "recover count at the time limit; escalations count until the human's fix and never as success.", ""]
    for fault_set, metrics in results.items():
        lines += [f"## {fault_set} faults", "", summary_table(metrics), "", "### Per fault", "",
                  per_fault_table(metrics), ""]
        p1 = out / f"mttr_per_fault_{fault_set}.png"
        p2 = out / f"detect_repair_{fault_set}.png"
        plot_per_fault(metrics, p1, f"MTTR per fault ({fault_set} faults)")
        plot_detect_repair(metrics, p2, f"Detection vs repair ({fault_set} faults)")
        lines += [f"![MTTR per fault]({p1.name})", "", f"![Detection and repair]({p2.name})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path

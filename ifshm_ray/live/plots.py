"""PNG timelines of live incidents (``jobs/live_eval.py``): one figure per incident record of
:func:`ifshm_ray.live.incident.run_incident`, on the wall clock counted from the injection.

Top panel: the load generator's success rate (left axis) and latency quantile (right axis, the SLO's threshold
dashed) from the record's ``trace``; shaded where the SLO probe was red. Bottom panel: one lane per alert (firing
to resolved, from the Alertmanager notifications the receiver got) and one lane of the healer's decisions (each
action with its executor outcome). Vertical lines: injection (0), first firing notification (detection),
recovery (green) or the cap (grey) when it did not recover.
"""
from __future__ import annotations

import re
from pathlib import Path

OUTCOME_COLOURS = {"executed": "tab:blue", "dry_run": "tab:cyan", "refused": "tab:orange", "page": "tab:red",
                   "failed": "tab:red", "observed": "tab:grey"}


def incident_filename(rec: dict) -> str:
    """A file name for the incident's timeline: ``<fault>__<arm>__r<repeat>.png`` (only safe characters)."""
    name = f"{rec['fault']}__{rec['arm']}__r{rec.get('repeat', 0)}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".png"


def plot_incident(rec: dict, path: str | Path, *, latency_threshold_ms: float | None = None) -> Path:
    """Draw one incident's timeline to ``path`` (see the module docstring); returns the path. A record without a
    trace (a skipped incident) raises ValueError."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    trace = rec.get("trace") or []
    if not trace:
        raise ValueError(f"incident {rec.get('incident', rec.get('fault'))}: no trace to draw "
                         f"({rec.get('skipped', 'empty trace')})")
    cols = rec.get("trace_columns") or ["t_s", "success_rate", "latency_ms", "slo_badness"]
    arr = np.array([[np.nan if v is None else v for v in row] for row in trace], dtype=np.float64)
    t, succ, lat, bad = (arr[:, cols.index(c)] for c in ("t_s", "success_rate", "latency_ms", "slo_badness"))
    events = rec.get("alert_events") or []
    lanes = list(dict.fromkeys(e["alert"] for e in events))
    fig, (ax, lane_ax) = plt.subplots(2, 1, figsize=(10, 4.5 + 0.3 * len(lanes)), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1 + 0.3 * len(lanes)]})
    ax.plot(t, succ, color="tab:green", lw=1.4, label="success rate")
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("success rate")
    red = np.nan_to_num(bad, nan=0.0) > 0
    if red.any():
        ax.fill_between(t, 0, 1, where=red, step="post", color="tab:red", alpha=0.08, label="SLO probe red",
                        transform=ax.get_xaxis_transform())
    ax2 = ax.twinx()
    ax2.plot(t, lat, color="tab:purple", lw=1.0, label="latency quantile")
    if latency_threshold_ms:
        ax2.axhline(latency_threshold_ms, color="tab:purple", ls=":", lw=0.8, label="latency SLO")
    ax2.set_ylabel("latency (ms)")
    finite = lat[np.isfinite(lat)]
    if finite.size:
        ax2.set_ylim(0, max(float(finite.max()), latency_threshold_ms or 0.0) * 1.15 + 1)
    for a in (ax, lane_ax):
        a.axvline(0, color="k", lw=1.0)
        if rec.get("detect_s") is not None:
            a.axvline(rec["detect_s"], color="tab:red", ls="--", lw=1.0)
        if rec.get("recovered") and rec.get("mttr_s") is not None:
            a.axvline(rec["mttr_s"], color="tab:green", lw=1.6)
        elif rec.get("capped_at_s") is not None:
            a.axvline(rec["capped_at_s"], color="grey", lw=1.6)
    end = max(float(np.nanmax(t)), *(e["at_s"] for e in events)) if events else float(np.nanmax(t))
    for i, lane in enumerate(lanes):
        start = None
        for e in (e for e in events if e["alert"] == lane):
            if e["status"] == "firing" and start is None:
                start = e["at_s"]
            elif e["status"] == "resolved":
                lane_ax.plot([start if start is not None else e["at_s"], e["at_s"]], [i, i], color="tab:red", lw=5,
                             solid_capstyle="butt")
                lane_ax.plot([e["at_s"]], [i], marker="|", color="tab:green", ms=12)
                start = None
        if start is not None:
            lane_ax.plot([start, end], [i, i], color="tab:red", lw=5, solid_capstyle="butt")
    act_lane = len(lanes)
    for a in rec.get("actions") or []:
        colour = OUTCOME_COLOURS.get(a.get("outcome"), "k")
        lane_ax.plot([a["at_s"]], [act_lane], marker="v", color=colour, ms=9)
        label = f"{a['category']} {a.get('target') or ''}".strip() + f" ({a.get('outcome')})"
        lane_ax.annotate(label, (a["at_s"], act_lane), xytext=(3, 6), textcoords="offset points", fontsize=7,
                         rotation=20, color=colour)
    lane_ax.set_yticks(range(len(lanes) + 1))
    lane_ax.set_yticklabels(lanes + ["healer actions"], fontsize=7)
    lane_ax.set_ylim(-0.7, len(lanes) + 0.9)
    lane_ax.set_xlabel("seconds since the injection")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower left")
    outcome = (f"recovered in {rec['mttr_s']:.1f} s" if rec.get("recovered") and rec.get("mttr_s") is not None
               else f"not recovered (cap {rec.get('capped_at_s')} s)")
    detect = "no alert" if rec.get("detect_s") is None else f"detected {rec['detect_s']:.1f} s"
    ax.set_title(f"{rec['fault']} / {rec['arm']} #{rec.get('repeat', 0)}: {detect}, {outcome}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_incidents(records: list[dict], folder: str | Path, *, latency_threshold_ms: float | None = None
                   ) -> list[Path]:
    """A timeline per incident that has a trace (skipped incidents have none); returns the files written."""
    out = []
    for rec in records:
        if rec.get("trace"):
            out.append(plot_incident(rec, Path(folder) / incident_filename(rec),
                                     latency_threshold_ms=latency_threshold_ms))
    return out

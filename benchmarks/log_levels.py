#!/usr/bin/env python
"""Measure log-level statistics of the real logs in ../shared/data (the sources of ifshm_ray/sim/data/
observability.yaml's log parameters). Prints one JSON object.

    python benchmarks/log_levels.py [--data /work/shared/data]

* ``loghub_openstack_2k/OpenStack_2k.log``: share of WARNING and ERROR lines (a healthy production OpenStack log).
* ``openstack_fault_injection_fse2019``: per sample (samples.json), every service-log line in the window with its
  oslo.log level and local timestamp. Fault-free rounds (``NORMAL_FAULT_FREE_ROUND``) give the share of WARNING /
  ERROR lines of healthy services; injected rounds that failed (``round_outcome == FAILURE``) give the share of
  failures whose services logged any ERROR line at or after the injection (``window_anchor``, the same local clock
  as the lines) and the delay from the injection to that first ERROR line; ``NO_FAILURE`` rounds (fault activated,
  workload passed) the share that still logged ERROR lines.
Lines are counted as a log shipper stores them (each physical line; a traceback's continuation lines repeat the
oslo prefix, so they count with their level).
"""
from __future__ import annotations

import argparse
import json
import re
from datetime import datetime
from pathlib import Path

_OSLO = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL|TRACE) ")
_LOGHUB = re.compile(r"^\S+ \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def _share(counts: dict, levels: tuple[str, ...]) -> float:
    tot = sum(counts.values())
    return sum(counts.get(k, 0) for k in levels) / tot if tot else float("nan")


def loghub(path: Path) -> dict:
    counts: dict[str, int] = {}
    for line in path.read_text(errors="replace").splitlines():
        m = _LOGHUB.match(line)
        if m:
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return {"file": str(path.name), "lines_by_level": counts, "warning_share": round(_share(counts, ("WARNING",)), 5),
            "error_share": round(_share(counts, ("ERROR", "CRITICAL")), 5),
            "warning_or_error_share": round(_share(counts, ("WARNING", "ERROR", "CRITICAL")), 5)}


def fse2019(root: Path) -> dict:
    doc = json.loads((root / "samples.json").read_text())
    free: dict[str, int] = {}
    failed, delays, no_fail = [], [], []
    for s in doc["samples"]:
        anchor = datetime.fromisoformat(s["window_anchor"])
        first_err = None
        counts: dict[str, int] = {}
        for f in s["files"]:
            if not f["path"] or "/foreground_wl/" in f["path"] or not f["path"].endswith(".log.bzip2.out"):
                continue  # (no path: the service logged nothing in the window)
            p = root / f["path"].split(root.name + "/", 1)[1]  # (paths are "<split>/<folder>/tests/...")
            for line in p.read_text(errors="replace").splitlines():
                m = _OSLO.match(line)
                if not m:
                    continue
                counts[m.group(2)] = counts.get(m.group(2), 0) + 1
                if m.group(2) in ("ERROR", "CRITICAL"):
                    ts = datetime.fromisoformat(m.group(1))
                    if ts >= anchor and (first_err is None or ts < first_err):
                        first_err = ts
        if s["failure_mode"] == "NORMAL_FAULT_FREE_ROUND":
            for k, v in counts.items():
                free[k] = free.get(k, 0) + v
        elif s["round_outcome"] == "FAILURE":
            failed.append(first_err is not None)
            if first_err is not None:
                delays.append((first_err - anchor).total_seconds())
        elif s["round_outcome"] == "NO_FAILURE":
            no_fail.append(first_err is not None)
    delays.sort()
    return {
        "fault_free_rounds": {"lines_by_level": free, "warning_share": round(_share(free, ("WARNING",)), 5),
                              "error_share": round(_share(free, ("ERROR", "CRITICAL")), 5),
                              "warning_or_error_share": round(_share(free, ("WARNING", "ERROR", "CRITICAL")), 5)},
        "failed_rounds": len(failed),
        "failed_rounds_with_error_line_after_injection": int(sum(failed)),
        "error_line_share_of_failures": round(sum(failed) / len(failed), 4) if failed else float("nan"),
        "delay_to_first_error_s": {"min": round(delays[0], 1), "median": round(delays[len(delays) // 2], 1),
                                   "max": round(delays[-1], 1), "n": len(delays)} if delays else None,
        "no_failure_rounds": len(no_fail), "no_failure_rounds_with_error_line": int(sum(no_fail)),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    a = p.parse_args(argv)
    res = {"loghub_openstack_2k": loghub(a.data / "loghub_openstack_2k" / "OpenStack_2k.log"),
           "openstack_fault_injection_fse2019": fse2019(a.data / "openstack_fault_injection_fse2019")}
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()

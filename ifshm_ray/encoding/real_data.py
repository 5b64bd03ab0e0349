"""Real OpenStack fault-injection samples (``openstack_fault_injection_fse2019``) as telemetry windows.

Layout (see ``../shared/data/README.md``, section 2): ``samples.json`` lists samples; each names its files.
Only the **service logs** (``logs/<round>/{nova,cinder,neutron}/*``) become model input. The workload logs
(``foreground_wl/*.out|.err``) hold the label itself (``Assertion results: FAILURE_...``), ``fip_info.data`` names
the injected fault and ``trigger_log`` the injection time: they are never read as input
(:func:`service_log_files` filters them; a test asserts it).

Labels: ``failure_mode``. For scoring, ``NO_FAILURE`` and ``NORMAL_FAULT_FREE_ROUND`` both count as ``HEALTHY``
(:data:`REAL_CLASSES`). A simulator diagnosis becomes a failure mode through :data:`SIM_TO_FAILURE_MODE`
(our own, documented map: what the user-visible symptom of the simulated fault would be in the OpenStack
workload), so a model trained only on simulated windows can be scored on real samples without touching them.

The data are GPL/AGPL: they are read from ``../shared/data`` at run time and never copied into the repository.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

HEALTHY = "HEALTHY"
REAL_CLASSES = ("HEALTHY", "API_ERROR", "FAILURE_INSTANCE_ACTIVE", "FAILURE_SSH", "FAILURE_VOLUME_ATTACHED",
                "FAILURE_VOLUME_CREATED")
HEALTHY_MODES = ("NO_FAILURE", "NORMAL_FAULT_FREE_ROUND")
SERVICE_DIRS = ("nova", "cinder", "neutron")
FORBIDDEN_PARTS = ("foreground_wl", "fip_info.data", "trigger_log")

#: Simulator fault type -> OpenStack failure mode (the user-visible symptom the workload would report).
#: Faults of the GPU / training stack have no OpenStack counterpart; their nearest user-visible effect is a
#: failing API call (API_ERROR). Names missing here map to API_ERROR as well; "healthy" maps to HEALTHY.
SIM_TO_FAILURE_MODE: dict[str, str] = {
    "healthy": HEALTHY,
    "volume_attach_failure": "FAILURE_VOLUME_ATTACHED",
    "rwo_volume_multi_attach": "FAILURE_VOLUME_ATTACHED",
    "disk_full_checkpoint_volume": "FAILURE_VOLUME_CREATED",
    "instance_boot_failure": "FAILURE_INSTANCE_ACTIVE",
    "node_crash": "FAILURE_INSTANCE_ACTIVE",
    "host_memory_leak": "FAILURE_INSTANCE_ACTIVE",
    "clock_skew_tls": "API_ERROR",
    "neutron_agent_down": "FAILURE_SSH",
    "network_partition": "FAILURE_SSH",
    "packet_loss_latency": "FAILURE_SSH",
    "dns_upstream_failure": "FAILURE_SSH",
    "infiniband_link_errors": "FAILURE_SSH",
    "api_5xx_storm": "API_ERROR",
    "bad_config_push": "API_ERROR",
    "process_crash_loop": "API_ERROR",
    "certificate_expiry": "API_ERROR",
    "message_queue_memory_alarm": "API_ERROR",
    "feature_store_maxmemory": "API_ERROR",
    "bad_model_deploy_latency": "API_ERROR",
}


def sim_to_failure_mode(fault: str) -> str:
    return SIM_TO_FAILURE_MODE.get(fault, "API_ERROR")


def scoring_label(failure_mode: str) -> str:
    """The class a real ``failure_mode`` is scored as (the two healthy modes merge into HEALTHY)."""
    return HEALTHY if failure_mode in HEALTHY_MODES else failure_mode


class RealDataError(FileNotFoundError):
    """The folder is not in the layout of openstack_fault_injection_fse2019."""


@dataclass
class RealSample:
    sample_id: str
    failure_mode: str
    label: str
    """Scoring class (:data:`REAL_CLASSES`)."""
    telemetry: dict
    input_files: list[str]
    """The files whose lines became ``telemetry['logs']`` (service logs only)."""
    meta: dict


def is_service_log(rel_path: str) -> bool:
    parts = Path(rel_path).parts
    if any(p in FORBIDDEN_PARTS for p in parts) or ".out.log" in rel_path or ".err.log" in rel_path:
        return False
    return "logs" in parts and any(p in SERVICE_DIRS for p in parts)


def _resolve(data_dir: Path, entry: dict) -> Path | None:
    """Find a listed file: ``tests/<source_path>`` inside the folder, else ``path`` (which starts with
    ``<split>/<dataset>/``) relative to the folder or its parent."""
    cands = []
    if entry.get("source_path"):
        cands.append(data_dir / "tests" / entry["source_path"])
    if entry.get("path"):
        rel = Path(entry["path"])
        cands += [data_dir / Path(*rel.parts[2:]), data_dir.parent / rel] if len(rel.parts) > 2 else [data_dir / rel]
    return next((c for c in cands if c.is_file()), None)


def service_log_files(data_dir: Path, sample: dict) -> list[Path]:
    """The sample's service-log files that exist on disk (never workload logs, fip_info or trigger_log)."""
    out = []
    for entry in sample.get("files", []):
        rel = entry.get("source_path") or entry.get("path", "")
        if not is_service_log(rel):
            continue
        path = _resolve(data_dir, entry)
        if path is not None:
            out.append(path)
    return out


_TS = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?)")
_HTTP = re.compile(r'HTTP/1\.[01]"?\s+status:\s+(\d{3})')


def merge_lines(files: list[Path], max_lines: int) -> list[str]:
    """All lines of the files ordered by their timestamp (continuation lines stay after their parent)."""
    keyed = []
    for fi, path in enumerate(files):
        last = ""
        for li, line in enumerate(path.read_text(errors="replace").splitlines()):
            m = _TS.match(line)
            if m:
                last = m.group(1)
            keyed.append((last, fi, li, line))
    keyed.sort(key=lambda k: (k[0], k[1], k[2]))
    return [k[3] for k in keyed[:max_lines]]


def derive_alarms(lines: list[str]) -> list[dict]:
    """Alarms the service logs imply (the data has no alerting): HTTP 5xx answers of the API servers
    (``OpenStackAPIErrors``) and bursts of ERROR lines per component (``ServiceErrorLogs``, >= 5 lines)."""
    n5xx = 0
    errors: dict[str, int] = {}
    for line in lines:
        m = _HTTP.search(line)
        if m and m.group(1).startswith("5"):
            n5xx += 1
        parts = line.split(None, 5)
        if len(parts) >= 5 and parts[3] == "ERROR":
            comp = parts[4].split(".")[0]
            errors[comp] = errors.get(comp, 0) + 1
    alarms = []
    if n5xx:
        alarms.append({"name": "OpenStackAPIErrors", "severity": "critical", "state": "firing",
                       "summary": f"{n5xx} API requests answered 5xx"})
    for comp, n in sorted(errors.items()):
        if n >= 5:
            alarms.append({"name": "ServiceErrorLogs", "severity": "warning", "state": "firing", "entity": comp,
                           "summary": f"{n} ERROR lines from {comp}"})
    return alarms


def load_samples(data_dir: str | Path, max_lines: int = 4000) -> list[RealSample]:
    """Read every sample of ``samples.json`` in ``data_dir`` as a telemetry window of its service logs."""
    data_dir = Path(data_dir)
    manifest = data_dir / "samples.json"
    if not manifest.is_file():
        raise RealDataError(f"{str(manifest)!r} not found: --data must be a folder in the layout of "
                            f"../shared/data/openstack_fault_injection_fse2019 (samples.json + the files it lists)")
    doc = json.loads(manifest.read_text())
    samples = doc["samples"] if isinstance(doc, dict) else doc
    out = []
    for s in samples:
        files = service_log_files(data_dir, s)
        lines = merge_lines(files, max_lines)
        telemetry = {"schema": "ifshm.telemetry/v1", "logs": lines, "metrics": {}, "alarms": derive_alarms(lines),
                     "topology": {"services": sorted({p.parent.name for p in files}), "nodes": []}}
        mode = s.get("failure_mode", "")
        out.append(RealSample(sample_id=s.get("sample_id", str(len(out))), failure_mode=mode,
                              label=scoring_label(mode), telemetry=telemetry,
                              input_files=[str(p) for p in files],
                              meta={k: s.get(k) for k in ("test", "round", "injected_subsystem", "fault_type")}))
    return out

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

Two more real sets have readers here (section 1 and 4 of that README); every reader checks its input and raises
:class:`RealDataError` with what is wrong and where (missing file, wrong column count, label out of range):

* :func:`load_failure_dataset` -- Failure-Dataset-OpenStack (JSS 2021, ``openstack_failure_dataset_jss2021``):
  per campaign (DEPL / NET / STO, each with its own label set, :data:`JSS_LABELS`) one row per experiment of
  counts of traced RPC/REST events. :func:`counts_as_text` renders a row as text the encoder reads
  (``novaclient POST 500 x3``), :meth:`Campaign.telemetry` as a telemetry window (those lines as ``logs``).
* :func:`load_nezha` -- Nezha TrainTicket (FSE 2023, ``nezha_trainticket_fse2023``): per injected fault, pod
  metrics (``metrics``), the spans of the minute after injection (per-pod span counts and latencies as
  ``metrics``) and, where present, the pods' log lines; labels: ``fault_type`` and the root-cause service.

:func:`detect_layout` tells which of the three a folder is (``jobs/real_baselines.py`` and ``jobs/diagnose.py`` use
it); a loghub log-parsing folder (``loghub_openstack_2k``: EventId per line, no fault labels) is refused with that
reason. :func:`nezha_service_windows` cuts a Nezha sample into one window per service (root-cause ranking), and
:data:`SIM_TO_NEZHA_FAULT` maps a simulator diagnosis to a Nezha fault type (our own map, documented there).
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

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


def _read_manifest(data_dir: Path, layout: str) -> dict:
    manifest = data_dir / "samples.json"
    if not manifest.is_file():
        raise RealDataError(f"{str(manifest)!r} not found: --data must be a folder in the layout of "
                            f"../shared/data/{layout} (samples.json + the files it lists)")
    try:
        doc = json.loads(manifest.read_text())
    except json.JSONDecodeError as exc:
        raise RealDataError(f"{str(manifest)!r} is not valid JSON: {exc}") from exc
    samples = doc.get("samples") if isinstance(doc, dict) else doc
    if not isinstance(samples, list):
        raise RealDataError(f"{str(manifest)!r}: expected a list of samples (or an object with 'samples': [...]), "
                            f"got {type(samples).__name__}")
    return {"samples": samples, **(doc if isinstance(doc, dict) else {})}


def load_samples(data_dir: str | Path, max_lines: int = 4000) -> list[RealSample]:
    """Read every sample of ``samples.json`` in ``data_dir`` as a telemetry window of its service logs.

    Raises :class:`RealDataError` when the manifest is missing or malformed, a sample has no ``failure_mode`` or
    one outside :data:`REAL_CLASSES` / :data:`HEALTHY_MODES`, or a listed service log (not marked
    ``empty_window``) is not on disk."""
    data_dir = Path(data_dir)
    samples = _read_manifest(data_dir, "openstack_fault_injection_fse2019")["samples"]
    if samples and isinstance(samples[0], dict) and "label" in samples[0] and "failure_mode" not in samples[0]:
        raise RealDataError(f"{data_dir}: this is a Nezha folder (samples.json entries have 'label'), not the "
                            f"layout of openstack_fault_injection_fse2019: read it with load_nezha")
    valid_modes = set(REAL_CLASSES) - {HEALTHY} | set(HEALTHY_MODES)
    out = []
    for i, s in enumerate(samples):
        sid = s.get("sample_id", str(i)) if isinstance(s, dict) else str(i)
        mode = s.get("failure_mode") if isinstance(s, dict) else None
        if mode not in valid_modes:
            raise RealDataError(f"{data_dir}/samples.json: sample {sid!r} has failure_mode {mode!r}; "
                                f"expected one of {sorted(valid_modes)}")
        for entry in s.get("files", []):
            rel = entry.get("source_path") or entry.get("path") or ""
            if (is_service_log(rel) and entry.get("extraction") != "empty_window"
                    and _resolve(data_dir, entry) is None):
                raise RealDataError(f"{data_dir}: sample {sid!r} lists the service log {rel!r}, which is not on "
                                    f"disk (looked for tests/<source_path> and <path>)")
        files = service_log_files(data_dir, s)
        lines = merge_lines(files, max_lines)
        telemetry = {"schema": "ifshm.telemetry/v1", "logs": lines, "metrics": {}, "alarms": derive_alarms(lines),
                     "topology": {"services": sorted({p.parent.name for p in files}), "nodes": []}}
        out.append(RealSample(sample_id=sid, failure_mode=mode,
                              label=scoring_label(mode), telemetry=telemetry,
                              input_files=[str(p) for p in files],
                              meta={k: s.get(k) for k in ("test", "round", "injected_subsystem", "fault_type")}))
    return out


# ==== Failure-Dataset-OpenStack (JSS 2021) ===========================================================================
#: Per campaign, the failure label of 1-based integer ``k`` is ``JSS_LABELS[campaign][k - 1]``.
JSS_LABELS: dict[str, tuple[str, ...]] = {
    "DEPL": ("Instance", "Volume", "SSH", "Cleanup", "Network", "No Failure"),
    "NET": ("Instance", "Network", "SSH", "No Failure"),
    "STO": ("Volume", "Instance", "Cleanup", "No Failure"),
}
JSS_FILES = ("SEQ.tsv", "Failure_Labels.txt")
_HTTP_EVENT = re.compile(r"^(?P<svc>.+?)_(?P<verb>GET|POST|PUT|DELETE|PATCH|HEAD)_(?P<code>\d{3})$")


@dataclass
class Campaign:
    """One campaign of Failure-Dataset-OpenStack: ``counts[i, j]`` is how often event ``events[j]`` was traced
    in experiment ``i``; ``labels[i]`` its 1-based failure label (names in :attr:`label_names`)."""

    name: str
    events: list[str]
    counts: np.ndarray
    """[N, d] int64, >= 0."""
    labels: np.ndarray
    """[N] int64 in 1..len(label_names)."""
    label_names: tuple[str, ...]
    row_index: np.ndarray
    """[N] the original 1-based experiment index of every row (``arange(1, N+1)`` if ``row_index.txt`` is absent)."""
    anomalies: np.ndarray | None = None
    """[N, 2d] the paper's LCS-with-VMM spurious (first d) / missing (last d) event counts, if present."""

    @property
    def groups(self) -> np.ndarray:
        """Cross-validation groups: one experiment per row (its original index)."""
        return self.row_index

    def texts(self) -> list[str]:
        return [counts_as_text(self.events, row) for row in self.counts]

    def telemetry(self, i: int) -> dict:
        """Experiment ``i`` as a telemetry window: one log line per traced event type (``<event> x<count>``);
        an ``OpenStackAPIErrors`` alarm when REST calls answered 5xx, ``ServiceErrorLogs`` per service with
        ``_ERROR`` events. The counts carry no time, so the window has none either."""
        lines = counts_as_text(self.events, self.counts[i]).split("\n") if self.counts[i].any() else []
        alarms, n5xx, errors = [], 0, {}
        for name, c in zip(self.events, self.counts[i]):
            m = _HTTP_EVENT.match(name)
            if c and m and m.group("code").startswith("5"):
                n5xx += int(c)
            if c and name.endswith("_ERROR"):
                svc = split_event(name)[0]
                errors[svc] = errors.get(svc, 0) + int(c)
        if n5xx:
            alarms.append({"name": "OpenStackAPIErrors", "severity": "critical", "state": "firing",
                           "summary": f"{n5xx} API requests answered 5xx"})
        for svc, n in sorted(errors.items()):
            alarms.append({"name": "ServiceErrorLogs", "severity": "warning", "state": "firing", "entity": svc,
                           "summary": f"{n} failed RPC calls of {svc}"})
        return {"schema": "ifshm.telemetry/v1", "logs": lines, "metrics": {}, "alarms": alarms,
                "topology": {"services": sorted({split_event(e)[0] for e in self.events}), "nodes": []}}


#: Service names in the event headers that contain an underscore (the others end at the first one).
_SERVICES_WITH_UNDERSCORE = ("dhcp_agent", "l3_agent", "q-agent-notifier-security_group-update")


def split_event(event: str) -> tuple[str, str]:
    """``q-plugin_get_ports`` -> (``q-plugin``, ``get_ports``); ``dhcp_agent_port_create_end`` -> (``dhcp_agent``,
    ``port_create_end``)."""
    for svc in _SERVICES_WITH_UNDERSCORE:
        if event.startswith(svc + "_"):
            return svc, event[len(svc) + 1:]
    svc, _, rest = event.partition("_")
    return svc, rest


def event_as_text(event: str) -> str:
    """``novaclient_POST_500`` -> ``novaclient POST 500``; ``q-plugin_get_network_info_ERROR`` ->
    ``q-plugin get_network_info ERROR`` (service, then what happened)."""
    m = _HTTP_EVENT.match(event)
    if m:
        return f"{m.group('svc')} {m.group('verb')} {m.group('code')}"
    svc, rest = split_event(event)
    if rest.endswith("_ERROR"):
        return f"{svc} {rest[:-len('_ERROR')]} ERROR"
    return f"{svc} {rest}" if rest else svc


def counts_as_text(events: list[str], counts) -> str:
    """One line per event type that occurred, in column order: ``novaclient POST 500 x3``."""
    return "\n".join(f"{event_as_text(e)} x{int(c)}" for e, c in zip(events, counts) if c)


def _read_int_table(path: Path, expect_cols: int | None, header: bool) -> tuple[list[str], np.ndarray]:
    """A tab-separated table of non-negative integers; says which line and column are wrong."""
    lines = path.read_text().splitlines()
    names: list[str] = []
    if header:
        if not lines:
            raise RealDataError(f"{path}: empty file; expected a header line of event names")
        names = lines[0].split("\t")
        lines = lines[1:]
        if expect_cols is None:
            expect_cols = len(names)
        elif len(names) != expect_cols:
            raise RealDataError(f"{path}: the header has {len(names)} columns, expected {expect_cols}")
    rows = []
    for ln, line in enumerate(lines, start=2 if header else 1):
        if not line.strip():
            continue
        cells = line.split("\t")
        if expect_cols is not None and len(cells) != expect_cols:
            raise RealDataError(f"{path}:{ln}: {len(cells)} columns, expected {expect_cols}")
        try:
            row = [int(c) for c in cells]
        except ValueError:
            bad = next(c for c in cells if not c.strip().lstrip("-").isdigit())
            raise RealDataError(f"{path}:{ln}: {bad!r} is not an integer count") from None
        if min(row) < 0:
            raise RealDataError(f"{path}:{ln}: negative count {min(row)}")
        rows.append(row)
    arr = np.asarray(rows, dtype=np.int64).reshape(len(rows), expect_cols or 0)
    return names, arr


def _read_int_column(path: Path) -> np.ndarray:
    vals = []
    for ln, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            vals.append(int(line.strip()))
        except ValueError:
            raise RealDataError(f"{path}:{ln}: {line.strip()!r} is not an integer") from None
    return np.asarray(vals, dtype=np.int64)


def load_campaign(folder: str | Path, name: str | None = None) -> Campaign:
    """One campaign folder (``SEQ.tsv``, ``Failure_Labels.txt``; ``row_index.txt`` and ``LCS_with_VMM.tsv`` if
    present). ``name`` (default: the folder's name) picks the label set in :data:`JSS_LABELS`."""
    folder = Path(folder)
    name = name or folder.name
    if name not in JSS_LABELS:
        raise RealDataError(f"{folder}: unknown campaign {name!r}; expected a folder named one of {list(JSS_LABELS)}")
    for f in JSS_FILES:
        if not (folder / f).is_file():
            raise RealDataError(f"{folder / f} not found: a Failure-Dataset-OpenStack campaign folder holds "
                                f"{' and '.join(JSS_FILES)} (row_index.txt and LCS_with_VMM.tsv optional)")
    events, counts = _read_int_table(folder / "SEQ.tsv", None, header=True)
    if len(set(events)) != len(events):
        dup = sorted({e for e in events if events.count(e) > 1})
        raise RealDataError(f"{folder / 'SEQ.tsv'}: duplicate event names in the header: {dup[:5]}")
    labels = _read_int_column(folder / "Failure_Labels.txt")
    k = len(JSS_LABELS[name])
    if len(labels) != len(counts):
        raise RealDataError(f"{folder}: Failure_Labels.txt has {len(labels)} labels but SEQ.tsv {len(counts)} rows")
    bad = np.flatnonzero((labels < 1) | (labels > k))
    if bad.size:
        raise RealDataError(f"{folder / 'Failure_Labels.txt'}:{bad[0] + 1}: label {labels[bad[0]]} out of range "
                            f"1..{k} for campaign {name} ({', '.join(JSS_LABELS[name])})")
    row_index = np.arange(1, len(counts) + 1, dtype=np.int64)
    if (folder / "row_index.txt").is_file():
        row_index = _read_int_column(folder / "row_index.txt")
        if len(row_index) != len(counts):
            raise RealDataError(f"{folder}: row_index.txt has {len(row_index)} entries but SEQ.tsv {len(counts)} rows")
        if len(np.unique(row_index)) != len(row_index):
            raise RealDataError(f"{folder / 'row_index.txt'}: experiment indices repeat")
    anomalies = None
    if (folder / "LCS_with_VMM.tsv").is_file():
        _, anomalies = _read_int_table(folder / "LCS_with_VMM.tsv", 2 * len(events), header=True)
        if len(anomalies) != len(counts):
            raise RealDataError(f"{folder}: LCS_with_VMM.tsv has {len(anomalies)} rows but SEQ.tsv {len(counts)}")
    return Campaign(name=name, events=events, counts=counts, labels=labels, label_names=JSS_LABELS[name],
                    row_index=row_index, anomalies=anomalies)


def load_failure_dataset(data_dir: str | Path) -> dict[str, Campaign]:
    """Every campaign under ``data_dir`` (a folder with DEPL / NET / STO sub-folders), or the one campaign
    ``data_dir`` is."""
    data_dir = Path(data_dir)
    if (data_dir / "SEQ.tsv").is_file():
        return {data_dir.name: load_campaign(data_dir)}
    found = {c: load_campaign(data_dir / c) for c in JSS_LABELS if (data_dir / c).is_dir()}
    if not found:
        raise RealDataError(f"{data_dir}: no campaign folder ({'/'.join(JSS_LABELS)}) with SEQ.tsv: expected the "
                            f"layout of ../shared/data/openstack_failure_dataset_jss2021")
    return found


# ==== Nezha TrainTicket (FSE 2023) ==================================================================================
NEZHA_FAULT_TYPES = ("return", "exception", "cpu_contention", "cpu_consumed", "network_delay")
NEZHA_TRACE_COLUMNS = ("TraceID", "SpanID", "ParentID", "PodName", "OperationName", "StartTimeUnixNano",
                       "EndTimeUnixNano", "Duration")
NEZHA_LOG_COLUMNS = ("Timestamp", "TimeUnixNano", "Node", "PodName", "Container", "TraceID", "SpanID", "Log")
_POD_SUFFIX = re.compile(r"-[0-9a-f]{8,10}-[0-9a-z]{5}$")


def pod_service(pod: str) -> str:
    """``ts-route-service-b6c59fb57-zv8dt`` -> ``ts-route-service`` (the Deployment's name)."""
    return _POD_SUFFIX.sub("", pod)


@dataclass
class NezhaSample:
    sample_id: str
    fault_type: str
    root_cause_service: str
    root_cause_pod: str
    inject_time: float
    """UTC epoch seconds of the injection (from ``label.json``'s ``inject_time_utc``)."""
    telemetry: dict
    """``metrics``: service -> metric -> samples (1 per minute; pod metrics, ``front_service``) plus
    ``span_count`` / ``span_p90_ms`` per minute of the trace file; ``logs``: the pods' log messages, if any."""
    metric_times: list[float] = field(default_factory=list)
    """TimeStamp (epoch s) of each metric sample."""
    has_logs: bool = False


def _read_csv(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise RealDataError(f"{path}: empty file; expected a CSV header with {list(required)}")
    header = rows[0]
    missing = [c for c in required if c not in header]
    if missing:
        raise RealDataError(f"{path}: header lacks the columns {missing} (it has {header[:8]}...)")
    for ln, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise RealDataError(f"{path}:{ln}: {len(r)} columns, expected {len(header)} (as the header)")
    return header, rows[1:]


def _float(path: Path, ln: int, col: str, v: str) -> float:
    try:
        x = float(v)
    except ValueError:
        raise RealDataError(f"{path}:{ln}: column {col!r} holds {v!r}, not a number") from None
    return x if np.isfinite(x) else 0.0


def _nezha_metrics(path: Path) -> tuple[str, dict[str, list[float]], list[float]]:
    header, rows = _read_csv(path, ("TimeStamp",))
    key = "PodName" if "PodName" in header else "ServiceName" if "ServiceName" in header else None
    if key is None:
        raise RealDataError(f"{path}: header has neither PodName nor ServiceName")
    skip = {"Time", "TimeStamp", key}
    cols = [c for c in header if c not in skip]
    entity = "front_service" if key == "ServiceName" else pod_service(rows[0][header.index(key)]) if rows else path.stem
    series = {c: [_float(path, ln, c, r[header.index(c)]) for ln, r in enumerate(rows, start=2)] for c in cols}
    times = [_float(path, ln, "TimeStamp", r[header.index("TimeStamp")]) for ln, r in enumerate(rows, start=2)]
    return entity, series, times


def _nezha_traces(path: Path) -> dict[str, dict[str, list[float]]]:
    """Per service: the number of spans and their p90 duration (ms) in the trace file."""
    header, rows = _read_csv(path, NEZHA_TRACE_COLUMNS)
    ip, idur = header.index("PodName"), header.index("Duration")
    per: dict[str, list[float]] = {}
    for ln, r in enumerate(rows, start=2):
        per.setdefault(pod_service(r[ip]), []).append(_float(path, ln, "Duration", r[idur]) / 1000.0)
    return {svc: {"span_count": [float(len(d))], "span_p90_ms": [float(np.percentile(d, 90))]}
            for svc, d in sorted(per.items())}


def _nezha_logs(path: Path, max_lines: int) -> list[str]:
    header, rows = _read_csv(path, NEZHA_LOG_COLUMNS)
    ip, il, it = header.index("PodName"), header.index("Log"), header.index("TimeUnixNano")
    out = []
    for r in sorted(rows, key=lambda r: r[it]):
        msg = r[il]
        try:
            msg = json.loads(msg).get("log", msg)
        except (json.JSONDecodeError, AttributeError):  # a plain (not JSON-wrapped) log message: keep it as is
            pass
        out.append(f"{pod_service(r[ip])} {msg.strip()}")
    return out[:max_lines]


def load_nezha(data_dir: str | Path, max_lines: int = 2000) -> list[NezhaSample]:
    """Every sample of a folder in the layout of ``../shared/data/nezha_trainticket_fse2023``: ``samples.json``
    lists the samples and their files; each ``<sample_id>/`` holds ``label.json``, ``metric/*.csv``,
    ``trace/*.csv`` and (return / exception faults only) ``log/*.csv``."""
    data_dir = Path(data_dir)
    manifest = _read_manifest(data_dir, "nezha_trainticket_fse2023")["samples"]
    out = []
    for i, entry in enumerate(manifest):
        lab = entry.get("label") if isinstance(entry, dict) else None
        if not isinstance(lab, dict) or "sample_id" not in lab:
            raise RealDataError(f"{data_dir}/samples.json: sample {i} has no 'label' object with a sample_id")
        sid = lab["sample_id"]
        folder = data_dir / sid
        if not (folder / "label.json").is_file():
            raise RealDataError(f"{folder / 'label.json'} not found (sample {sid!r} of samples.json)")
        try:
            label = json.loads((folder / "label.json").read_text())
        except json.JSONDecodeError as exc:
            raise RealDataError(f"{folder / 'label.json'} is not valid JSON: {exc}") from exc
        if not isinstance(label, dict):
            raise RealDataError(f"{folder / 'label.json'}: expected a JSON object, got {type(label).__name__}")
        for k in ("fault_type", "root_cause_service", "root_cause_pod", "inject_time_utc"):
            if k not in label:
                raise RealDataError(f"{folder / 'label.json'}: no {k!r}")
        if label.get("sample_id", sid) != sid:
            raise RealDataError(f"{folder / 'label.json'}: sample_id {label['sample_id']!r} differs from the folder "
                                f"and samples.json ({sid!r})")
        if pod_service(label["root_cause_pod"]) != label["root_cause_service"]:
            raise RealDataError(f"{folder / 'label.json'}: root_cause_pod {label['root_cause_pod']!r} is not a pod of "
                                f"root_cause_service {label['root_cause_service']!r}")
        try:
            inject = datetime.strptime(label["inject_time_utc"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
        except (TypeError, ValueError):
            raise RealDataError(f"{folder / 'label.json'}: inject_time_utc {label['inject_time_utc']!r} is not "
                                f"'YYYY-MM-DD HH:MM:SS' (UTC)") from None
        if label["fault_type"] not in NEZHA_FAULT_TYPES:
            raise RealDataError(f"{folder / 'label.json'}: fault_type {label['fault_type']!r} is not one of "
                                f"{list(NEZHA_FAULT_TYPES)}")
        for f in entry.get("files", []):
            rel = Path(f.get("path") or "")
            local = folder / Path(*rel.parts[3:]) if len(rel.parts) > 3 else None
            if local is None or not local.is_file():
                raise RealDataError(f"{data_dir}: sample {sid!r} lists {f.get('path')!r}, which is not on disk")
        metric_files = sorted((folder / "metric").glob("*.csv"))
        if not metric_files:
            raise RealDataError(f"{folder / 'metric'}: no metric CSV files")
        metrics, times = {}, []
        for mf in metric_files:
            entity, series, t = _nezha_metrics(mf)
            if times and t and len(t) != len(times):
                raise RealDataError(f"{mf}: {len(t)} metric rows, but the sample's other metric files have "
                                    f"{len(times)}")
            # a second pod of one service keeps its pod name (its file's stem), so no series is overwritten
            metrics[entity if entity not in metrics else mf.stem.removesuffix("_metric")] = series
            times = times or t
        for tf in sorted((folder / "trace").glob("*.csv")):
            for svc, m in _nezha_traces(tf).items():
                metrics.setdefault(svc, {}).update(m)
        log_files = sorted((folder / "log").glob("*.csv"))
        logs = [line for lf in log_files for line in _nezha_logs(lf, max_lines)][:max_lines]
        if times and not min(times) <= inject.timestamp() <= max(times):
            raise RealDataError(f"{folder / 'metric'}: the metric rows span {min(times):.0f}-{max(times):.0f} "
                                f"(epoch s), "
                                f"which does not contain the injection at {label['inject_time_utc']} UTC "
                                f"({inject.timestamp():.0f}): the window must hold samples before and after it")
        telemetry = {"schema": "ifshm.telemetry/v1", "logs": logs, "metrics": metrics, "alarms": [],
                     "window_s": 60.0 * max(1, len(times)),
                     "topology": {"services": sorted(metrics), "nodes": []}}
        out.append(NezhaSample(sample_id=sid, fault_type=label["fault_type"],
                               root_cause_service=label["root_cause_service"], root_cause_pod=label["root_cause_pod"],
                               inject_time=inject.timestamp(), telemetry=telemetry, metric_times=times,
                               has_logs=bool(log_files)))
    return out


def detect_layout(data_dir: str | Path) -> str:
    """``"jss2021"``, ``"fse2019"`` or ``"nezha"``: which real set's layout ``data_dir`` has (else RealDataError)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise RealDataError(f"{data_dir}: not a folder")
    if (data_dir / "SEQ.tsv").is_file() or any((data_dir / c / "SEQ.tsv").is_file() for c in JSS_LABELS):
        return "jss2021"
    if any(data_dir.glob("*.log_structured.csv")) or any(data_dir.glob("*.log_templates.csv")):
        raise RealDataError(f"{data_dir}: a loghub log-parsing sample (EventId / EventTemplate per line): it has no "
                            f"fault or anomaly labels (../shared/data/README.md, section 3), so there is nothing to "
                            f"diagnose or score; the labelled sets are openstack_failure_dataset_jss2021, "
                            f"openstack_fault_injection_fse2019 and nezha_trainticket_fse2023")
    if (data_dir / "samples.json").is_file():
        samples = _read_manifest(data_dir, "<dataset>")["samples"]
        if samples and isinstance(samples[0], dict) and "label" in samples[0]:
            return "nezha"
        return "fse2019"
    raise RealDataError(f"{data_dir}: neither a Failure-Dataset-OpenStack folder (DEPL/NET/STO with SEQ.tsv) nor a "
                        f"folder with samples.json (openstack_fault_injection_fse2019, nezha_trainticket_fse2023)")


#: Simulator fault type -> Nezha fault type (our own map, like :data:`SIM_TO_FAILURE_MODE`): the Nezha fault whose
#: observable effect the simulated one shares. ``network_delay``: the network-latency / loss faults;
#: ``exception``: faults that make a service answer errors (an exception in its code path); ``cpu_contention``:
#: none of the simulator's faults is a CPU hog, so nothing maps to it; ``return`` (a wrong return value, no error
#: raised) has no simulated counterpart either. A fault missing here (and ``healthy``) maps to :data:`NEZHA_NONE`,
#: which is never a Nezha label, so it scores as a miss.
SIM_TO_NEZHA_FAULT: dict[str, str] = {
    "packet_loss_latency": "network_delay",
    "network_partition": "network_delay",
    "dns_upstream_failure": "network_delay",
    "infiniband_link_errors": "network_delay",
    "nccl_straggler_timeout": "network_delay",
    "api_5xx_storm": "exception",
    "process_crash_loop": "exception",
    "bad_config_push": "exception",
    "certificate_expiry": "exception",
    "clock_skew_tls": "exception",
    "feature_store_maxmemory": "exception",
    "message_queue_memory_alarm": "exception",
}
NEZHA_NONE = "no_nezha_counterpart"


def sim_to_nezha_fault(fault: str) -> str:
    return SIM_TO_NEZHA_FAULT.get(fault, NEZHA_NONE)


def nezha_service_windows(sample: NezhaSample) -> dict[str, dict]:
    """One telemetry window per candidate root-cause service of a Nezha sample: the service's own metric series
    (every pod of it, the trace's span count / p90 too) and its own log lines; ``front_service`` (the user-facing
    aggregate, never a root cause) is left out. Keyed by service name (a second pod joins its service)."""
    per: dict[str, dict] = {}
    for entity, series in sample.telemetry["metrics"].items():
        if entity == "front_service":
            continue
        svc = pod_service(entity)
        per.setdefault(svc, {"metrics": {}, "logs": []})["metrics"][entity] = series
    for line in sample.telemetry["logs"]:
        svc = line.split(" ", 1)[0]
        if svc in per:
            per[svc]["logs"].append(line)
    return {svc: {"schema": "ifshm.telemetry/v1", "logs": w["logs"], "metrics": w["metrics"], "alarms": [],
                  "window_s": sample.telemetry["window_s"], "topology": {"services": sorted(w["metrics"]), "nodes": []}}
            for svc, w in sorted(per.items())}


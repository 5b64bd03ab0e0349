"""Write the small real-data fixtures in this folder.

Run from the repo root: ``python tests/data/real_fixtures/make_fixtures.py``.

Every value here is invented for the tests: the fixtures have the *layout* of the three real sets in
``../shared/data`` (see its README) but none of their content (those files are GPL / AGPL and stay out of the
repository). The event names, log lines and metric columns imitate the originals' formats; the numbers come from a
seeded generator, with a clear signal per class so that a correct pipeline scores well on them.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

# ---- Failure-Dataset-OpenStack layout -----------------------------------------------------------------------------
EVENTS = ["novaclient_POST_202", "novaclient_POST_500", "compute_build_and_run_instance",
          "compute_build_and_run_instance_ERROR", "cinderclient_POST_500", "cinder-scheduler_create_volume_ERROR",
          "dhcp_agent_port_create_end", "q-plugin_get_ports_ERROR"]
CLASSES = {"DEPL": 6, "NET": 4, "STO": 4}
ROWS_PER_CLASS = 6


def jss(root: Path) -> None:
    rng = np.random.default_rng(14)
    for ci, (campaign, k) in enumerate(CLASSES.items()):
        d = root / campaign
        d.mkdir(parents=True)
        labels = np.repeat(np.arange(1, k + 1), ROWS_PER_CLASS)
        rng.shuffle(labels)
        counts = rng.poisson(1.0, size=(len(labels), len(EVENTS)))
        for i, lab in enumerate(labels):
            counts[i, (lab - 1 + ci) % len(EVENTS)] += 6  # the class's own signature event
        (d / "SEQ.tsv").write_text("\t".join(EVENTS) + "\n" + "\n".join("\t".join(map(str, r)) for r in counts))
        lcs = np.concatenate([np.maximum(counts - 1, 0), (counts == 0).astype(int)], axis=1)
        (d / "LCS_with_VMM.tsv").write_text("\t".join(EVENTS + EVENTS) + "\n"
                                            + "\n".join("\t".join(map(str, r)) for r in lcs))
        (d / "Failure_Labels.txt").write_text("\n".join(map(str, labels)) + "\n")
        (d / "row_index.txt").write_text("\n".join(str(10 * i + 1) for i in range(len(labels))) + "\n")


# ---- FSE 2019 fault-injection layout -------------------------------------------------------------------------------
FSE_TESTS = [  # (subsystem, test id, [(round, failure_mode)])
    ("Nova", 1, [("round_1", "FAILURE_INSTANCE_ACTIVE"), ("round_2", "NORMAL_FAULT_FREE_ROUND")]),
    ("Nova", 2, [("round_1", "FAILURE_INSTANCE_ACTIVE")]),
    ("Nova", 3, [("round_1", "NO_FAILURE")]),
    ("Cinder", 4, [("round_1", "FAILURE_VOLUME_CREATED")]),
    ("Cinder", 5, [("round_1", "FAILURE_VOLUME_CREATED")]),
    ("Neutron", 6, [("round_1", "API_ERROR")]),
    ("Neutron", 7, [("round_1", "API_ERROR")]),
]
SYMPTOM = {
    "FAILURE_INSTANCE_ACTIVE": ("nova", "nova-compute", "ERROR nova.compute.manager",
                                "Instance failed to spawn: libvirtError: internal error {n}"),
    "FAILURE_VOLUME_CREATED": ("cinder", "volume", "ERROR cinder.volume.manager",
                               "Failed to create volume {n}: VolumeBackendAPIException"),
    "API_ERROR": ("neutron", "server", "ERROR neutron.api.v2.resource",
                  "create failed: No details. 500 status {n}"),
}


def fse(root: Path) -> None:
    samples = []
    for sub, tid, rounds in FSE_TESTS:
        for rnd, mode in rounds:
            base = root / "tests" / sub / f"Test_{tid}"
            logs = base / "logs" / rnd
            files = []

            def put(rel: str, text: str, extraction: str = "whole_file") -> None:
                p = base / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
                src = f"{sub}/Test_{tid}/{rel}"
                files.append({"path": f"dev/openstack_fault_injection_fse2019/tests/{src}", "source_path": src,
                              "extraction": extraction, "bytes": len(text)})

            if rnd == "round_1":
                put("fip_info.data", f"LEAK_MARKER fault of test {tid}\n")
                put(f"logs/{rnd}/trigger_log", "1538184568.0 Injection activated! LEAK_MARKER\n")
            put(f"logs/{rnd}/foreground_wl/openstack_demo_workload-1538184500.err.log.bzip2.out",
                f"2018-09-28 21:30:38.335131 INFO [sample_workload.sh]: Assertion results: {mode} LEAK_MARKER\n")
            lines = [f"2018-09-28 21:29:{10 + i:02d}.{100 + tid:03d} 9211 INFO nova.osapi_compute.wsgi.server "
                     f"[req-00000000-0000-0000-0000-00000000000{tid} admin admin - default default] "
                     f"10.0.0.{tid} \"GET /v2.1/servers/detail HTTP/1.1\" status: 200 len: {300 + i} time: 0.{i}1"
                     for i in range(4)]
            put(f"logs/{rnd}/nova/nova-api.log.bzip2.out", "\n".join(lines) + "\n", "lines 1-4 of 9")
            if mode in SYMPTOM:
                svc_dir, svc, prefix, msg = SYMPTOM[mode]
                err = [f"2018-09-28 21:29:2{i}.5{tid}0 9300 {prefix} [req-11111111-0000-0000-0000-00000000000{tid} "
                       f"- - - - -] {msg.format(n=tid * 10 + i)}" for i in range(3)]
                put(f"logs/{rnd}/{svc_dir}/{svc}.log.bzip2.out", "\n".join(err) + "\n", "lines 5-7 of 20")
            src = f"{sub}/Test_{tid}/logs/{rnd}/neutron/l3-agent.log.bzip2.out"
            files.append({"path": None, "source_path": src, "extraction": "empty_window", "bytes": 0})
            samples.append({"sample_id": f"{sub}_Test_{tid}_{rnd}", "test": f"{sub}/Test_{tid}", "round": rnd,
                            "injected_subsystem": sub.lower(), "fault_type": "OPENSTACK_THROW_EXCEPTION-INVENTED",
                            "failure_mode": mode, "files": files})
    (root / "samples.json").write_text(json.dumps({"source_repo": "invented for tests", "samples": samples},
                                                  indent=1))


# ---- Nezha TrainTicket layout --------------------------------------------------------------------------------------
PODS = ["ts-route-service-b6c59fb57-aaaaa", "ts-order-service-5b67c48447-bbbbb", "ts-auth-service-7f8d7d756d-ccccc"]
POD_COLS = ["Time", "TimeStamp", "PodName", "CpuUsage(m)", "CpuUsageRate(%)", "MemoryUsage(Mi)",
            "PodServerLatencyP90(s)", "PodWorkload(Ops)", "PodSuccessRate(%)", "NodeCpuUsageRate(%)"]
NEZHA = [("2023-01-29_100000_cpu_contention", "cpu_contention", 0, 1674986400, False),
         ("2023-01-29_110000_exception", "exception", 1, 1674990000, True)]


def nezha(root: Path) -> None:
    rng = np.random.default_rng(23)
    entries = []
    for sid, ftype, rc, inject, with_logs in NEZHA:
        d = root / sid
        (d / "metric").mkdir(parents=True)
        (d / "trace").mkdir()
        times = [inject - 175 + 60 * i for i in range(7)]
        files = []

        def write_csv(rel: str, header: list[str], rows: list[list]) -> None:
            with (d / rel).open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(header)
                w.writerows(rows)
            files.append({"path": f"dev/nezha_trainticket_fse2023/{sid}/{rel}", "source_path": f"rca_data/x/{rel}",
                          "extraction": "header line 1 + lines 2-8 of 8", "bytes": (d / rel).stat().st_size})

        write_csv("metric/front_service.csv", ["Time", "TimeStamp", "ServiceName", "SuccessRate(%)", "LatencyP90(s)"],
                  [[f"t{t}", t, "Frontend", 100, round(0.2 + 0.01 * i, 3)] for i, t in enumerate(times)])
        for pi, pod in enumerate(PODS):
            rows = []
            for i, t in enumerate(times):
                shift = 40.0 if (pi == rc and t >= inject) else 0.0
                rows.append([f"t{t}", t, pod, round(10 + rng.normal(0, 0.5) + shift, 3),
                             round(2 + rng.normal(0, 0.1) + shift / 10, 3), round(400 + rng.normal(0, 1), 3),
                             round(0.02 + rng.normal(0, 0.001), 4), round(1 + rng.normal(0, 0.05), 3), 100,
                             round(10 + rng.normal(0, 3), 3)])
            write_csv(f"metric/{pod.replace('ts-', 'ts-', 1)}_metric.csv", POD_COLS, rows)
        spans = [[f"trace{j}", f"span{j}{k}", "root" if k == 0 else f"span{j}0", PODS[(j + k) % 3], "op",
                  (inject + 60) * 10**9, (inject + 60) * 10**9 + 5000 * (k + 1), 5000 * (k + 1)]
                 for j in range(5) for k in range(2)]
        write_csv(f"trace/{sid[11:13]}_{int(sid[13:15]) + 1:02d}_trace.csv",
                  ["TraceID", "SpanID", "ParentID", "PodName", "OperationName", "StartTimeUnixNano",
                   "EndTimeUnixNano", "Duration"], spans)
        if with_logs:
            (d / "log").mkdir()
            logs = [[f"2023-01-29T11:00:1{i}Z", (inject + 10 + i) * 10**9, "10.0.0.1", PODS[rc], "server", "t", "s",
                     json.dumps({"log": f"11:00:1{i} ERROR c.s.OrderServiceImpl#4{i} invented failure {i}\n"})]
                    for i in range(3)]
            write_csv(f"log/{sid[11:13]}_{int(sid[13:15]) + 1:02d}_log.csv",
                      ["Timestamp", "TimeUnixNano", "Node", "PodName", "Container", "TraceID", "SpanID", "Log"], logs)
        label = {"sample_id": sid, "split": "dev", "system": "TrainTicket", "date": "2023-01-29",
                 "inject_time_utc": f"2023-01-29 {sid[11:13]}:{sid[13:15]}:{sid[15:17]}",
                 "root_cause_pod": PODS[rc], "root_cause_service": PODS[rc].rsplit("-", 2)[0], "fault_type": ftype}
        (d / "label.json").write_text(json.dumps(label, indent=1))
        entries.append({"label": label, "files": files})
    (root / "samples.json").write_text(json.dumps({"source_repo": "invented for tests", "samples": entries},
                                                  indent=1))


def main() -> None:
    for name, make in (("openstack_failure_dataset_jss2021", jss), ("openstack_fault_injection_fse2019", fse),
                       ("nezha_trainticket_fse2023", nezha)):
        shutil.rmtree(HERE / name, ignore_errors=True)
        make(HERE / name)


if __name__ == "__main__":
    main()

"""Readers of the real failure data: the fixtures in tests/data/real_fixtures (invented, same layouts) always, and
../shared/data when present. Every reader says what is wrong with a malformed folder."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ifshm_ray.encoding.real_data import (JSS_LABELS, RealDataError, counts_as_text, detect_layout, event_as_text,
                                          load_campaign, load_failure_dataset, load_nezha, load_samples, pod_service,
                                          split_event)
from ifshm_ray.telemetry import validate_telemetry

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "data" / "real_fixtures"
SHARED = REPO.parent / "shared" / "data"
JSS, FSE, NEZHA = "openstack_failure_dataset_jss2021", "openstack_fault_injection_fse2019", "nezha_trainticket_fse2023"
needs_shared = pytest.mark.skipif(not (SHARED / FSE / "samples.json").is_file(), reason="../shared/data is absent")
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def copy_of(tmp_path):
    def copy(name: str) -> Path:
        return Path(shutil.copytree(FIX / name, tmp_path / name))
    return copy


# ---- Failure-Dataset-OpenStack ------------------------------------------------------------------------------------
def test_jss_fixture_reads_every_campaign():
    data = load_failure_dataset(FIX / JSS)
    assert sorted(data) == ["DEPL", "NET", "STO"]
    for name, c in data.items():
        assert c.counts.shape == (len(c.labels), len(c.events)) and c.counts.dtype == np.int64
        assert c.anomalies.shape == (len(c.labels), 2 * len(c.events))
        assert set(c.labels.tolist()) == set(range(1, len(JSS_LABELS[name]) + 1))
        assert c.label_names == JSS_LABELS[name]
        assert len(np.unique(c.groups)) == len(c.labels)  # one experiment per row
    assert load_failure_dataset(FIX / JSS / "NET").keys() == {"NET"}


@pytest.mark.parametrize("event,text", [
    ("novaclient_POST_500", "novaclient POST 500"),
    ("q-plugin_get_ports_ERROR", "q-plugin get_ports ERROR"),
    ("compute_build_and_run_instance", "compute build_and_run_instance"),
    ("dhcp_agent_port_create_end", "dhcp_agent port_create_end"),
    ("q-agent-notifier-security_group-update_security_groups_rule_updated",
     "q-agent-notifier-security_group-update security_groups_rule_updated"),
    ("cinder-volume.localhost.localdomain@lvm_create_volume_ERROR",
     "cinder-volume.localhost.localdomain@lvm create_volume ERROR"),
])
def test_event_names_as_text(event, text):
    assert event_as_text(event) == text
    assert split_event(event)[0] == text.split(" ")[0]


def test_counts_as_text_and_telemetry():
    c = load_failure_dataset(FIX / JSS)["DEPL"]
    assert counts_as_text(["novaclient_POST_500", "compute_x", "q-plugin_get_ports_ERROR"], [3, 0, 1]) == \
        "novaclient POST 500 x3\nq-plugin get_ports ERROR x1"
    i = int(np.flatnonzero(c.counts[:, c.events.index("novaclient_POST_500")] > 0)[0])
    t = validate_telemetry(c.telemetry(i))
    assert t["logs"] == c.texts()[i].split("\n") and len(t["logs"]) == int((c.counts[i] > 0).sum())
    assert any(a["name"] == "OpenStackAPIErrors" for a in t["alarms"])


def _write(path: Path, text: str) -> None:
    path.write_text(text)


@pytest.mark.parametrize("breakage,message", [
    (lambda d: (d / "SEQ.tsv").unlink(), "SEQ.tsv not found"),
    (lambda d: (d / "Failure_Labels.txt").unlink(), "Failure_Labels.txt not found"),
    (lambda d: _drop_cell(d / "SEQ.tsv", line=3), "SEQ.tsv:3: 7 columns, expected 8"),
    (lambda d: _write(d / "Failure_Labels.txt", (d / "Failure_Labels.txt").read_text().replace("4", "7", 1)),
     "out of range 1..4 for campaign NET"),
    (lambda d: _write(d / "Failure_Labels.txt", "\n".join((d / "Failure_Labels.txt").read_text().split()[:-1])),
     "23 labels but SEQ.tsv 24 rows"),
    (lambda d: _set_cell(d / "SEQ.tsv", line=5, value="x"), "SEQ.tsv:5: 'x' is not an integer count"),
    (lambda d: _set_cell(d / "SEQ.tsv", line=5, value="-2"), "SEQ.tsv:5: negative count -2"),
    (lambda d: _write(d / "row_index.txt", "1\n" * 24), "experiment indices repeat"),
    (lambda d: _drop_cell(d / "LCS_with_VMM.tsv", line=2), "LCS_with_VMM.tsv:2: 15 columns, expected 16"),
])
def test_jss_malformed_campaign_says_what_is_wrong(copy_of, breakage, message):
    d = copy_of(JSS) / "NET"
    breakage(d)
    with pytest.raises(RealDataError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_campaign(d)


def _set_cell(path: Path, line: int, value: str) -> None:
    lines = path.read_text().split("\n")
    lines[line - 1] = value + lines[line - 1][lines[line - 1].index("\t"):]
    path.write_text("\n".join(lines))


def _drop_cell(path: Path, line: int) -> None:
    lines = path.read_text().split("\n")
    lines[line - 1] = lines[line - 1].rsplit("\t", 1)[0]
    path.write_text("\n".join(lines))


def test_jss_unknown_campaign_and_empty_folder(tmp_path, copy_of):
    d = copy_of(JSS)
    (d / "NET").rename(d / "NETX")
    with pytest.raises(RealDataError, match="unknown campaign 'NETX'"):
        load_campaign(d / "NETX")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RealDataError, match="no campaign folder"):
        load_failure_dataset(tmp_path / "empty")


# ---- FSE 2019 fault-injection runs -------------------------------------------------------------------------------
def test_fse_fixture_service_logs_only():
    samples = load_samples(FIX / FSE)
    assert len(samples) == 8
    assert {s.meta["test"] for s in samples if s.meta["round"] == "round_2"} == {"Nova/Test_1"}
    for s in samples:
        validate_telemetry(s.telemetry)
        assert s.input_files and all(Path(f).parent.name in ("nova", "cinder", "neutron") for f in s.input_files)
        assert not any("LEAK_MARKER" in line or "Assertion results" in line for line in s.telemetry["logs"])
    assert [s.label for s in samples][:2] == ["FAILURE_INSTANCE_ACTIVE", "HEALTHY"]


def test_fse_malformed(copy_of):
    d = copy_of(FSE)
    doc = json.loads((d / "samples.json").read_text())
    doc["samples"][2]["failure_mode"] = "FAILURE_EVERYTHING"
    (d / "samples.json").write_text(json.dumps(doc))
    with pytest.raises(RealDataError, match="'Nova_Test_2_round_1' has failure_mode 'FAILURE_EVERYTHING'"):
        load_samples(d)
    doc["samples"][2]["failure_mode"] = "API_ERROR"
    (d / "samples.json").write_text(json.dumps(doc))
    (d / "tests" / "Cinder" / "Test_4" / "logs" / "round_1" / "cinder" / "volume.log.bzip2.out").unlink()
    with pytest.raises(RealDataError, match="lists the service log 'Cinder/Test_4/logs/round_1/cinder/volume.log"):
        load_samples(d)
    (d / "samples.json").write_text("{not json")
    with pytest.raises(RealDataError, match="not valid JSON"):
        load_samples(d)
    (d / "samples.json").unlink()
    with pytest.raises(RealDataError, match="samples.json' not found"):
        load_samples(d)


# ---- Nezha ----------------------------------------------------------------------------------------------------------
def test_nezha_fixture():
    samples = load_nezha(FIX / NEZHA)
    assert [s.fault_type for s in samples] == ["cpu_contention", "exception"]
    assert [s.root_cause_service for s in samples] == ["ts-route-service", "ts-order-service"]
    for s in samples:
        validate_telemetry(s.telemetry)
        assert len(s.metric_times) == 7 and min(s.metric_times) < s.inject_time < max(s.metric_times)
        assert s.telemetry["metrics"]["ts-route-service"]["span_count"][0] > 0
        assert "front_service" in s.telemetry["metrics"]
    assert not samples[0].has_logs and samples[0].telemetry["logs"] == []
    assert samples[1].telemetry["logs"][0].startswith("ts-order-service 11:00:10 ERROR")
    assert pod_service("ts-route-service-b6c59fb57-zv8dt") == "ts-route-service"


def test_nezha_malformed(copy_of):
    d = copy_of(NEZHA)
    sid = "2023-01-29_110000_exception"
    label = json.loads((d / sid / "label.json").read_text())
    (d / sid / "label.json").write_text(json.dumps({**label, "fault_type": "meteor"}))
    with pytest.raises(RealDataError, match="fault_type 'meteor' is not one of"):
        load_nezha(d)
    (d / sid / "label.json").write_text(json.dumps(label))
    metric = d / sid / "metric" / "front_service.csv"
    metric.write_text(metric.read_text().replace("Frontend,", "Frontend,1,", 1))
    with pytest.raises(RealDataError, match="front_service.csv:2: 6 columns, expected 5"):
        load_nezha(d)
    metric.unlink()
    with pytest.raises(RealDataError, match="lists 'dev/nezha_trainticket_fse2023/.*front_service.csv'"):
        load_nezha(d)


@pytest.mark.parametrize("change, message", [
    (lambda lab: "{garbled", "label.json is not valid JSON"),
    (lambda lab: {**lab, "inject_time_utc": "2023-01-29T11:00"}, "inject_time_utc '2023-01-29T11:00' is not"),
    (lambda lab: {**lab, "inject_time_utc": "2023-01-29 13:00:00"}, "does not contain the injection at"),
    (lambda lab: {**lab, "root_cause_pod": "ts-auth-service-7f8d7d756d-ccccc"}, "is not a pod of root_cause_service"),
    (lambda lab: {**lab, "sample_id": "other"}, "sample_id 'other' differs from the folder"),
    (lambda lab: [lab], "expected a JSON object, got list"),
])
def test_nezha_bad_label_says_what_is_wrong(copy_of, change, message):
    d = copy_of(NEZHA)
    f = d / "2023-01-29_110000_exception" / "label.json"
    new = change(json.loads(f.read_text()))
    f.write_text(new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(RealDataError, match=message):
        load_nezha(d)


def test_loghub_folder_is_refused_with_the_reason(tmp_path):
    (tmp_path / "OpenStack_2k.log_templates.csv").write_text("EventId,EventTemplate\n")
    with pytest.raises(RealDataError, match="no fault or anomaly labels"):
        detect_layout(tmp_path)


def test_nezha_second_pod_of_a_service_and_short_metric_file(copy_of):
    d = copy_of(NEZHA)
    metric = d / "2023-01-29_110000_exception" / "metric"
    src = metric / "ts-order-service-5b67c48447-bbbbb_metric.csv"
    (metric / "ts-order-service-5b67c48447-ddddd_metric.csv").write_text(src.read_text().replace("bbbbb", "ddddd"))
    m = load_nezha(d)[1].telemetry["metrics"]
    assert "ts-order-service" in m and "ts-order-service-5b67c48447-ddddd" in m
    (metric / "ts-order-service-5b67c48447-ddddd_metric.csv").write_text("\n".join(src.read_text().split("\n")[:5]))
    with pytest.raises(RealDataError, match="ddddd_metric.csv: 4 metric rows, but .* other metric files have 7"):
        load_nezha(d)


def test_fse_reader_names_a_nezha_folder():
    with pytest.raises(RealDataError, match="this is a Nezha folder"):
        load_samples(FIX / NEZHA)


def test_detect_layout(tmp_path):
    assert detect_layout(FIX / JSS) == detect_layout(FIX / JSS / "STO") == "jss2021"
    assert detect_layout(FIX / FSE) == "fse2019"
    assert detect_layout(FIX / NEZHA) == "nezha"
    with pytest.raises(RealDataError, match="neither a Failure-Dataset-OpenStack folder"):
        detect_layout(tmp_path)


# ---- the real development split -----------------------------------------------------------------------------------
@needs_shared
def test_shared_jss_matches_its_readme():
    data = load_failure_dataset(SHARED / JSS)
    expect = {"DEPL": (808, 104, [162, 112, 29, 53, 37, 415]), "NET": (421, 59, [41, 130, 7, 243]),
              "STO": (675, 75, [26, 246, 103, 300])}
    for name, (n, d, per_label) in expect.items():
        c = data[name]
        assert c.counts.shape == (n, d) and c.anomalies.shape == (n, 2 * d)
        assert np.bincount(c.labels, minlength=len(per_label) + 1)[1:].tolist() == per_label
        assert c.row_index[0] == 1 and len(np.unique(c.row_index)) == n
        validate_telemetry(c.telemetry(0))


@needs_shared
def test_shared_fse_and_nezha():
    samples = load_samples(SHARED / FSE, max_lines=300)
    assert len(samples) == 22
    for s in samples:
        assert not any("Assertion results" in line or "sample_workload.sh" in line for line in s.telemetry["logs"])
    nz = load_nezha(SHARED / NEZHA)
    assert [s.fault_type for s in nz] == ["return", "exception", "cpu_contention", "network_delay"]
    assert [s.has_logs for s in nz] == [True, True, False, False]
    for s in nz:
        validate_telemetry(s.telemetry)
        assert len(s.telemetry["metrics"]) >= 40


@pytest.mark.skipif(not (SHARED / "loghub_openstack_2k").is_dir(), reason="../shared/data is absent")
def test_shared_loghub_has_no_fault_labels_and_is_refused():
    with pytest.raises(RealDataError, match="no fault or anomaly labels"):
        detect_layout(SHARED / "loghub_openstack_2k")

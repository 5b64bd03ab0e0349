"""The live stack's telemetry pieces without the stack: alert rules generated from data/promql.yaml and the
simulator's thresholds, the sidecar (probe metrics + Alertmanager webhook), the collector's log parsing and its
telemetry window against a fake Prometheus, the binaries check."""
from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from live_helpers import QuietHandler, serving

from ifshm_ray.config import TopologyConfig
from ifshm_ray.live.binding import load_binding
from ifshm_ray.live.collector import Collector, parse_log_line, parse_rfc3339, tail_lines
from ifshm_ray.live.loadgen import RequestRecord
from ifshm_ray.live.stack import (PROMQL_FILE, SIM_ALERTS_FILE, Ports, Sidecar, alert_rules, find_binaries,
                                  promql_map, ray_scrape_state)
from ifshm_ray.sim.topology import Topology
from ifshm_ray.telemetry import validate_telemetry

pytestmark = pytest.mark.timeout(60)

VALUES = {"w": "10s", "g": "3s", "mount": "/tmp/x/model-cache", "base_p95_s": "0.12", "base_rps": "5",
          "base_model_p95_ms": "100", "slo_factor": "2", "replicas": 2}


def test_promql_map_fills_every_placeholder_and_names_simulator_entities():
    queries = promql_map(VALUES)
    topo = Topology(TopologyConfig())
    assert set(queries) <= set(topo.targets)
    for ent, ms in queries.items():
        for metric, q in ms.items():
            assert "{" not in q.replace("{code", "").replace("{mode", "").replace("{deployment", "") \
                .replace("{mountpoint", ""), (ent, metric, q)
    assert '/tmp/x/model-cache' in queries["gpu-0"]["node_filesystem_used_ratio"]


def test_alert_rules_carry_simulator_names_thresholds_and_bound_entity_labels():
    rules = alert_rules(promql_map(VALUES), for_s=3.0)["groups"][0]["rules"]
    sim = {r["name"]: r for r in yaml.safe_load(SIM_ALERTS_FILE.read_text())["rules"]}
    wanted = yaml.safe_load(PROMQL_FILE.read_text())["alerts"]
    assert len(rules) == sum(len(v) for v in wanted.values())
    for r in rules:
        s = sim[r["alert"]]
        assert r["for"] == "3s"
        assert r["expr"].endswith(f"{s['op']} {s['threshold']}")
        label = "node" if s["scope"] == "node" else "service"
        assert r["labels"][label] in wanted[r["alert"]] and r["labels"]["severity"] == s["severity"]
    burn = [r for r in rules if r["alert"] == "ServiceErrorBudgetBurn" and r["labels"]["service"] == "api-gateway"]
    assert burn and "ifshm_probe_requests_total" in burn[0]["expr"]


def test_alert_rules_refuse_a_metric_without_promql(tmp_path):
    spec = yaml.safe_load(PROMQL_FILE.read_text())
    spec["alerts"]["KubePodCrashLooping"] = ["inference-server"]  # container_restarts has no PromQL
    p = tmp_path / "promql.yaml"
    p.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="container_restarts"):
        alert_rules(promql_map(VALUES, p), for_s=3.0, path=p)


def test_ports_are_distinct():
    ports = Ports().as_dict()
    assert len(set(ports.values())) == len(ports)


def test_find_binaries_names_what_is_missing_and_how_to_get_it(tmp_path):
    _, problem = find_binaries(tmp_path)
    assert problem is not None and "install_live.sh" in problem and "prometheus" in problem


def test_sidecar_exposes_probe_metrics_and_records_webhooks():
    class FakeLoad:
        records = [RequestRecord(0.0, 200, None, 80.0), RequestRecord(0.1, 503, None, 10.0),
                   RequestRecord(0.2, None, "ConnectError", 2000.0)]
    side = Sidecar("/v1/alertmanager").start()
    try:
        side.load = FakeLoad()
        with httpx.Client(trust_env=False, timeout=5) as c:
            text = c.get(f"http://127.0.0.1:{side.port}/metrics").text
            assert 'ifshm_probe_requests_total{code="200"} 1' in text
            assert 'ifshm_probe_requests_total{code="error"} 1' in text
            assert 'ifshm_probe_latency_seconds_bucket{le="0.1"} 2' in text
            assert 'ifshm_probe_latency_seconds_bucket{le="+Inf"} 3' in text
            t0 = time.time()
            hook = {"alerts": [{"status": "firing", "labels": {"alertname": "ServiceLatencyHigh",
                                                               "service": "api-gateway"}}]}
            assert c.post(f"http://127.0.0.1:{side.port}/v1/alertmanager", json=hook).status_code == 200
            assert c.post(f"http://127.0.0.1:{side.port}/other", json=hook).status_code == 404
        got = side.alerts_since(t0, "ServiceLatencyHigh")
        assert len(got) == 1 and got[0]["received_at"] >= t0
        assert side.alerts_since(time.time() + 1) == []
    finally:
        side.stop()


def test_log_line_parsing_and_rfc3339():
    assert parse_rfc3339("2026-11-30T04:19:22.5Z") - parse_rfc3339("2026-11-30T04:19:22Z") == pytest.approx(0.5)
    assert parse_rfc3339("2026-11-30T05:19:22+01:00") == parse_rfc3339("2026-11-30T04:19:22Z")
    with pytest.raises(ValueError):
        parse_rfc3339("yesterday")
    assert parse_log_line("redis", "12:M 30 Nov 2026 04:19:22.798 # OOM command not allowed")[1:] == \
        ("#", "OOM command not allowed")
    assert parse_log_line("nginx", "2026/11/30 04:19:22 [error] 7#0: *1 upstream reset")[1] == "error"
    assert parse_log_line("serve", "ERROR 2026-11-30 04:19:22,798 target_Model x replica.py:1 - boom")[1] == "ERROR"
    assert parse_log_line("serve", "Traceback (most recent call last):") is None


def test_tail_lines_drops_the_cut_line(tmp_path):
    p = tmp_path / "a.log"
    p.write_text("first line\nsecond\nthird\n")
    assert tail_lines(p, 1000) == ["first line", "second", "third"]
    assert tail_lines(p, 10) == ["third"]  # the partial "second" line is dropped
    assert tail_lines(tmp_path / "missing.log", 10) == []


class _FakeProm:
    """/api/v1/query_range answers one series per query; /api/v1/alerts one firing and one foreign alert."""

    def __init__(self):
        self.queries = []

    def handler(self):
        fake = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                url = httpx.URL(self.path)
                if url.path == "/api/v1/query_range":
                    q = url.params["query"]
                    fake.queries.append(q)
                    vals = ([[1.0, "NaN"]] if "nan" in q else [[1.0, "0.5"], [2.0, "2.3"]] if "over" in q else
                            [[1.0, "0.5"], [2.0, "NaN"], [3.0, "0.75"]])
                    data = {"resultType": "matrix", "result": [{"metric": {}, "values": vals}]}
                elif url.path == "/api/v1/alerts":
                    data = {"alerts": [
                        {"labels": {"alertname": "ServiceErrorBudgetBurn", "service": "api-gateway",
                                    "severity": "critical"}, "state": "firing",
                         "activeAt": "2026-11-30T04:00:00.123456789Z", "annotations": {"summary": "burn"}},
                        {"labels": {"alertname": "Watchdog"}, "state": "firing", "activeAt": None}]}
                else:
                    return self._send(404, {})
                self._send(200, {"status": "success", "data": data})

            def _send(self, code, body):
                b = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(b)))
                self.end_headers()
                self.wfile.write(b)

            def log_message(self, *a):
                pass
        return H


def test_collector_builds_a_valid_window_from_prometheus_and_logs(tmp_path):
    fake = _FakeProm()
    redis_log = tmp_path / "redis.log"
    now = time.time()
    stamp = time.strftime("%d %b %Y %H:%M:%S", time.localtime(now - 2)) + ".000"
    old = time.strftime("%d %b %Y %H:%M:%S", time.localtime(now - 300)) + ".000"
    before = time.strftime("%d %b %Y %H:%M:%S", time.localtime(now - 20)) + ".000"
    redis_log.write_text(f"1:M {old} # too old\n1:M {before} # before the incident\n1:M {stamp} * just info\n"
                         f"1:M {stamp} # OOM command not allowed\n")
    topo = Topology(TopologyConfig())
    queries = {"api-gateway": {"error_rate": "q1"}, "feature-store": {"memory_util": "nan q"}}
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())) as port:
        col = Collector(f"http://127.0.0.1:{port}", queries, load_binding(), lambda: {"redis": [redis_log]},
                        services=topo.services, nodes=topo.nodes, samples=3)
        tel = col.window(30.0, now=now, t0=now - 10)
    validate_telemetry(tel)
    assert tel["metrics"] == {"api-gateway": {"error_rate": [0.5, 0.75]}}  # NaN points and empty metrics left out
    assert [a["name"] for a in tel["alarms"]] == ["ServiceErrorBudgetBurn"]
    assert tel["alarms"][0]["entity"] == "api-gateway" and tel["alarms"][0]["active_for_s"] > 0
    assert len(tel["logs"]) == 1 and tel["logs"][0].endswith(" gpu-0 feature-store: WARNING OOM command not allowed")
    # the level is in the body, as in the simulator's lines: the policy's log feature counts the line (a warning of
    # feature-store on gpu-0) although it matches no simulator template
    from ifshm_ray.sim.core import BatchedSim
    from ifshm_ray.sim.render import TemplateMiner
    from ifshm_ray.config import SimConfig
    miner = TemplateMiner(BatchedSim(SimConfig(), batch_size=1))
    _, svc_lines, node_lines, unmatched = miner.mine(tel["logs"])
    assert unmatched == 1 and svc_lines[topo.services.index("feature-store")] == 1
    assert node_lines[topo.nodes.index("gpu-0")] == 1
    assert tel["time_s"] == pytest.approx(10.0)
    assert fake.queries == ["q1", "nan q"]


def test_collector_flags_a_share_outside_zero_one_as_a_mapping_error(tmp_path, caplog):
    """Ray Serve counts a failed request in its error counter only, not in its request counter: the error ratio
    errors / requests read up to 44 on the live stack. A share by definition outside [0, 1] is counted and warned
    about once per entity and metric; memory_util (Redis used / maxmemory) may pass 1 and is not flagged."""
    fake = _FakeProm()
    topo = Topology(TopologyConfig())
    queries = {"inference-server": {"error_rate": "over q"}, "feature-store": {"memory_util": "over q2"},
               "api-gateway": {"error_rate": "q1"}}
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())) as port:
        col = Collector(f"http://127.0.0.1:{port}", queries, load_binding(), lambda: {},
                        services=topo.services, nodes=topo.nodes, samples=3)
        now = time.time()
        with caplog.at_level("WARNING", logger="ifshm_ray.live.collector"):
            col.window(30.0, now=now, t0=now - 10)
            col.window(30.0, now=now, t0=now - 10)
    assert col.out_of_range == {"inference-server/error_rate": 2}
    warned = [r.getMessage() for r in caplog.records if "outside [0, 1]" in r.getMessage()]
    assert len(warned) == 1 and "inference-server/error_rate read 2.3" in warned[0] and "over q" in warned[0]


def test_model_error_ratio_counts_failed_requests_in_the_denominator():
    """The mapping itself: Serve's request counter holds successes only, so the ratio must divide by errors +
    successes (checked on the expression: a live Prometheus runs it in tests/test_live_e2e.py)."""
    q = promql_map(VALUES)["inference-server"]["error_rate"]
    num, den = q.split(" / ", 1)
    assert "error_counter" in num and "error_counter" in den and "request_counter" in den


def test_answer_from_action_names_simulator_targets_and_ratio_only_where_used():
    from ifshm_ray.live.incident import answer_from_action
    from ifshm_ray.sim.actions import CATEGORIES, RATIO_LEVELS
    import numpy as np
    topo = Topology(TopologyConfig())
    gw = topo.targets.index("api-gateway")
    a = answer_from_action(np.array([CATEGORIES.index("scale"), gw, RATIO_LEVELS.index(2.0)]), topo)
    assert a == {"action": {"category": "scale", "target": "api-gateway", "ratio": 2.0}, "escalate": False}
    a = answer_from_action(np.array([CATEGORIES.index("restart"), gw, 3]), topo)
    assert a["action"]["ratio"] is None
    a = answer_from_action(np.array([CATEGORIES.index("observe"), 5, 0]), topo)
    assert a["action"]["target"] is None and not a["escalate"]
    assert answer_from_action(np.array([CATEGORIES.index("escalate"), 0, 0]), topo)["escalate"]


def test_bundled_model_is_deterministic_per_seed(tmp_path):
    from ifshm_ray.live.modelcache import model_path, write_models
    import numpy as np
    write_models(tmp_path / "a", ["v1", "v2"], 8, seed=3)
    write_models(tmp_path / "b", ["v1", "v2"], 8, seed=3)
    write_models(tmp_path / "c", ["v1"], 8, seed=4)
    a1, b1 = np.load(model_path(tmp_path / "a", "v1")), np.load(model_path(tmp_path / "b", "v1"))
    assert np.array_equal(a1, b1) and a1.shape == (8,)
    assert not np.array_equal(a1, np.load(model_path(tmp_path / "a", "v2")))
    assert not np.array_equal(a1, np.load(model_path(tmp_path / "c", "v1")))


def test_summarise_counts_unrecovered_incidents_at_the_cap_and_skips_skipped():
    from ifshm_ray.live.incident import summarise
    recs = [{"fault": "f", "arm": "runbook", "recovered": True, "mttr_s": 10.0, "capped_at_s": 60.0,
             "detect_s": 2.0, "actions": [{"category": "reroute", "target": "api-gateway", "outcome": "executed"}]},
            {"fault": "f", "arm": "runbook", "recovered": False, "mttr_s": None, "capped_at_s": 60.0,
             "detect_s": None, "actions": []},
            {"fault": "f", "arm": "none", "recovered": False, "skipped": "no tmpfs"}]
    s = summarise(recs)
    assert list(s) == ["f/runbook"]
    row = s["f/runbook"]
    assert row["incidents"] == 2 and row["recovered"] == 1 and row["mttr_mean_s"] == 35.0
    assert row["detect_mean_s"] == 2.0 and row["mttr_ci95_s"][0] < 35.0 < row["mttr_ci95_s"][1]
    assert row["actions"] == [[("reroute", "api-gateway", "executed")], []]
    assert row["success_rate"] == 0.5 and row["timeouts"] == 1 and row["escalations"] == 0 and row["acted"] == 1


def test_summarise_bootstrap_ci_escalations_and_arms():
    from ifshm_ray.eval.stats import bootstrap_mean_ci
    from ifshm_ray.live.incident import incident_outcome, summarise, summarise_arms
    page = [{"category": "escalate", "target": None, "outcome": "page"}]
    recs = [{"fault": "f", "arm": "policy", "recovered": ok, "mttr_s": m, "capped_at_s": 60.0, "detect_s": 3.0,
             "actions": acts} for ok, m, acts in [(True, 12.0, []), (True, 20.0, []), (False, None, page),
                                                  (False, None, [])]]
    recs.append({"fault": "neg", "arm": "policy", "recovered": True, "mttr_s": 0.0, "capped_at_s": 60.0,
                 "detect_s": None, "actions": []})
    row = summarise(recs)["f/policy"]
    assert [incident_outcome(r) for r in recs[:4]] == ["recovered", "recovered", "escalated", "timed_out"]
    assert row["escalations"] == 1 and row["timeouts"] == 1 and row["recovered"] == 2
    assert row["mttr_mean_s"] == 38.0 and row["mttr_ci95_s"] == [round(v, 3) for v in
                                                                  bootstrap_mean_ci([12.0, 20.0, 60.0, 60.0])]
    arms = summarise_arms(recs, exclude_faults=("neg",))
    assert arms["policy"]["incidents"] == 4 and arms["policy"]["mttr_mean_s"] == 38.0
    assert summarise_arms(recs)["policy"]["incidents"] == 5
    # a page counts as not healed, at the cap, also when the service came back by itself afterwards (the simulator
    # counts an escalation the same way): the record keeps what the probe saw
    late = {"fault": "g", "arm": "policy", "recovered": True, "mttr_s": 37.0, "capped_at_s": 60.0, "detect_s": None,
            "actions": [{"category": "reallocate", "target": "message-queue", "outcome": "page"}]}
    assert incident_outcome(late) == "escalated"
    row = summarise([late])["g/policy"]
    assert row["recovered"] == 0 and row["escalations"] == 1 and row["mttr_mean_s"] == 60.0


def test_paired_arms_by_fault_and_repeat():
    from ifshm_ray.live.incident import paired_arms

    def rec(fault, rep, arm, mttr, skipped=False):
        r = {"fault": fault, "repeat": rep, "arm": arm, "recovered": mttr is not None, "mttr_s": mttr,
             "capped_at_s": 60.0, "actions": []}
        return {**r, "skipped": "x"} if skipped else r
    recs = [rec("a", 0, "policy", 10.0), rec("a", 0, "runbook", 20.0), rec("a", 1, "policy", None),
            rec("a", 1, "runbook", 30.0), rec("b", 0, "policy", 5.0), rec("b", 0, "runbook", 5.0, skipped=True),
            rec("neg", 0, "policy", 1.0), rec("neg", 0, "runbook", 50.0), rec("a", 0, "none", None)]
    p = paired_arms(recs, "policy", ("runbook", "none"), exclude_faults=("neg",))
    assert p["policy-runbook"]["pairs"] == 2 and p["policy-runbook"]["mean_diff_s"] == 10.0  # (-10 + 30) / 2
    lo, hi = p["policy-runbook"]["ci95_s"]
    assert lo == -10.0 and hi == 30.0
    assert p["policy-none"] == {"pairs": 1, "mean_diff_s": -50.0, "ci95_s": None}


def test_live_eval_resummarise_recounts_a_recorded_run(tmp_path, capsys):
    import json
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ifshm_ray.config import load_config, to_dict
    from ifshm_ray.live.config import LiveConfig
    from jobs.live_eval import main
    cfg = load_config(LiveConfig, Path(__file__).resolve().parents[1] / "configs" / "live_eval.yaml")
    page = [{"category": "reallocate", "target": "message-queue", "outcome": "page", "at_s": 11.0}]
    incidents = [{"incident": f"i{k}", "fault": "hung-replica", "expected": "restart", "arm": arm, "repeat": 0,
                  "recovered": True, "mttr_s": 37.0, "capped_at_s": 60.0, "detect_s": None, "actions": acts}
                 for k, (arm, acts) in enumerate([("policy", page), ("runbook", []), ("none", [])])]
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"config": to_dict(cfg), "stack": {"startup_s": 50.0, "baseline": {}}, "healer": None,
         "incidents": incidents, "summary": {}, "per_arm": {}, "replay": None}))
    assert main(["--resummarise", str(tmp_path)]) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["summary"]["hung-replica/policy"]["escalations"] == 1 and m["per_arm"]["policy"]["mttr_mean_s"] == 60.0
    assert m["paired"]["policy-none"]["mean_diff_s"] == 23.0 and m["incidents"] == incidents
    assert "policy-none: 23.0 s" in (tmp_path / "report.md").read_text()
    assert main(["--resummarise", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["live.yaml", "live_eval.yaml"])
def test_live_configs_load(name):
    from ifshm_ray.config import load_config
    from ifshm_ray.live.config import LiveConfig
    cfg = load_config(LiveConfig, Path(__file__).resolve().parents[1] / "configs" / name)
    assert cfg.stack.scrape_interval_s > 0 and cfg.eval.arm_cap_s > 0


@pytest.mark.parametrize("override, expect", [("eval.faults=[no-such-fault]", "no-such-fault"),
                                              ("stack.nope=1", "nope"), ("eval.arms=[llm]", "arms")])
def test_live_eval_refuses_bad_settings_before_starting_anything(override, expect, capsys):
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jobs.live_eval import main
    cfg = Path(__file__).resolve().parents[1] / "configs" / "live_eval.yaml"
    assert main(["--config", str(cfg), "--set", override]) == 2
    assert expect in capsys.readouterr().err


def test_the_load_generator_runs_as_long_as_the_stack_and_a_shorter_one_is_refused(capsys):
    """The first full live runs stopped after an hour: the load generator's own 3600 s limit ended the load while the
    stack lived on, every later window had 0 requests and was never green."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ifshm_ray.config import load_config
    from ifshm_ray.live.config import LiveConfig
    from ifshm_ray.live.stack import load_duration_s
    from jobs.live_eval import main
    cfg_file = Path(__file__).resolve().parents[1] / "configs" / "live_eval.yaml"
    cfg = load_config(LiveConfig, cfg_file)
    assert cfg.loadgen.max_duration_s is None and load_duration_s(cfg) == cfg.stack.max_lifetime_s
    assert load_duration_s(load_config(LiveConfig, cfg_file, ["loadgen.max_duration_s=60"])) == 60
    assert load_duration_s(load_config(LiveConfig, cfg_file, ["loadgen.max_duration_s=1e9"])) == \
        cfg.stack.max_lifetime_s
    assert main(["--config", str(cfg_file), "--set", "eval.arms=[runbook,none]",
                 "--set", "loadgen.max_duration_s=3600"]) == 2
    assert "longer than the load generator runs" in capsys.readouterr().err


def test_incident_timeline_png(tmp_path):
    from ifshm_ray.live.incident import TRACE_COLUMNS
    from ifshm_ray.live.plots import incident_filename, plot_incident, plot_incidents
    trace = [[t, 1.0 if t < 5 or t > 20 else 0.4, 150.0 if t < 5 else 900.0, 0.0 if t < 5 or t > 20 else 3.0, 1]
             for t in range(0, 30)]
    rec = {"incident": "x", "fault": "path latency", "arm": "policy", "repeat": 2, "trace": trace,
           "trace_columns": list(TRACE_COLUMNS), "detect_s": 4.1, "recovered": True, "mttr_s": 25.0,
           "capped_at_s": 90.0,
           "alert_events": [{"at_s": 4.1, "alert": "ServiceLatencyHigh/api-gateway", "status": "firing"},
                            {"at_s": 27.0, "alert": "ServiceLatencyHigh/api-gateway", "status": "resolved"},
                            {"at_s": 6.0, "alert": "ServiceErrorBudgetBurn/api-gateway", "status": "firing"}],
           "actions": [{"at_s": 10.0, "category": "reroute", "target": "api-gateway", "outcome": "executed"}]}
    assert incident_filename(rec) == "path_latency__policy__r2.png"
    p = plot_incident(rec, tmp_path / "t.png", latency_threshold_ms=300.0)
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
    skipped = {"fault": "f", "arm": "none", "skipped": "no tmpfs"}
    with pytest.raises(ValueError, match="no trace"):
        plot_incident(skipped, tmp_path / "s.png")
    assert [q.name for q in plot_incidents([rec, skipped], tmp_path / "all")] == ["path_latency__policy__r2.png"]


def test_ray_scrape_state_names_the_ray_targets_and_series():
    """The diagnostic the calibration's StackError carries when Ray's Serve metrics do not reach Prometheus."""
    class H(QuietHandler):
        def do_GET(self):
            if self.path.startswith("/api/v1/targets"):
                body = {"data": {"activeTargets": [
                    {"labels": {"job": "ray"}, "scrapeUrl": "http://127.0.0.1:1/metrics", "health": "down",
                     "lastError": "connection refused"},
                    {"labels": {"job": "node"}, "scrapeUrl": "http://127.0.0.1:2/metrics", "health": "up"}]}}
            else:  # /api/v1/query: 3 ray_serve_* series, none of the latency buckets
                latency = "processing_latency" in self.path
                body = {"data": {"result": [] if latency else [{"value": [0, "3"]}]}}
            self._answer(json.dumps(body).encode())

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), H)) as port:
        got = ray_scrape_state(f"http://127.0.0.1:{port}")
    assert "('http://127.0.0.1:1/metrics', 'down', 'connection refused')" in got and "127.0.0.1:2" not in got
    assert "ray_serve_* series: 3;" in got and got.endswith("processing-latency bucket series: 0")
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), H)) as port:
        pass  # closed: nothing answers on that port any more
    url = f"http://127.0.0.1:{port}"
    assert ray_scrape_state(url).startswith(f"Prometheus at {url} not readable")


@pytest.mark.timeout(30)
def test_incident_skipped_when_not_green_says_why():
    """A stack that is not green before the injection: the incident is skipped (nothing injected) and its record
    says why, with the probe's reading against the SLO."""
    from types import SimpleNamespace

    from ifshm_ray.config import SimConfig
    from ifshm_ray.live.config import LiveConfig
    from ifshm_ray.live.incident import run_incident
    from ifshm_ray.live.injectors import FaultPlan
    from ifshm_ray.live.slo import SloReading

    class RedProbe:  # p95 at 900 ms against a 100 ms baseline: over the latency SLO
        sim = SimConfig()
        stack = SimpleNamespace(baseline=SimpleNamespace(p95_s=0.1))

        def reading(self):
            return SloReading(requests=50, success_rate=1.0, latency_ms=900.0, replicas_healthy=True)

        def badness(self, reading=None):
            return 1.0

    cfg = LiveConfig.from_dict({"eval": {"settle_s": 0.3, "probe_interval_s": 0.1}})
    plan = FaultPlan(name="path-latency", kind="proxy", proxy={"latency_ms": 300}, expected="reroute")
    rec = run_incident(None, cfg, None, plan, "none", topology=None, executor=None, collector=None,
                       probe=RedProbe())
    assert rec["recovered"] is False and rec["skipped"].startswith("not green")
    assert "900 ms" in rec["skipped"] and "replicas healthy: True" in rec["skipped"]
    assert rec["reading_before"]["latency_ms"] == 900.0 and rec["reading_before"]["latency_slo_ms"] > 100.0
    assert "actions" in rec and rec["actions"] == []

"""Fault injectors in the Chaos Toolkit shape: steady state before, undo always (also when the run fails), the
proxy faults (latency, resets, HTTP errors) and the self-resolving negative control against a real fault proxy and
a local echo upstream, the bounded disk fill, the Serve config pushes against a fake dashboard (with the healer's
rollback in between), and the committed fault plan file. Everything on 127.0.0.1."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
import yaml
from live_helpers import dashboard, upstream, wait_until  # noqa: F401  (dashboard, upstream: fixtures)

from ifshm_ray.config import ConfigError
from ifshm_ray.live.binding import load_binding
from ifshm_ray.live.config import HandlerConfig, InjectorConfig, ProxyConfig
from ifshm_ray.live.executor import ActionRequest
from ifshm_ray.live.handlers import ServeAppHandler
from ifshm_ray.live.injectors import (DEFAULT_FAULTS, DiskFillInjector, FaultPlan, ProcessStopInjector, ProxyControl,
                                      ProxyFaultInjector, SteadyStateError, TransientInjector, build_injector,
                                      experiment, load_fault_plans, process_state)
from ifshm_ray.live.proxy import FaultProxy, FaultSpec
from ifshm_ray.live.serve_api import ServeDashboard, read_deploys, record_deploy

pytestmark = pytest.mark.timeout(30)


class Recorder:
    """An injector that records its calls; ``fail_inject`` raises after recording."""

    name = "recorder"

    def __init__(self, holds: bool = True, fail_inject: bool = False):
        self.holds, self.fail_inject = holds, fail_inject
        self.calls: list[str] = []

    def steady_state(self):
        self.calls.append("steady")
        return self.holds, "ok" if self.holds else "not steady"

    def inject(self):
        self.calls.append("inject")
        if self.fail_inject:
            raise OSError("half injected")
        return {"did": "inject"}

    def undo(self):
        self.calls.append("undo")
        return {"did": "undo"}


def test_experiment_order_and_record():
    inj = Recorder()
    with experiment(inj) as run:
        assert inj.calls == ["steady", "inject"] and run["injected"] == {"did": "inject"}
    assert inj.calls == ["steady", "inject", "undo"]
    assert run["undone"] == {"did": "undo"} and run["started_at"] <= run["injected_at"] <= run["undone_at"]


def test_no_injection_without_steady_state():
    inj = Recorder(holds=False)
    with pytest.raises(SteadyStateError, match="not steady"):
        with experiment(inj):
            pytest.fail("must not run")
    assert inj.calls == ["steady"]


@pytest.mark.parametrize("fail_inject", [False, True])
def test_undo_runs_when_the_run_or_the_injection_fails(fail_inject):
    inj = Recorder(fail_inject=fail_inject)
    with pytest.raises(OSError if fail_inject else RuntimeError):
        with experiment(inj):
            raise RuntimeError("the evaluation crashed")
    assert inj.calls == ["steady", "inject", "undo"]


@pytest.fixture
def proxy(upstream):
    p = FaultProxy(upstream, cfg=ProxyConfig(seed=1, idle_timeout_s=5)).start()
    yield p
    p.stop()


@pytest.fixture
def control(proxy):
    return ProxyControl(proxy.control_url, timeout_s=InjectorConfig().control_timeout_s)


_CLIENT: list[httpx.Client] = []  # one client for the module: building one (its SSL context) takes tens of ms


@pytest.fixture(autouse=True, scope="module")
def _http_client():
    with httpx.Client(trust_env=False) as c:
        _CLIENT.append(c)
        yield
        _CLIENT.clear()


def _get(url: str, timeout_s: float = 5.0) -> int | str:
    """Status code, or the transport error's class name."""
    try:
        return _CLIENT[0].get(url, timeout=timeout_s).status_code
    except httpx.TransportError as e:
        return type(e).__name__


def _healthy(proxy):
    return lambda: _get(proxy.url + "/health") == 200


@pytest.mark.parametrize("name,check", [
    ("path-errors", lambda codes: 503 in codes and all(c in (200, 503) for c in codes)),
    ("path-resets", lambda codes: any(isinstance(c, str) for c in codes)),
])
def test_proxy_faults_break_then_undo_restores(proxy, control, name, check):
    plan = load_fault_plans().get(name)
    inj = build_injector(plan, InjectorConfig(), proxy=control, healthy=_healthy(proxy))
    with experiment(inj) as run:
        codes = [_get(proxy.url + "/") for _ in range(12)]
        assert check(codes), codes
    assert run["steady_state_before"]["holds"] and run["injected"]["duration_s"] == plan.hold_s
    assert not control.get().active() and _get(proxy.url + "/") == 200


def test_latency_fault(proxy, control):
    inj = ProxyFaultInjector("lat", control, FaultSpec(latency_ms=300), hold_s=10)
    with experiment(inj):
        t0 = time.perf_counter()
        assert _get(proxy.url + "/") == 200
        assert time.perf_counter() - t0 >= 0.3
    assert control.get().latency_ms == 0


def test_steady_state_refuses_an_active_fault_or_an_unhealthy_service(proxy, control):
    proxy.set_faults(FaultSpec(error_rate=1.0))
    holds, detail = ProxyFaultInjector("x", control, FaultSpec(latency_ms=1), hold_s=1).steady_state()
    assert not holds and "already active" in detail
    proxy.clear_faults()
    holds, detail = ProxyFaultInjector("x", control, FaultSpec(latency_ms=1), hold_s=1,
                                       healthy=lambda: False).steady_state()
    assert not holds and "health check failed" in detail
    dead = ProxyControl("http://127.0.0.1:1", timeout_s=1.0)
    assert not ProxyFaultInjector("x", dead, FaultSpec(latency_ms=1), hold_s=1).steady_state()[0]


def test_negative_control_resolves_by_itself(proxy, control):
    plan = FaultPlan(name="blip", kind="transient", proxy=FaultSpec(error_rate=1.0), hold_s=0.3, expected="observe")
    inj = build_injector(plan, InjectorConfig(), proxy=control)
    assert isinstance(inj, TransientInjector)
    with experiment(inj):
        assert _get(proxy.url + "/") == 503
        assert wait_until(inj.resolved, timeout_s=5)  # nobody acted
        assert _get(proxy.url + "/") == 200


def test_disk_fill_is_bounded_and_undone(tmp_path):
    cfg = InjectorConfig(fill_chunk_bytes=4096, max_fill_volume_bytes=1 << 62)  # tmp_path: allow any volume
    plan = FaultPlan(name="fill", kind="disk_fill", size_bytes=10_000)
    inj = build_injector(plan, cfg, fill_folder=tmp_path)
    with experiment(inj) as run:
        assert inj.path.stat().st_size == 10_000 and run["injected"]["bytes"] == 10_000
        assert not inj.steady_state()[0]  # a second fill is refused while the ballast is there
    assert not inj.path.exists() and run["undone"]["removed"] == str(inj.path)


def test_disk_fill_refuses_a_large_volume(tmp_path):
    inj = DiskFillInjector("big", tmp_path, size_bytes=10_000, max_volume_bytes=1024, chunk_bytes=4096)
    with pytest.raises(SteadyStateError, match="max_fill_volume_bytes"):
        with experiment(inj):
            pass
    assert not inj.path.exists()
    assert InjectorConfig().max_fill_volume_bytes <= 1 << 30


def _user_config(fake, app="target"):
    return fake.details["applications"][app]["deployments"]["Model"]["deployment_config"]["user_config"]


def test_bad_config_push_then_the_healers_rollback_then_undo(dashboard, tmp_path):
    history = tmp_path / "deploys.jsonl"
    binding = load_binding()
    good = dashboard.details["applications"]["target"]["deployed_app_config"]
    record_deploy(history, good)  # the stack records its own deploy
    inj = build_injector(load_fault_plans().get("bad-config-push"), InjectorConfig(),
                         dashboard=ServeDashboard(dashboard.url, 5.0), binding=binding, history_path=history)
    with experiment(inj) as run:
        assert _user_config(dashboard) == {"version": "good", "model_version": "does-not-exist"}
        assert run["injected"]["put"]["status"] == 200
        assert [a["name"] for a in dashboard.puts[-1]["applications"]] == ["target", "other"]
        # the healer's rollback finds the config before the bad push in the history
        model = binding.component_for("inference-server")
        plan = ServeAppHandler(dashboard.url, HandlerConfig(), history_path=history).rollback(
            ActionRequest("rollback", "inference-server", model[0], model[1], None))
        assert plan.problems == []
        plan.execute()
        assert _user_config(dashboard) == {"version": "good"}
    assert run["undone"] == {"restored": {"already_running": True}}  # nothing left to undo
    assert len(read_deploys(history, "target")) == 2


def test_bad_model_deploy_is_undone_when_nobody_heals(dashboard, tmp_path):
    inj = build_injector(load_fault_plans().get("bad-model-deploy"), InjectorConfig(),
                         dashboard=ServeDashboard(dashboard.url, 5.0), binding=load_binding())
    with experiment(inj):
        assert _user_config(dashboard)["extra_latency_ms"] == 600
    assert _user_config(dashboard) == {"version": "good"} and len(dashboard.puts) == 2


def test_serve_config_steady_state(dashboard):
    inj = build_injector(load_fault_plans().get("bad-config-push"), InjectorConfig(),
                         dashboard=ServeDashboard(dashboard.url, 5.0), binding=load_binding())
    assert inj.steady_state()[0]
    dashboard.details["applications"]["target"]["status"] = "DEPLOY_FAILED"
    holds, detail = inj.steady_state()
    assert not holds and "DEPLOY_FAILED" in detail
    with pytest.raises(SteadyStateError):
        with experiment(inj):
            pass
    assert dashboard.puts == []
    with pytest.raises(ConfigError, match="not bound to a Serve deployment"):
        build_injector(FaultPlan(name="x", kind="serve_config", entity="feature-store", user_config={"a": 1}),
                       InjectorConfig(), dashboard=ServeDashboard(dashboard.url, 5.0), binding=load_binding())


@pytest.fixture
def server_process(tmp_path):
    """A python http.server on 127.0.0.1 in its own process: (pid, url); continued and ended after the test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port), "--directory",
                             str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        assert wait_until(lambda: _get(url) == 200, timeout_s=15, step_s=0.1)
        yield proc.pid, url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(10)


def test_hung_process_is_stopped_then_continued(server_process):
    pid, url = server_process
    plan = load_fault_plans().get("hung-replica").model_copy(update={"process_match": r"-m http\.server"})
    inj = build_injector(plan, InjectorConfig(), find_pid=lambda: pid, healthy=lambda: _get(url) == 200)
    with experiment(inj) as run:
        assert process_state(pid) == "T" and run["injected"]["pid"] == pid
        assert _get(url, timeout_s=0.5) == "ReadTimeout"
    assert process_state(pid) != "T" and _get(url) == 200 and run["undone"]["signal"] == "SIGCONT"


def test_hung_process_watchdog_continues_it_without_the_undo(server_process):
    pid, url = server_process
    inj = ProcessStopInjector("hang", lambda: pid, r"http\.server", hold_s=0.3)
    inj.inject()
    watchdog = inj._watchdog
    try:
        assert process_state(pid) == "T"
        assert wait_until(lambda: process_state(pid) != "T", timeout_s=10)
        assert _get(url) == 200
    finally:
        inj.undo()
    assert watchdog.poll() is not None


def test_hung_process_refuses_a_process_that_does_not_match(server_process):
    pid, _ = server_process
    inj = ProcessStopInjector("hang", lambda: pid, "ServeReplica:target:Model", hold_s=1)
    holds, detail = inj.steady_state()
    assert not holds and "does not match" in detail
    with pytest.raises(RuntimeError, match="does not match"):
        inj.inject()
    assert process_state(pid) != "T"
    for bad in (os.getpid(), 1, None):
        assert not ProcessStopInjector("x", lambda: bad, ".", hold_s=1).steady_state()[0]
    with pytest.raises(ConfigError, match="find_pid"):
        build_injector(load_fault_plans().get("hung-replica"), InjectorConfig())


def test_committed_fault_plans():
    plans = load_fault_plans()
    kinds = {p.kind for p in plans.faults}
    assert {"proxy", "transient", "disk_fill", "serve_config", "process_stop"} <= kinds
    binding = load_binding()
    assert all(binding.component_for(p.entity) for p in plans.faults if p.entity)
    assert [p.expected for p in plans.faults if p.kind == "transient"] == ["observe"]
    assert all(p.hold_s <= ProxyConfig().max_fault_s for p in plans.faults)


@pytest.mark.parametrize("data,message", [
    ({"name": "a", "kind": "proxy"}, r"needs \['proxy'\]; missing: \['proxy'\]"),
    ({"name": "a", "kind": "proxy", "proxy": {}}, "needs a latency_ms"),
    ({"name": "a", "kind": "disk_fill"}, r"missing: \['size_bytes'\]"),
    ({"name": "a", "kind": "proxy", "proxy": {"latency_ms": 5}, "size_bytes": 3}, r"not for this kind: \['size_bytes'\]"),
    ({"name": "a", "kind": "serve_config", "entity": "inference-server"}, r"missing: \['user_config'\]"),
    ({"name": "a", "kind": "cpu_hog"}, "kind"),
    ({"name": "a", "kind": "surge", "surge_factor": 2, "expected": "reboot"}, "not an action category"),
])
def test_bad_fault_plans_are_refused(data, message):
    with pytest.raises(ConfigError, match=message):
        FaultPlan.from_dict(data)


def test_fault_plan_file_names_are_unique(tmp_path):
    data = yaml.safe_load(DEFAULT_FAULTS.read_text())
    data["faults"].append(dict(data["faults"][0]))
    p = tmp_path / "faults.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="repeated"):
        load_fault_plans(p)


def test_build_needs_its_context_and_control_is_loopback_only():
    plan = load_fault_plans().get("path-latency")
    with pytest.raises(ConfigError, match="control client"):
        build_injector(plan, InjectorConfig())
    with pytest.raises(ConfigError, match="folder"):
        build_injector(load_fault_plans().get("model-cache-full"), InjectorConfig())
    with pytest.raises(ConfigError, match="127.0.0.1"):
        ProxyControl("http://10.1.2.3:9000", timeout_s=1.0)

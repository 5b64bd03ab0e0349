"""The in-repo fault proxy against a local echo upstream: transparent forwarding, latency, resets, HTTP errors,
self-clearing faults, the control API, the connection bound, a clean stop, and the proxy as its own process.
Everything on 127.0.0.1."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from live_helpers import upstream, wait_until  # noqa: F401  (upstream is a fixture)

from ifshm_ray.config import ConfigError
from ifshm_ray.live.config import ProxyConfig
from ifshm_ray.live.proxy import FaultProxy, FaultSpec

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def proxy(upstream):
    p = FaultProxy(upstream, cfg=ProxyConfig(seed=0, max_latency_ms=1000, idle_timeout_s=5)).start()
    yield p
    p.stop()


@pytest.fixture
def client():
    with httpx.Client(trust_env=False, timeout=5.0) as c:
        yield c


def test_transparent_when_no_fault(proxy, client):
    assert client.get(proxy.url + "/a/b").text == "echo /a/b"
    assert client.post(proxy.url + "/", content=b"x" * 200_000).content == b"x" * 200_000
    assert proxy.stats["forwarded"] == 2


def test_latency_is_added_and_cleared(proxy, client):
    proxy.set_faults(FaultSpec(latency_ms=300))
    t0 = time.perf_counter()
    assert client.get(proxy.url + "/slow").status_code == 200
    slow = time.perf_counter() - t0
    proxy.clear_faults()
    t0 = time.perf_counter()
    client.get(proxy.url + "/fast")
    fast = time.perf_counter() - t0
    assert slow >= 0.3 and fast < slow
    assert proxy.stats["delayed_chunks"] >= 1


def test_http_errors(proxy, client):
    proxy.set_faults(FaultSpec(error_rate=1.0, error_status=502))
    r = client.get(proxy.url + "/")
    assert r.status_code == 502 and "injected" in r.json()["detail"]
    assert proxy.stats["errors"] == 1 and proxy.stats["forwarded"] == 0


def test_resets(proxy, client):
    proxy.set_faults(FaultSpec(reset_prob=1.0))
    with pytest.raises(httpx.TransportError):
        client.get(proxy.url + "/")
    assert proxy.stats["resets"] == 1


def test_error_rate_is_a_seeded_fraction(proxy, client):
    proxy.set_faults({"error_rate": 0.5})
    codes = [client.get(proxy.url + "/").status_code for _ in range(30)]
    assert 5 <= codes.count(503) <= 25 and codes.count(200) == 30 - codes.count(503)


def test_fault_clears_itself_after_its_duration(proxy):
    proxy.set_faults(FaultSpec(error_rate=1.0, duration_s=0.2))
    assert proxy.faults().active()
    assert wait_until(lambda: not proxy.faults().active())


def test_control_api(proxy, client):
    c = proxy.control_url
    assert client.get(c + "/faults").json()["latency_ms"] == 0
    r = client.put(c + "/faults", json={"error_rate": 1.0})
    assert r.status_code == 200 and r.json()["error_rate"] == 1.0
    assert client.get(proxy.url + "/").status_code == 503
    assert client.delete(c + "/faults").json()["error_rate"] == 0
    assert client.get(proxy.url + "/").status_code == 200
    bad = client.put(c + "/faults", json={"latency_ms": 5000})
    assert bad.status_code == 400 and "max_latency_ms" in bad.json()["detail"]
    bad = client.put(c + "/faults", json={"reset_prob": 2})
    assert bad.status_code == 400 and "reset_prob" in bad.json()["detail"]
    assert client.put(c + "/faults", json={"typo": 1}).status_code == 400
    assert client.get(c + "/nope").status_code == 404
    assert client.post(c + "/faults").status_code == 405
    assert client.get(c + "/stats").json()["errors"] == 1


def test_connection_bound(upstream):
    with FaultProxy(upstream, cfg=ProxyConfig(max_connections=1, idle_timeout_s=5)) as p:
        first = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        assert wait_until(lambda: p.stats["forwarded"] == 1)
        second = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        assert second.recv(10) == b""  # closed at once
        assert p.stats["refused_over_limit"] == 1
        first.close()
        second.close()


def test_stop_closes_open_connections_and_ports(upstream):
    p = FaultProxy(upstream, cfg=ProxyConfig(idle_timeout_s=30)).start()
    held = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    assert wait_until(lambda: p.stats["forwarded"] == 1)  # accepted and proxied
    t0 = time.monotonic()
    p.stop()
    assert time.monotonic() - t0 < 5 and p._thread is None
    assert held.recv(10) == b""
    held.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", p.port), timeout=1).close()
    p.stop()  # idempotent


def test_upstream_down_is_a_502(client):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead_port = s.getsockname()[1]
    s.close()
    with FaultProxy(dead_port) as p:
        assert client.get(p.url + "/").status_code == 502


def test_start_fails_clearly_on_a_taken_port(upstream):
    with FaultProxy(upstream) as first:
        second = FaultProxy(upstream, listen_port=first.port)
        with pytest.raises(OSError):
            second.start()
        second.stop()


@pytest.mark.parametrize("kwargs", [{"host": "0.0.0.0"}, {"upstream_host": "10.0.0.1"}])
def test_only_loopback(kwargs):
    with pytest.raises(ConfigError, match="127.0.0.1"):
        FaultProxy(1, **kwargs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_runs_as_its_own_process(upstream, client):
    listen, control = _free_port(), _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ifshm_ray.live.proxy", "--listen", str(listen), "--upstream",
                             str(upstream), "--control", str(control), "--seed", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    try:
        def up() -> bool:
            try:
                return client.get(f"http://127.0.0.1:{control}/faults").status_code == 200
            except httpx.TransportError:
                return False
        assert wait_until(up, timeout_s=15, step_s=0.1), proc.stderr.read1().decode() if proc.poll() else ""
        client.put(f"http://127.0.0.1:{control}/faults", json={"error_rate": 1.0})
        assert client.get(f"http://127.0.0.1:{listen}/").status_code == 503
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)

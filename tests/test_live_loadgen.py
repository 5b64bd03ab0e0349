"""The bounded loopback load generator: deterministic pacing, real requests to a local echo upstream (also through
the fault proxy), its bounds and stop, and the traffic-surge injector on top of it."""
from __future__ import annotations

import time

import pytest
from live_helpers import upstream, wait_until  # noqa: F401  (upstream is a fixture)

from ifshm_ray.config import ConfigError
from ifshm_ray.live.config import InjectorConfig, LoadConfig, ProxyConfig
from ifshm_ray.live.injectors import SurgeInjector, build_injector, experiment, load_fault_plans
from ifshm_ray.live.loadgen import LoadGenerator, Pacer
from ifshm_ray.live.proxy import FaultProxy, FaultSpec

pytestmark = pytest.mark.timeout(30)


def test_pacer_spaces_sends_and_does_not_burst_after_a_stall():
    now = {"t": 100.0}
    p = Pacer(10.0, clock=lambda: now["t"])
    assert [p.take() for _ in range(3)] == pytest.approx([100.0, 100.1, 100.2])
    now["t"] = 110.0  # nobody took a slot for 10 s
    assert p.take() == pytest.approx(109.9) and p.take() == pytest.approx(110.0)
    p.set_rate(2.0)
    assert p.take() == pytest.approx(110.1) and p.take() == pytest.approx(110.6)


def test_requests_are_sent_recorded_and_stopped(upstream):
    load = LoadGenerator(f"http://127.0.0.1:{upstream}/x", LoadConfig(rate_rps=40, concurrency=2, max_duration_s=120)).start()
    t0 = time.monotonic()
    try:
        assert wait_until(lambda: len(load.records) >= 8)
    finally:
        load.stop()
    assert not load.running()
    n = len(load.records)
    time.sleep(0.1)
    assert len(load.records) == n  # nothing after stop
    stats = load.window(since=t0)
    assert stats.requests == n and stats.success_rate == 1.0 and stats.latency_ms < 5000
    assert load.window(since=time.monotonic()).requests == 0


def test_errors_through_the_fault_proxy_are_counted(upstream):
    with FaultProxy(upstream, cfg=ProxyConfig(seed=0)) as proxy:
        proxy.set_faults(FaultSpec(error_rate=1.0))
        with LoadGenerator(proxy.url + "/", LoadConfig(rate_rps=40, concurrency=2, max_duration_s=120)) as load:
            assert wait_until(lambda: len(load.records) >= 5)
        assert load.window(since=0).success_rate == 0.0


def test_bounds(upstream):
    with pytest.raises(ConfigError, match="max_rate_rps"):
        LoadConfig(rate_rps=100, max_rate_rps=50)
    load = LoadGenerator(f"http://127.0.0.1:{upstream}/", LoadConfig(rate_rps=20, max_duration_s=0.2)).start()
    try:
        with pytest.raises(ConfigError, match="max_rate_rps"):
            load.set_rate(51)
        assert wait_until(lambda: not load.running())  # stopped by itself after max_duration_s
        assert load.expired()
    finally:
        load.stop()
    with pytest.raises(ConfigError, match="127.0.0.1"):
        LoadGenerator("http://10.0.0.1/", LoadConfig(max_duration_s=1))
    with pytest.raises(ConfigError, match="max_duration_s"):  # unset: only the live stack fills it in
        LoadGenerator(f"http://127.0.0.1:{upstream}/", LoadConfig())


def test_surge_multiplies_the_rate_and_the_undo_restores_it(upstream):
    with LoadGenerator(f"http://127.0.0.1:{upstream}/", LoadConfig(rate_rps=5, concurrency=1,
                                                                        max_duration_s=120)) as load:
        inj = build_injector(load_fault_plans().get("traffic-surge"), InjectorConfig(), load=load)
        with experiment(inj) as run:
            assert load.rate_rps == 30 and run["injected"]["before_rps"] == 5
        assert load.rate_rps == 5
        too_much = SurgeInjector("x", load, factor=20)
        holds, detail = too_much.steady_state()
        assert not holds and "max_rate_rps" in detail
    assert not SurgeInjector("x", load, factor=2).steady_state()[0]  # not running any more
    with pytest.raises(ConfigError, match="load generator"):
        build_injector(load_fault_plans().get("traffic-surge"), InjectorConfig())

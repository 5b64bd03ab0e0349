"""The wall-clock SLO probe: quantiles, badness from SimConfig's SLO fields, real readings through the fault proxy
against a local echo upstream, and the green-for-N-seconds recovery rule."""
from __future__ import annotations

import math

import pytest
from live_helpers import upstream  # noqa: F401  (a fixture)

from ifshm_ray.config import ConfigError, SimConfig
from ifshm_ray.live.config import ProxyConfig, SloProbeConfig
from ifshm_ray.live.proxy import FaultProxy, FaultSpec
from ifshm_ray.live.slo import HttpSloProbe, RecoveryWatch, SloReading, quantile, slo_badness

pytestmark = pytest.mark.timeout(30)
SIM = SimConfig()  # slo_error_rate 0.02, slo_latency_factor 2.0


@pytest.mark.parametrize("values,q,expected", [([], 0.95, math.inf), ([5.0], 0.95, 5.0),
                                               (list(range(1, 101)), 0.95, 95), (list(range(1, 21)), 0.5, 10)])
def test_quantile(values, q, expected):
    assert quantile([float(v) for v in values], q) == expected


@pytest.mark.parametrize("reading,expected", [
    (SloReading(20, 1.0, 100.0), 0.0),
    (SloReading(20, 0.99, 199.0, True), 0.0),
    (SloReading(20, 0.90, 100.0), pytest.approx((0.10 - 0.02) / 0.02)),
    (SloReading(20, 1.0, 300.0), pytest.approx(0.5)),
    (SloReading(20, 1.0, 100.0, False), 1.0),
    (SloReading(20, 0.0, math.inf), pytest.approx(49.0 + 1.0)),
])
def test_badness_uses_the_simulator_slos(reading, expected):
    assert slo_badness(reading, baseline_latency_ms=100.0, sim=SIM) == expected


@pytest.fixture
def proxy(upstream):
    p = FaultProxy(upstream, cfg=ProxyConfig(seed=0, idle_timeout_s=5)).start()
    yield p
    p.stop()


def test_probe_reads_real_requests(proxy):
    probe = HttpSloProbe(proxy.url + "/", SloProbeConfig(requests=5), SIM, baseline_latency_ms=1000.0)
    assert probe() == 0.0  # green: no fault, and far under 2 x 1 s
    proxy.set_faults(FaultSpec(error_rate=1.0))
    assert probe.read().success_rate == 0.0 and probe() >= 49.0
    proxy.set_faults(FaultSpec(latency_ms=250))
    probe = HttpSloProbe(proxy.url + "/", SloProbeConfig(requests=2), SIM, baseline_latency_ms=50.0)
    reading = probe.read()
    assert reading.latency_ms >= 250 and probe.badness(reading) >= 1.5


def test_calibrate_needs_a_steady_state(proxy):
    probe = HttpSloProbe(proxy.url + "/", SloProbeConfig(requests=3), SIM)
    with pytest.raises(RuntimeError, match="calibrate"):
        probe()
    assert probe.calibrate().success_rate == 1.0 and probe.baseline_latency_ms > 0
    proxy.set_faults(FaultSpec(error_rate=1.0))
    with pytest.raises(RuntimeError, match="steady state"):
        probe.calibrate()


def test_probe_counts_unreachable_and_unhealthy(proxy):
    probe = HttpSloProbe(proxy.url + "/", SloProbeConfig(requests=2), SIM, baseline_latency_ms=1000.0,
                         replicas_healthy=lambda: False)
    assert probe() == 1.0
    port = proxy.port
    proxy.stop()
    down = HttpSloProbe(f"http://127.0.0.1:{port}/", SloProbeConfig(requests=2), SIM, baseline_latency_ms=1.0)
    assert down.read().success_rate == 0.0 and down() == pytest.approx(50.0)
    with pytest.raises(ConfigError, match="127.0.0.1"):
        HttpSloProbe("http://example.com/", SloProbeConfig(), SIM)


def test_recovery_needs_green_for_n_consecutive_seconds():
    w = RecoveryWatch(green_s=5.0)
    readings = [(0, False), (1, True), (3, True), (4, False), (5, True), (7, True), (9, True), (10, True), (11, False)]
    states = [w.update(t, g) for t, g in readings]
    assert states == [False] * 7 + [True, True] and w.recovered_at == 5
    assert RecoveryWatch(green_s=0.0).update(2.0, True)

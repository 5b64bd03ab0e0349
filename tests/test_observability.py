"""The observability model (ifshm_ray/sim/data/observability.yaml): validated with clear errors, part of the catalog
hash, and its states behave as documented: kernel logs shipped per episode, signature lines emitted with their
probability after their delay, healthy WARNING/ERROR noise at the measured share; the artifacts of issue 12 fixed."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import yaml

from ifshm_ray.config import SimConfig
from ifshm_ray.sim import catalog as catalog_mod
from ifshm_ray.sim.catalog import DATA_DIR, CatalogError, load_catalog, load_observability
from ifshm_ray.sim.core import BatchedSim

pytestmark = pytest.mark.timeout(120)
CAT = load_catalog()
RAW = (DATA_DIR / "observability.yaml").read_bytes()


def _load(mutate) -> None:
    doc = yaml.safe_load(RAW)
    mutate(doc)
    load_observability(yaml.safe_dump(doc).encode(), CAT.templates)


@pytest.mark.parametrize("mutate, msg", [
    (lambda d: d["log_collection"]["kernel"].pop("source"), "needs a 'source:'"),
    (lambda d: d["log_collection"]["kernel"].__setitem__("shipped_prob", 1.5), "probability in"),
    (lambda d: d["log_collection"].__setitem__("dmesg", {"shipped_prob": 0.5, "source": "x"}), "no log template"),
    (lambda d: d["signature_emission"]["classes"]["application"].__setitem__("delay_s", [5, 1, 2]), "median <= max"),
    (lambda d: d["signature_emission"]["templates"].__setitem__("xid79", "nope"), "class 'nope'"),
    (lambda d: d["signature_emission"]["templates"].__setitem__("no_such_tpl", "application"), "not a log template"),
    (lambda d: d["benign_logs"]["noise"].append(["health_ok", "api-gateway", 1.0]), "is INFO"),
    (lambda d: d["benign_logs"]["info"].append(["no_such", "api-gateway", 1.0]), "unknown log template"),
    (lambda d: d.pop("benign_logs"), "missing section"),
    (lambda d: d["metric_effects"]["clock_skew_tls"].pop("source"), "needs a 'source:'"),
    (lambda d: d["benign_transients"]["gc_pause"].__setitem__("scope", "pod"), "scope must be"),
    (lambda d: d["benign_transients"]["filesystem_write_clean"]["effects"].__setitem__("down", 1), "effects must map"),
    (lambda d: d["benign_transients"]["gc_pause"]["log"].__setitem__("t", "health_ok"), "WARNING/ERROR template"),
])
def test_bad_observability_yaml_is_refused_with_a_clear_error(mutate, msg):
    with pytest.raises(CatalogError, match=msg):
        _load(mutate)


def test_observability_is_part_of_the_catalog_hash(tmp_path, monkeypatch):
    for f in DATA_DIR.iterdir():
        shutil.copy(f, tmp_path / f.name)
    doc = yaml.safe_load(RAW)
    doc["log_collection"]["kernel"]["shipped_prob"] = 0.25
    (tmp_path / "observability.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.setattr(catalog_mod, "DATA_DIR", tmp_path)
    other = load_catalog(tmp_path / "catalog.yaml")
    assert other.sha256 != CAT.sha256 and other.observability.shipped_prob["kernel"] == 0.25


def test_every_parameter_names_its_source():
    doc = yaml.safe_load(RAW)
    for d in list(doc["log_collection"].values()) + list(doc["signature_emission"]["classes"].values()) \
            + list(doc["metric_effects"].values()):
        assert d["source"].strip()
    assert doc["benign_logs"]["source"].strip() and doc["benign_logs"]["noise_share_source"].strip()


def _episodes(fault: str, n: int, steps: int, **cfg) -> tuple[BatchedSim, list[np.ndarray]]:
    sim = BatchedSim(SimConfig(faults="all", **cfg), batch_size=n)
    sim.reset(np.arange(n), np.arange(1, n + 1, dtype=np.uint64) * 104729, faults=[fault] * n)
    counts = []
    for _ in range(steps):
        sim.step(np.zeros((n, 3), np.int64))
        counts.append(sim.tcounts.copy())
    return sim, counts


def test_kernel_logs_are_shipped_per_episode_at_their_probability():
    n = 400
    sim, counts = _episodes("gpu_xid79_fallen_off_bus", n, 12)
    xid = CAT.template_index["xid79"]
    seen = np.stack(counts)[:, :, xid].sum(axis=0) > 0
    k = sim.ship_sources.index("kernel")
    shipped = sim.ep_shipped[:, k]
    assert not seen[~shipped].any()             # not shipped: no kernel line in the whole episode
    assert seen[shipped].mean() > 0.95           # shipped: the driver's Xid line shows (emit probability 1)
    p = CAT.observability.shipped_prob["kernel"]
    assert abs(shipped.mean() - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_nccl_watchdog_waits_for_its_timeout():
    sim, counts = _episodes("gpu_xid74_nvlink", 50, 40)
    wd = CAT.template_index["nccl_watchdog"]
    lo = CAT.observability.classes["nccl_watchdog"][1][0]
    c = np.stack(counts)[:, :, wd]                                 # [step, env]
    t = sim.cfg.step_s * np.arange(1, c.shape[0] + 1)[:, None]
    visible = sim.f_t0[:, 0] + sim.cc.onset[sim.f_id[0, 0]]
    assert c[(t - visible[None, :]) < lo].sum() == 0
    assert c.sum() > 0


def test_application_signature_emitted_at_its_probability():
    n = 600
    sim = BatchedSim(SimConfig(faults="all"), batch_size=n)
    sim.reset(np.arange(n), np.arange(n) + 7, faults=["bad_config_push"] * n)
    p = CAT.observability.classes["application"][0]
    j = [CAT.templates[t].id for t in sim.log_tid[sim.f_id[0, 0]]].index("config_parse_err")
    share = sim.ep_log_emit[:, 0, j].mean()
    assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-9


def test_healthy_noise_share_is_the_measured_share():
    sim, counts = _episodes("none", 64, 100, false_alarm_prob=0.0)
    bc = sim.benign_counts  # (last window) -> use the template totals over the run instead
    tot = np.stack(counts).sum(axis=(0, 1))
    errwarn = np.array([t.level in ("WARNING", "ERROR") for t in CAT.templates])
    share = tot[errwarn].sum() / tot.sum()
    p = CAT.observability.noise_share
    lines = tot.sum()
    assert bc.shape[1] == len(sim.benign_mix)
    assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / lines) + 0.002, (share, p)


def test_artifacts_fixed():
    xid95 = CAT.templates[CAT.template_index["xid95"]]
    assert "synthesized" not in xid95.body and "Xid (PCI:{pci}): 95," in xid95.body
    names = [a.name for a in CAT.alerts]
    assert "NodeClockSkewDetected" in names
    rule = CAT.alerts[names.index("NodeClockSkewDetected")]
    sim, _ = _episodes("clock_skew_tls", 8, 40)
    a = names.index("NodeClockSkewDetected")
    assert sim.firing[:, a].all()
    assert (sim.alarm_entity[:, a] == sim.f_root[:, 0]).all()
    free, _ = _episodes("none", 8, 40)
    assert not free.pending[:, a].any() and rule.for_s == 600


def test_benign_transients_raise_alerts_that_resolve_by_themselves():
    """Fault-free episodes, each with a benign transient: the kind's alert goes pending while it lasts, never fires,
    and is gone afterwards; the kinds are drawn by their weights."""
    expect = {"gc_pause": "ServiceLatencyHigh", "cpu_throttling": "CPUThrottlingHigh",
              "filesystem_write_clean": "NodeFilesystemSpaceFillingUp"}
    tr = CAT.observability.transients
    assert {x["name"] for x in tr} == set(expect)
    n = 300
    sim = BatchedSim(SimConfig(faults="all", false_alarm_prob=1.0), batch_size=n)
    sim.reset(np.arange(n), np.arange(n) + 11, faults=["none"] * n)
    names = [a.name for a in CAT.alerts]
    rule = np.array([names.index(expect[tr[k]["name"]]) for k in sim.blip_kind])
    seen_pending = np.zeros(n, bool)
    end = sim.blip_t0 + sim.blip_dur
    while sim.t[0] < sim.cfg.time_limit_s:
        sim.step(np.zeros((n, 3), np.int64))
        p = sim.pending[np.arange(n), rule]
        seen_pending |= p
        assert not sim.firing[np.arange(n), rule].any()
        after = sim.t > end + sim.cfg.step_s
        assert not p[after].any()
    assert seen_pending.mean() > 0.9
    w = np.array([x["weight"] for x in tr])
    for k in range(len(tr)):
        share, q = (sim.blip_kind == k).mean(), w[k] / w.sum()
        assert abs(share - q) < 4 * math.sqrt(q * (1 - q) / n)

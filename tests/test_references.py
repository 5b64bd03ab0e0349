"""Reference policies of the honest benchmark: blind runbooks, escalate-first, nearest-known; fault sets (compound,
fault-free) and the statistics (bootstrap intervals, false actions, escalations apart from time-outs)."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from ifshm_ray.baselines import BASELINES, load_runbook, make_baseline
from ifshm_ray.baselines.config import NearestKnownConfig
from ifshm_ray.baselines.policies import RUNBOOK_PATH, EscalateFirstPolicy, blind_rules
from ifshm_ray.config import SimConfig
from ifshm_ray.env import FaultInjectionEnv
from ifshm_ray.eval.config import StatsConfig
from ifshm_ray.eval.harness import episode_seed, evaluate, make_jobs, run_episode, summarise
from ifshm_ray.eval.stats import bootstrap_mean_ci, paired_difference
from ifshm_ray.sim.actions import CATEGORIES
from ifshm_ray.sim.catalog import FAULT_FREE, load_catalog

ESCALATE = CATEGORIES.index("escalate")


# ---------------------------------------------------------------- blind runbook
def test_every_rule_says_what_it_was_written_for():
    cat = load_catalog()
    _, rules = load_runbook(fault_names=cat.names)
    assert rules and all(r.generic != bool(r.written_for) for r in rules)
    for r in rules:
        if r.written_for:  # one pattern a rule
            assert (r.xid_in is None or len(r.xid_in) == 1) and (r.log is None or "|" not in r.log.pattern)
    # the generic rules the issue names stay: crash loop -> restart, node NotReady -> drain, the fallback
    generic = [r for r in rules if r.generic]
    assert any(r.log is not None and "Back-off restarting" in r.log.pattern and r.action == "restart" for r in generic)
    assert any(r.alerts == ("KubeNodeNotReady",) and r.action == "drain" for r in generic)
    assert rules[-1].generic and rules[-1].log is None and rules[-1].action == "restart"


@pytest.mark.parametrize("split", sorted(load_catalog().splits))
def test_blinding_removes_exactly_the_rules_written_for_held_out_types(split):
    cat = load_catalog()
    _, rules = load_runbook(fault_names=cat.names)
    known, unknown = set(cat.known_in(split)), set(cat.unknown_in(split))
    kept = blind_rules(rules, cat.known_in(split))
    removed = [r for r in rules if r not in kept]
    assert all(r.written_for and set(r.written_for) <= unknown for r in removed)
    assert all(r.generic or set(r.written_for) & known for r in kept)
    assert blind_rules(rules, None) == rules


def test_handpicked_blind_runbook_loses_the_rules_written_with_the_answers():
    """The issue lists them: Xid 95, 'KV cache usage', 'Multi-Attach error', 'NCCL WARN NET/IB',
    'AsyncEngineDeadError'."""
    blind = make_baseline("runbook", sim_cfg=SimConfig(split="handpicked"))
    full = make_baseline("runbook-full", sim_cfg=SimConfig(split="handpicked"))
    leaky = ("KV cache usage", "Multi-Attach error", "NCCL WARN NET/IB", "AsyncEngineDeadError")

    def has(pol, pat=None, xid=None):
        return any((pat is not None and r.log is not None and r.log.pattern == pat)
                   or (xid is not None and r.xid_in == (xid,)) for r in pol.rules)

    for pat in leaky:
        assert has(full, pat) and not has(blind, pat), pat
    skew = [r for r in full.rules if r.alerts == ("NodeClockSkewDetected",)]
    assert skew and skew[0] not in blind.rules
    assert has(full, xid=95) and not has(blind, xid=95) and has(blind, xid=48)
    # the five above, '"GET /health HTTP/1.1" 500' (vLLM) and NodeClockSkewDetected (clock skew)
    assert len(full.rules) - len(blind.rules) == 7
    assert make_baseline("runbook-instant", sim_cfg=SimConfig()).rules == blind.rules


@pytest.mark.parametrize("rule, msg", [
    ("{alerts: [A], log: 'x|y', action: restart, target: alert_entity, written_for: [node_crash]}", "one pattern"),
    ("{alerts: [A], xid_in: [79, 48], action: drain, target: alert_entity, written_for: [node_crash]}", "one pattern"),
    ("{alerts: [A], action: restart, target: alert_entity}", "exactly one of"),
    ("{alerts: [A], action: restart, target: alert_entity, generic: true, written_for: [node_crash]}", "exactly one"),
    ("{alerts: [A], action: restart, target: alert_entity, written_for: [gpu_on_fire]}", "unknown fault type"),
])
def test_runbook_refuses_rules_that_blinding_could_not_handle(tmp_path, rule, msg):
    p = tmp_path / "rb.yaml"
    p.write_text(f"verify_steps: 2\nmax_attempts: 3\nrules:\n  - {rule}\n")
    with pytest.raises(ValueError, match=msg):
        load_runbook(p, fault_names=load_catalog().names)


@pytest.mark.timeout(300)
def test_blind_and_full_runbooks_act_the_same_on_known_types():
    cfg = SimConfig(split="handpicked")
    known = load_catalog().known_in("handpicked")
    for spec in (("runbook", "runbook-full"),):
        a = evaluate(spec[0], known, 1, 5, cfg, use_ray=False)
        b = evaluate(spec[1], known, 1, 5, cfg, use_ray=False)
        assert json.dumps(a) == json.dumps(b)
    # and the held-out rules matter on the held-out types (the comparison above can fail)
    unknown = load_catalog().unknown_in("handpicked")
    a = evaluate("runbook", unknown, 1, 5, cfg, use_ray=False)
    b = evaluate("runbook-full", unknown, 1, 5, cfg, use_ray=False)
    assert json.dumps(a) != json.dumps(b)


# ---------------------------------------------------------------- escalate-first
def _tel(*alarms):
    return {"telemetry": {"alarms": [{"name": n, "entity": e, "state": s, "active_for_s": 0.0}
                                     for n, e, s in alarms], "logs": []}}


def test_escalate_first_pages_at_a_pending_alert_and_again_if_it_holds_after_the_page():
    pol = EscalateFirstPolicy()
    pol.reset(None)
    assert pol.act(None, _tel(), None)[0] == 0
    assert pol.act(None, _tel(("CPUThrottlingHigh", "api-gateway", "firing")), None)[0] == 0  # ignored, info
    assert pol.act(None, _tel(("ServiceLatencyHigh", "api-gateway", "pending")), None)[0] == ESCALATE
    # the next decision comes after the human handled the page: an alert that still (or again) holds pages again
    assert pol.act(None, _tel(("ServiceLatencyHigh", "api-gateway", "firing")), None)[0] == ESCALATE
    assert pol.act(None, _tel(), None)[0] == 0
    pol.reset(None)
    assert pol.act(None, _tel(("KubeNodeNotReady", "gpu-0", "pending")), None)[0] == ESCALATE


def test_escalate_first_in_an_episode_pages_at_the_step_of_the_first_alert():
    env = FaultInjectionEnv({"faults": "all"})
    pol = make_baseline("escalate-first")
    obs, info = env.reset(seed=3, options={"faults": ["node_crash"]})
    pol.reset(env)
    ignore = pol.ignore
    for _ in range(40):
        first = any(a["name"] not in ignore for a in info["telemetry"]["alarms"])
        a = pol.act(obs, info, env)
        assert (a[0] == ESCALATE) == first
        if first:
            break
        obs, _, term, trunc, info = env.step(a)
    else:
        pytest.fail("no alert in 40 steps")


# ---------------------------------------------------------------- nearest-known
@pytest.fixture(scope="module")
def nearest(tmp_path_factory):
    cfg = NearestKnownConfig(calibration_episodes=3, cache_dir=str(tmp_path_factory.mktemp("protos")))
    return make_baseline("nearest-known", sim_cfg=SimConfig(split="handpicked"), nearest_cfg=cfg), cfg


def test_nearest_known_prototypes_are_of_the_splits_known_types_only(nearest):
    pol, cfg = nearest
    cat = load_catalog()
    assert set(pol.proto_faults) <= set(cat.known_in("handpicked"))
    assert not set(pol.proto_faults) & set(cat.unknown_in("handpicked"))
    assert np.allclose(np.linalg.norm(pol.protos, axis=1), 1.0)
    # cached: a second build reads the file and gives the same prototypes
    from ifshm_ray.baselines import nearest as nk

    nk._MEMO.clear()
    again = nk.load_prototypes(SimConfig(split="handpicked"), cfg)
    assert again["faults"] == pol.proto_faults and np.allclose(again["vectors"], pol.protos)


class _Blind:
    """What nearest-known may see of the env: the observation layout; anything else raises."""

    def __init__(self, env):
        self.unwrapped = SimpleNamespace(obs_layout=env.obs_layout)


@pytest.mark.parametrize("fault", ["certificate_expiry", "node_crash", "kv_cache_exhaustion"])
def test_nearest_known_reads_only_telemetry_and_the_observation(nearest, fault):
    """The policy gets an env stand-in without incident(), oracle_action() or the simulator: it must act the same
    as with the real env."""
    pol, _ = nearest
    env = FaultInjectionEnv({"faults": "all"})

    def run(view):
        obs, info = env.reset(seed=11, options={"faults": [fault]})
        pol.reset(view)
        acts = []
        for _ in range(60):
            a = pol.act(obs, info, view)
            acts.append(tuple(int(x) for x in a))
            obs, _, term, trunc, info = env.step(a)
            if term or trunc:
                break
        return acts

    blind = run(_Blind(env))
    assert blind == run(env)
    assert any(a[0] != 0 for a in blind)  # it acted


def test_nearest_known_diagnoses_known_types_at_their_first_symptomatic_window(nearest):
    pol, _ = nearest
    env = FaultInjectionEnv({"faults": "all"})
    for fault in ("certificate_expiry", "dns_upstream_failure", "node_crash"):
        r = run_episode(env, pol, fault, episode_seed(0, fault, 0))
        assert pol.guess == fault and pol.similarity > 0
        assert r["recovered"]


def test_evaluation_refuses_seeds_of_the_calibration_episodes():
    from ifshm_ray.baselines.nearest import calibration_seed

    f = "node_crash"
    jobs = [(f, calibration_seed(NearestKnownConfig(), f, 0))]
    with pytest.raises(ValueError, match="calibration seeds"):
        evaluate("nearest-known", [f], 1, 0, SimConfig(), use_ray=False, jobs=jobs)


# ---------------------------------------------------------------- fault sets
def test_compound_and_fault_free_jobs():
    cat = load_catalog()
    comp = make_jobs("compound", cat, "handpicked", 2, 0)
    assert comp == make_jobs("compound", cat, "handpicked", 2, 0)
    assert len(comp) == 2 * len(cat.names)
    assert all(isinstance(f, tuple) and len(f) == 2 and f[0] != f[1] for f, _ in comp)
    assert {f[0] for f, _ in comp} == set(cat.known_in("handpicked")) | set(cat.unknown_in("handpicked"))
    assert len({s for _, s in comp}) == len(comp)
    ff = make_jobs("fault_free", cat, "handpicked", 2, 0)
    assert len(ff) == 2 * len(cat.known_in("handpicked")) and all(f == FAULT_FREE for f, _ in ff)
    known = cat.known_in("handpicked")
    assert make_jobs("known", cat, "handpicked", 1, 0) == [(f, episode_seed(0, f, 0)) for f in known]


def test_fault_free_and_compound_episodes_in_the_harness():
    env = FaultInjectionEnv({"faults": "all"})
    rnd = make_baseline("random", seed=1)
    r = run_episode(env, rnd, FAULT_FREE, 123)
    assert r["fault_free"] and r["fault"] == FAULT_FREE and math.isnan(r["mttr_s"]) and r["false_action"]
    assert not r["timed_out"]
    o = run_episode(env, make_baseline("oracle"), FAULT_FREE, 123)
    assert o["fault_free"] and not o["false_action"] and o["actions"] == 0
    c = run_episode(env, make_baseline("oracle"), ("node_crash", "certificate_expiry"), 7)
    assert c["fault"] == "node_crash+certificate_expiry" and c["recovered"] and c["mitigate_s"] >= 0


# ---------------------------------------------------------------- statistics
def _rec(fault, seed, mttr, **kw):
    r = {"fault": fault, "seed": seed, "mttr_s": mttr, "mitigate_s": mttr / 2, "detect_s": 10.0, "repair_s": 5.0,
         "recovered": True, "success": True, "escalated": False, "timed_out": False, "harmful_actions": 0,
         "actions": 1, "false_action": False, "fault_free": False, "return": -1.0}
    r.update(kw)
    return r


def test_bootstrap_interval_contains_the_mean_and_is_deterministic():
    x = np.random.default_rng(0).exponential(600.0, 50)
    ci = bootstrap_mean_ci(x)
    assert ci[0] < x.mean() < ci[1]
    assert ci == bootstrap_mean_ci(x) == bootstrap_mean_ci(list(x))
    assert ci != bootstrap_mean_ci(x, StatsConfig(bootstrap_seed=1))
    wide = bootstrap_mean_ci(x, StatsConfig(confidence=0.99))
    assert wide[0] <= ci[0] and wide[1] >= ci[1]
    assert bootstrap_mean_ci([]) is None


def test_paired_difference_pairs_by_incident():
    a = [_rec("x", 1, 100.0), _rec("x", 2, 300.0), _rec("y", 1, 50.0)]
    b = [_rec("y", 1, 40.0), _rec("x", 2, 100.0), _rec("x", 1, 100.0), _rec("z", 9, 1.0)]
    d = paired_difference(a, b)
    assert d["pairs"] == 3 and d["mean"] == pytest.approx((0 + 200 + 10) / 3)
    assert d["ci95"][0] <= d["mean"] <= d["ci95"][1]
    assert paired_difference(a, [_rec("q", 1, 1.0)]) is None


def test_summarise_counts_false_actions_escalations_and_time_outs_apart():
    recs = [_rec("x", 1, 100.0), _rec("x", 2, 1200.0, escalated=True, success=False),
            _rec("x", 3, 3600.0, recovered=False, success=False, timed_out=True),
            _rec("none", 4, float("nan"), fault_free=True, false_action=True, recovered=False),
            _rec("none", 5, float("nan"), fault_free=True, actions=0, recovered=False)]
    m = summarise(recs, "p", "mixed", 3600.0, split="handpicked")
    assert m["split"] == "handpicked" and m["episodes"] == 5 and m["fault_free_episodes"] == 2
    assert m["mttr_mean_s"] == pytest.approx((100 + 1200 + 3600) / 3)
    assert m["escalation_rate"] == pytest.approx(1 / 3) and m["timeout_rate"] == pytest.approx(1 / 3)
    assert m["false_action_rate"] == 0.5
    assert m["time_to_mitigate_mean_s"] == pytest.approx((50 + 600 + 1800) / 3)
    assert m["mttr_ci95"][0] <= m["mttr_mean_s"] <= m["mttr_ci95"][1]
    clean = summarise(recs[3:], "p", "fault_free", 3600.0)
    assert clean["mttr_mean_s"] is None and clean["mttr_ci95"] is None and clean["false_action_rate"] == 0.5
    assert summarise(recs[:3], "p", "known", 3600.0)["false_action_rate"] is None


def test_every_reference_is_a_baseline():
    assert set(BASELINES) == {"oracle", "runbook", "runbook-full", "runbook-instant", "nearest-known",
                              "escalate-first", "random"}
    assert RUNBOOK_PATH.is_file()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_ray_tasks_give_the_same_compound_and_fault_free_records(ray_session):
    jobs = [(("node_crash", "certificate_expiry"), 7), (FAULT_FREE, 8), ("dns_upstream_failure", 9)]
    cfg = SimConfig(time_limit_s=900.0)
    local = evaluate("random", [], 1, 0, cfg, use_ray=False, jobs=jobs)
    remote = evaluate("random", [], 1, 0, cfg, use_ray=True, chunks=2, num_cpus_per_task=0.5, jobs=jobs)
    assert [r["fault"] for r in remote] == ["node_crash+certificate_expiry", FAULT_FREE, "dns_upstream_failure"]
    assert json.dumps(local) == json.dumps(remote)

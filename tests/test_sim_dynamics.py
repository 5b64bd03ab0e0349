"""Stochastic, gradual dynamics (issue 12 point 4): per-episode draws from the catalog ranges, intermittent faults,
remedies that take drawn durations and fail as states, recovery tails, migration that heals only the service moved,
a busy cluster where a careless drain runs out of room, scale-outs that need room, and the forced detach."""
from __future__ import annotations

import re

import numpy as np
import pytest

from ifshm_ray.env import FaultInjectionEnv
from ifshm_ray.sim.actions import CATEGORIES, CATEGORY_INDEX
from ifshm_ray.sim.catalog import DATA_DIR, RAMP_SHAPES, load_catalog
from ifshm_ray.sim.core import BatchedSim, SimConfig

pytestmark = pytest.mark.timeout(180)
CAT = load_catalog()
FLAPPING = [f.name for f in CAT.faults if f.flap]
DRAIN, MIGRATE, SCALE = CATEGORY_INDEX["drain"], CATEGORY_INDEX["migrate"], CATEGORY_INDEX["scale"]


def _lh(v):
    return (float(v), float(v)) if isinstance(v, (int, float)) else (float(v[0]), float(v[1]))


def _catalog(tmp_path, fail_prob: float | None = None) -> str:
    """A copy of the shipped catalog with every remedy's fail_prob set to ``fail_prob``."""
    text = (DATA_DIR / "catalog.yaml").read_text()
    if fail_prob is not None:
        text = re.sub(r"fail_prob: [0-9.]+", f"fail_prob: {fail_prob}", text)
    p = tmp_path / "catalog.yaml"
    p.write_text(text)
    return str(p)


def _sim(fault: str, n: int, catalog: str | None = None, seed0: int = 0) -> BatchedSim:
    sim = BatchedSim(SimConfig(faults=[fault], catalog=catalog), batch_size=n)
    sim.reset(np.arange(n), np.arange(seed0, seed0 + n, dtype=np.uint64), faults=[fault] * n)
    return sim


def _run_until_started(sim: BatchedSim, steps: int = 60) -> None:
    for _ in range(steps):
        if all(sim.symptoms_started(b)[0] for b in range(sim.B)):
            return
        sim.step(np.zeros((sim.B, 3), np.int64))
    raise AssertionError("the fault never showed")


@pytest.mark.parametrize("fault", ["gpu_thermal_throttling", "kv_cache_exhaustion", "dns_upstream_failure"])
def test_onset_ramp_shape_severity_drawn_per_episode_within_catalog_ranges(fault):
    spec = CAT.spec(fault)
    sim = _sim(fault, 64)
    for name, arr, v in (("onset", sim.ep_onset, spec.onset_s), ("ramp", sim.ep_ramp, spec.ramp_s),
                         ("severity", sim.ep_sevmax, spec.severity)):
        lo, hi = _lh(v)
        x = arr[:, 0]
        assert (x >= lo - 1e-9).all() and (x <= hi + 1e-9).all(), name
        if hi > lo:
            assert len(np.unique(x)) > 32, f"{name} is not drawn per episode"
    shapes = {spec.ramp_shape} if isinstance(spec.ramp_shape, str) else set(spec.ramp_shape)
    drawn = {RAMP_SHAPES[i] for i in sim.ep_shape[:, 0]}
    assert drawn == shapes
    again = _sim(fault, 64)  # a function of the episode key only
    np.testing.assert_array_equal(again.ep_onset, sim.ep_onset)
    np.testing.assert_array_equal(again.ep_sevmax, sim.ep_sevmax)


def test_ramp_shapes_and_severity_shape_the_symptom():
    sim = _sim("kv_cache_exhaustion", 1)  # accelerating: slow first, then fast
    k_onset, ramp, top = sim.ep_onset[0, 0], sim.ep_ramp[0, 0], sim.ep_sevmax[0, 0]
    t0 = sim.f_t0[0, 0] + k_onset
    sev = [float(sim._severity(np.array([0]), np.array([t0 + x * ramp]))[0][0, 0]) for x in (0.25, 0.5, 1.0, 2.0)]
    assert sev[0] == pytest.approx(max(0.0625 * top, 0.05)) and sev[1] == pytest.approx(0.25 * top)
    assert sev[2] == pytest.approx(top) and sev[3] == pytest.approx(top)


def test_at_least_three_fault_types_flap():
    assert len(FLAPPING) >= 3, FLAPPING


@pytest.mark.parametrize("fault", FLAPPING)
def test_intermittent_symptoms_come_and_go_while_the_root_cause_persists(fault):
    sim = _sim(fault, 8)
    _run_until_started(sim)
    vis, sev = [], []
    for _ in range(110):  # 55 min of doing nothing
        sim.step(np.zeros((sim.B, 3), np.int64))
        assert sim.f_active[:, 0].all()  # the root cause stays
        s, v = sim._severity(slice(None), sim.t)
        vis.append(v[:, 0].copy())
        sev.append(s[:, 0].copy())
    vis, sev = np.array(vis), np.array(sev)
    if CAT.spec(fault).flap["mode"] == "square":  # symptoms off part of every period, then back
        on_off = [(vis[:, b].any() and not vis[:, b].all()) for b in range(sim.B)]
        assert sum(on_off) >= sim.B // 2, vis.T.astype(int)
        assert (sev[~vis] == 0).all()
    else:  # sawtooth: the symptom drops (the OOMKill restarts the process) and builds up again
        drops = (np.diff(sev, axis=0) < -0.2).any(axis=0)
        assert drops.sum() >= sim.B // 2


def test_remedy_durations_are_drawn_within_catalog_range(tmp_path):
    cat = _catalog(tmp_path, fail_prob=0.0)
    lo, hi = CAT.spec("node_crash").remedies["drain"]["duration_s"]
    took = []
    for seed in range(12):
        sim = _sim("node_crash", 1, cat, seed0=seed)
        _run_until_started(sim)
        t = sim.t[0]
        sim.step(np.array([[DRAIN, sim.topo.S + sim.f_root[0, 0], 0]]))
        took.append(sim.t[0] - t - sim.cfg.step_s)
        assert not sim.f_active[0, 0]
    assert min(took) >= lo and max(took) <= hi and len(set(took)) == len(took)


def _attempt(sim: BatchedSim, category: int, target: np.ndarray) -> None:
    a = np.zeros((sim.B, 3), np.int64)
    a[:, 0], a[:, 1] = category, target
    sim.step(a)


def test_remedies_fail_at_the_catalog_rate():
    """node_crash's drain fails (disruption budget) with the catalog's probability, drawn per attempt."""
    p = CAT.spec("node_crash").remedies["drain"]["fail_prob"]
    n = 600
    sim = _sim("node_crash", n)
    _run_until_started(sim)
    _attempt(sim, DRAIN, sim.topo.S + sim.f_root[:, 0])
    failed = sim.f_active[:, 0].mean()
    sd = np.sqrt(p * (1 - p) / n)
    assert abs(failed - p) < 4 * sd, (failed, p)


def test_failure_states_pdb_blocked_gpu_in_use_migration_aborted_and_retry(tmp_path):
    always = _catalog(tmp_path, fail_prob=1.0)
    # pdb_blocked: the node is cordoned, evictions refused, the pods stay; draining it again is valid (a retry)
    sim = _sim("node_crash", 1, always)
    _run_until_started(sim)
    node = int(sim.f_root[0, 0])
    workload = sim.P[0, ~sim.topo.daemonset, node].sum()
    _attempt(sim, DRAIN, np.array([sim.topo.S + node]))
    assert sim.f_active[0, 0] and sim.cordoned[0, node]
    assert sim.P[0, ~sim.topo.daemonset, node].sum() == workload > 0
    tm, _ = sim.action_masks()
    assert tm[0, DRAIN * sim.topo.T + sim.topo.S + node] > 0
    # gpu_in_use: the node is drained, the reset refused: the fault stays
    sim = _sim("gpu_xid79_fallen_off_bus", 1, always)
    _run_until_started(sim)
    node = int(sim.f_root[0, 0])
    _attempt(sim, DRAIN, np.array([sim.topo.S + node]))
    assert sim.f_active[0, 0] and sim.P[0, ~sim.topo.daemonset, node].sum() == 0
    # migration_aborted: nothing moves
    sim = _sim("gpu_thermal_throttling", 1, always)
    _run_until_started(sim)
    node = int(sim.f_root[0, 0])
    before = sim.P.copy()
    _attempt(sim, MIGRATE, np.array([sim.topo.svc_index["inference-server"]]))
    assert sim.f_active[0, 0]
    np.testing.assert_array_equal(sim.P, before)
    # the same attempt succeeds when it does not fail
    sim = _sim("node_crash", 1, _catalog(tmp_path, fail_prob=0.0))
    _run_until_started(sim)
    _attempt(sim, DRAIN, np.array([sim.topo.S + sim.f_root[0, 0]]))
    assert not sim.f_active[0, 0]


def test_recovery_has_a_decaying_tail(tmp_path):
    sim = BatchedSim(SimConfig(faults=["cuda_oom_model_server"], catalog=_catalog(tmp_path, 0.0)), batch_size=1)
    sim.reset([0], [5], faults=["cuda_oom_model_server"])
    for _ in range(10):
        sim.step(np.zeros((1, 3), np.int64))
    before, _ = sim._severity(np.array([0]), sim.t)
    inf = sim.topo.svc_index["inference-server"]
    sim.step(np.array([[CATEGORY_INDEX["reallocate"], inf, 1]]))
    assert not sim.f_active[0, 0]
    tails = []
    for _ in range(30):
        s, v = sim._severity(np.array([0]), sim.t)
        tails.append(float(s[0, 0]))
        assert not v[0, 0]  # no new fault log lines: only the symptoms decay
        sim.step(np.zeros((1, 3), np.int64))
    assert 0 < tails[0] <= before[0, 0] and tails[-1] == 0.0
    assert all(b <= a for a, b in zip(tails, tails[1:]))


def test_migrating_one_service_heals_only_that_service(tmp_path):
    sim = BatchedSim(SimConfig(faults=["gpu_thermal_throttling"], catalog=_catalog(tmp_path, 0.0)), batch_size=1)
    ix = sim.topo.svc_index
    for seed in range(40):  # a root node that hosts both inference and training
        sim.reset([0], [seed], faults=["gpu_thermal_throttling"])
        node = int(sim.f_root[0, 0])
        if sim.P[0, ix["training-worker"], node] > 0 and sim.P[0, ix["inference-server"], node] > 0:
            break
    _run_until_started(sim)
    sim.step(np.array([[MIGRATE, ix["inference-server"], 0]]))
    assert sim.P[0, ix["inference-server"], node] == 0       # the service moved ...
    assert sim.f_active[0, 0]                                # ... the node's fault stays
    assert sim.P[0, ix["training-worker"], node] > 0          # and still hurts what is left there
    sev, _ = sim._severity(np.array([0]), sim.t)
    assert sev[0, 0] > 0
    sim.step(np.array([[MIGRATE, ix["training-worker"], 0]]))
    assert sim.P[0, ~sim.topo.daemonset, node].sum() == 0
    assert not sim.f_active[0, 0]                             # nothing left for it to hurt


def test_busy_cluster_careless_drain_runs_out_of_room():
    env = FaultInjectionEnv({"faults": ["bad_config_push"], "render_telemetry": False})
    topo = env.topology
    used = (topo.placement0 * topo.svc_gpus[:, None]).sum()
    assert used / topo.node_gpus.sum() >= 0.8
    env.reset(seed=0)
    _, _, _, _, i1 = env.step((DRAIN, topo.targets.index("gpu-2"), 0))  # fits: one node's worth is spare
    assert not i1["harmful"]
    _, _, _, _, i2 = env.step((DRAIN, topo.targets.index("gpu-3"), 0))  # no room left
    assert i2["harmful"] and env.sim.mech_sched[0] >= 0
    lines = env.sim.render_lines(0)
    assert any(tid == env.sim.tid_failed_sched for tid, _, _ in lines)


def test_scale_out_heals_only_when_the_replicas_are_placed(tmp_path):
    cat = _catalog(tmp_path, 0.0)
    results = {}
    for careless in (False, True):
        env = FaultInjectionEnv({"faults": ["kv_cache_exhaustion"], "render_telemetry": False, "catalog": cat})
        env.reset(seed=1)
        if careless:  # an unrelated drain uses up the spare GPUs
            env.step((DRAIN, env.topology.targets.index("gpu-2"), 0))
        while not env.sim.symptoms_started(0)[0]:
            env.step((0, 0, 0))
        env.step((SCALE, env.topology.svc_index["inference-server"], 1))  # x1.5 = the catalog's min_ratio
        results[careless] = bool(env.sim.f_active[0, 0])
    assert results == {False: False, True: True}


@pytest.mark.parametrize("fault", ["bad_config_push", "dns_upstream_failure", "volume_attach_failure"])
def test_gpu_utilisation_alert_is_not_an_artifact(fault):
    """Faults that do not touch the GPUs never raise GPUUtilizationDrop (v1: it fired at 600 s in every episode,
    two GPU nodes idling below its threshold)."""
    env = FaultInjectionEnv({"faults": [fault], "render_telemetry": False})
    rule = [a.name for a in env.sim.alerts].index("GPUUtilizationDrop")
    for seed in range(3):
        env.reset(seed=seed)
        done = False
        while not done:
            _, _, term, trunc, _ = env.step((0, 0, 0))
            assert not env.sim.pending[0, rule], (fault, seed, env.sim.t[0])
            done = term or trunc


def test_forced_detach_clears_the_stale_attachment_after_about_six_minutes():
    lo, hi = CAT.spec("rwo_volume_multi_attach").self_heal_s
    sim = _sim("rwo_volume_multi_attach", 16)
    first = sim.f_t0[:, 0] + sim.ep_onset[:, 0]
    while sim.f_active[:, 0].any():
        sim.step(np.zeros((sim.B, 3), np.int64))
    after = sim.f_heal_t[:, 0] - first
    assert (after >= lo).all() and (after <= hi).all() and len(np.unique(after)) > 1


def test_oracle_retries_a_failed_remedy(tmp_path):
    """With a 50% failure rate the oracle (the catalog's remedies, no luck) keeps trying and heals."""
    text = (DATA_DIR / "catalog.yaml").read_text()
    p = tmp_path / "catalog.yaml"
    p.write_text(re.sub(r"fail_prob: [0-9.]+", "fail_prob: 0.5", text))
    env = FaultInjectionEnv({"faults": ["node_crash"], "fault_free_prob": 0.0, "render_telemetry": False,
                             "catalog": str(p)})
    tries = []
    for seed in range(8):
        env.reset(seed=seed)
        done = False
        while not done:
            _, _, term, trunc, info = env.step(env.oracle_action())
            done = term or trunc
        assert term and info["success"]
        tries.append(info["actions"])
    assert max(tries) > 1


def test_categories_unchanged():
    assert "ntp_resync" not in CATEGORIES and len(CATEGORIES) == 10  # proxies stand in (see the catalog)


def test_disruption_budget_keeps_pods_when_a_careless_drain_left_no_room(tmp_path):
    """A state, not a coin flip: after an unrelated drain used up the spare GPUs, draining the faulty node evicts at
    most maxUnavailable replicas per service (they go Pending), the PDB keeps the rest there, and with pods still on
    it the node is not repaired (the GPU reset is refused while in use)."""
    sim = _sim("gpu_xid79_fallen_off_bus", 1, _catalog(tmp_path, 0.0))
    topo = sim.topo
    root = int(sim.f_root[0, 0])
    other = next(n for n in range(topo.N) if topo.node_role[n] == "gpu" and n != root)
    _run_until_started(sim)
    _attempt(sim, DRAIN, np.array([topo.S + other]))
    assert sim.P[0, ~topo.daemonset, other].sum() == 0 and sim.f_active[0, 0]
    before = sim.P[0, :, root].copy()
    _attempt(sim, DRAIN, np.array([topo.S + root]))
    assert sim.f_active[0, 0] and sim.cordoned[0, root]
    for s in np.flatnonzero(before * topo.svc_gpus > 0):
        evicted = before[s] - sim.P[0, s, root]
        assert evicted <= topo.pdb_max_unavailable[s] + 1e-9
    assert sim.P[0, ~topo.daemonset, root].sum() > 0
    fresh = _sim("gpu_xid79_fallen_off_bus", 1, _catalog(tmp_path, 0.0))  # the same drain with room: repaired
    _run_until_started(fresh)
    _attempt(fresh, DRAIN, np.array([topo.S + root]))
    assert not fresh.f_active[0, 0]


def test_restarting_an_inference_server_reloads_its_model_for_minutes():
    lo, hi = CAT.actions["restart"]["by_service"]["inference-server"]
    took = {"inference-server": [], "api-gateway": []}
    for seed in range(8):
        for svc in took:
            env = FaultInjectionEnv({"faults": ["bad_config_push"], "render_telemetry": False})
            env.reset(seed=seed)
            t = env.sim.t[0]
            env.step((CATEGORY_INDEX["restart"], env.topology.svc_index[svc], 0))
            took[svc].append(env.sim.t[0] - t - env.sim_cfg.step_s)
    inf = np.array(took["inference-server"])
    assert (inf >= lo).all() and (inf <= hi).all() and len(np.unique(inf)) == len(inf)
    assert set(took["api-gateway"]) == {CAT.actions["restart"]["duration_s"]}


def test_a_page_sent_before_the_fault_started_does_not_fix_it():
    """Escalating at t = 0 (before injection) must not heal a fault injected later: the human paged for nothing finds
    nothing (an RL policy learned to page at once when it did)."""
    env = FaultInjectionEnv({"faults": ["process_crash_loop"], "fault_free_prob": 0.0, "render_telemetry": False,
                             "inject_max_delay_s": 60.0})
    for seed in range(20):
        env.reset(seed=seed)
        t_inj = env.unwrapped.incident()["faults"][0]["injected_at_s"]
        if t_inj > 0:
            break
    assert t_inj > 0
    esc = np.array([CATEGORY_INDEX["escalate"], 0, 0])
    _, _, term, trunc, info = env.step(esc)
    assert not term, "the page before injection healed a fault that did not exist yet"
    assert env.unwrapped.incident()["faults"][0]["active"]

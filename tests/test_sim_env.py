"""Simulator and environment: spec checks, determinism, batched == single, oracle heals every fault, doing
nothing heals none, harm is penalised, scaling away never counts as recovery, log mining is exact."""
from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from ifshm_ray.config import SimConfig
from ifshm_ray.env import FaultInjectionEnv, FaultInjectionVectorEnv
from ifshm_ray.sim.actions import CATEGORIES
from ifshm_ray.sim.catalog import load_catalog
from ifshm_ray.sim.core import BENIGN_MIX, BatchedSim, SimError

pytestmark = pytest.mark.timeout(120)
CAT = load_catalog()
ALL = CAT.names


def _run(env, actions_rng, steps=30, seed=3):
    obs, info = env.reset(seed=seed)
    trace = []
    for _ in range(steps):
        tm = obs["action_mask"].reshape(len(CATEGORIES), -1)
        pairs = np.argwhere(tm > 0)
        c, t = pairs[actions_rng.integers(len(pairs))]
        a = (int(c), int(t), 0 if CATEGORIES[c] not in ("scale", "reallocate") else int(actions_rng.integers(4)))
        obs, r, term, trunc, info = env.step(a)
        trace.append((obs["obs"].copy(), r, term, trunc, info.get("telemetry")))
        if term or trunc:
            obs, info = env.reset()
    return trace


def test_env_checker():
    check_env(FaultInjectionEnv({"faults": "all"}), skip_render_check=True)


def test_catalog_size_and_split():
    assert len(CAT.faults) >= 20
    assert len(CAT.unknown_in("handpicked")) >= 5
    assert len(CAT.known_in("handpicked")) >= 15


def test_symptoms_overlap_and_unknown_faults_are_related_not_copies():
    from ifshm_ray.sim.topology import Topology

    # benign lines and the client-side errors any impaired dependency causes are shared by construction
    benign = {t for t, _, _ in BENIGN_MIX} | {s.client_error for s in Topology().specs}
    tpl = {f.name: {e["t"] for e in f.logs} for f in CAT.faults}
    heal = {f.name: {c for c, r in f.remedies.items() if r["effect"] == "heal"} for f in CAT.faults}
    for f in CAT.faults:
        others = set().union(*[tpl[g] for g in tpl if g != f.name]) | benign
        assert tpl[f.name] & others, f"{f.name}: every log template is unique to it"
    known = CAT.known_in("handpicked")  # (the hand-picked held-out types were chosen to be related, not copies)
    for u in CAT.unknown_in("handpicked"):
        related = [k for k in known if tpl[u] & tpl[k]]
        assert related, f"unknown {u} shares no symptom with a known fault"
        assert any(heal[u] & heal[k] for k in known), f"unknown {u} shares no remedy with a known fault"
        assert all((tpl[u], heal[u]) != (tpl[k], heal[k]) for k in known), f"{u} copies a known fault"


def test_determinism_same_seed_same_rollout():
    a = _run(FaultInjectionEnv({"faults": "all"}), np.random.default_rng(1))
    b = _run(FaultInjectionEnv({"faults": "all"}), np.random.default_rng(1))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1:4] == y[1:4]
        assert x[4] == y[4]  # identical raw telemetry, log lines included


def test_different_seeds_differ():
    a = _run(FaultInjectionEnv({"faults": "all"}), np.random.default_rng(1), steps=5, seed=1)
    b = _run(FaultInjectionEnv({"faults": "all"}), np.random.default_rng(1), steps=5, seed=2)
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, b))


def test_mined_log_counts_equal_emitted_counts():
    env = FaultInjectionEnv({"faults": "all", "compound_prob": 0.5})
    rng = np.random.default_rng(0)
    for seed in range(12):
        env.reset(seed=seed)
        for _ in range(8):
            c = int(rng.choice([0, 0, 0, 1, 3, 8]))
            _, _, term, trunc, info = env.step((c, int(rng.integers(14)), 1 if c == 3 else 0))
            counts, svc_lines, node_lines, unmatched = env.miner.mine(info["telemetry"]["logs"])
            assert unmatched == 0
            np.testing.assert_array_equal(counts, env.sim.tcounts[0])
            np.testing.assert_array_equal(svc_lines, env.sim.svc_lines[0])
            np.testing.assert_array_equal(node_lines, env.sim.node_lines[0])
            if term or trunc:
                break


def test_miner_masks_in_one_pass_as_line_by_line():
    """The miner masks all bodies in one regex pass; a body holding a newline (foreign logs) falls back to masking
    line by line, and lines without source/body count as unmatched without shifting the others."""
    from ifshm_ray.sim.render import mask_body

    env = FaultInjectionEnv({"faults": "all"})
    env.reset(seed=3)
    lines = []
    for _ in range(6):
        lines += env.step((0, 0, 0))[4]["telemetry"]["logs"]
    counts, svc_lines, node_lines, unmatched = env.miner.mine(lines)
    assert unmatched == 0
    assert counts.sum() == len(lines)
    expect = np.zeros_like(counts)
    for line in lines:  # line by line, through the documented normal form
        expect[env.miner.table[line.split(" ", 3)[2][:-1] + "|" + mask_body(line.split(" ", 3)[3])]] += 1
    np.testing.assert_array_equal(counts, expect)
    topo = env.topology
    foreign = f"2026-11-28T09:00:00.000Z {topo.nodes[0]} {topo.services[0]}: ERROR first\nsecond 42"
    odd = lines[:3] + ["no-source-line", foreign] + lines[3:]
    c2, s2, n2, u2 = env.miner.mine(odd)
    assert u2 == 2
    np.testing.assert_array_equal(c2, counts)
    assert s2.sum() == svc_lines.sum() + 1 and n2.sum() == node_lines.sum() + 1  # (the foreign ERROR line counts)


def test_telemetry_schema_and_no_ground_truth_in_observation():
    from ifshm_ray.telemetry import validate_telemetry

    env = FaultInjectionEnv({"faults": "all"})
    obs, info = env.reset(seed=0)
    obs, *_, info = env.step((0, 0, 0))
    tel = info["telemetry"]
    validate_telemetry(tel, services=tel["topology"]["services"], nodes=tel["topology"]["nodes"])
    import json

    json.dumps(tel)
    assert "incident" not in info and "fault" not in info
    assert obs["obs"].shape == env.observation_space["obs"].shape


@pytest.mark.parametrize("fault", ALL)
def test_oracle_heals_and_noop_does_not(fault):
    env = FaultInjectionEnv({"faults": [fault], "render_telemetry": False, "fault_free_prob": 0.0})
    for seed in (0, 1):
        env.reset(seed=seed)
        done = False
        while not done:
            _, _, term, trunc, info = env.step(env.oracle_action())
            done = term or trunc
        assert term and info["success"] and info["harmful_actions"] == 0, (fault, info)
        assert info["mttr_s"] < 1800  # (remedies drawn up to 15 min, a failed attempt retried, the recovery tail)
    env.reset(seed=7)
    done = False
    while not done:
        _, _, term, trunc, info = env.step((0, 0, 0))
        done = term or trunc
    if CAT.spec(fault).self_heal_s is None:
        assert trunc and not info["recovered"], f"{fault} healed by itself"
    else:  # something outside the agent clears it (the attach-detach controller's forced detach)
        assert info["recovered"] and info["mttr_s"] >= CAT.spec(fault).self_heal_s[0]


def test_oracle_waits_for_first_visible_symptom():
    env = FaultInjectionEnv({"faults": ["host_memory_leak"], "render_telemetry": False})  # onset 120 s
    env.reset(seed=0)
    vis = env.incident()["faults"][0]["visible_at_s"]
    while env.sim.t[0] < vis:
        assert env.oracle_action()[0] == 0
        env.step((0, 0, 0))
    assert env.oracle_action()[0] != 0


def test_harmful_action_is_penalised():
    topo_env = FaultInjectionEnv({"faults": ["message_queue_memory_alarm"], "render_telemetry": False})
    mq = topo_env.topology.targets.index("message-queue")
    rewards = {}
    for name, action in (("observe", (0, 0, 0)), ("restart-mq", (CATEGORIES.index("restart"), mq, 0))):
        topo_env.reset(seed=0)
        topo_env.step((0, 0, 0))
        topo_env.step((0, 0, 0))
        _, r, _, _, info = topo_env.step(action)
        rewards[name] = r
        if name == "restart-mq":
            assert info["harmful"]
    assert rewards["restart-mq"] < rewards["observe"] - 5


def test_draining_last_node_is_harmful():
    env = FaultInjectionEnv({"faults": ["node_crash"], "render_telemetry": False,
                             "topology": {"gpu_nodes": 2, "inference_replicas": 2, "training_workers": 2}})
    env.reset(seed=0)
    drain = CATEGORIES.index("drain")
    _, _, _, _, i1 = env.step((drain, env.topology.targets.index("gpu-0"), 0))
    _, _, _, _, i2 = env.step((drain, env.topology.targets.index("gpu-1"), 0))
    assert i2["harmful"]


@pytest.mark.parametrize("target", ["inference-server", "api-gateway", "feature-store"])
def test_scaling_a_service_to_zero_never_counts_as_recovery(target):
    env = FaultInjectionEnv({"faults": ["certificate_expiry"], "render_telemetry": False})
    env.reset(seed=0)
    t = env.topology.targets.index(target)
    scale = CATEGORIES.index("scale")
    for _ in range(4):  # ratio level 0 = x0.5 -> down to zero replicas
        env.step((scale, t, 0))
    assert env.sim.replicas[0, t] == 0
    env.step(env.oracle_action())  # the root cause is cleared ...
    done = False
    while not done:
        _, _, term, trunc, info = env.step((0, 0, 0))
        done = term or trunc
    assert trunc and not info["recovered"]  # ... but a missing service is never healthy


def test_escalate_recovers_but_is_never_success():
    env = FaultInjectionEnv({"faults": ["bad_config_push"], "render_telemetry": False, "fault_free_prob": 0.0})
    env.reset(seed=0)
    t_inj = env.incident()["faults"][0]["injected_at_s"]
    info = {"time_s": 0.0}
    while info["time_s"] <= t_inj:  # (a page sent before the fault started finds nothing)
        _, _, _, _, info = env.step((0, 0, 0))
    env.step((CATEGORIES.index("escalate"), 0, 0))
    done = False
    while not done:
        _, _, term, trunc, info = env.step((0, 0, 0))
        done = term or trunc
    assert info["recovered"] and info["escalated"] and not info["success"]
    assert info["mttr_s"] >= 900


def test_acting_on_a_false_alarm_costs():
    env = FaultInjectionEnv({"faults": ["host_memory_leak"], "render_telemetry": False, "inject_max_delay_s": 60})
    env.reset(seed=0)
    t0 = env.incident()["faults"][0]["injected_at_s"]
    assert t0 > 0
    env.sim.f_t0[0, 0] = 1e9  # not injected yet during this step
    _, r_act, *_ = env.step((CATEGORIES.index("restart"), 0, 0))
    env.reset(seed=0)
    env.sim.f_t0[0, 0] = 1e9
    _, r_obs, *_ = env.step((0, 0, 0))
    assert r_act < r_obs


def test_step_duration_advances_time():
    env = FaultInjectionEnv({"faults": ["node_crash"], "render_telemetry": False})
    env.reset(seed=0)
    env.step((0, 0, 0))
    t = env.sim.t[0]
    env.step((CATEGORIES.index("drain"), env.topology.targets.index("gpu-3"), 0))
    assert env.sim.t[0] - t == pytest.approx(env.sim_cfg.step_s + env.sim.cc.act_duration[CATEGORIES.index("drain")],
                                             abs=1e-6) or env.sim.t[0] - t > env.sim_cfg.step_s


@pytest.mark.parametrize("cat, target", [("observe", "api-gateway"), ("rollback", "api-gateway"),
                                         ("drain", "gpu-3")])
def test_step_crossing_the_time_limit_charges_unhealthy_time_up_to_it(cat, target):
    """The step that crosses the time limit charges unhealthy time only up to it, whatever the action: with a
    limit 10 s after a 30-s step boundary, an observe step charges those 10 s (not the whole step interval), and a
    rollback (120 s) or drain (300 s) started 10 s before the limit charges 10 s (not its whole duration)."""
    cfg = SimConfig(faults=["node_crash"], time_limit_s=3610.0)
    sim = BatchedSim(cfg, batch_size=1)
    sim.reset([0], [3], faults=["node_crash"])
    while sim.t[0] + cfg.step_s < cfg.time_limit_s:
        res = sim.step(np.zeros((1, 3), np.int64))
        assert not (res.terminated[0] or res.truncated[0])
    left = cfg.time_limit_s - float(sim.t[0])
    assert left == 10.0 and not sim.healthy[0]
    c = CATEGORIES.index(cat)
    before = float(sim.unhealthy_s[0])
    res = sim.step(np.array([[c, sim.topo.targets.index(target), 0]]))
    assert res.truncated[0]
    assert float(sim.unhealthy_s[0]) - before == left
    assert res.reward[0] == pytest.approx(-(left / 60.0) * cfg.reward.unhealthy_weight - sim._act_cost_scaled[c]
                                          - float(res.harmful[0]) * cfg.reward.harm_penalty)


def _vector_matches_singles(cfg: dict, seed, steps: int = 150) -> int:
    """Steps a vector env and numeric single envs side by side with the same random actions; asserts equal
    observations, masks, rewards and episode ends; returns the number of episode ends seen."""
    seeds = seed if isinstance(seed, list) else [seed + i for i in range(3)]
    n = len(seeds)
    v = FaultInjectionVectorEnv(cfg, num_envs=n)
    obs, _ = v.reset(seed=seed)
    singles = [FaultInjectionEnv({**cfg, "render_telemetry": False}) for _ in range(n)]
    so = [e.reset(seed=s)[0] for e, s in zip(singles, seeds)]
    need = [False] * n
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(steps):
        acts = []
        for i in range(n):
            np.testing.assert_array_equal(obs["obs"][i], so[i]["obs"])
            np.testing.assert_array_equal(obs["action_mask"][i], so[i]["action_mask"])
            pairs = np.argwhere(so[i]["action_mask"].reshape(len(CATEGORIES), -1) > 0)
            c, t = pairs[rng.integers(len(pairs))] if rng.random() < 0.3 else (0, 0)
            acts.append((c, t, 0))
        obs, rew, term, trunc, info = v.step(np.array(acts))
        for i, e in enumerate(singles):
            if need[i]:
                so[i], need[i] = e.reset()[0], False
                assert rew[i] == 0 and not term[i] and not trunc[i]
                continue
            so[i], r, t1, t2, inf = e.step(acts[i])
            assert rew[i] == np.float32(r) and (t1, t2) == (term[i], trunc[i])  # (the vector env's are float32)
            if t1 or t2:
                need[i] = True
                ends += 1
                assert info["_mttr_s"][i] and info["mttr_s"][i] == pytest.approx(inf["mttr_s"], nan_ok=True)
    return ends


@pytest.mark.parametrize("cfg, seed", [({"faults": "all", "healthy_steps": 1}, 5),
                                       ({"faults": "all", "compound_prob": 0.3}, [11, 12, 13, 14]),
                                       ({"faults": "all", "fault_free_prob": 0.5}, [21, 22, 23, 24]),
                                       ({"faults": "all", "human": {"model": "drawn"}}, [31, 32, 33, 34]),
                                       ({"faults": "all", "human": {"model": "drawn"}, "time_limit_s": 600},
                                        [41, 42, 43, 44])])
def test_vector_env_matches_single_envs_with_next_step_autoreset(cfg, seed):
    """Sub-env i of the vector env (the class training steps) seeded with seed + i, or seed[i], gives exactly the
    observations, masks, rewards and episode ends of a single env reset with that seed."""
    assert _vector_matches_singles(cfg, seed) > 0


def test_vector_env_matches_single_env_rendering_telemetry_for_every_fault():
    """One sub-env per fault type (forced at reset): the vector env's observations, computed from the simulator's
    arrays, equal those of a single env that renders the raw telemetry and mines its log text, step by step with the
    same random actions, over each sub-env's first episode (30 steps at most)."""
    n = len(ALL)
    seeds = [40 + i for i in range(n)]
    v = FaultInjectionVectorEnv({"faults": "all"}, num_envs=n)
    obs, _ = v.reset(seed=seeds, options={"faults": ALL})
    rng = np.random.default_rng(0)
    trace = [[(obs["obs"][i], obs["action_mask"][i], None)] for i in range(n)]  # per sub-env: (obs, mask, step)
    live = np.ones(n, bool)
    for _ in range(30):
        acts = []
        for i in range(n):
            pairs = np.argwhere(obs["action_mask"][i].reshape(len(CATEGORIES), -1) > 0)
            c, t = pairs[rng.integers(len(pairs))] if rng.random() < 0.3 else (0, 0)
            acts.append((int(c), int(t), 0))
        obs, rew, term, trunc, _ = v.step(np.array(acts))
        for i in np.flatnonzero(live):
            trace[i].append((obs["obs"][i], obs["action_mask"][i], (acts[i], rew[i], term[i], trunc[i])))
        live &= ~(term | trunc)
    single = FaultInjectionEnv({"faults": "all"})
    assert single.render_telemetry and single.mine_logs
    for i, fault in enumerate(ALL):
        o, _ = single.reset(seed=seeds[i], options={"faults": [fault]})
        for k, (vo, vm, step) in enumerate(trace[i]):
            if step is not None:
                a, r, t1, t2 = step
                o, sr, s1, s2, _ = single.step(a)
                assert (np.float32(sr), s1, s2) == (r, t1, t2), (fault, k)
            np.testing.assert_array_equal(vo, o["obs"], err_msg=f"{fault}, step {k}")
            np.testing.assert_array_equal(vm, o["action_mask"], err_msg=f"{fault}, step {k}")
    with pytest.raises(SimError, match="one entry per sub-env"):
        v.reset(options={"faults": ALL[:2]})


def test_observation_rebuilt_from_telemetry_matches_env():
    """Exactly (tests/test_no_hidden_state.py does it for every fault type with actions)."""
    from ifshm_ray.env.observation import TelemetryObserver

    env = FaultInjectionEnv({"faults": "all"})
    ob = TelemetryObserver(env.sim_cfg)
    obs, info = env.reset(seed=4)
    for _ in range(6):
        obs, *_, info = env.step((0, 0, 0))
        x = ob.observe(info["telemetry"])
        for k in ("obs", "action_mask", "ratio_mask"):
            np.testing.assert_array_equal(x[k], obs[k])

def test_episode_stats_batch_equals_episode_stats_per_env():
    """The vector env's episode-end infos come from BatchedSim.episode_stats_batch: for every done env it gives
    exactly episode_stats(b) (recovered, escalated and fault-free episodes among them), 0 / False elsewhere."""
    from ifshm_ray.sim.core import BatchedSim
    from ifshm_ray.config import SimConfig

    B = 24
    sim = BatchedSim(SimConfig(faults="all", fault_free_prob=0.3, compound_prob=0.3), batch_size=B)
    sim.reset(np.arange(B), [1000 + i for i in range(B)])
    rng = np.random.default_rng(1)
    tm = sim.action_masks()[0].reshape(B, len(CATEGORIES), -1)
    seen = set()
    for step in range(60):
        acts = np.zeros((B, 3), np.int64)
        for b in range(B):
            if rng.random() < 0.4:
                c, t = np.argwhere(tm[b] > 0)[rng.integers(int((tm[b] > 0).sum()))]
                acts[b] = (c, t, 0)
        sim.step(acts)
        done = rng.random(B) < 0.5
        got = sim.episode_stats_batch(done)
        for b in range(B):
            want = sim.episode_stats(b)
            seen.add((want["recovered"], want["escalated"], want["fault_free"]))
            for k, v in got.items():
                assert v.shape == (B,)
                if done[b]:
                    np.testing.assert_array_equal(v[b], want[k], err_msg=f"{k}, env {b}, step {step}")
                else:
                    assert v[b] == 0, (k, b)
    assert {True, False} <= {r for r, _, _ in seen} and (False, False, True) in seen
    kinds = {k: v.dtype for k, v in got.items()}
    assert kinds["mttr_s"] == np.float64 and kinds["actions"] == np.int64 and kinds["success"] == bool


def test_compiled_log_lines_draw_as_the_field_generators():
    """The renderer's generated line functions (random fields drawn inline) give, for every template, exactly the
    line that the generic field generators (Renderer._fields) and the template text give, and leave the random
    generator in the same state."""
    import random

    from ifshm_ray.sim.render import EPOCH_DAY, Renderer, _clock

    env = FaultInjectionEnv({"faults": "all"})
    R = env.renderer
    for tid, tpl in enumerate(R.templates):
        for seed in range(40):
            r1, r2 = random.Random(seed), random.Random(seed)
            svc, node = R._svc_name[seed % len(R._svc_name)], env.topology.nodes[seed % env.topology.N]
            t = 33000.0 + seed * 1.37
            line = R._compiled[tid](r1, svc, "object-storage", node, t, _clock(t))
            vals = R._fields(r2, tpl, svc, "object-storage", node, t)
            assert line == f"{EPOCH_DAY}T{_clock(t)}Z {node} {tpl.source.format(**vals)}: {tpl.body.format(**vals)}"
            assert r1.getstate() == r2.getstate(), tpl.id
    assert isinstance(R, Renderer)


def test_metric_windows_as_entity_dicts():
    """Renderer.metrics: for every entity the metrics its kind reports (no GPU metrics on nodes without GPUs), each
    a window of window_samples values, the last one the observed metric as rendered (rounded)."""
    from ifshm_ray.sim.core import GPU_ONLY, METRIC_DECIMALS, NODE_METRICS, SVC_METRICS

    env = FaultInjectionEnv({"faults": "all"})
    env.reset(seed=5)
    for _ in range(3):
        m = env.step((0, 0, 0))[4]["telemetry"]["metrics"]
    sim, topo, W = env.sim, env.topology, env.sim_cfg.window_samples
    assert list(m) == topo.services + topo.nodes
    rs, rn = sim.metric_rows(np.round(sim.obs_flat, METRIC_DECIMALS))
    for i, s in enumerate(topo.services):
        assert list(m[s]) == list(SVC_METRICS)
        assert all(len(v) == W for v in m[s].values())
        assert [m[s][k][-1] for k in SVC_METRICS] == rs[0, :, i].tolist()
    for i, n in enumerate(topo.nodes):
        names = [k for k in NODE_METRICS if sim.gpu_node[i] or k not in GPU_ONLY]
        assert list(m[n]) == names
        assert [m[n][k][-1] for k in names] == [rn[0, NODE_METRICS.index(k), i] for k in names]


def test_uniform_of_one_key_equals_its_row_in_a_batch():
    """rng.uniform's one-key path (a single env's reset) gives the numbers of that key's row in a batch draw."""
    from ifshm_ray.sim import rng

    g = np.random.default_rng(3)
    keys = g.integers(0, 2**63 - 1, 40, dtype=np.int64).astype(np.uint64)
    keys[0], keys[1] = 0, np.uint64(2**64 - 1)
    counters = g.integers(0, 2**40, 40, dtype=np.int64).astype(np.uint64)
    for n in (1, 16, 41, 4096):
        batch = rng.uniform(keys, counters, 20, n)
        for i in range(len(keys)):
            one = rng.uniform(keys[i:i + 1], counters[i:i + 1], 20, n)
            assert one.shape == (1, n)
            np.testing.assert_array_equal(one[0], batch[i])


def test_mask_bodies_equals_mask_body_on_any_whitespace():
    """mask_bodies (space-only bodies through the space-anchored pattern, others through the general one) gives
    mask_body of each body, for rendered bodies and random strings with every kind of ASCII whitespace."""
    import random

    from ifshm_ray.sim.render import mask_bodies, mask_body

    env = FaultInjectionEnv({"faults": "all"})
    env.reset(seed=7)
    rendered = []
    for _ in range(40):
        rendered += [line.split(" ", 3)[3] for line in env.step((0, 0, 0))[4]["telemetry"]["logs"]]
    r = random.Random(0)
    for alphabet in ("ab1 2x-:.<>*", "ab1 \n2x-:.<>*  ", "ab1 \t\n2x-:.\x0b\r\x0c"):
        strings = ["".join(r.choice(alphabet) for _ in range(r.randrange(0, 30))) for _ in range(3000)]
        for group in (rendered, strings):
            for i in range(0, len(group), 7):
                chunk = group[i:i + 7]
                assert mask_bodies(chunk) == [mask_body(b) for b in chunk], chunk
    assert mask_bodies([]) == [] and mask_bodies(["", "x1 y"]) == ["", "<*> y"]


def test_clock_formats_time_of_day():
    """render._clock (hh:mm:ss cached per whole second) formats as '%02d:%02d:%02d.%03d' of the time of day."""
    import random

    from ifshm_ray.sim.render import _clock

    def plain(sec):
        sec = max(sec, 0.0)
        s = int(sec)
        return "%02d:%02d:%02d.%03d" % (s // 3600 % 24, s // 60 % 60, s % 60, int((sec - s) * 1000))

    r = random.Random(0)
    for sec in [r.uniform(-50, 200000) for _ in range(20000)] + [0.0, -0.0, 0.9999999, 86399.9999, 86400.0, 3e5]:
        assert _clock(sec) == plain(sec), sec
    assert _clock(9 * 3600 + 61.25) == "09:01:01.250"


def test_metric_windows_equal_the_plain_formula():
    """Renderer.metrics (one flat array, noise numbers taken into place, a factor of exactly 1 on the scrape sample)
    equals the window written plainly: per flat series, prev * (1 - w) + cur * w over the W samples, the samples
    before the scrape times 1 + 0.01 sqrt(3) (2u - 1) from the [series, W - 1] draw, rounded, entity by entity."""
    from ifshm_ray.env import sample_valid_actions
    from ifshm_ray.sim import rng
    from ifshm_ray.sim.core import METRIC_DECIMALS, P_WINDOW

    env = FaultInjectionEnv({"faults": "all"})
    R, sim = env.renderer, env.sim
    W = sim.cfg.window_samples
    w = np.linspace(0.0, 1.0, W)[None, :]
    gen = np.random.default_rng(5)
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        for _ in range(8):
            obs, *_ = env.step(sample_valid_actions(obs["action_mask"][None], gen, env.topology.T)[0])
            x = sim.prev_obs_flat[0][:, None] * (1 - w) + sim.obs_flat[0][:, None] * w
            u = rng.table_run(int(sim.key[0]), int(sim.step_idx[0]), P_WINDOW, x.shape[0] * (W - 1))
            x[:, :-1] *= u.reshape(x.shape[0], W - 1) * (0.02 * 3 ** 0.5) + (1.0 - 0.01 * 3 ** 0.5)
            rows = x[R._series].round(METRIC_DECIMALS)
            got = R.metrics(0)
            for name, metric_names, lo, _hi in R._entities:
                assert list(got[name]) == list(metric_names)
                for i, m in enumerate(metric_names):
                    assert got[name][m] == rows[lo + i].tolist(), (name, m)

"""The paged human of `escalate`: the fixed model is the default and unchanged; the drawn model (SimConfig.human.model:
drawn, ifshm_ray/sim/human.py, parameters in ifshm_ray/sim/data/human.yaml) is reproducible under a seed, its draws
follow the configured medians and 90th percentiles, fixes of fault types held out in the split take longer, the
first attempt fails at the configured rate, and a batched simulator equals single ones."""
from __future__ import annotations

import numpy as np
import pytest

from ifshm_ray.config import ConfigError, HumanParams, SimConfig
from ifshm_ray.env import FaultInjectionEnv
from ifshm_ray.sim.actions import CATEGORIES
from ifshm_ray.sim.catalog import load_catalog
from ifshm_ray.sim.core import BatchedSim
from ifshm_ray.sim.human import DATA, HumanModel, load_human_params

pytestmark = pytest.mark.timeout(120)
CAT = load_catalog()
ESC = CATEGORIES.index("escalate")
KNOWN = CAT.known_in("handpicked")
UNKNOWN = CAT.unknown_in("handpicked")
N = 200_000


def _draw(model: HumanModel, unfamiliar: bool, n: int = N, step: int = 1) -> dict:
    keys = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(7919)
    return model.draw(keys, np.full(n, step, np.uint64), np.full(n, unfamiliar))


def test_fixed_model_is_the_default_and_takes_the_fixed_time():
    cfg = SimConfig()
    assert cfg.human.model == "fixed"
    sim = BatchedSim(cfg, batch_size=1)
    assert sim.human is None
    sim.reset([0], [5], faults=[KNOWN[0]])
    sim.t[:] = sim.f_t0[0, 0] + 1.0  # (the fault has started)
    t0 = float(sim.t[0])
    sim.step(np.array([[ESC, 0, 0]]))
    assert sim.t[0] - t0 == pytest.approx(cfg.human_response_s + cfg.human_fix_s + cfg.step_s)


def test_packaged_parameters_load_with_a_source_for_every_block():
    p = load_human_params()
    for block in (p.response, p.fix_known, p.fix_unknown, p.first_attempt_fail_prob):
        assert block.source.strip()
    # held-out types take longer and fail more often (what the model is for)
    assert p.fix_unknown.median_s > p.fix_known.median_s
    assert p.first_attempt_fail_prob.unknown > p.first_attempt_fail_prob.known


@pytest.mark.parametrize("bad, msg", [
    ({"response": {"median_s": 600, "p90_s": 300}}, "median_s"),
    ({"response": {"clip_s": [700, 14400]}}, "clip"),
    ({"fix_known": {"source": ""}}, "source"),
    ({"first_attempt_fail_prob": {"known": 1.5}}, "known"),
    ({"fix_unknown": {"bogus": 1}}, "bogus"),
])
def test_bad_parameter_files_are_refused_with_the_key(tmp_path, bad, msg):
    import yaml
    doc = yaml.safe_load(DATA.read_text())
    for k, v in bad.items():
        doc[k] = {**doc[k], **v}
    f = tmp_path / "human.yaml"
    f.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=msg):
        HumanModel.load(f)
    with pytest.raises(ConfigError, match=msg):  # (through the simulator too: refused when it is built)
        BatchedSim(SimConfig(human={"model": "drawn", "params": str(f)}))


def test_bad_model_name_is_refused():
    with pytest.raises(ConfigError, match="human.model"):
        SimConfig(human={"model": "exponential"})


@pytest.mark.parametrize("unfamiliar", [False, True])
def test_draws_follow_the_configured_median_and_p90(unfamiliar):
    p = load_human_params()
    d = _draw(HumanModel(p), unfamiliar)
    for got, spec in ((d["response_s"], p.response), (d["fix_s"][d["attempts"] == 1],
                                                     p.fix_unknown if unfamiliar else p.fix_known)):
        assert np.median(got) == pytest.approx(spec.median_s, rel=0.02)
        assert np.quantile(got, 0.9) == pytest.approx(spec.p90_s, rel=0.03)
        assert got.min() >= spec.clip_s[0] and got.max() <= spec.clip_s[1]


def test_unknown_types_take_longer_on_average_and_fail_more():
    m = HumanModel.load()
    known, unknown = _draw(m, False), _draw(m, True)
    assert unknown["fix_s"].mean() > 2 * known["fix_s"].mean()
    np.testing.assert_array_equal(unknown["response_s"], known["response_s"])  # (the response does not depend on it)
    assert (unknown["attempts"] == 2).mean() > (known["attempts"] == 2).mean()


@pytest.mark.parametrize("unfamiliar", [False, True])
def test_first_attempt_fails_at_the_configured_rate_and_a_second_adds_time(unfamiliar):
    p = load_human_params()
    d = _draw(HumanModel(p), unfamiliar)
    want = p.first_attempt_fail_prob.unknown if unfamiliar else p.first_attempt_fail_prob.known
    failed = d["attempts"] == 2
    assert failed.mean() == pytest.approx(want, abs=3 * np.sqrt(want * (1 - want) / N))
    one = p.fix_unknown if unfamiliar else p.fix_known
    assert np.median(d["fix_s"][failed]) > 1.5 * one.median_s  # (two attempts)
    np.testing.assert_allclose(d["total_s"], d["response_s"] + d["fix_s"])


def test_failure_probability_is_honoured_at_its_extremes(tmp_path):
    import yaml
    doc = yaml.safe_load(DATA.read_text())
    doc["first_attempt_fail_prob"] = {"known": 0.0, "unknown": 1.0, "source": "test"}
    f = tmp_path / "human.yaml"
    f.write_text(yaml.safe_dump(doc))
    m = HumanModel.load(f)
    assert (_draw(m, False, 5000)["attempts"] == 1).all() and (_draw(m, True, 5000)["attempts"] == 2).all()


def test_mean_page_below_published_resolve_time():
    """human.yaml's check: the mean page (response + fix, failed first attempts included) stays below PagerDuty's
    published 126-minute mean time to resolve a critical incident, for known and for unknown types."""
    m = HumanModel.load()
    for unfamiliar in (False, True):
        assert _draw(m, unfamiliar, 400_000)["total_s"].mean() < 126 * 60


def test_human_streams_are_purposes_of_their_own():
    from ifshm_ray.sim import core
    from ifshm_ray.sim.human import P_HUMAN_FAIL, P_HUMAN_Z
    others = {v for k, v in vars(core).items() if k.startswith("P_") and not k.startswith("P_HUMAN")
              and isinstance(v, int)}
    ours = {P_HUMAN_Z, P_HUMAN_FAIL, P_HUMAN_Z + 512}  # (rng.normal also draws at purpose + 512)
    assert len(others) >= 13 and ours.isdisjoint(others | {x + 512 for x in others})


def test_draws_are_a_function_of_key_step_and_familiarity_only():
    m = HumanModel.load()
    a, b = _draw(m, True, 1000, step=3), _draw(m, True, 1000, step=3)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    c = _draw(m, True, 1000, step=4)
    assert not np.array_equal(a["total_s"], c["total_s"])
    # one key alone gives its row of the batch (the single env's path of rng.uniform)
    keys = np.arange(1, 1001, dtype=np.uint64) * np.uint64(7919)
    one = m.draw(keys[17:18], np.array([3], np.uint64), np.array([True]))
    assert one["total_s"][0] == a["total_s"][17]


def _page_episode(cfg: dict, fault: str, seed: int, page_after: int = 4, steps: int = 40) -> dict:
    env = FaultInjectionEnv({**cfg, "faults": [fault], "render_telemetry": False, "fault_free_prob": 0.0})
    env.reset(seed=seed)
    t_inj = env.incident()["faults"][0]["injected_at_s"]
    info = {"time_s": 0.0}
    n = 0
    while info["time_s"] <= t_inj or n < page_after:
        _, _, _, _, info = env.step((0, 0, 0))
        n += 1
    t_page = info["time_s"]
    _, _, term, trunc, info = env.step((ESC, 0, 0))
    page_s = info["time_s"] - t_page - env.sim_cfg.step_s
    done = term or trunc
    while not done:
        _, _, term, trunc, info = env.step((0, 0, 0))
        done = term or trunc
    return {"page_s": page_s, **{k: info[k] for k in ("recovered", "escalated", "success", "mttr_s", "time_s")}}


def test_drawn_episode_is_reproducible_under_a_seed_and_seeds_differ():
    cfg = {"human": {"model": "drawn"}}
    a, b = _page_episode(cfg, KNOWN[0], seed=3), _page_episode(cfg, KNOWN[0], seed=3)
    assert a == b
    pages = {_page_episode(cfg, KNOWN[0], seed=s)["page_s"] for s in range(6)}
    assert len(pages) == 6  # (drawn per page, not fixed)
    fixed = _page_episode({}, KNOWN[0], seed=3)
    assert fixed["page_s"] == pytest.approx(SimConfig().human_response_s + SimConfig().human_fix_s)


def test_drawn_page_of_an_unknown_type_takes_longer_in_the_env():
    """Same seeds, a known vs a held-out type of the handpicked split: the page of the held-out type takes longer
    on average (the fault type reaches the simulated human only). A page that ends within the time limit
    recovers and is an escalation, never a success."""
    cfg = {"human": {"model": "drawn"}}
    known = [_page_episode(cfg, KNOWN[i % len(KNOWN)], seed=i) for i in range(12)]
    unknown = [_page_episode(cfg, UNKNOWN[i % len(UNKNOWN)], seed=i) for i in range(12)]
    assert np.mean([x["page_s"] for x in unknown]) > np.mean([x["page_s"] for x in known])
    for x in known + unknown:
        assert x["escalated"] and not x["success"]
        if x["recovered"]:
            assert x["mttr_s"] >= x["page_s"]
    assert any(x["recovered"] for x in known)


def test_batched_sim_equals_single_sims_with_pages():
    """B envs in one BatchedSim and B single ones (same keys, faults, actions; pages sent at different steps, to
    known and held-out types, compound and fault-free episodes among them) step to the same times, rewards, ends,
    cleared faults and episode figures."""
    cfg = SimConfig(human={"model": "drawn"}, compound_prob=0.0)
    faults = [KNOWN[0], UNKNOWN[0], [KNOWN[1], UNKNOWN[1]], "none", KNOWN[2], UNKNOWN[2], KNOWN[3], UNKNOWN[3]]
    keys = [101 + 13 * i for i in range(len(faults))]
    page_at = [3, 3, 5, 2, 6, 4, 1, 8]
    B = len(faults)
    batch = BatchedSim(cfg, batch_size=B)
    batch.reset(np.arange(B), keys, faults=faults)
    singles = [BatchedSim(cfg, batch_size=1) for _ in range(B)]
    for s, k, f in zip(singles, keys, faults):
        s.reset([0], [k], faults=[f])
    done = np.zeros(B, bool)
    for step in range(30):
        acts = np.array([[ESC if step == page_at[b] else 0, 0, 0] for b in range(B)])
        rb = batch.step(acts)
        for b, s in enumerate(singles):
            if done[b]:
                continue
            r1 = s.step(acts[b:b + 1])
            assert batch.t[b] == s.t[0]
            assert rb.reward[b] == r1.reward[0]
            assert (rb.terminated[b], rb.truncated[b]) == (r1.terminated[0], r1.truncated[0])
            np.testing.assert_array_equal(batch.f_active[b], s.f_active[0])
            if r1.terminated[0] or r1.truncated[0]:
                done[b] = True
                want, got = s.episode_stats(0), batch.episode_stats(b)
                assert got.keys() == want.keys()
                for k in want:
                    assert got[k] == want[k] or (got[k] != got[k] and want[k] != want[k]), k  # (NaN == NaN here)
    assert batch.escalated.all()


@pytest.mark.parametrize("fault", [KNOWN[0], UNKNOWN[0]])
def test_drawn_human_leaves_the_observation_a_function_of_telemetry_and_actions(fault):
    """With the drawn human, a rollout that pages (a known and a held-out type): a fresh observer given only each
    step's telemetry JSON and the executed actions rebuilds the env's observation exactly (the fault type reaches
    the simulated human, not the policy's input)."""
    import json

    from ifshm_ray.env.observation import TelemetryObserver, incident_history

    env = FaultInjectionEnv({"faults": "all", "human": {"model": "drawn"}})
    obs, info = env.reset(seed=9, options={"faults": [fault]})
    trace = [(obs, json.dumps(info["telemetry"]), [])]
    actions = []
    for i in range(40):
        a = (ESC, 0, 0) if i == 6 else (0, 0, 0)
        obs, _, term, trunc, info = env.step(a)
        actions.append(env.decode(a))
        trace.append((obs, json.dumps(info["telemetry"]), list(actions)))
        if term or trunc:
            break
    assert info["escalated"]
    observer = TelemetryObserver(env.sim_cfg)
    for obs, telemetry, acts in reversed(trace):
        x = observer.observe(json.loads(telemetry), history=incident_history(acts))
        for k in ("obs", "action_mask", "ratio_mask"):
            np.testing.assert_array_equal(x[k], obs[k], err_msg=f"{fault}, step {len(acts)}: {k}")


def _unhealthy_at(cfg: SimConfig, fault, left_s: float) -> BatchedSim:
    """A single sim with ``fault``, observed (30-s steps) until ``left_s`` before the time limit; unhealthy then."""
    sim = BatchedSim(cfg, batch_size=1)
    sim.reset([0], [7], faults=[fault])
    while sim.t[0] < cfg.time_limit_s - left_s:
        res = sim.step(np.array([[0, 0, 0]]))
        assert not (res.terminated[0] or res.truncated[0])
    assert sim.t[0] == cfg.time_limit_s - left_s and not sim.healthy[0]
    return sim


@pytest.mark.parametrize("model", ["fixed", "drawn"])
@pytest.mark.parametrize("fault", [KNOWN[0], UNKNOWN[0]])
def test_page_past_the_time_limit_is_charged_up_to_the_limit_only(model, fault):
    """A page sent 5 minutes before the time limit runs past it (the fixed human's 20 minutes, a drawn page): the
    step charges the 5 unhealthy minutes the episode observes plus the page's action cost, as 5 more minutes of
    observing would charge those minutes, not the page's whole duration; the episode is truncated, not recovered,
    and its unhealthy time stays within the limit."""
    cfg = SimConfig(human={"model": model}, split="handpicked")
    left = 300.0
    sim = _unhealthy_at(cfg, fault, left)
    t0 = float(sim.t[0])
    res = sim.step(np.array([[ESC, 0, 0]]))
    assert sim.t[0] - cfg.step_s - t0 > left  # (the page ran past the limit)
    rw = cfg.reward
    assert res.reward[0] == pytest.approx(-(left / 60.0) * rw.unhealthy_weight - sim._act_cost_scaled[ESC])
    assert res.truncated[0] and not res.terminated[0]
    stats = sim.episode_stats(0)
    assert not stats["recovered"] and stats["escalated"]
    assert stats["unhealthy_s"] <= cfg.time_limit_s
    # observing instead charges the same minutes (no page cost): paging is no dearer than idling past the limit
    idle = _unhealthy_at(cfg, fault, left)
    total = 0.0
    while True:
        r = idle.step(np.array([[0, 0, 0]]))
        total += float(r.reward[0])
        if r.truncated[0] or r.terminated[0]:
            break
    assert total == pytest.approx(-(left / 60.0) * rw.unhealthy_weight)

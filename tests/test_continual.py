"""The continual-adaptation protocol's pieces (config, stream plan, paired bootstrap, time to adapt, the feature
diagnoser, the gate inside evaluation) and, marked slow, the tiny protocol end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ifshm_ray.config import ConfigError, load_config
from ifshm_ray.meta.continual import (
    ContinualConfig,
    blocks,
    draw_types,
    paired_bootstrap,
    stream_plan,
    time_to_adapt,
)


# ------------------------------------------------------------------------------------------ config
@pytest.mark.timeout(60)
@pytest.mark.parametrize("override, needle", [
    ({"arms": [{"name": "a"}, {"name": "a"}]}, "unique"),
    ({"stream": {"incidents_per_type": 2, "block": 3}}, "stream.block"),
    ({"split": "nope"}, "nope"),
    ({"known_types": 99}, "known_types"),
    ({"novel_types": 99}, "novel_types"),
    ({"arms": [{"name": "x", "learn": False}]}, "replay needs learn"),
    ({"seeds": [1, 1]}, "seeds"),
    ({"stream": {"new_share": 0}}, "new_share"),
    ({"bogus": 1}, "unknown config key"),
    ({"phase1_from": "runs/seed{seed}", "known_types": 4}, "phase1_from"),
])
def test_bad_config_is_refused_with_a_clear_message(override, needle):
    with pytest.raises(ConfigError, match=needle):
        ContinualConfig.from_dict(override)


@pytest.mark.timeout(60)
def test_shipped_configs_load():
    for path in ("configs/continual.yaml", "configs/continual_tiny.yaml"):
        cfg = load_config(ContinualConfig, path)
        assert [a.name for a in cfg.arms] == ["full", "finetune", "uniform", "gate_only", "frozen"]


def _fake_run(root, protocol, **env_over):
    """A finished jobs/train.py --out folder as far as phase1_from looks: config.yaml, a checkpoint, a bundle."""
    import copy

    import yaml

    d = copy.deepcopy(protocol.base_train)
    d["env"]["config"].update({"faults": "known", "split": "handpicked", **env_over})
    (root / "checkpoints" / "iter_000007").mkdir(parents=True)
    (root / "checkpoints" / "iter_000007" / "rllib_checkpoint.json").write_text("{}")
    (root / "checkpoints" / "iter_000003").mkdir(parents=True)
    (root / "checkpoints" / "iter_000003" / "rllib_checkpoint.json").write_text("{}")
    (root / "policy_bundle").mkdir()
    (root / "policy_bundle" / "bundle.json").write_text("{}")
    (root / "config.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    return d


@pytest.mark.timeout(60)
def test_phase1_from_adopts_a_finished_run_and_refuses_a_mismatch(tmp_path):
    import yaml

    from ifshm_ray.meta.continual import Protocol

    cfg = ContinualConfig.from_dict({"train_config": "configs/demo_alert.yaml", "phase1_from": "x/seed{seed}"})
    protocol = Protocol(cfg, tmp_path / "out", progress=lambda _: None)
    src = tmp_path / "seed0"
    with pytest.raises(FileNotFoundError, match="policy_bundle"):
        protocol._adopt_phase1(src, tmp_path / "p1")
    d = _fake_run(src, protocol)
    assert protocol._adopt_phase1(src, tmp_path / "p1") == 7  # the newest checkpoint's iteration
    assert sorted(p.name for p in (tmp_path / "p1" / "checkpoints").iterdir()) == ["iter_000007"]
    assert (tmp_path / "p1" / "policy_bundle" / "bundle.json").is_file()
    assert (tmp_path / "p1" / "ADOPTED_FROM").read_text().split()[1] == "iter_000007"
    # another split, another model or another PPO: refused with what differs
    for section, key, value, needle in (("env", "split", "random1", "split"),
                                        ("policy", "act_on", "always", "act_on"),
                                        ("ppo", "lr", 0.1, "'lr'")):
        bad = dict(d)
        bad[section] = ({**d["env"], "config": {**d["env"]["config"], key: value}} if section == "env"
                        else {**d[section], key: value})
        (src / "config.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
        with pytest.raises(ValueError, match=needle):
            protocol._adopt_phase1(src, tmp_path / "p1")


# ------------------------------------------------------------------------------------------ stream
@pytest.mark.timeout(60)
def test_stream_plan_is_seeded_and_counts_new_incidents():
    cfg = ContinualConfig.from_dict({"novel_types": 3, "known_types": 5,
                                     "stream": {"incidents_per_type": 7, "block": 3, "new_share": 0.7}})
    known, order = draw_types(cfg, 4)
    assert len(known) == 5 and len(order) == 3 and not set(known) & set(order)
    assert (known, order) == draw_types(cfg, 4) and draw_types(cfg, 5) != (known, order)
    plan = stream_plan(cfg, 4, known, order)
    assert plan == stream_plan(cfg, 4, known, order)
    for fault, items in zip(order, plan):
        assert sum(new for _, _, new in items) == 7
        assert all((f == fault) == new for f, _, new in items)
        assert all(f in known for f, _, new in items if not new)
        cut = blocks(items, 3)
        assert [sum(n for *_, n in b) for b in cut] == [3, 3, 1] and sum(cut, []) == items
    seeds = [s for items in plan for _, s, _ in items]
    assert len(set(seeds)) == len(seeds)  # every stream incident is a different incident


# ------------------------------------------------------------------------------------------ statistics
@pytest.mark.timeout(60)
def test_paired_bootstrap():
    rng = np.random.default_rng(0)
    b = [rng.uniform(300, 900, 30), rng.uniform(300, 900, 30)]
    same = paired_bootstrap(b, b, 500, 0)
    assert same["mean"] == 0.0 and same["ci95"] == [0.0, 0.0] and not same["better"]
    faster = paired_bootstrap([x - 100 for x in b], b, 500, 0)
    assert faster["mean"] == pytest.approx(-100) and faster["better"] and faster["ci95"][1] < 0
    rel = paired_bootstrap([x * 0.5 for x in b], b, 500, 0, relative=True)
    assert rel["mean"] == pytest.approx(-0.5) and rel["better"]
    noisy = paired_bootstrap([x + rng.normal(0, 200, 30) for x in b], b, 500, 0)
    assert noisy["ci95"][0] < 0 < noisy["ci95"][1] and not noisy["better"] and not noisy["worse"]
    assert paired_bootstrap(b, b, 500, 1) == paired_bootstrap(b, b, 500, 1)
    with pytest.raises(ValueError):
        paired_bootstrap([b[0]], [b[0][:5]], 500, 0)


@pytest.mark.timeout(60)
def test_time_to_adapt():
    assert time_to_adapt([(0, 500), (2, 300), (4, 200)], 350) == 2
    assert time_to_adapt([(0, 300), (2, 500), (4, 350), (6, 340)], 350) == 4  # two in a row, at or below
    assert time_to_adapt([(0, 300), (2, 500)], 350) is None
    assert time_to_adapt([], 350) is None


# ------------------------------------------------------------------------------------------ diagnoser
@pytest.mark.timeout(240)
def test_feature_diagnoser_fit_save_load(tmp_path):
    from ifshm_ray.meta.diagnose import FeatureDiagnoser, first_alarm_windows, load_diagnoser

    sim = {"time_limit_s": 600}
    types = ["node_crash", "dns_upstream_failure"]
    windows = first_alarm_windows(sim, types, range(6))
    assert windows and all(w[2]["alarms"] for w in windows)
    d = FeatureDiagnoser.fit(sim, windows)
    scores = np.array([d(t)[0] for _, _, t in windows])
    # a radius is the 0.95 quantile (interpolated) of its type's distances: of 6 windows, all but the farthest lie
    # within it, so at most one window per type scores above 1 (float32 prototypes: a 1e-3 tolerance)
    assert np.isfinite(scores).all()
    for t in types:
        assert sum(s > 1.0 + 1e-3 for (f, _, _), s in zip(windows, scores) if f == t) <= 1
    again = load_diagnoser(d.save(tmp_path))
    assert [again(t)[0] for _, _, t in windows] == pytest.approx(scores.tolist())
    with pytest.raises(FileNotFoundError, match="no diagnoser"):
        load_diagnoser(tmp_path / "missing")


@pytest.mark.timeout(240)
def test_feature_diagnoser_scores_never_seen_evidence(tmp_path):
    """With unseen_weight, a window showing what no fitting window showed (another type's alerts and log templates)
    scores higher by exactly the weight x its evidence on the features constant in the fit; the fit's own windows
    score as without it; more windows per incident are taken when asked."""
    from ifshm_ray.meta.diagnose import FeatureDiagnoser, first_alarm_windows, load_diagnoser

    sim = {"time_limit_s": 600}
    known = first_alarm_windows(sim, ["node_crash"], range(6), windows=3)
    assert len(known) > 6 and len(known) <= 18  # up to 3 windows per incident now
    other = first_alarm_windows(sim, ["dns_upstream_failure"], range(3))
    plain = FeatureDiagnoser.fit(sim, known)
    d = FeatureDiagnoser.fit(sim, known, unseen_weight=2.0)
    assert d.unseen.any() and not plain.unseen_weight
    for _, _, t in known:  # the fitting windows have no unseen evidence
        assert d(t)[0] == pytest.approx(plain(t)[0])
    gains = []
    for _, _, t in other:
        x = np.asarray(d.observer.observe(t)["obs"], np.float64).ravel()
        evidence = float(np.abs(x - d.mean)[d.unseen].sum())
        assert d(t)[0] == pytest.approx(plain(t)[0] + 2.0 * evidence)
        gains.append(evidence)
    assert max(gains) > 0, "the other type's windows show something node_crash's never did"
    again = load_diagnoser(d.save(tmp_path))
    assert [again(t)[0] for _, _, t in other] == pytest.approx([d(t)[0] for _, _, t in other])


# ------------------------------------------------------------------------------------------ the gate in evaluation
class _Observer:
    name = "observer"

    def reset(self, env, episode_seed=None):
        pass

    def act(self, obs, info, env):
        return np.zeros(3, np.int64)


@pytest.mark.timeout(240)
def test_gated_episode_records_who_acted_and_the_summary_the_deferral_rate():
    from ifshm_ray.baselines.policies import RunbookPolicy
    from ifshm_ray.env import FaultInjectionEnv
    from ifshm_ray.eval.harness import run_episode, summarise
    from ifshm_ray.meta.config import MetaConfig
    from ifshm_ray.meta.controller import MetaController
    from ifshm_ray.meta.gate import GatedPolicy
    from ifshm_ray.meta.novelty import calibrate

    env = FaultInjectionEnv({"faults": "all", "time_limit_s": 600})
    meta = MetaController(MetaConfig(enabled=True), calibrate(np.linspace(0, 1, 100)))
    novel = GatedPolicy(_Observer(), RunbookPolicy(), meta, lambda t: (5.0, None))
    known = GatedPolicy(_Observer(), RunbookPolicy(), meta, lambda t: (0.1, None))
    recs = [run_episode(env, novel, "node_crash", 3), run_episode(env, known, "node_crash", 3)]
    assert recs[0]["actor"] == "runbook" and recs[0]["deferred"] and recs[0]["novel"]
    assert recs[1]["actor"] == "policy" and not recs[1]["deferred"] and recs[1]["unknown_score"] == 0.1
    m = summarise(recs, "gated", "custom", 600)
    assert m["deferral_rate"] == 0.5 and m["actor_shares"] == {"policy": 0.5, "runbook": 0.5, "escalate": 0.0}
    plain = summarise([run_episode(env, RunbookPolicy(), "node_crash", 3)], "runbook", "custom", 600)
    assert "deferral_rate" not in plain  # ungated policies' metrics are unchanged


class _ScriptedPolicy:
    """Proposes the scripted categories in turn (then observe), counting its calls."""

    name = "scripted"

    def __init__(self, script):
        self.script, self.calls = list(script), 0

    def reset(self, env, episode_seed=None):
        self.calls = 0

    def act(self, obs, info, env):
        c = self.script[self.calls] if self.calls < len(self.script) else 0
        self.calls += 1
        return np.array([c, 0, 0], np.int64)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("decide_on, decided_at", [("firing", 2), ("pending", 1), ("action", 1)])
def test_gate_decides_at_the_window_its_mode_names(decide_on, decided_at):
    """Window 0: calm; 1: a pending alarm and the policy proposes restart; 2: a firing alarm. With 'action' the gate
    decides where the alert-triggered policy would first act, so a deferred policy never acts on the incident."""
    from ifshm_ray.meta.config import MetaConfig
    from ifshm_ray.meta.controller import MetaController
    from ifshm_ray.meta.gate import GatedPolicy
    from ifshm_ray.meta.novelty import calibrate
    from ifshm_ray.sim.actions import CATEGORY_INDEX

    restart = CATEGORY_INDEX["restart"]
    windows = [{"alarms": []}, {"alarms": [{"name": "A", "state": "pending"}]},
               {"alarms": [{"name": "A", "state": "firing"}]}]
    meta = MetaController(MetaConfig(enabled=True, decide_on=decide_on), calibrate(np.linspace(0, 1, 100)))
    seen = []
    runbook = _ScriptedPolicy([])
    gated = GatedPolicy(_ScriptedPolicy([0, restart, restart]), runbook, meta,
                        lambda t: (seen.append(len(seen)) or 5.0, None))  # novel: defer to the runbook
    gated.reset(None)
    acts = [int(gated.act(None, {"telemetry": w}, None)[0]) for w in windows]
    assert gated.decision is not None and gated.decision.actor == "runbook" and len(seen) == 1
    assert runbook.calls == len(windows) - decided_at  # the runbook acts from the deciding window on
    assert acts[:decided_at] == [0, restart][:decided_at] and all(a == 0 for a in acts[decided_at:])
    # a known incident (low score): the policy's own proposal at the deciding window is what is returned
    meta2 = MetaController(MetaConfig(enabled=True, decide_on=decide_on), calibrate(np.linspace(0, 1, 100)))
    pol = _ScriptedPolicy([0, restart, restart])
    known = GatedPolicy(pol, _ScriptedPolicy([]), meta2, lambda t: (0.1, None))
    known.reset(None)
    assert [int(known.act(None, {"telemetry": w}, None)[0]) for w in windows] == [0, restart, restart]
    assert pol.calls == len(windows) and known.decision.actor == "policy"


@pytest.mark.timeout(60)
def test_gated_spec_errors(tmp_path):
    from ifshm_ray.eval.gated import load_gate
    from ifshm_ray.meta.controller import MetaController

    with pytest.raises(FileNotFoundError, match="meta_state.json"):
        load_gate(tmp_path)
    MetaController({"enabled": True}).save(tmp_path)  # no calibration
    with pytest.raises(ValueError, match="no novelty calibration"):
        load_gate(tmp_path)


# ------------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tiny_protocol_end_to_end(ray_session, tmp_path):
    from conftest import load_job

    out = tmp_path / "continual"
    m = load_job("continual").main([
        "--config", "configs/continual_tiny.yaml", "--out", str(out),
        "--set", "novel_types=1", "--set", "stream.incidents_per_type=2", "--set", "stream.block=1",
        "--set", "eval.episodes=1", "--set", "bootstrap.samples=100",
        "--set", "arms=[{name: full}, {name: finetune, gate: false, replay: false}, "
                 "{name: gate_only, learn: false, replay: false}]"])
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("unknown_mttr_before_s", "unknown_mttr_after_s", "unknown_mttr_zero_shot_gated_s",
                "runbook_unknown_mttr_s", "no_meta_unknown_mttr_s", "known_mttr_phase1_s", "known_mttr_phase2_s",
                "cumulative_unhealthy_s", "no_meta_cumulative_unhealthy_s", "gate_false_positive_rate",
                "gate_recall", "time_to_adapt_episodes", "runbook_full_unknown_mttr_s",
                "nearest_known_unknown_mttr_s", "escalate_first_unknown_mttr_s"):
        assert key in saved
    for key in ("unknown_mttr_before_s", "unknown_mttr_after_s", "runbook_unknown_mttr_s", "known_mttr_phase2_s",
                "cumulative_unhealthy_s", "no_meta_cumulative_unhealthy_s"):
        assert isinstance(saved[key], float) and 0 < saved[key], key
    assert (out / "curves.png").stat().st_size > 1000
    runs = json.loads((out / "runs.json").read_text())
    run = runs[0]
    full = run["arms"]["full"]
    # 2 new-type stream incidents, block 1: two learning steps, three paired evaluations (phase 1 + 2 blocks)
    assert sum(s["new"] for s in full["stream"]) == 2 and len(full["evals"]) == 3
    assert all(len(e["ungated"]) == len(run["incidents"]) for e in full["evals"])
    # every arm met the same evaluation incidents (paired)
    for arm in run["arms"].values():
        for e in arm["evals"]:
            assert [(r["fault"], r["seed"]) for r in e["ungated"]] == [tuple(x) for x in run["incidents"]]
    # the learning arms trained: phase 1's 2 iterations + 1 per block
    for arm in ("full", "finetune"):
        summary = json.loads((out / "seed_0" / arm / "summary.json").read_text())
        assert summary["iteration"] == 4
    assert "replay" in json.loads((out / "seed_0" / "full" / "summary.json").read_text())
    assert not (out / "seed_0" / "gate_only" / "checkpoints").exists()  # it never trained
    assert m["per_arm"]["gate_only"]["unknown_mttr_after_s"] == m["per_arm"]["gate_only"]["unknown_mttr_before_s"]
    # the gate inside evaluation, on the full arm's folder (meta_state.json + diagnoser.json beside the bundle)
    from ifshm_ray.config import SimConfig
    from ifshm_ray.eval.harness import evaluate, summarise

    for arm in ("full", "gate_only"):
        recs = evaluate("gated:" + str(out / "seed_0" / arm), [run["order"][0], run["known"][0]], 1, 0,
                        SimConfig(time_limit_s=600, split="handpicked"), use_ray=False)
        assert all(r["actor"] in ("policy", "runbook", "escalate") for r in recs)
        assert "deferral_rate" in summarise(recs, "gated", "custom", 600)
    # and through the job's command line (label "gated", deferral rate in its metrics.json)
    ev = load_job("evaluate").main(["--policy", "gated:" + str(out / "seed_0" / "full"), "--faults",
                                    run["order"][0], "--episodes", "1", "--no-ray", "--out", str(tmp_path / "ev"),
                                    "--set", "time_limit_s=600"])
    assert "deferral_rate" in ev["gated"] and "actor" in json.loads((tmp_path / "ev" / "episodes.json").read_text())[0]
    with pytest.raises(FileNotFoundError, match="diagnoser.json|meta_state.json"):
        evaluate("gated:" + str(out / "seed_0" / "phase1"), [run["order"][0]], 1, 0,
                 SimConfig(time_limit_s=600, split="handpicked"), use_ray=False)


@pytest.mark.timeout(120)
def test_stream_env_draws_with_the_given_weights():
    from ifshm_ray.meta.continual import make_stream_env
    from ifshm_ray.policy.replay import episode_fault

    faults = ["node_crash", "dns_upstream_failure", "clock_skew_tls"]
    env = make_stream_env({"faults": faults, "num_envs": 16, "fault_free_prob": 0.0, "seed": 3,
                           "render_telemetry": False, "fault_weights": {"clock_skew_tls": 1.0, "node_crash": 0.0,
                                                                        "dns_upstream_failure": 0.0}})
    env.reset(seed=3)
    assert {episode_fault(env, i) for i in range(16)} == {"clock_skew_tls"}
    plain = make_stream_env({"faults": faults, "num_envs": 16, "fault_free_prob": 0.0, "seed": 3,
                             "render_telemetry": False})
    plain.reset(seed=3)
    assert len({episode_fault(plain, i) for i in range(16)}) > 1  # catalog frequencies without weights


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argv, needle", [
    (["--config", "configs/nope.yaml"], "does not exist"),
    (["--config", "configs/continual_tiny.yaml", "--set", "stream.block=99"], "stream.block"),
    (["--config", "configs/continual_tiny.yaml", "--set", "train_config=configs/nope.yaml"], "train_config"),
    (["--config", "configs/continual_tiny.yaml", "--set", "arms=[{name: full, colour: red}]"], "colour"),
])
def test_job_refuses_bad_input(argv, needle, tmp_path, capsys):
    from conftest import load_job

    with pytest.raises(SystemExit) as e:
        load_job("continual").main(argv + ["--out", str(tmp_path / "out")])
    assert e.value.code == 2 and needle in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing started

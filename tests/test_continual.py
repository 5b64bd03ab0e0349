"""The continual-adaptation protocol's pieces (config, stream plan, paired bootstrap, time to adapt, the feature
diagnoser, the gate inside evaluation) and, marked slow, the tiny protocol end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ifshm_ray.config import ConfigError, load_config
from ifshm_ray.meta.continual import (
    ArmConfig,
    ContinualConfig,
    blind_known_types,
    blocks,
    draw_types,
    evaluate_after_block,
    evaluation_labels,
    known_families,
    paired_bootstrap,
    pseudo_unknown_types,
    seed_plan,
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
    ({"eval": {"every_blocks": 0}}, "every_blocks"),
    ({"arms": [{"name": "x", "replay": False, "strata": False}]}, "strata: false"),
    ({"pseudo_unknown": 14}, "at least one must stay known"),
    ({"pseudo_unknown": 3, "known_types": 22}, "known_types"),
    ({"pseudo_unknown": 1, "novel_types": 2}, "novel_types"),
    ({"pseudo_unknown": 1, "phase1_from": "runs/seed{seed}"}, "phase1_from"),
    ({"pseudo_unknown": 1, "gate": {"encoder": "results/encoder"}}, "gate.encoder"),
])
def test_bad_config_is_refused_with_a_clear_message(override, needle):
    with pytest.raises(ConfigError, match=needle):
        ContinualConfig.from_dict(override)


@pytest.mark.timeout(60)
def test_shipped_configs_load():
    for path in ("configs/continual.yaml", "configs/continual_tiny.yaml"):
        cfg = load_config(ContinualConfig, path)
        assert [a.name for a in cfg.arms] == ["full", "finetune", "uniform", "gate_only", "frozen"]
    pseudo = load_config(ContinualConfig, "configs/continual_pseudo.yaml")
    assert pseudo.pseudo_unknown and pseudo.gate.encoder is None
    abl = load_config(ContinualConfig, "configs/continual_ablations.yaml")
    assert len(abl.seeds) == 3 and abl.arms[0] == ArmConfig(name="full")
    # every ablation arm is the full arm with exactly one switch off
    off = {a.name: [k for k, v in a.to_dict().items() if k != "name" and v != getattr(ArmConfig(name="x"), k)]
           for a in abl.arms[1:]}
    assert off == {"no_sil": ["sil"], "no_strata": ["strata"], "no_scenario_replay": ["scenario_replay"],
                   "no_runbook_actions": ["imitate_runbook"]}


@pytest.mark.timeout(60)
def test_which_recorded_incidents_an_arm_pushes():
    from ifshm_ray.meta.continual import pushes_incident

    def table(arm):  # (deferred, success) -> pushed
        return {(d, ok): pushes_incident(arm, d, ok) for d in (False, True) for ok in (False, True)}

    own = {(False, False): True, (False, True): True}
    assert table(ArmConfig(name="full")) == {**own, (True, False): True, (True, True): True}
    assert table(ArmConfig(name="nr", imitate_runbook=False)) == {**own, (True, False): False, (True, True): False}
    # only the runbook's healed incidents: a failed one, or a page (never a success), is not imitated
    assert table(ArmConfig(name="healed", deferred_healed_only=True)) == {**own, (True, False): False,
                                                                          (True, True): True}
    assert not any(table(ArmConfig(name="off", push_stream=False)).values())
    with pytest.raises(ValueError, match="deferred_healed_only"):
        ArmConfig(name="bad", imitate_runbook=False, deferred_healed_only=True)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("train_config, decide_on, needle", [
    ("configs/demo_alert.yaml", "firing", "use meta.decide_on: action"),
    ("configs/demo.yaml", "action", "acts in calm windows"),
])
def test_protocol_refuses_a_gate_that_decides_after_the_policy_acts(tmp_path, train_config, decide_on, needle):
    from ifshm_ray.meta.continual import Protocol

    cfg = ContinualConfig.from_dict({"train_config": train_config, "meta": {"enabled": True, "decide_on": decide_on}})
    with pytest.raises(ValueError, match=needle):
        Protocol(cfg, tmp_path, progress=lambda _: None)


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

    cfg = ContinualConfig.from_dict({"train_config": "configs/demo_alert.yaml", "phase1_from": "x/seed{seed}",
                                     "meta": {"enabled": True, "decide_on": "action"}})
    protocol = Protocol(cfg, tmp_path / "out", progress=lambda _: None)
    src = tmp_path / "seed0"
    with pytest.raises(FileNotFoundError, match="policy_bundle"):
        protocol._adopt_phase1(src, tmp_path / "p1", 0)
    d = _fake_run(src, protocol)
    assert protocol._adopt_phase1(src, tmp_path / "p1", 0) == 7  # the newest checkpoint's iteration
    assert sorted(p.name for p in (tmp_path / "p1" / "checkpoints").iterdir()) == ["iter_000007"]
    assert (tmp_path / "p1" / "policy_bundle" / "bundle.json").is_file()
    assert (tmp_path / "p1" / "ADOPTED_FROM").read_text().split()[1] == "iter_000007"
    # another split, another model or another PPO: refused with what differs
    for section, key, value, needle in (("env", "split", "random1", "split"),
                                        ("env", "compound_prob", 0.5, "compound_prob"),
                                        ("run", "seed", 3, "run.seed"),
                                        ("policy", "act_on", "always", "act_on"),
                                        ("ppo", "lr", 0.1, "'lr'")):
        bad = dict(d)
        bad[section] = ({**d["env"], "config": {**d["env"]["config"], key: value}} if section == "env"
                        else {**d[section], key: value})
        (src / "config.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
        with pytest.raises(ValueError, match=needle):
            protocol._adopt_phase1(src, tmp_path / "p1", 0)


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


# ------------------------------------------------------------------------------------------ evaluation schedule
@pytest.mark.timeout(60)
def test_evaluation_schedule_every_block_is_todays_and_every_n_a_subset():
    cfg = ContinualConfig.from_dict({"novel_types": 2, "known_types": 3,
                                     "stream": {"incidents_per_type": 9, "block": 2}})
    known, order = draw_types(cfg, 0)
    plan = stream_plan(cfg, 0, known, order)
    n_blocks = [len(blocks(items, cfg.stream.block)) for items in plan]
    assert n_blocks == [5, 5]
    # every_blocks = 1: the labels the protocol has always written (phase 1, then one per block of every type)
    today = ["phase1"] + [f"{f}#{b + 1}" for f, n in zip(order, n_blocks) for b in range(n)]
    assert evaluation_labels(order, n_blocks, 1) == today
    a, b = order
    assert evaluation_labels(order, n_blocks, 2) == ["phase1", f"{a}#2", f"{a}#4", f"{a}#5", f"{b}#2", f"{b}#4",
                                                     f"{b}#5"]
    assert evaluation_labels(order, n_blocks, 3) == ["phase1", f"{a}#3", f"{a}#5", f"{b}#3", f"{b}#5"]
    assert evaluation_labels(order, n_blocks, 99) == ["phase1", f"{a}#5", f"{b}#5"]  # a type's last block always
    assert [evaluate_after_block(i, 4, 2) for i in range(4)] == [False, True, False, True]


def _synthetic_runs(cfg: ContinualConfig, adapt_block: int) -> list[dict]:
    """runs as Protocol.run_seed returns them, on the protocol's evaluation schedule, without a simulator: the
    runbook takes 500 s on every incident, every arm 900 s on a new type until its block ``adapt_block`` (from
    0), 300 s from then on, and 400 s on the known types."""
    runs = []
    for seed in cfg.seeds:
        sp = seed_plan(cfg, seed)
        known, order, incidents = sp["known"], sp["order"], sp["incidents"]

        def recs(mttr_of):
            return [{"fault": f, "seed": s, "mttr_s": float(mttr_of(f)), "success": True, "novel": f in order}
                    for f, s in incidents]

        refs = {name: recs(lambda f: 500.0) for name in cfg.references}
        arms = {}
        for arm in cfg.arms:
            evals = [{"label": "phase1", "seen": {f: 0 for f in order}, "ungated": recs(lambda f: 400 if f in known
                                                                                         else 900)}]
            seen = {f: 0 for f in order}
            adapted: set[str] = set()
            for t, fault in enumerate(order):
                cut = blocks(sp["stream"][t], cfg.stream.block)
                for b, items in enumerate(cut):
                    seen[fault] += sum(n for *_, n in items)
                    if b >= adapt_block:
                        adapted.add(fault)
                    if evaluate_after_block(b, len(cut), cfg.eval.every_blocks):
                        ev = recs(lambda f: 400 if f in known else 300 if f in adapted else 900)
                        evals.append({"label": f"{fault}#{b + 1}", "seen": dict(seen), "ungated": ev})
            if arm.gate:
                for e in evals:
                    e["gated"] = e["ungated"]
            stream = [{"fault": f, "seed": s, "new": n, "mttr_s": 600.0, "success": True, "deferred": False}
                      for items in sp["stream"] for f, s, n in items]
            arms[arm.name] = {"evals": evals, "stream": stream}
        runs.append({"seed": seed, "known": known, "order": order, "incidents": incidents, "references": refs,
                     "arms": arms, "pseudo_unknown": sp["pseudo_unknown"]})
    return runs


@pytest.mark.timeout(120)
def test_metrics_and_curves_read_a_sparse_evaluation_schedule(tmp_path):
    from conftest import load_job

    from ifshm_ray.meta.continual import learning_curves, summarise_protocol

    base = {"novel_types": 2, "known_types": 3, "seeds": [0, 1], "stream": {"incidents_per_type": 9, "block": 2},
            "eval": {"episodes": 2}, "bootstrap": {"samples": 100},
            "arms": [{"name": "full"}, {"name": "finetune", "gate": False, "replay": False}]}
    out = {}
    for every in (1, 2):
        cfg = ContinualConfig.from_dict({**base, "eval": {"episodes": 2, "every_blocks": every}})
        runs = _synthetic_runs(cfg, adapt_block=2)
        assert [e["label"] for e in runs[0]["arms"]["full"]["evals"]] == evaluation_labels(
            runs[0]["order"], [5, 5], every)
        m = summarise_protocol(cfg, runs)
        curves = learning_curves(runs, ["full", "finetune"])
        assert len(curves["full"]["episodes"]) == 1 + (10 if every == 1 else 6)
        load_job("continual").plot_curves(curves, m["runbook_unknown_mttr_s"], tmp_path / f"curves{every}.png")
        assert (tmp_path / f"curves{every}.png").stat().st_size > 1000
        out[every] = m
    for m in out.values():  # phase 1 and the last block are evaluated on every schedule
        assert m["unknown_mttr_before_s"] == 900.0 and m["unknown_mttr_after_s"] == 300.0
        assert (m["gate_false_positive_rate"], m["gate_recall"]) == (0.0, 1.0)
        assert (m["gate_false_positive_rate_after"], m["gate_recall_after"]) == (0.0, 1.0)
        assert m["known_mttr_phase1_s"] == m["known_mttr_phase2_s"] == 400.0
        assert m["per_arm"]["full"]["known_mttr_worst_s"] == 400.0
    # a collapse in the middle of phase 2 that recovers by the end: forgetting does not see it, the worst MTTR does
    cfg = ContinualConfig.from_dict(base)
    runs = _synthetic_runs(cfg, adapt_block=2)
    ev = runs[1]["arms"]["full"]["evals"][3]["ungated"]
    for r in ev:
        if r["fault"] in runs[1]["known"]:
            r["mttr_s"] = 1000.0
    m = summarise_protocol(cfg, runs)
    assert m["per_arm"]["full"]["known_mttr_worst_per_seed_s"] == [400.0, 1000.0]
    assert m["per_arm"]["full"]["known_mttr_worst_s"] == 700.0
    assert m["per_arm"]["finetune"]["known_mttr_worst_s"] == 400.0
    assert m["per_arm"]["full"]["forgetting"]["mean"] == 0.0
    # adapted from block 3 on (6 new-type incidents seen): every evaluation sees it; every second one only at
    # block 4 (8 seen)
    for every, episodes in ((1, 6), (2, 8)):
        tta = out[every]["time_to_adapt_episodes"]
        assert sum(len(v["per_seed"]) for v in tta.values()) == 4  # 2 types x 2 seeds
        assert all(x == episodes for v in tta.values() for x in v["per_seed"]), (every, tta)
    assert out[2]["eval_every_blocks"] == 2


@pytest.mark.timeout(60)
def test_merge_joins_paired_arms_of_separate_runs_and_refuses_unpaired_ones(tmp_path, capsys):
    import copy

    import yaml
    from conftest import load_job

    from ifshm_ray.meta.continual import merge_runs, summarise_protocol

    base = {"novel_types": 2, "known_types": 3, "seeds": [0, 1], "stream": {"incidents_per_type": 4, "block": 2},
            "eval": {"episodes": 2}, "bootstrap": {"samples": 100},
            "arms": [{"name": "full"}, {"name": "finetune", "gate": False, "replay": False}]}
    cfg = ContinualConfig.from_dict(base)
    runs = _synthetic_runs(cfg, adapt_block=1)
    whole = summarise_protocol(cfg, runs)
    dirs, cfg_dict = [], cfg.to_dict()
    for name in ("full", "finetune"):  # the same protocol run twice, one arm each
        d = tmp_path / name
        d.mkdir()
        part = [{**r, "arms": {name: r["arms"][name]}} for r in runs]
        (d / "runs.json").write_text(json.dumps(part))
        (d / "config.yaml").write_text(yaml.safe_dump(
            {**cfg_dict, "arms": [a for a in cfg_dict["arms"] if a["name"] == name]}))
        (d / "metrics.json").write_text(json.dumps({"wall_s": 10.0, "command": f"run {name}"}))
        dirs.append(str(d))
    m = load_job("continual").main(["--merge", *dirs, "--out", str(tmp_path / "merged")])
    assert json.loads(json.dumps(m["per_arm"])) == json.loads(json.dumps(whole["per_arm"]))
    assert m["wall_s"] == 20.0 and "run full" in m["command"] and "run finetune" in m["command"]
    assert [a["name"] for a in yaml.safe_load((tmp_path / "merged" / "config.yaml").read_text())["arms"]] == [
        "full", "finetune"]
    configs = [yaml.safe_load((Path(d) / "config.yaml").read_text()) for d in dirs]
    parts = [json.loads((Path(d) / "runs.json").read_text()) for d in dirs]
    # not paired: another stream order, other seeds, another protocol setting, an arm twice
    bad = copy.deepcopy(parts[1])
    bad[0]["order"] = bad[0]["order"][::-1]
    with pytest.raises(ValueError, match="order"):
        merge_runs(configs, [parts[0], bad])
    with pytest.raises(ValueError, match="seeds"):
        merge_runs(configs, [parts[0], parts[1][:1]])
    with pytest.raises(ValueError, match="stream"):
        merge_runs([configs[0], {**configs[1], "stream": {**configs[1]["stream"], "block": 1}}], parts)
    with pytest.raises(ValueError, match="more than one run"):
        merge_runs([configs[0], configs[0]], [parts[0], parts[0]])
    with pytest.raises(SystemExit):
        load_job("continual").main(["--merge", dirs[0], str(tmp_path / "absent"), "--out", str(tmp_path / "m2")])
    assert "does not exist" in capsys.readouterr().err
    # RUN_DIR:ARM picks arms: the finetune arm of a run holding both, beside a run of full alone
    both = tmp_path / "both"
    both.mkdir()
    (both / "runs.json").write_text(json.dumps(runs))
    (both / "config.yaml").write_text(yaml.safe_dump(cfg_dict))
    m = load_job("continual").main(["--merge", dirs[0], f"{both}:finetune", "--out", str(tmp_path / "m3")])
    assert json.loads(json.dumps(m["per_arm"])) == json.loads(json.dumps(whole["per_arm"]))
    # --set reaches the joined summary: pair every arm with fine-tuning only
    m = load_job("continual").main(["--merge", *dirs, "--out", str(tmp_path / "m5"), "--set",
                                    "compare_with=[finetune]"])
    assert "vs_finetune" in m["per_arm"]["full"] and "vs_full" not in m["per_arm"]["finetune"]
    with pytest.raises(SystemExit):
        load_job("continual").main(["--merge", dirs[0], f"{both}:nope", "--out", str(tmp_path / "m4")])
    assert "no arm" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ the no-strata ablation
def _protocol(tmp_path, **over):
    from ifshm_ray.meta.continual import Protocol

    cfg = ContinualConfig.from_dict({"train_config": "configs/tiny.yaml", **over})
    protocol = Protocol(cfg, tmp_path / "out", progress=lambda _: None)
    protocol.calibration_path = tmp_path / "novelty_calibration.json"
    return protocol


@pytest.mark.timeout(60)
def test_arm_train_overrides_reach_only_that_arms_training(tmp_path):
    from ifshm_ray.policy.config import TrainConfig

    protocol = _protocol(tmp_path)
    faults = ["node_crash", "dns_upstream_failure"]
    arm = ArmConfig(name="sil_low", train_overrides=["replay.sil.weight=0.25",
                                                      "replay.level_sampler.temperature=1.0", "ppo.lr=0.0001"])
    full = protocol._train_dict(faults, 5, 0, ArmConfig(name="full"), {"node_crash": 0.9})
    low = protocol._train_dict(faults, 5, 0, arm, {"node_crash": 0.9})
    TrainConfig.from_dict(low)
    assert low["replay"]["sil"]["weight"] == 0.25 and full["replay"]["sil"]["weight"] != 0.25
    assert low["replay"]["level_sampler"]["temperature"] == 1.0 and low["ppo"]["lr"] == 0.0001
    assert low["replay"]["buffer"] == full["replay"]["buffer"] and low["env"] == full["env"]
    for bad, match in ((["env.config.time_limit_s=10"], "only replay"), (["ppo.train_batch_size=8"], "budget"),
                       (["replay.sil.weight"], "train_overrides")):
        with pytest.raises(ValueError, match=match):
            ArmConfig(name="bad", train_overrides=bad)
    with pytest.raises(ValueError, match="replay: false"):
        ArmConfig(name="bad", replay=False, train_overrides=["replay.sil.weight=0.5"])
    # the entropy bonuses (loss weights) may differ per arm; the policy's network may not
    ent = protocol._train_dict(faults, 5, 0, ArmConfig(name="ent", train_overrides=["policy.entropy_coeff_high=0.2"]),
                               None)
    assert ent["policy"]["entropy_coeff_high"] == 0.2 and TrainConfig.from_dict(ent).policy.entropy_coeff_high == 0.2
    assert full["policy"]["entropy_coeff_high"] != 0.2 and ent["policy"]["encoder_hiddens"] == full["policy"][
        "encoder_hiddens"]
    for bad in (["policy.encoder_hiddens=[8]"], ["policy=5"]):
        with pytest.raises(ValueError, match="entropy_coeff_high"):
            ArmConfig(name="bad", train_overrides=bad)
    with pytest.raises(ValueError, match="phase1_memory"):
        ArmConfig(name="bad", replay=False, phase1_memory=2)
    for derived in ("replay.enabled=false", "replay.scenario_replay=true", "replay.buffer.gamma=0.9"):
        with pytest.raises(ValueError, match="switches"):
            ArmConfig(name="bad", train_overrides=[derived])
    with pytest.raises(ValueError, match="switches"):
        ArmConfig(name="bad", sil=False, train_overrides=["replay.sil.weight=0.5"])
    with pytest.raises(ValueError, match="sections"):
        ArmConfig(name="bad", train_overrides=["ppo=5"])
    # the buffer's discount follows an overridden ppo.gamma
    g = protocol._train_dict(faults, 5, 0, ArmConfig(name="g", train_overrides=["ppo.gamma=0.95"]), None)
    assert g["replay"]["buffer"]["gamma"] == g["ppo"]["gamma"] == 0.95
    TrainConfig.from_dict(g)
    # the cloning teacher "phase1" is the seed's phase-1 bundle (and only for an arm with replay)
    anchor = ArmConfig(name="anchor", train_overrides=["replay.clone.weight=1", "replay.clone.reference=phase1"])
    a = protocol._train_dict(faults, 5, 3, anchor, {"node_crash": 0.9})
    assert a["replay"]["clone"]["reference"] == str(protocol.out / "seed_3" / "phase1" / "policy_bundle")
    assert TrainConfig.from_dict(a).replay.clone.reference.endswith("seed_3/phase1/policy_bundle")
    # steering overrides reach the arm's meta-controller config (training's and the protocol's)
    st = ArmConfig(name="st", steering_overrides=["min_cluster_incidents=5"])
    d = protocol._train_dict(faults, 5, 0, st, {"node_crash": 0.9})
    assert d["meta"]["steering"]["min_cluster_incidents"] == 5 == protocol.arm_meta(st).steering.min_cluster_incidents
    assert full["meta"]["steering"]["min_cluster_incidents"] == 1
    with pytest.raises(ValueError, match="steering_overrides"):
        ArmConfig(name="bad", learn=False, replay=False, steering_overrides=["min_cluster_incidents=5"])
    with pytest.raises(ValueError, match="min_clustr"):
        _protocol(tmp_path, arms=[{"name": "typo", "steering_overrides": ["min_clustr_incidents=3"]}])
    # a typo is caught when the protocol is built, before anything runs
    with pytest.raises(ValueError, match="wieght"):
        _protocol(tmp_path, arms=[{"name": "typo", "train_overrides": ["replay.sil.wieght=0.3"]}])


@pytest.mark.timeout(60)
def test_no_strata_reaches_the_env_runners_the_meta_controller_and_the_pushes(tmp_path):
    from ifshm_ray.meta.config import MetaConfig
    from ifshm_ray.meta.continual import push_stratum
    from ifshm_ray.meta.controller import MetaController
    from ifshm_ray.meta.gate import RecordedIncident
    from ifshm_ray.meta.novelty import calibrate
    from ifshm_ray.policy.config import TrainConfig

    protocol = _protocol(tmp_path)
    faults = ["node_crash", "dns_upstream_failure"]
    full = protocol._train_dict(faults, 5, 0, ArmConfig(name="full"), {"node_crash": 0.9})
    flat = protocol._train_dict(faults, 5, 0, ArmConfig(name="no_strata", strata=False), {"node_crash": 0.9})
    for d in (full, flat):
        TrainConfig.from_dict(d)  # a valid training config
    known = full["replay"]["buffer"]["known_stratum"]
    assert full["replay"]["novel_stratum"] != known and full["meta"]["strata"] is True
    assert flat["replay"]["novel_stratum"] == known and flat["meta"]["strata"] is False
    # everything else is the same training
    assert {k: v for k, v in flat.items() if k not in ("replay", "meta")} == \
        {k: v for k, v in full.items() if k not in ("replay", "meta")}
    # the meta-controller: a novel incident's stratum and the replay mix
    cal = calibrate(np.linspace(0, 1, 100))
    state = np.ones(4)
    metas = {s: MetaController(MetaConfig(enabled=True, strata=s), cal) for s in (True, False)}
    decisions = {s: m.observe(5.0, state) for s, m in metas.items()}
    assert decisions[True].novel and decisions[True].cluster == 0 and decisions[True].stratum == "novel-0"
    assert decisions[False].novel and decisions[False].cluster == 0 and decisions[False].stratum == known
    assert set(metas[True].replay_mix()) == {known, "novel-0"} and metas[False].replay_mix() is None
    # without a state vector (no cluster) a deferred novel incident: the generic novel stratum, or the known one
    assert metas[True].observe(5.0).stratum is None and metas[False].observe(5.0).stratum == known
    # the protocol's pushes
    rec = RecordedIncident(episode=None, info={}, decision=decisions[True])
    assert push_stratum(rec, ArmConfig(name="full"), known) == "novel-0"
    assert push_stratum(rec, ArmConfig(name="no_strata", strata=False), known) == known
    # the meta state keeps the switch (jobs/train.py --resume loads the meta-controller from the checkpoint)
    metas[False].save(tmp_path / "m")
    assert MetaController.load(tmp_path / "m").config.strata is False


def _tag(section, fault: str):
    """Run ReplayCallback.on_episode_end on one finished episode of ``fault`` in a real stream env; returns the
    env runner's pending strata and its recorded outcomes."""
    from types import SimpleNamespace

    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    from ifshm_ray.meta.continual import make_stream_env
    from ifshm_ray.policy.replay import _RUNNER_OUTCOMES, _RUNNER_PENDING, LCD_KEY, ReplayCallback

    faults = sorted({fault, "node_crash"})
    env = make_stream_env({"faults": faults, "num_envs": 1, "fault_free_prob": 0.0, "seed": 3,
                           "render_telemetry": False, "split": "handpicked",
                           "fault_weights": {f: float(f == fault) for f in faults}})
    obs, _ = env.reset(seed=3)
    first = {k: v[0] for k, v in obs.items()}
    episode = SingleAgentEpisode(observations=[first, first], actions=[(0, 0, 0)], rewards=[-1.0],
                                 infos=[{}, {"mttr_s": 120.0, "success": True}], terminated=True,
                                 len_lookback_buffer=0)
    runner = SimpleNamespace(config=SimpleNamespace(learner_config_dict={LCD_KEY: section.to_dict()},
                                                    in_evaluation=False), worker_index=1)
    ReplayCallback().on_episode_end(episode=episode, env_runner=runner, env=env, env_index=0)
    env.close()
    return {k: len(v) for k, v in getattr(runner, _RUNNER_PENDING).items()}, getattr(runner, _RUNNER_OUTCOMES)


@pytest.mark.timeout(120)
def test_env_runner_tags_strata_by_the_known_types_given():
    from ifshm_ray.replay.config import ReplaySection

    unknown = "clock_skew_tls"  # held out in handpicked
    pseudo = "certificate_expiry"  # known in handpicked
    base = {"enabled": True, "scenario_replay": False}
    assert _tag(ReplaySection.from_dict(base), unknown) == ({"novel": 1}, [(unknown, False, 120.0, True)])
    assert _tag(ReplaySection.from_dict(base), pseudo) == ({"known": 1}, [(pseudo, True, 120.0, True)])
    # pseudo-unknown tuning: replay.known_types leaves the pseudo type out of the known stratum
    blind = ReplaySection.from_dict({**base, "known_types": ["node_crash"]})
    assert _tag(blind, pseudo) == ({"novel": 1}, [(pseudo, False, 120.0, True)])
    # the no-strata ablation: one stratum, but the outcome still says the type is not known (the meta-controller's
    # forgetting watch is about the known types only)
    flat = ReplaySection.from_dict({**base, "novel_stratum": "known"})
    assert _tag(flat, unknown) == ({"known": 1}, [(unknown, False, 120.0, True)])


# ------------------------------------------------------------------------------------------ pseudo-unknown tuning
@pytest.mark.timeout(60)
@pytest.mark.parametrize("split", ["handpicked", "logo_network"])
def test_pseudo_unknown_plan_never_runs_the_real_unknown_types(split):
    from ifshm_ray.sim.catalog import load_catalog

    cat = load_catalog()
    real_unknown = set(cat.unknown_in(split))
    fams = known_families(split)
    cfg = ContinualConfig.from_dict({"split": split, "pseudo_unknown": 2, "known_types": 4,
                                     "stream": {"incidents_per_type": 5, "block": 2, "new_share": 0.7}})
    draws = set()
    for seed in range(4):
        sp = seed_plan(cfg, seed)
        pseudo = sp["pseudo_unknown"]
        draws.add(tuple(pseudo))
        assert sp == seed_plan(cfg, seed)  # seeded
        # whole families of known types: every known type of a drawn family, two families
        drawn = {cat.spec(f).family for f in pseudo}
        assert len(drawn) == 2 and sorted(pseudo) == sorted(t for fam in drawn for t in fams[fam])
        assert not set(pseudo) & real_unknown
        assert sorted(sp["order"]) == sorted(pseudo)  # the stream: every pseudo type (novel_types: all)
        assert len(sp["known"]) == 4 and not set(sp["known"]) & (set(pseudo) | real_unknown)
        assert sp["blind_known"] == [f for f in cat.known_in(split) if f not in set(pseudo)]
        assert sp["blind_known"] == blind_known_types(cfg, seed)
        run = set(sp["known"]) | set(sp["order"]) | {f for f, _ in sp["incidents"]}
        run |= {f for items in sp["stream"] for f, _, _ in items}
        assert not run & real_unknown, run & real_unknown
        assert {f for items in sp["stream"] for f, _, new in items if new} == set(pseudo)
    assert len(draws) > 1  # the seed draws the families
    # without pseudo_unknown: today's draw, the real unknown types
    plain = ContinualConfig.from_dict({"split": split, "known_types": 4})
    assert seed_plan(plain, 0)["order"] == draw_types(plain, 0)[1] and set(draw_types(plain, 0)[1]) == real_unknown
    assert pseudo_unknown_types(plain, 0) == [] and seed_plan(plain, 0)["blind_known"] is None
    assert blind_known_types(plain, 0) == cat.known_in(split)


@pytest.mark.timeout(120)
def test_pseudo_unknown_types_are_unknown_to_the_references_the_gate_and_training(tmp_path, monkeypatch):
    from ifshm_ray.baselines import nearest as nk
    from ifshm_ray.env import FaultInjectionEnv
    from ifshm_ray.policy.config import TrainConfig
    from ifshm_ray.sim.catalog import load_catalog

    cat = load_catalog()
    protocol = _protocol(tmp_path, pseudo_unknown=2, known_types=4)
    sp = seed_plan(protocol.cfg, 0)
    pseudo, blind = sp["pseudo_unknown"], sp["blind_known"]
    protocol.blind_known = blind
    protocol.env = FaultInjectionEnv({**protocol.sim_config, "render_telemetry": True, "faults": "all"})
    # the blind runbook (and the gate's) keeps no rule written only for a pseudo-unknown type
    for rb in (protocol.reference("runbook"), protocol.runbook()):
        assert set(rb.known) == set(blind)
        assert all(r.generic or set(r.written_for) & set(blind) for r in rb.rules)
    split_rb = protocol.reference("runbook-full")
    assert len(split_rb.rules) > len(protocol.runbook().rules)
    # nearest-known: prototypes of the blind known types only (its prototypes stubbed: built per type, the
    # restriction is what a split knowing only those types gives)
    known = cat.known_in("handpicked")
    fake = {"faults": known, "vectors": np.eye(len(known)).tolist(), "envelope": [0.0] * len(known),
            "episodes": {f: 1 for f in known}, "no_trigger": [], "split": "handpicked"}
    monkeypatch.setattr(nk, "load_prototypes", lambda sim_cfg, cfg=None: fake)
    near = protocol.reference("nearest-known")
    assert near.proto_faults == blind and not set(near.proto_faults) & set(pseudo)
    assert near.protos.shape == (len(blind), len(known))
    # training: the replay's known stratum is the blind known types, and so are the scenario replay's levels on
    # the learning env of a pseudo-unknown type (jobs/train.py's level sampler)
    from conftest import load_job

    from ifshm_ray.policy.algo import make_env
    from ifshm_ray.policy.replay import simulators

    d = protocol._train_dict(sp["known"], 3, 0, ArmConfig(name="full"), None)
    assert d["replay"]["known_types"] == blind and TrainConfig.from_dict(d).replay.known_types == blind
    d = protocol._train_dict([sp["order"][0], *sp["known"]], 3, 0, ArmConfig(name="full"),
                             {sp["order"][0]: 0.9, **{k: 0.1 / len(sp["known"]) for k in sp["known"]}})
    env = make_env(TrainConfig.from_dict(d))
    levels = load_job("train").scenario_levels(TrainConfig.from_dict(d), simulators(env)[0][0])
    env.close()
    assert sorted(levels) == sorted(sp["known"]) and sp["order"][0] not in levels
    protocol.env.close()
    # jobs/evaluate.py --policy gated:ARM_FOLDER: the gate's runbook reads the arm folder's blind_known.json
    import json

    from ifshm_ray.eval import gated

    monkeypatch.setattr(gated, "load_gate", lambda path: (None, None))
    assert gated.make_gated_policy(None, tmp_path, protocol.env).runbook.known == tuple(known)
    (tmp_path / gated.BLIND_KNOWN_FILE).write_text(json.dumps({"known": blind}))
    assert gated.make_gated_policy(None, tmp_path, protocol.env).runbook.known == tuple(blind)
    # a blind reference may not know a type the split holds out
    from ifshm_ray.baselines import make_baseline

    with pytest.raises(ValueError, match="subset"):
        make_baseline("runbook", 0, protocol.env.sim_cfg, known=["clock_skew_tls"])
    with pytest.raises(ValueError, match="replay.known_types"):
        TrainConfig.from_dict({**d, "replay": {**d["replay"], "known_types": ["clock_skew_tls"]}})


@pytest.mark.timeout(60)
def test_pseudo_unknown_refuses_the_llm_semantic_state(tmp_path):
    import yaml

    from ifshm_ray.meta.continual import Protocol

    train = yaml.safe_load(open("configs/tiny.yaml"))
    train["policy"]["encoder_checkpoint"] = "results/encoder"
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(train))
    cfg = ContinualConfig.from_dict({"train_config": str(tmp_path / "train.yaml"), "pseudo_unknown": 1})
    with pytest.raises(ValueError, match="encoder_checkpoint"):
        Protocol(cfg, tmp_path / "out", progress=lambda _: None)


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
def test_tiny_protocol_end_to_end(ray_session, tmp_path, capsys):
    from conftest import load_job

    out = tmp_path / "continual"
    m = load_job("continual").main([
        "--config", "configs/continual_tiny.yaml", "--out", str(out),
        "--set", "novel_types=1", "--set", "stream.incidents_per_type=2", "--set", "stream.block=1",
        "--set", "eval.episodes=1", "--set", "eval.every_blocks=2", "--set", "bootstrap.samples=100",
        "--set", "arms=[{name: full}, {name: finetune, gate: false, replay: false}, "
                 "{name: gate_only, learn: false, replay: false}, {name: no_strata, strata: false, phase1_memory: 1}]"])
    saved = json.loads((out / "metrics.json").read_text())
    # the no-strata arm's replay got one phase-1 incident per known type before its stream (4 known types)
    assert "arm no_strata: 4 phase-1 incidents of the known types recorded" in capsys.readouterr().out
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
    # 2 new-type stream incidents, block 1: two learning steps; evaluated every second block: after phase 1 and
    # the type's last (second) block
    assert sum(s["new"] for s in full["stream"]) == 2
    assert [e["label"] for e in full["evals"]] == ["phase1", f"{run['order'][0]}#2"]
    assert all(len(e["ungated"]) == len(run["incidents"]) for e in full["evals"])
    # every arm met the same evaluation incidents (paired)
    for arm in run["arms"].values():
        for e in arm["evals"]:
            assert [(r["fault"], r["seed"]) for r in e["ungated"]] == [tuple(x) for x in run["incidents"]]
    # the learning arms trained: phase 1's 2 iterations + 1 per block
    for arm in ("full", "finetune", "no_strata"):
        summary = json.loads((out / "seed_0" / arm / "summary.json").read_text())
        assert summary["iteration"] == 4
    # the no-strata arm trained with one stratum: its env runners' and its meta-controller's settings, its buffer
    import yaml

    flat = yaml.safe_load((out / "seed_0" / "no_strata" / "train_config.yaml").read_text())
    assert flat["replay"]["novel_stratum"] == flat["replay"]["buffer"]["known_stratum"]
    assert json.loads((out / "seed_0" / "no_strata" / "meta_state.json").read_text())["config"]["strata"] is False
    held = json.loads((out / "seed_0" / "no_strata" / "summary.json").read_text())["replay"]
    assert set(held["strata"]) <= {flat["replay"]["buffer"]["known_stratum"]}, held
    assert "replay" in json.loads((out / "seed_0" / "full" / "summary.json").read_text())
    assert not (out / "seed_0" / "gate_only" / "checkpoints").exists()  # it never trained
    assert m["per_arm"]["gate_only"]["unknown_mttr_after_s"] == m["per_arm"]["gate_only"]["unknown_mttr_before_s"]
    # every arm paired against full and finetune (not itself)
    assert set(m["per_arm"]["no_strata"]) >= {"vs_full", "vs_finetune"} and "vs_full" not in m["per_arm"]["full"]
    assert set(m["per_arm"]["no_strata"]["vs_full"]) == {"after_unknown_ungated", "after_known_ungated",
                                                         "cumulative_unhealthy"}
    # --summarise-only rebuilds the same metrics from runs.json; a config with other arms is refused
    (out / "metrics.json").unlink()
    again = load_job("continual").main(["--config", str(out / "config.yaml"), "--out", str(out), "--summarise-only"])
    assert json.loads(json.dumps(again["per_arm"])) == json.loads(json.dumps(m["per_arm"]))
    assert (out / "metrics.json").is_file()
    with pytest.raises(SystemExit):
        load_job("continual").main(["--config", "configs/continual_tiny.yaml", "--out", str(out),
                                    "--summarise-only"])
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


@pytest.mark.timeout(60)
def test_demonstrations_make_phase1_train_with_replay_and_phase2_record_none(tmp_path):
    """A ``train_config`` with ``replay.demonstrations``: phase 1 trains with the replay (no meta-controller) and
    records them; phase 2 resumes with them in the replay state and records none, in every arm (an arm without
    replay has nothing to store them in)."""
    from ifshm_ray.policy.config import TrainConfig

    protocol = _protocol(tmp_path, train_overrides=["replay.enabled=true", "replay.demonstrations.policy=runbook"])
    faults = ["node_crash", "dns_upstream_failure"]
    p1 = protocol._train_dict(faults, 5, 0, None, None)
    assert p1["replay"]["enabled"] and p1["replay"]["demonstrations"]["policy"] == "runbook"
    assert not p1["meta"]["enabled"]
    TrainConfig.from_dict(p1)
    for arm in (ArmConfig(name="full"), ArmConfig(name="finetune", gate=False, replay=False)):
        d = protocol._train_dict(faults, 5, 0, arm, {"node_crash": 0.9})
        assert d["replay"]["demonstrations"]["policy"] is None and d["replay"]["enabled"] == arm.replay
        assert d["meta"]["enabled"] == arm.replay
        TrainConfig.from_dict(d)
    plain = _protocol(tmp_path)._train_dict(faults, 5, 0, None, None)
    assert not plain["replay"]["enabled"]  # without demonstrations phase 1 trains without replay, as before

"""Replay wired into RLlib training (issue 15), end to end on the tiny config with the real env.

* the algorithm path: env runners push episodes to the named actor, the learner's self-imitation term is non-zero
  and writes priorities back, the scenario weights reach the env runners' simulators, and a replay actor killed
  during training comes back from its last save while training goes on;
* the job path (``jobs/train.py``): the replay state is saved with every checkpoint and ``--resume`` reloads it;
* replay off: the same PPO config as before (no callback or learner change).
"""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import load_job

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
# a faster critic than tiny.yaml's, so that V(s) drops below the returns of quickly recovered incidents within
# three iterations: the self-imitation term is zero while V >= R everywhere (V starts at 0, returns are < 0)
FAST_CRITIC = ["ppo.lr=0.003", "ppo.num_epochs=4"]


def _replay_overrides(name: str) -> list[str]:
    return ["replay.enabled=true", f"replay.buffer.actor_name={name}", "replay.sil.batch_size=64", *FAST_CRITIC]


def test_replay_off_keeps_plain_ppo():
    from ifshm_ray.policy.algo import build_ppo_config
    from ifshm_ray.policy.callbacks import HealingMetricsCallback
    from ifshm_ray.policy.config import load_train_config
    from ifshm_ray.policy.replay import LCD_KEY

    cfg = load_train_config(TINY)
    assert cfg.replay.enabled is False
    ppo = build_ppo_config(cfg)
    assert ppo.callbacks_class is HealingMetricsCallback
    assert LCD_KEY not in ppo.learner_config_dict


def test_replay_gamma_must_match_ppo():
    from ifshm_ray.config import ConfigError
    from ifshm_ray.policy.config import load_train_config

    with pytest.raises(ConfigError, match="must equal ppo.gamma"):
        load_train_config(TINY, ["replay.enabled=true", "replay.buffer.gamma=0.9"])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_training_pushes_imitates_writes_priorities_and_survives_actor_kill(ray_session, tmp_path):
    import ray

    from ifshm_ray.policy.algo import build_ppo_config
    from ifshm_ray.policy.config import load_train_config
    from ifshm_ray.policy.replay import RESULT_KEY

    train = load_job("train")
    name = f"replay-train-{uuid.uuid4().hex[:8]}"
    # incidents that end recovered within the budget even under an untrained policy (the v2 simulator's faults rarely
    # do in tiny.yaml's 10-minute episodes, and recovered_only keeps only those): a stale RWO attachment that the
    # attach-detach controller force-detaches after 360-420 s, on a split where it is known
    cfg = load_train_config(TINY, _replay_overrides(name) + [
        "env.config.split=logo_gpu", "env.config.faults=[rwo_volume_multi_attach]", "env.config.time_limit_s=1200"])
    actor = train.start_replay_actor(cfg, tmp_path, None)
    algo = build_ppo_config(cfg).build_algo()
    try:
        results = [algo.train() for _ in range(3)]
        pushed = [r["env_runners"].get("ifshm/replay_pushed_episodes", 0) for r in results]
        stats = ray.get(actor.stats.remote())
        # episodes reach the actor (tiny.yaml's 10-minute episodes: most are cut at the limit, and
        # recovered_only keeps the recovered ones)
        assert all(p > 0 for p in pushed), pushed
        assert stats["num_filtered"] + sum(s["num_episodes"] for s in stats["strata"].values()) == sum(pushed)
        assert stats["strata"]["known"]["num_steps"] > 0
        # the learner sampled once per update and wrote every row's priority back
        assert stats["num_samples"] == 3
        assert stats["num_priority_updates"] == 3 * cfg.replay.sil.batch_size
        lrn = [r["learners"]["default_policy"] for r in results]
        assert all(r["learners"]["__all_modules__"]["sil_priorities_written"] == 64 for r in results)
        sil = [float(x.get("loss/sil", 0.0)) for x in lrn]
        assert max(sil) > 0.0, sil  # the self-imitation term is in the loss once V(s) < R somewhere
        assert max(float(x["sil_num_valid"]) for x in lrn) > 0
        # scenario replay: the driver's weights are what the env runner's simulator draws with
        weights = results[-1][RESULT_KEY]["level_weights"]
        assert weights and abs(sum(weights.values()) - 1.0) < 1e-9
        cum = algo.env_runner_group.foreach_env_runner(lambda r: r.env.unwrapped.sim.freq_allowed.tolist(),
                                                       local_env_runner=False)
        names = algo.env_runner_group.foreach_env_runner(lambda r: r.env.unwrapped.sim.fault_names,
                                                         local_env_runner=False)
        w = np.array([weights[n] for n in names[0]])
        np.testing.assert_allclose(cum[0], np.cumsum(w) / w.sum(), rtol=1e-12)

        # kill the replay actor during training: Ray restarts it from the last save, training goes on
        ckpt = tmp_path / "ckpt"
        saved = ray.get(actor.save.remote(str(ckpt)))
        saved_steps = ray.get(actor.stats.remote())["num_steps"]
        ray.kill(actor, no_restart=False)
        deadline = time.monotonic() + 120
        while True:
            try:
                if ray.get(actor.was_restarted.remote(), timeout=120):
                    break
            except ray.exceptions.RayActorError:
                pass
            assert time.monotonic() < deadline, "the replay actor did not come back within 120 s"
            time.sleep(0.5)
        after_restart = ray.get(actor.stats.remote())
        assert after_restart["restored_from"] == saved and after_restart["num_steps"] == saved_steps
        assert ray.get(actor.level_weights.remote()) == weights  # the level sampler came back too
        more = algo.train()
        assert more["learners"]["__all_modules__"]["sil_priorities_written"] == 64
        assert ray.get(actor.stats.remote())["num_samples"] == 4
    finally:
        algo.stop()
        ray.kill(actor, no_restart=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_train_job_saves_replay_with_checkpoints_and_resume_reloads(ray_session, tmp_path, capsys, monkeypatch):
    from ifshm_ray.replay.actor import LATEST_FILE, STATE_FILE

    monkeypatch.chdir(REPO)
    train = load_job("train")
    out = tmp_path / "run"
    name = f"replay-job-{uuid.uuid4().hex[:8]}"
    # every episode stored (seed 1's first iterations end no incident recovered within tiny.yaml's 10 minutes)
    sets = [x for o in [*_replay_overrides(name), "replay.buffer.recovered_only=false", "meta.enabled=true"]
            for x in ("--set", o)]
    first = train.main(["--config", str(TINY), "--out", str(out), "--iterations", "2", "--seed", "1", *sets])
    for it in (1, 2):
        assert (out / "checkpoints" / f"iter_{it:06d}" / STATE_FILE).is_file()
    assert Path((out / "replay" / LATEST_FILE).read_text()).parent.name == "iter_000002"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["replay_pushed_episodes"] > 0 and r["sil_priorities_written"] == 64 for r in rows)
    assert first["replay"]["num_samples"] == 2
    # the meta-controller's state goes with every checkpoint and into the bundle (Serve's gate reads it there)
    from ifshm_ray.meta.controller import STATE_FILE as META_FILE, MetaController

    assert (out / "checkpoints" / "iter_000001" / META_FILE).is_file()
    meta_first = MetaController.load(out / "checkpoints" / "iter_000002")
    assert meta_first.num_known_recorded > 0  # known-type incident outcomes reached it from the env runners
    assert MetaController.load(out / "policy_bundle").state() == meta_first.state()

    second = train.main(["--config", str(TINY), "--out", str(out), "--resume", str(out), "--iterations", "3",
                         "--seed", "1", *sets])
    capsys.readouterr()
    assert second["replay"]["restored_from"].endswith(f"iter_000002/{STATE_FILE}")
    assert second["replay"]["num_samples"] == 3  # continued from the saved 2 samples
    assert second["replay"]["num_steps"] >= first["replay"]["num_steps"]
    meta_second = MetaController.load(out / "policy_bundle")
    # continued from the restored state: one more iteration's outcomes on top of the first two iterations'
    assert meta_second.num_known_recorded > meta_first.num_known_recorded


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_clear_cloning_is_trained_and_logged(ray_session, tmp_path, monkeypatch):
    """``replay.clone.weight=1``: the env runners store the behaviour outputs, the learner's cloning terms on the
    known stratum's replayed steps are non-zero and reach the learner results and metrics.jsonl."""
    monkeypatch.chdir(REPO)
    train = load_job("train")
    out = tmp_path / "clear"
    name = f"replay-clear-{uuid.uuid4().hex[:8]}"
    sets = [x for o in [*_replay_overrides(name), "replay.buffer.recovered_only=false", "replay.clone.weight=1"]
            for x in ("--set", o)]
    train.main(["--config", str(TINY), "--out", str(out), "--iterations", "2", "--seed", "1", *sets])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert r["clone_num_policy"] > 0, r  # known-stratum rows with behaviour outputs in every sample
        assert r["clone_policy_loss"] > 0 and r["clone_value_loss"] > 0, r
        assert r["clone_loss"] == pytest.approx(r["clone_policy_loss"] + 0.5 * r["clone_value_loss"], rel=1e-5)
    # a fixed teacher instead (replay.clone.reference: the run above's bundle): no behaviour outputs stored, every
    # known-stratum row anchored to the teacher, whose outputs differ from a fresh run's
    out2 = tmp_path / "anchor"
    sets = [x for o in [*_replay_overrides(f"{name}-anchor"), "replay.buffer.recovered_only=false",
                        "replay.clone.weight=1", f"replay.clone.reference={out / 'policy_bundle'}"]
            for x in ("--set", o)]
    train.main(["--config", str(TINY), "--out", str(out2), "--iterations", "1", "--seed", "2", *sets])
    rows = [json.loads(line) for line in (out2 / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["clone_num_policy"] > 0 and rows[0]["clone_policy_loss"] > 0, rows[0]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_train_job_stores_demonstrations_once_and_samples_them(ray_session, tmp_path, capsys, monkeypatch):
    """``replay.demonstrations``: the runbook's incidents of every known type are in their stratum before the first
    update, sampled by the self-imitation term (``replay.mix``), saved with the checkpoints, and a resumed run
    restores them instead of recording them again."""
    monkeypatch.chdir(REPO)
    train = load_job("train")
    out = tmp_path / "demos"
    name = f"replay-demos-{uuid.uuid4().hex[:8]}"
    sets = [x for o in [*_replay_overrides(name), "replay.buffer.recovered_only=false",
                        "replay.demonstrations.policy=runbook", "replay.demonstrations.incidents_per_type=1",
                        "replay.demonstrations.healed_only=false", "replay.mix={known: 0.5, demo: 0.5}"]
            for x in ("--set", o)]
    first = train.main(["--config", str(TINY), "--out", str(out), "--iterations", "1", "--seed", "1", *sets])
    assert "demonstrations: " in capsys.readouterr().out
    summary = json.loads((out / "demonstrations.json").read_text())
    from ifshm_ray.sim.catalog import load_catalog

    cat = load_catalog()
    assert sorted(summary["per_type"]) == sorted(cat.known_in(cat.default_split))  # the known types only
    assert summary["episodes"] == len(summary["per_type"])
    demo = first["replay"]["strata"]["demo"]
    assert demo["num_episodes"] == summary["episodes"] and demo["num_steps"] == summary["steps"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["sil_priorities_written"] == 64  # the first update sampled (demonstrations and own episodes)
    second = train.main(["--config", str(TINY), "--out", str(out), "--resume", str(out), "--iterations", "2",
                         "--seed", "1", *sets])
    assert "demonstrations: " not in capsys.readouterr().out  # restored with the replay state, not recorded again
    assert second["replay"]["strata"]["demo"] == {**demo, "share": second["replay"]["strata"]["demo"]["share"]}

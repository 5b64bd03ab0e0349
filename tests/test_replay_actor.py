"""ReplayActor: synchronous order and save/load as a plain class; named get-or-create, restore and restart as a
Ray actor (``ray_session``)."""
from __future__ import annotations

import time
import uuid

import numpy as np
import pytest
from ray.rllib.core.columns import Columns

from ifshm_ray.replay.actor import LATEST_FILE, STATE_FILE, ReplayActor, get_or_create_replay_actor
from ifshm_ray.replay.config import ReplayConfig
from test_replay_buffer import episode, tags


def config(**kw) -> ReplayConfig:
    return ReplayConfig(capacity=200, actor_name=f"replay-test-{uuid.uuid4().hex[:8]}", **kw)


# ----------------------------------------------------------------------------------------------- plain class
def test_synchronous_mode_adds_in_source_order_on_flush():
    actor = ReplayActor(config())
    assert actor.push([episode(20), episode(21)], "known", source=2) == 0
    assert actor.push(episode(0), "known", source=0) == 0
    assert actor.push(episode(22), "known", source=2) == 0
    assert actor.push(episode(10), "known", source=1) == 0
    assert actor.stats()["num_steps"] == 0 and actor.stats()["staged_episodes"] == 5
    assert actor.flush() == 5
    assert tags(actor.buffer, "known") == [0, 10, 20, 21, 22]


def test_synchronous_mode_reproduces_samples_whatever_the_arrival_order():
    cfg = config(seed=4)
    pushes = [(source, [episode(10 * source + k, 3 + k) for k in range(3)]) for source in range(3)]
    draws = []
    for order in (pushes, pushes[::-1]):
        actor = ReplayActor(cfg)
        for source, eps in order:
            actor.push(eps, "known" if source else "novel-0", source=source)
        actor.flush()
        batch = actor.sample(32)
        actor.update_priorities(batch.handle, np.abs(batch.columns[Columns.RETURNS_TO_GO]))
        draws.append(actor.sample(32).columns[Columns.OBS])
    np.testing.assert_array_equal(draws[0], draws[1])


def test_asynchronous_mode_adds_on_arrival():
    actor = ReplayActor(config(deterministic=False))
    assert actor.push(episode(5), "known", source=3) == 1
    assert actor.push(episode(1), "known", source=0) == 1
    assert tags(actor.buffer, "known") == [5, 1]


def test_save_and_load_including_staged_pushes(tmp_path):
    cfg = config()
    actor = ReplayActor(cfg, state_dir=str(tmp_path / "state"))
    actor.push([episode(k) for k in range(3)], "known")
    actor.flush()
    actor.push(episode(9), "novel-0", source=1)  # staged, not flushed yet
    path = actor.save(str(tmp_path / "ckpt-1"))
    assert path == str((tmp_path / "ckpt-1" / STATE_FILE).resolve())
    assert (tmp_path / "state" / LATEST_FILE).read_text() == path
    # a fresh process with the same state_dir (what a restart is) comes back from LATEST
    again = ReplayActor(cfg, state_dir=str(tmp_path / "state"), restore_from=None)
    assert again.restored_from == path
    assert again.stats()["num_steps"] == 30 and again.stats()["staged_episodes"] == 1
    again.flush()
    assert tags(again.buffer, "novel-0") == [9]
    # resuming a run: a new state_dir, started from the checkpoint folder
    resumed = ReplayActor(cfg, state_dir=str(tmp_path / "run-2"), restore_from=str(tmp_path / "ckpt-1"))
    assert resumed.restored_from == path and tags(resumed.buffer, "known") == [0, 1, 2]
    with pytest.raises(FileNotFoundError, match="no replay state"):
        ReplayActor(cfg, restore_from=str(tmp_path / "nothing-here"))


# ----------------------------------------------------------------------------------------------- Ray actor
# Slow: the first one starts the session's Ray (~8 s here), and every actor process imports RLlib (~4 s).
@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_named_get_or_create_shares_one_actor(tmp_path):
    import ray

    cfg = config()
    first = get_or_create_replay_actor(cfg, state_dir=str(tmp_path))
    second = get_or_create_replay_actor(cfg)  # same name: the same actor, its arguments ignored
    try:
        ray.get(first.push.remote([episode(k) for k in range(4)], "known", source=0))
        assert ray.get(second.flush.remote()) == 4
        assert ray.get(ray.get_actor(cfg.actor_name).stats.remote())["num_steps"] == 40
        batch = ray.get(second.sample.remote(8))
        assert batch.columns[Columns.OBS].shape == (8, 2)
        assert ray.get(first.update_priorities.remote(batch.handle, np.ones(8))) == 8
    finally:
        ray.kill(first, no_restart=True)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_killed_actor_comes_back_with_its_last_saved_state(tmp_path):
    import ray

    cfg = config()
    actor = get_or_create_replay_actor(cfg, state_dir=str(tmp_path / "state"))
    try:
        ray.get(actor.push.remote([episode(k) for k in range(3)], "known"))
        ray.get(actor.flush.remote())
        saved = ray.get(actor.save.remote(str(tmp_path / "ckpt")))
        ray.get(actor.push.remote(episode(99), "novel-0"))  # after the save: lost with the process
        ray.get(actor.flush.remote())
        assert ray.get(actor.stats.remote())["num_steps"] == 40
        assert not ray.get(actor.was_restarted.remote())

        ray.kill(actor, no_restart=False)  # Ray restarts it: the constructor reloads state_dir/LATEST

        # ray.kill returns before the process is gone: wait until the calls reach the restarted one
        deadline = time.monotonic() + 120
        while not ray.get(actor.was_restarted.remote(), timeout=120):
            assert time.monotonic() < deadline, "the replay actor did not come back within 120 s"
        stats = ray.get(actor.stats.remote())
        assert stats["restored_from"] == saved
        assert stats["num_steps"] == 30 and list(stats["strata"]) == ["known"]
        batch = ray.get(actor.sample.remote(4))  # and it serves again
        assert set(batch.columns["stratum"]) == {"known"}
    finally:
        ray.kill(actor, no_restart=True)

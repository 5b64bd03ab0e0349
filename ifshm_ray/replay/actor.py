"""The shared replay as a named Ray actor: env runners push episodes, learners sample and write priorities back.

:class:`ReplayActor` is a plain class around :class:`~ifshm_ray.replay.buffer.StratifiedReplayBuffer` (it tests
without Ray); :func:`get_or_create_replay_actor` makes it the named actor that every process finds by name
(``ReplayConfig.actor_name``; created by whoever comes first, Ray's ``get_if_exists``), with ``max_restarts``.

Fault tolerance: ``save(checkpoint_dir)`` writes the whole state next to a training checkpoint and records that
file in ``state_dir/LATEST``. Ray reruns the constructor when it restarts a dead actor, with the same arguments;
the constructor then reloads the file ``state_dir/LATEST`` names, else ``restore_from`` (a checkpoint folder to
resume from), else starts empty. What was pushed after the last save is lost with the process.

Modes (``ReplayConfig.deterministic``):

* synchronous (deterministic): ``push`` only stages episodes per ``source`` (an env runner's index); ``flush``,
  called by the driver at a barrier (after every runner's push returned), adds them in a fixed order: by source,
  then in the order each source pushed. With one caller sampling, a seed reproduces a run;
* asynchronous: ``push`` adds at once, in arrival order (for clusters; not reproducible).

Run a quick check (a local Ray)::

    python -c "import ray; from ifshm_ray.replay.actor import get_or_create_replay_actor; \
from ifshm_ray.replay.config import ReplayConfig; ray.init(num_cpus=1); \
a = get_or_create_replay_actor(ReplayConfig(), state_dir='/tmp/replay'); print(ray.get(a.stats.remote()))"
"""
from __future__ import annotations

import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import ray
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from ifshm_ray.replay.buffer import ReplayBatch, SampleHandle, StratifiedReplayBuffer
from ifshm_ray.replay.config import LevelSamplerConfig, ReplayConfig
from ifshm_ray.replay.level_sampler import LevelSampler

logger = logging.getLogger(__name__)

STATE_FILE = "replay_state.pkl"
"""File name of the actor's state inside a checkpoint folder."""
LATEST_FILE = "LATEST"
"""File in ``state_dir`` holding the path of the last state saved (what a restarted actor reloads)."""


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _state_file(path: str | os.PathLike) -> Path:
    """A checkpoint folder's state file, or the file itself."""
    path = Path(path)
    return path / STATE_FILE if path.is_dir() else path


class ReplayActor:
    """The stratified prioritized replay behind one interface for env runners (push) and learners (sample)."""

    def __init__(self, config: ReplayConfig | Mapping[str, Any] | None = None, state_dir: str | None = None,
                 restore_from: str | None = None, levels: Sequence[str] | None = None,
                 level_config: LevelSamplerConfig | Mapping[str, Any] | None = None) -> None:
        if not isinstance(config, ReplayConfig):
            config = ReplayConfig.from_dict(dict(config or {}), source="replay")
        self.config = config
        self.buffer = StratifiedReplayBuffer(config)
        self.state_dir = Path(state_dir) if state_dir else None
        self._staged: dict[int, list[tuple[str, list[SingleAgentEpisode]]]] = {}
        self.restored_from: str | None = None
        self.mix: dict[str, float] | None = None  # set by the meta-controller; overrides the learner's mix
        self.levels: LevelSampler | None = None
        if levels:
            if not isinstance(level_config, LevelSamplerConfig):
                level_config = LevelSamplerConfig.from_dict(dict(level_config or {}), source="replay.level_sampler")
            self.levels = LevelSampler(list(levels), level_config)
        latest = self._latest_saved()
        source = latest or (str(_state_file(restore_from)) if restore_from else None)
        if source:
            self.load(source)

    def _latest_saved(self) -> str | None:
        if self.state_dir is None or not (self.state_dir / LATEST_FILE).is_file():
            return None
        path = (self.state_dir / LATEST_FILE).read_text().strip()
        if not Path(path).is_file():
            raise FileNotFoundError(f"{self.state_dir / LATEST_FILE} names {path}, which does not exist: restore "
                                    "that checkpoint folder or delete the LATEST file to start empty")
        return path

    # ------------------------------------------------------------------ env runners
    def push(self, episodes: SingleAgentEpisode | Sequence[SingleAgentEpisode], stratum: str, source: int = 0) -> int:
        """Episodes finished by one env runner (one call per sample). Synchronous mode: staged until ``flush``
        (returns 0); asynchronous: stored now (returns the number stored)."""
        episodes = [episodes] if isinstance(episodes, SingleAgentEpisode) else list(episodes)
        if self.config.deterministic:
            self._staged.setdefault(int(source), []).append((stratum, episodes))
            return 0
        return self.buffer.add(episodes, stratum)

    def push_many(self, groups: Sequence[tuple[str, Sequence[SingleAgentEpisode]]], source: int = 0) -> int:
        """Several strata in one call (what an env runner sends once per sample): ``[(stratum, episodes), ...]``,
        handled in that order exactly as that many ``push`` calls."""
        return sum(self.push(list(eps), stratum, source) for stratum, eps in groups if len(eps))

    def flush(self) -> int:
        """Store every staged push, by source then push order; returns the number of episodes stored."""
        stored = 0
        for source in sorted(self._staged):
            for stratum, episodes in self._staged[source]:
                stored += self.buffer.add(episodes, stratum)
        self._staged = {}
        return stored

    # ------------------------------------------------------------------ learners
    def sample(self, batch_size: int, mix: Mapping[str, float] | None = None) -> ReplayBatch:
        """A prioritized batch (see ``StratifiedReplayBuffer.sample``)."""
        return self.buffer.sample(batch_size, mix)

    def sample_or_none(self, batch_size: int, mix: Mapping[str, float] | None = None) -> ReplayBatch | None:
        """``sample`` with the meta-controller's mix when one is set (else ``mix``); None while the mix selects
        nothing that holds steps (an empty replay at the start of training)."""
        mix = self.mix if self.mix is not None else mix
        held = [s for s in self.buffer.strata if self.buffer.num_steps(s) > 0
                and (mix is None or float(mix.get(s, 0.0)) > 0)]
        if not held:
            return None
        return self.buffer.sample(batch_size, mix)

    def set_mix(self, mix: Mapping[str, float] | None) -> None:
        """Weights per stratum of every later sample (the meta-controller's steering); None: by size."""
        if mix is not None and (any(float(w) < 0 for w in mix.values()) or sum(map(float, mix.values())) <= 0):
            raise ValueError(f"a replay mix has weights >= 0 with a positive sum, got {dict(mix)}")
        self.mix = None if mix is None else {str(k): float(w) for k, w in mix.items()}

    # ------------------------------------------------------------------ scenario replay
    def update_levels(self, scores: Mapping[str, float], draws: Mapping[str, int]) -> dict[str, float]:
        """New value-l1 scores and the draws made since the last call (levels outside the sampler's list are
        ignored: fault-free or held-out incidents); returns the weights the env runners draw with next."""
        if self.levels is None:
            return {}
        known = set(self.levels.levels)
        for level, score in scores.items():
            if level in known:
                self.levels.update(level, float(score))
        self.levels.record_draws({k: int(n) for k, n in draws.items() if k in known})
        return self.levels.weights()

    def level_weights(self) -> dict[str, float]:
        """The current scenario weights ({} without a level sampler)."""
        return self.levels.weights() if self.levels is not None else {}

    def update_priorities(self, handle: SampleHandle, priorities: Sequence[float]) -> int:
        """New priorities for a sample's rows (see ``StratifiedReplayBuffer.update_priorities``)."""
        return self.buffer.update_priorities(handle, priorities)

    # ------------------------------------------------------------------ checkpoints
    def save(self, checkpoint_dir: str) -> str:
        """Write the state (buffer and staged pushes) to ``checkpoint_dir/replay_state.pkl`` and point
        ``state_dir/LATEST`` at it; returns the file's path."""
        state = {
            "buffer": self.buffer.state(),
            "staged": [(source, stratum, [ep.get_state() for ep in eps])
                       for source, pushes in sorted(self._staged.items()) for stratum, eps in pushes],
            "mix": self.mix,
            "levels": self.levels.state() if self.levels is not None else None,
        }
        path = Path(checkpoint_dir).resolve() / STATE_FILE
        _write_atomic(path, pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
        if self.state_dir is not None:
            _write_atomic(self.state_dir / LATEST_FILE, str(path).encode())
        logger.info("replay state saved to %s (%d env steps)", path, self.buffer.num_steps())
        return str(path)

    def load(self, path: str) -> None:
        """Replace the state with a saved one (a checkpoint folder or its state file)."""
        path = _state_file(path)
        if not path.is_file():
            raise FileNotFoundError(f"no replay state at {path}: pass the folder a ReplayActor.save() wrote")
        with open(path, "rb") as f:
            state = pickle.load(f)
        self.buffer.restore(state["buffer"])
        self._staged = {}
        for source, stratum, eps in state["staged"]:
            self._staged.setdefault(source, []).append((stratum, [SingleAgentEpisode.from_state(e) for e in eps]))
        self.mix = state.get("mix")
        if state.get("levels") is not None and self.levels is not None:
            self.levels.restore(state["levels"])
        self.restored_from = str(path)
        logger.info("replay state restored from %s (%d env steps)", path, self.buffer.num_steps())

    # ------------------------------------------------------------------ introspection
    def stats(self) -> dict[str, Any]:
        """The buffer's sizes and counters, the staged pushes and where the state came from."""
        return {**self.buffer.stats(), "staged_episodes": sum(len(e) for p in self._staged.values() for _, e in p),
                "restored_from": self.restored_from, "mix": self.mix}

    def was_restarted(self) -> bool:
        """True in an actor process that Ray started again after the first one died."""
        return ray.get_runtime_context().was_current_actor_reconstructed


def get_or_create_replay_actor(config: ReplayConfig | None = None, *, state_dir: str | None = None,
                               restore_from: str | None = None, namespace: str | None = None,
                               levels: Sequence[str] | None = None,
                               level_config: LevelSamplerConfig | None = None) -> ray.actor.ActorHandle:
    """The named replay actor: the existing one of that name (its arguments then are ignored), or a new one.

    ``state_dir``: where the actor records its last save (pass the training run's folder, e.g. ``OUT/replay``);
    without it a restarted actor comes back empty (or from ``restore_from``). ``restore_from``: a checkpoint folder
    to start from when ``state_dir`` has no save yet (resuming a run).
    """
    config = config or ReplayConfig()
    options: dict[str, Any] = dict(
        name=config.actor_name,
        get_if_exists=True,
        max_restarts=config.max_restarts,
        max_task_retries=config.max_task_retries,
        num_cpus=config.num_cpus,
        max_concurrency=1,  # one call at a time: the buffer is not thread-safe, and the order stays the call order
    )
    if namespace is not None:
        options["namespace"] = namespace
    if config.detached:
        options["lifetime"] = "detached"
    return ray.remote(ReplayActor).options(**options).remote(
        config.to_dict(), state_dir, restore_from, list(levels) if levels else None,
        level_config.to_dict() if level_config is not None else None)

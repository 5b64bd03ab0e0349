"""Stratified prioritized replay: RLlib's ``PrioritizedEpisodeReplayBuffer`` per stratum under one capacity.

A stratum is the known fault types (one stratum, ``ReplayConfig.known_stratum``) or one novel cluster. All strata
share one capacity in env steps (``ReplayConfig.capacity``) so that a surge of one new fault cannot evict the
memory of the others:

* shares: with only the known stratum it may use the whole capacity; once novel strata exist the known stratum's
  share is ``max(known_floor, 1 / number of strata)`` of the capacity and the novel strata split the rest equally;
* a stratum may grow past its share while the total is under capacity (nothing is left unused);
* when an add takes the total over capacity, the oldest episodes of the stratum furthest over its share are
  evicted (RLlib's own FIFO eviction, within that one stratum), down to its share at the least, until the total
  fits. A stratum at or under its share is never touched.

Episodes are RLlib ``SingleAgentEpisode`` objects, complete (``is_done``), as env runners produce them. Each stored
episode carries its discounted returns-to-go (``Columns.RETURNS_TO_GO``), which the self-imitation loss needs.

Sampling draws a fixed number of steps per stratum (from a mix, or in proportion to the strata's sizes) with RLlib's
proportional prioritization. Importance weights are RLlib's, per stratum: ``(N_s * P(i|s)) ** -beta`` divided by
the stratum's largest weight; they correct the prioritization inside a stratum, not the mix, which is the
meta-controller's deliberate emphasis. Beta goes linearly from ``beta`` to 1 over ``beta_anneal_samples`` calls.

Priorities are written back for the last sample of each stratum (RLlib's buffer remembers only that one): the
handle of a sample is valid until the next sample of the same stratum or an eviction in it; a stale handle is
skipped (and counted), never applied to other steps.

Typical use::

    buf = StratifiedReplayBuffer(ReplayConfig(capacity=50_000))
    buf.add(episodes, stratum="known")
    batch = buf.sample(256, mix={"known": 0.5, "novel-0": 0.5})
    ...  # loss on batch.columns[Columns.OBS], [Columns.ACTIONS], [Columns.RETURNS_TO_GO], batch.weights
    buf.update_priorities(batch.handle, np.maximum(returns - values, 0.0))
"""
from __future__ import annotations

import dataclasses
import logging
import zlib
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import tree  # dm-tree, an RLlib dependency
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.replay_buffers.prioritized_episode_buffer import PrioritizedEpisodeReplayBuffer

from ifshm_ray.replay.config import ReplayConfig

logger = logging.getLogger(__name__)

STATE_VERSION = 1
WEIGHTS = "weights"
"""Batch key of the importance-sampling weights (RLlib's buffer stores them under this extra-model-output key)."""
STRATUM = "stratum"
"""Batch key of each sampled step's stratum name."""
BEHAVIOUR_KEYS = (Columns.ACTION_DIST_INPUTS, Columns.VF_PREDS)
"""Extra model outputs a stored step may carry from the policy that took it (CLEAR's behavioural cloning,
:mod:`ifshm_ray.replay.clone`): its action distribution inputs (what RLlib's env runners store) and its value
estimate (added by :class:`~ifshm_ray.policy.replay.ReplayCallback`: PPO's env runners compute no values)."""


def has_key(key: str) -> str:
    """Batch key of the mask of the rows whose step carries ``key`` (one of :data:`BEHAVIOUR_KEYS`)."""
    return f"has_{key}"


def returns_to_go(rewards: Sequence[float], gamma: float, elapsed: Sequence[float] | None = None) -> np.ndarray:
    """Discounted return from every step to the episode's end: R_t = r_t + gamma * R_{t+1}, R_T = 0; with
    ``elapsed`` (each step's length in step intervals, semi-MDP) the discount of step t is gamma ** elapsed[t]."""
    rewards = np.asarray(rewards, dtype=np.float64)
    disc = np.full(len(rewards), gamma) if elapsed is None else gamma ** np.asarray(elapsed, np.float64)
    out = np.zeros(len(rewards), dtype=np.float64)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + disc[t] * running
        out[t] = running
    return out.astype(np.float32)


def with_returns(episode: SingleAgentEpisode, gamma: float) -> SingleAgentEpisode:
    """A numpy copy of a complete episode (no lookback, no infos) with ``Columns.RETURNS_TO_GO`` per step (semi-MDP
    discounted by the steps' ``info["elapsed_steps"]`` where the env reports them, :mod:`ifshm_ray.policy.semi_mdp`).

    A truncated episode's returns are not bootstrapped: with rewards <= 0 they overestimate R (the cost after the
    cut is missing), so (R - V)+ would favour the steps of incidents cut at the time limit, the failures.
    ``ReplayConfig.recovered_only`` (the default) keeps such episodes out of the buffer.
    """
    if not episode.is_done:
        raise ValueError(f"episode {episode.id_} is not done: push complete episodes (terminated or truncated)")
    n = len(episode)
    extra = {k: episode.get_extra_model_outputs(k) for k in episode.extra_model_outputs.keys()}
    from ifshm_ray.policy.semi_mdp import elapsed_of  # (steps of 1 interval where the env reports no length)

    extra[Columns.RETURNS_TO_GO] = returns_to_go(episode.get_rewards(), gamma, elapsed_of(episode.get_infos(), n))
    return SingleAgentEpisode(
        id_=episode.id_,
        observations=[episode.get_observations(i) for i in range(n + 1)],
        observation_space=episode.observation_space,
        actions=[episode.get_actions(i) for i in range(n)],
        action_space=episode.action_space,
        rewards=list(episode.get_rewards()),
        terminated=episode.is_terminated,
        truncated=episode.is_truncated,
        extra_model_outputs={k: list(v) for k, v in extra.items()},
        len_lookback_buffer=0,
    ).to_numpy()


def split_counts(total: int, mix: Mapping[str, float]) -> dict[str, int]:
    """``total`` split in proportion to ``mix`` (largest remainder; ties go to the earlier key): sums to ``total``."""
    names = list(mix)
    w = np.array([float(mix[k]) for k in names], dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"mix weights must be >= 0 with a positive sum, got {dict(mix)}")
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(int)
    rest = total - int(counts.sum())
    order = sorted(range(len(names)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:rest]:
        counts[i] += 1
    return {k: int(c) for k, c in zip(names, counts)}


@dataclasses.dataclass(frozen=True)
class SampleHandle:
    """What ``update_priorities`` needs to find a sample's steps again: its id and the steps per stratum, in the
    order of the batch."""

    sample_id: int
    counts: tuple[tuple[str, int], ...]


@dataclasses.dataclass
class ReplayBatch:
    """A prioritized sample: one row per step, strata in the buffer's order.

    ``columns``: ``Columns.OBS`` and ``Columns.ACTIONS`` (stacked per leaf of the spaces' structure),
    ``Columns.REWARDS``, ``Columns.RETURNS_TO_GO``, ``Columns.T`` (step index in its episode), ``STRATUM``,
    ``WEIGHTS``; for each of :data:`BEHAVIOUR_KEYS` that some sampled step carries, that column (zeros for the
    rows without it) and its mask ``has_key(key)``. (No episode ids: RLlib's sample makes a new 1-step episode
    per row, with a new id.) ``weights`` is ``columns[WEIGHTS]``; ``beta`` the exponent used.
    """

    columns: dict[str, Any]
    handle: SampleHandle
    beta: float

    @property
    def weights(self) -> np.ndarray:
        return self.columns[WEIGHTS]

    def __len__(self) -> int:
        return len(self.columns[WEIGHTS])


def cap_oversampling(mix: Mapping[str, float], sizes: Mapping[str, int], max_oversample: float) -> dict[str, float]:
    """The mix (normalised) with each stratum's share at most ``max_oversample`` times its share of the stored steps
    of the mixed strata; what a capped stratum gives up goes to the others in proportion to their weights (water
    filling; feasible since the caps sum to ``max_oversample`` >= 1). Keeps a stratum of a few recorded incidents
    from being half of every sample, each of its steps drawn again and again."""
    if max_oversample < 1.0:
        raise ValueError(f"max_oversample must be >= 1, got {max_oversample}")
    total = float(sum(sizes[s] for s in mix))
    caps = {s: max_oversample * sizes[s] / total for s in mix}
    weight = {s: float(w) for s, w in mix.items()}
    out: dict[str, float] = {}
    left = 1.0
    while weight:
        norm = sum(weight.values())
        over = [s for s, w in weight.items() if left * w / norm > caps[s] + 1e-12]
        if not over:
            out.update({s: left * w / norm for s, w in weight.items()})
            break
        for s in over:
            out[s] = caps[s]
            left -= caps[s]
            del weight[s]
    return out


class StratifiedReplayBuffer:
    """One RLlib ``PrioritizedEpisodeReplayBuffer`` per stratum under one total capacity (see the module doc)."""

    def __init__(self, config: ReplayConfig | None = None) -> None:
        self.config = config or ReplayConfig()
        self._strata: dict[str, PrioritizedEpisodeReplayBuffer] = {}
        self._num_samples = 0  # sample() calls so far (beta annealing)
        self._next_sample_id = 0
        self._pending: dict[str, int] = {}  # stratum -> id of its last sample whose priorities are not written yet
        self.num_stale_updates = 0
        self.num_filtered = 0  # episodes refused by recovered_only
        self.num_priority_updates = 0  # rows whose priority was written back

    # ------------------------------------------------------------------ strata and shares
    @property
    def strata(self) -> list[str]:
        """Stratum names: the known stratum first (if present), then novel ones in creation order."""
        return list(self._strata)

    def num_steps(self, stratum: str | None = None) -> int:
        """Env steps held (in one stratum, or in all)."""
        if stratum is not None:
            return self._strata[stratum].get_num_timesteps() if stratum in self._strata else 0
        return sum(b.get_num_timesteps() for b in self._strata.values())

    def num_episodes(self, stratum: str | None = None) -> int:
        """Episodes held (in one stratum, or in all)."""
        if stratum is not None:
            return self._strata[stratum].get_num_episodes() if stratum in self._strata else 0
        return sum(b.get_num_episodes() for b in self._strata.values())

    def shares(self) -> dict[str, int]:
        """Each stratum's share of the capacity in env steps (sums to the capacity)."""
        cap, known = self.config.capacity, self.config.known_stratum
        names = self.strata
        novel = [s for s in names if s != known]
        if not novel:
            return {s: cap for s in names}
        known_frac = max(self.config.known_floor, 1.0 / len(names)) if known in self._strata else 0.0
        each = int((cap - int(np.ceil(known_frac * cap))) // len(novel))
        out = {s: each for s in novel}
        if known in self._strata:
            out = {known: cap - each * len(novel), **out}
        else:  # no known stratum yet: the novel ones split everything
            out[novel[0]] += cap - each * len(novel)
        return out

    def beta(self) -> float:
        """The importance-sampling exponent the next ``sample`` uses (annealed linearly to 1)."""
        frac = min(1.0, self._num_samples / self.config.beta_anneal_samples)
        return self.config.beta + (1.0 - self.config.beta) * frac

    def _stratum(self, name: str) -> PrioritizedEpisodeReplayBuffer:
        if name not in self._strata:
            if not isinstance(name, str) or not name:
                raise ValueError(f"a stratum is a non-empty string, got {name!r}")
            buf = PrioritizedEpisodeReplayBuffer(capacity=self.config.capacity, alpha=self.config.alpha,
                                                 batch_length_T=1)
            buf.rng = self._rng_for(name)
            if name == self.config.known_stratum:  # the known stratum always comes first
                self._strata = {name: buf, **self._strata}
            else:
                self._strata[name] = buf
        return self._strata[name]

    def _rng_for(self, name: str) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.config.seed, zlib.crc32(name.encode())]))

    # ------------------------------------------------------------------ add and evict
    def add(self, episodes: SingleAgentEpisode | Iterable[SingleAgentEpisode], stratum: str) -> int:
        """Store complete episodes in ``stratum`` (created on first use); returns how many were stored.

        With ``recovered_only`` an episode that did not end terminated is dropped (counted in ``num_filtered``).
        Then strata over their share are trimmed (oldest first) until the total fits the capacity.
        """
        if isinstance(episodes, SingleAgentEpisode):
            episodes = [episodes]
        keep = []
        for ep in episodes:
            if self.config.recovered_only and not ep.is_terminated:
                self.num_filtered += 1
                continue
            keep.append(with_returns(ep, self.config.gamma))
        if not keep:
            return 0
        self._stratum(stratum).add(keep)
        self._evict()
        return len(keep)

    def _evict(self) -> None:
        cap = self.config.capacity
        stuck: set[str] = set()
        while self.num_steps() > cap:
            shares = self.shares()
            over = [(self.num_steps(s) - shares[s], i, s) for i, s in enumerate(self.strata)
                    if s not in stuck and self.num_steps(s) > shares[s]]
            if not over:
                logger.warning("replay holds %d env steps, over its capacity %d: every stratum over its share "
                               "holds a single episode longer than the room left", self.num_steps(), cap)
                return
            _, _, name = max(over, key=lambda x: (x[0], -x[1]))
            before = self.num_steps(name)
            target = max(shares[name], before - (self.num_steps() - cap))
            self._evict_to(name, target)
            if self.num_steps(name) == before:
                stuck.add(name)

    def _evict_to(self, name: str, target: int) -> None:
        """RLlib's own FIFO eviction of one stratum down to ``target`` env steps (its ``add`` evicts the oldest
        episodes while it holds more than ``capacity``; it keeps at least one episode)."""
        buf = self._strata[name]
        buf.capacity = target
        try:
            buf.add([])
        finally:
            buf.capacity = self.config.capacity
        self._pending.pop(name, None)  # freed tree nodes: that stratum's last sample can no longer be updated

    # ------------------------------------------------------------------ sample and priorities
    def sample(self, batch_size: int, mix: Mapping[str, float] | None = None) -> ReplayBatch:
        """``batch_size`` steps, split over strata by ``mix`` (stratum -> weight; None: in proportion to their
        sizes). Strata in the mix that hold nothing are left out and the rest renormalised."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if mix is None:
            mix = {s: self.num_steps(s) for s in self.strata}
        else:  # a stratum named in the mix but not held (a cluster with nothing stored yet) gets nothing
            mix = {s: mix[s] for s in self.strata if s in mix and self.num_steps(s) > 0}
        mix = {s: w for s, w in mix.items() if w > 0}
        if not mix:
            raise ValueError(f"nothing to sample: the mix selects no stratum that holds steps "
                             f"(strata: { {s: self.num_steps(s) for s in self.strata} })")
        if self.config.max_oversample is not None:
            mix = cap_oversampling(mix, {s: self.num_steps(s) for s in mix}, self.config.max_oversample)
        beta = self.beta()
        counts = {s: c for s, c in split_counts(batch_size, mix).items() if c > 0}
        sample_id = self._next_sample_id
        self._next_sample_id += 1
        rows = []
        for name, n in counts.items():
            eps = self._strata[name].sample(n, beta=beta, gamma=self.config.gamma, include_extra_model_outputs=True)
            self._pending[name] = sample_id
            rows.extend((name, ep) for ep in eps)
        self._num_samples += 1
        columns = {
            Columns.OBS: tree.map_structure(lambda *x: np.stack(x), *[ep.get_observations(0) for _, ep in rows]),
            Columns.ACTIONS: tree.map_structure(lambda *x: np.stack(x), *[ep.get_actions(0) for _, ep in rows]),
            Columns.REWARDS: np.array([ep.get_rewards(0) for _, ep in rows], dtype=np.float32),
            Columns.RETURNS_TO_GO: np.array([ep.get_extra_model_outputs(Columns.RETURNS_TO_GO, 0) for _, ep in rows],
                                            dtype=np.float32),
            Columns.T: np.array([ep.t_started for _, ep in rows], dtype=np.int64),
            STRATUM: np.array([name for name, _ in rows]),
            WEIGHTS: np.array([ep.get_extra_model_outputs(WEIGHTS, 0) for _, ep in rows], dtype=np.float32),
        }
        for key in BEHAVIOUR_KEYS:  # behaviour outputs where the steps carry them; zeros and a False mask elsewhere
            has = np.array([key in ep.extra_model_outputs for _, ep in rows], dtype=bool)
            if has.any():
                vals = [np.asarray(ep.get_extra_model_outputs(key, 0), np.float32) if h else None
                        for h, (_, ep) in zip(has, rows)]
                zero = np.zeros_like(next(v for v in vals if v is not None))
                columns[key] = np.stack([zero if v is None else v for v in vals])
                columns[has_key(key)] = has
        return ReplayBatch(columns=columns, handle=SampleHandle(sample_id, tuple(counts.items())), beta=beta)

    def update_priorities(self, handle: SampleHandle, priorities: Sequence[float]) -> int:
        """Write new priorities (e.g. the self-imitation priority (R - V)+; ``priority_eps`` is added) for the rows
        of a sample, in its order. Returns the number of rows written: the rows of a stratum sampled again or
        evicted from since then are skipped (stale, counted in ``num_stale_updates``)."""
        priorities = np.asarray(priorities, dtype=np.float64)
        total = sum(n for _, n in handle.counts)
        if priorities.shape != (total,):
            raise ValueError(f"priorities must have shape ({total},) like the sample, got {priorities.shape}")
        if (priorities < 0).any() or not np.isfinite(priorities).all():
            raise ValueError("priorities must be finite and >= 0 (pass (R - V)+ or |TD error|)")
        written, start = 0, 0
        for name, n in handle.counts:
            part = priorities[start:start + n] + self.config.priority_eps
            start += n
            if self._pending.get(name) != handle.sample_id:
                self.num_stale_updates += n
                continue
            self._strata[name].update_priorities(part)
            del self._pending[name]
            written += n
        self.num_priority_updates += written
        return written

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """Everything needed to continue (picklable): strata contents and priorities, generators, counters.
        Pending samples are not kept: their handles are stale after ``restore``."""
        return {
            "version": STATE_VERSION,
            "capacity": self.config.capacity,
            "strata": [(name, buf.get_state(), buf.rng.bit_generator.state) for name, buf in self._strata.items()],
            "num_samples": self._num_samples,
            "next_sample_id": self._next_sample_id,
            "num_stale_updates": self.num_stale_updates,
            "num_filtered": self.num_filtered,
            "num_priority_updates": self.num_priority_updates,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Replace the contents with a ``state()`` (the capacity must be the same)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"replay state version {state.get('version')!r}, this code reads {STATE_VERSION}")
        if state["capacity"] != self.config.capacity:
            raise ValueError(f"replay state has capacity {state['capacity']}, the config {self.config.capacity}: "
                             "set replay.capacity to the saved value")
        self._strata = {}
        self._pending = {}
        for name, buf_state, rng_state in state["strata"]:
            buf = self._stratum(name)
            buf.set_state(buf_state)
            buf.rng.bit_generator.state = rng_state
        self._num_samples = state["num_samples"]
        self._next_sample_id = state["next_sample_id"]
        self.num_stale_updates = state["num_stale_updates"]
        self.num_filtered = state["num_filtered"]
        self.num_priority_updates = state.get("num_priority_updates", 0)

    def stats(self) -> dict[str, Any]:
        """Sizes per stratum (env steps, episodes, share) and counters, for logging."""
        shares = self.shares()
        return {
            "num_steps": self.num_steps(),
            "capacity": self.config.capacity,
            "beta": self.beta(),
            "num_samples": self._num_samples,
            "num_stale_updates": self.num_stale_updates,
            "num_filtered": self.num_filtered,
            "num_priority_updates": self.num_priority_updates,
            "strata": {s: {"num_steps": self.num_steps(s), "num_episodes": self.num_episodes(s), "share": shares[s]}
                       for s in self.strata},
        }

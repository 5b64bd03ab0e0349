"""Prioritized level replay over fault types (Jiang et al. 2021, "Prioritized Level Replay").

A level is a fault type the simulator can re-create (scenario replay: rehearsal of the known types, never the
stream of new ones). Each level keeps a score, the mean |GAE| of its latest episode (the paper's value-l1 score:
how much the value function is still wrong there), smoothed by ``score_alpha``. The next level is drawn from

    P_replay = (1 - staleness_coef) * P_score + staleness_coef * P_staleness

    P_score(l)     = h(l) / sum_j h(j),  h(l) = (1 / rank(l)) ** (1 / temperature)   (rank 1: the highest score)
    P_staleness(l) = s(l) ** (1 / staleness_temperature) / sum_j (...),  s(l): draws since l was last drawn

over the levels seen so far, mixed with the unseen ones by the paper's proportionate schedule: with f the fraction
of levels seen, P = f * P_replay + (1 - f) * uniform(unseen) once f >= rho, and uniform(unseen) before.
:meth:`LevelSampler.probabilities` returns that vector exactly; :meth:`LevelSampler.sample` draws from it.

Deviations from the reference code (facebookresearch/level-replay), all for a small fixed set of levels: ranks
are taken among the seen levels only (the reference ranks unseen levels too, with score 0, before zeroing them),
ties in score keep the levels' order (earlier level, better rank), and a level's first score is taken as is (the
reference smooths it against 0).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ifshm_ray.replay.config import LevelSamplerConfig


def value_l1_score(advantages: Sequence[float]) -> float:
    """The value-l1 score of one episode: mean |GAE advantage| over its steps."""
    adv = np.asarray(advantages, dtype=np.float64)
    if adv.size == 0:
        raise ValueError("value_l1_score needs at least one advantage")
    return float(np.abs(adv).mean())


def rank_weights(scores: Sequence[float], temperature: float) -> np.ndarray:
    """(1 / rank) ** (1 / temperature), rank 1 for the highest score; ties: the earlier entry ranks higher."""
    scores = np.asarray(scores, dtype=np.float64)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    return (1.0 / ranks) ** (1.0 / temperature)


class LevelSampler:
    """Prioritized level replay over a fixed list of levels (fault type names)."""

    def __init__(self, levels: Sequence[str], config: LevelSamplerConfig | None = None) -> None:
        levels = list(levels)
        if not levels or len(set(levels)) != len(levels):
            raise ValueError(f"levels must be a non-empty list of distinct names, got {levels}")
        self.levels = levels
        self.config = config or LevelSamplerConfig()
        self._index = {name: i for i, name in enumerate(levels)}
        self.scores = np.zeros(len(levels))
        self.seen = np.zeros(len(levels), dtype=bool)
        self.staleness = np.zeros(len(levels))
        self.rng = np.random.default_rng(self.config.seed)

    def update(self, level: str, score: float) -> None:
        """A new score for ``level`` (e.g. :func:`value_l1_score` of its latest episode's advantages)."""
        if level not in self._index:
            raise KeyError(f"unknown level {level!r}; levels: {self.levels}")
        if not np.isfinite(score) or score < 0:
            raise ValueError(f"a level score is finite and >= 0, got {score} for {level!r}")
        i = self._index[level]
        a = self.config.score_alpha
        self.scores[i] = score if not self.seen[i] else (1.0 - a) * self.scores[i] + a * score
        self.seen[i] = True

    def update_with_advantages(self, level: str, advantages: Sequence[float]) -> None:
        """``update(level, value_l1_score(advantages))``."""
        self.update(level, value_l1_score(advantages))

    def replay_probabilities(self) -> np.ndarray:
        """P_replay over all levels (zero on unseen ones; all zero while none is seen)."""
        out = np.zeros(len(self.levels))
        seen = np.flatnonzero(self.seen)
        if seen.size == 0:
            return out
        w = rank_weights(self.scores[seen], self.config.temperature)
        p = w / w.sum()
        c = self.config.staleness_coef
        if c > 0:
            s = self.staleness[seen] ** (1.0 / self.config.staleness_temperature)
            if s.sum() > 0:
                p = (1.0 - c) * p + c * s / s.sum()
            # all staleness zero (nothing drawn yet): the staleness part is empty; the score part keeps its mass,
            # as in the reference code
        out[seen] = p / p.sum()
        return out

    def probabilities(self) -> np.ndarray:
        """The exact distribution of the next :meth:`sample` over ``levels``."""
        n = len(self.levels)
        num_seen = int(self.seen.sum())
        unseen = np.where(self.seen, 0.0, 1.0)
        if num_seen == 0:
            return np.full(n, 1.0 / n)
        f = num_seen / n
        if num_seen == n:
            return self.replay_probabilities()
        if f < self.config.rho:
            return unseen / unseen.sum()
        return f * self.replay_probabilities() + (1.0 - f) * unseen / unseen.sum()

    def sample(self) -> str:
        """Draw the next level; staleness grows by one for every level but the one drawn (reset to 0)."""
        i = int(self.rng.choice(len(self.levels), p=self.probabilities()))
        self.staleness += 1.0
        self.staleness[i] = 0.0
        return self.levels[i]

    def record_draws(self, counts: Mapping[str, int]) -> None:
        """Draws made elsewhere (the env runners draw levels with :meth:`weights`): staleness grows by the number
        of draws for every level, and a level drawn at least once goes back to 0 (as :meth:`sample` does per
        draw, with the order of draws inside the batch not known)."""
        bad = [k for k in counts if k not in self._index]
        if bad:
            raise KeyError(f"unknown level(s) {bad}; levels: {self.levels}")
        if any(int(n) < 0 for n in counts.values()):
            raise ValueError(f"draw counts must be >= 0, got {dict(counts)}")
        total = sum(int(n) for n in counts.values())
        if total == 0:
            return
        self.staleness += float(total)
        for name, n in counts.items():
            if int(n) > 0:
                self.staleness[self._index[name]] = 0.0

    def weights(self) -> dict[str, float]:
        """``probabilities()`` by level name (what the env runners are told)."""
        return dict(zip(self.levels, map(float, self.probabilities())))

    def state(self) -> dict[str, Any]:
        """Picklable state (levels, scores, seen, staleness, generator)."""
        return {"levels": list(self.levels), "scores": self.scores.tolist(), "seen": self.seen.tolist(),
                "staleness": self.staleness.tolist(), "rng": self.rng.bit_generator.state}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from a ``state()`` of a sampler over the same levels."""
        if list(state["levels"]) != self.levels:
            raise ValueError(f"saved levels {state['levels']} differ from this sampler's {self.levels}")
        self.scores = np.array(state["scores"], dtype=np.float64)
        self.seen = np.array(state["seen"], dtype=bool)
        self.staleness = np.array(state["staleness"], dtype=np.float64)
        self.rng.bit_generator.state = state["rng"]

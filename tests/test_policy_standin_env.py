"""A small stand-in for ``ifshm_ray.env.FaultInjectionEnv`` with the same spaces (used by the policy unit tests).

Spec (C=10 categories, T=22 targets: 16 services then 6 nodes, R=4 ratio levels, F=64 features):

* A hidden fault is drawn at reset: the healing action ``(c*, t*, r*)``. ``obs[:C]`` is a noisy one-hot of c*,
  ``obs[C:C+T]`` a noisy one-hot of t*, ``obs[C+T:C+T+R]`` a noisy one-hot of r* (only for ratio categories),
  the rest is noise.
* ``action_mask``: "none" categories (observe, escalate) allow target 0 only, service categories the services,
  node categories the nodes; a few random (c, t) pairs are masked out (never the healing one).
* ``ratio_mask``: ratio categories (scale, reallocate) allow every level, the others level 0 only.
* Reward: -1 per step (time unhealthy), -0.5 extra for a "harmful" action (restart/drain on a wrong target),
  +10 when the healing action is applied (terminated). ``truncated`` after ``max_steps`` (default 8).
* ``info`` at episode end: ``mttr_s`` (30 s per step), ``recovered``, ``success``, ``harmful_actions``.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from ifshm_ray.sim.actions import CATEGORIES, CATEGORY_TARGET_KIND, RATIO_CATEGORIES, RATIO_LEVELS

C, T, R, F = len(CATEGORIES), 22, len(RATIO_LEVELS), 64
N_SERVICES = 16
STEP_S = 30.0


class StandInFaultEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, config: dict | None = None):
        config = dict(config or {})
        self.max_steps = int(config.get("max_steps", 8))
        self.noise = float(config.get("noise", 0.1))
        self.target_names = [f"svc-{i}" for i in range(N_SERVICES)] + [f"node-{i}" for i in range(T - N_SERVICES)]
        self.observation_space = gym.spaces.Dict({
            "obs": gym.spaces.Box(-np.inf, np.inf, (F,), np.float32),
            "action_mask": gym.spaces.Box(0.0, 1.0, (C * T,), np.float32),
            "ratio_mask": gym.spaces.Box(0.0, 1.0, (C * R,), np.float32),
        })
        self.action_space = gym.spaces.Tuple((gym.spaces.Discrete(C), gym.spaces.Discrete(T), gym.spaces.Discrete(R)))
        self._ratio_mask = np.zeros((C, R), np.float32)
        for ci, name in enumerate(CATEGORIES):
            if name in RATIO_CATEGORIES:
                self._ratio_mask[ci] = 1.0
            else:
                self._ratio_mask[ci, 0] = 1.0
        self._fault = (0, 0, 0)

    def _base_mask(self) -> np.ndarray:
        m = np.zeros((C, T), np.float32)
        for ci, name in enumerate(CATEGORIES):
            kind = CATEGORY_TARGET_KIND[name]
            if kind == "none":
                m[ci, 0] = 1.0
            elif kind == "service":
                m[ci, :N_SERVICES] = 1.0
            else:
                m[ci, N_SERVICES:] = 1.0
        return m

    def _obs(self):
        c, t, r = self._fault
        x = self.np_random.normal(0.0, self.noise, F).astype(np.float32)
        x[c] += 1.0
        x[C + t] += 1.0
        if CATEGORIES[c] in RATIO_CATEGORIES:
            x[C + T + r] += 1.0
        return {"obs": x, "action_mask": self._mask.reshape(-1).copy(), "ratio_mask": self._ratio_mask.reshape(-1).copy()}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        rng = self.np_random
        # Healing categories: restart, migrate, scale, rollback, reallocate, drain, clear_storage, reroute.
        c = int(rng.integers(1, C - 1))
        kind = CATEGORY_TARGET_KIND[CATEGORIES[c]]
        t = int(rng.integers(0, N_SERVICES)) if kind == "service" else int(rng.integers(N_SERVICES, T))
        r = int(rng.integers(0, R)) if CATEGORIES[c] in RATIO_CATEGORIES else 0
        self._fault = (c, t, r)
        self._mask = self._base_mask()
        drop = rng.random((C, T)) < 0.1
        drop[c, t] = False
        drop[:, 0] = False
        self._mask[drop] = 0.0
        self._steps = 0
        self._harmful = 0
        self.invalid_actions = 0
        return self._obs(), {}

    def step(self, action):
        c, t, r = (int(a) for a in action)
        self._steps += 1
        reward = -1.0
        self.invalid_actions += int(self._mask[c, t] != 1.0 or self._ratio_mask[c, r] != 1.0)
        healed = (c, t, r) == self._fault
        if not healed and CATEGORIES[c] in ("restart", "drain") and t != self._fault[1]:
            reward -= 0.5
            self._harmful += 1
        if healed:
            reward += 10.0
        terminated = healed
        truncated = not healed and self._steps >= self.max_steps
        info = {}
        if terminated or truncated:
            info = {"mttr_s": self._steps * STEP_S, "recovered": healed, "success": healed,
                    "harmful_actions": self._harmful, "invalid_actions": self.invalid_actions}
        return self._obs(), reward, terminated, truncated, info


def test_standin_env_passes_check_env():
    from gymnasium.utils.env_checker import check_env

    env = StandInFaultEnv()
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs["action_mask"].shape == (C * T,)

"""Gymnasium environments over the fault-injection simulator."""
from __future__ import annotations

import hashlib
import json
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ifshm_ray.config import ConfigError, SimConfig, from_dict
from ifshm_ray.env.features import Featurizer
from ifshm_ray.sim.actions import CATEGORIES, NUM_RATIOS, RATIO_CATEGORIES, RATIO_LEVELS, Action
from ifshm_ray.sim.catalog import ratio_level_for, TGT_NAMED
from ifshm_ray.sim.core import BatchedSim, SimError
from ifshm_ray.sim.render import Renderer, TemplateMiner

ENV_ID = "ifshm/FaultInjection-v0"
RLLIB_ENV_NAME = "ifshm-fault-v0"
_ENV_KEYS = ("render_telemetry", "mine_logs", "strict_actions")
VECTOR_ONLY_KEYS = ("num_envs", "fault_weights")
ELAPSED_STEPS_KEY = "elapsed_steps"
"""info key: the step's length in step intervals (1 + action duration / step_s), reported by both envs when
``reward.duration_discount`` is set (the learner's semi-MDP GAE and the replay's returns read it)."""
"""Env-config keys that only the vector entry points take (RLlib's ``num_envs``; the continual protocol's stream env,
:func:`ifshm_ray.meta.continual.make_stream_env`, draws the first fault with ``fault_weights``). A single env, the
policy bundle's manifest and Serve drop them: the observation layout and alert rules do not depend on them."""
_RATIO_CATEGORY = np.array([c in RATIO_CATEGORIES for c in CATEGORIES])


def split_env_config(config: dict | None) -> tuple[SimConfig, dict]:
    """Split an env config dict into a :class:`SimConfig` and the env-only options."""
    config = dict(config or {})
    opts = {k: config.pop(k) for k in _ENV_KEYS if k in config}
    config.pop("seed", None)
    for k in VECTOR_ONLY_KEYS:
        config.pop(k, None)
    if isinstance(config.get("sim"), SimConfig):
        return config["sim"], opts
    if "sim" in config:
        config = {**config.pop("sim"), **config}
    return from_dict(SimConfig, config), opts


def sample_valid_actions(mask: np.ndarray, rng: np.random.Generator, num_targets: int) -> np.ndarray:
    """Uniformly random valid ``(category, target, ratio)`` per row of a ``[B, C*T]`` action mask: uniform over the
    valid (category, target) pairs, a uniform ratio level where the category reads one (else 0). Used by the
    benchmarks and the reproducibility check to exercise every action mechanic."""
    u = rng.random(mask.shape) * mask
    flat = u.argmax(axis=1)
    c, t = flat // num_targets, flat % num_targets
    r = np.where(_RATIO_CATEGORY[c], rng.integers(0, NUM_RATIOS, len(c)), 0)
    return np.stack([c, t, r], axis=1)


def action_space_hash(space: gym.Space, topology: dict) -> str:
    """Hash of the action space and the targets it indexes (checked when a trained policy is loaded)."""
    desc = {"space": str(space), "categories": list(CATEGORIES), "ratios": list(RATIO_LEVELS), "topology": topology}
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]


class FaultInjectionEnv(gym.Env):
    """A simulated cloud AI platform in trouble; the agent must heal it.

    **Episode.** At reset a fault type is drawn from ``faults`` (weighted by its catalog frequency; with probability
    ``compound_prob`` a second one joins it; with probability ``fault_free_prob`` there is no fault at all, and
    ``reset(options={"faults": "none"})`` forces such a fault-free episode) and injected at a random time in ``[0,
    inject_max_delay_s]`` into a root node or service. Faults propagate along service dependencies and show up,
    after their onset, in metrics, alarms and log lines (as far as the cluster's log pipeline ships them and the
    fault logs them at all, after their delay: ``sim/data/observability.yaml``) (mixed with benign lines, benign
    transients that can raise false alarms, diurnal load and noise).

    **Action space.** ``Tuple(Discrete(C), Discrete(T), Discrete(R))``: the category (``CATEGORIES``: observe,
    restart, migrate, scale, rollback, reallocate, drain, clear_storage, reroute, escalate), the target (services
    then nodes, ``topology.targets``) and the ratio level (``RATIO_LEVELS``, read by scale/reallocate only).
    Combinations that the observation's masks forbid are invalid: with ``strict_actions=True`` they raise
    :class:`SimError`; otherwise (default, so that generic checkers can sample the space) they are executed as
    ``observe`` and flagged in ``info["invalid_action"]``. Indices outside the space always raise.

    **Observation space.** ``Dict(obs=Box(F), action_mask=Box(C*T), ratio_mask=Box(C*R))``. ``obs`` holds per-service
    metric features (p99 latency / SLO, error rate, throughput deficit, unready fraction, CPU, memory, restarts),
    per-node features (CPU, memory, disk, GPU util / temperature / last Xid / framebuffer, network errors and
    latency, NotReady, clock offset), alert flags (pending and firing for each rule), log1p counts of log templates
    mined from the rendered log text, SLO green (by the reported metrics), the age of the oldest active alert, the
    incident memory (category, target and steps ago of the last ``memory_actions`` actions other than observe) and
    the cordoned nodes (:mod:`ifshm_ray.env.features`). It is a function of the raw telemetry and of the agent's own
    executed actions only (an action the masks refuse counts as observe): ``info["telemetry"]`` holds that telemetry
    (logs, metric windows, alarms) in the schema of :mod:`ifshm_ray.telemetry`, and
    :class:`~ifshm_ray.env.observation.TelemetryObserver` rebuilds the observation from it and the actions exactly
    (tested). ``render_telemetry=False`` skips the rendering for speed; the features then come from the simulator's
    arrays the text would be rendered from, with the same values (tested).

    **Time.** One step is one decision: simulated time advances by ``step_s`` plus the action's duration (e.g. a
    drain takes minutes, ``escalate`` the human response plus fix time).

    **Reward.** ``-(minutes unhealthy) * unhealthy_weight - action cost - harm_penalty * harmful
    - false_alarm_penalty`` (acting while no fault is active) ``- invalid_action_penalty`` (an action the masks
    forbid, executed as ``observe`` in lenient mode; default 1.0). The weights are ``SimConfig.reward``
    (:class:`~ifshm_ray.config.RewardConfig`). Unhealthy minutes are counted only up to ``time_limit_s``: the step
    that crosses it (an action running past it, a page above all) is charged the time left, as observing is.

    **Episode end.** ``terminated`` once the root cause is cleared and every SLO (p99 latency, error rate, throughput)
    has held, with every service at its replicas, for ``healthy_steps`` consecutive steps; ``truncated`` at
    ``time_limit_s`` (always, in a fault-free episode: there is nothing to recover from). MTTR runs from injection
    to the first of those healthy steps. ``escalate`` hands the incident to a human: it may recover, but never
    counts as a success.

    **Determinism.** Fully determined by the reset seed (counter-based randomness).

    Version history: v0 (initial); observation v2: no hidden state (v1 held the episode time fraction and a
    healthy streak that counted steps with the hidden root cause cleared; metrics were read unrounded), SLO green,
    alert age and incident memory instead of the last action category (policies of v1 do not fit).
    """

    metadata = {"render_modes": []}

    def __init__(self, config: dict | None = None):
        try:
            self.sim_cfg, opts = split_env_config(config)
        except ConfigError as e:
            raise ConfigError(f"invalid FaultInjectionEnv config: {e}") from e
        self.render_telemetry = bool(opts.get("render_telemetry", True))
        self.mine_logs = bool(opts.get("mine_logs", self.render_telemetry))
        self.strict_actions = bool(opts.get("strict_actions", False))
        self.sim = BatchedSim(self.sim_cfg, batch_size=1)
        self.featurizer = Featurizer(self.sim)
        self.topology = self.sim.topo
        self.renderer = Renderer(self.sim)
        self.miner = TemplateMiner(self.sim) if self.mine_logs else None
        C, T, R = len(CATEGORIES), self.topology.T, NUM_RATIOS
        self.action_space = spaces.Tuple((spaces.Discrete(C), spaces.Discrete(T), spaces.Discrete(R)))
        self.observation_space = spaces.Dict({
            "obs": spaces.Box(-np.inf, np.inf, (self.featurizer.obs_dim,), np.float32),
            "action_mask": spaces.Box(0.0, 1.0, (C * T,), np.float32),
            "ratio_mask": spaces.Box(0.0, 1.0, (C * R,), np.float32),
        })
        self.action_space_hash = action_space_hash(self.action_space, self.topology.to_dict())
        self._ratio_mask = self.sim.action_masks()[1].astype(np.float32)  # (constant)
        self.obs_layout = dict(self.featurizer.layout)
        self._last_telemetry: dict | None = None
        self._ep_return = 0.0

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        key = int(self.np_random.integers(0, 2**63 - 1))
        faults = None
        if options and options.get("faults") is not None:
            faults = [options["faults"]]
        self.sim.reset([0], [key], faults=faults)
        self._ep_return = 0.0
        obs = self._obs()
        return obs, self._info()

    def step(self, action):
        a = self._decode(action)
        invalid = False
        try:
            res = self.sim.step(a[None, :])
        except SimError:
            if self.strict_actions or not self._in_space(*a.tolist()):
                raise
            invalid = True
            res = self.sim.step(np.zeros((1, 3), np.int64))
        r = float(res.reward[0]) - (self.sim_cfg.reward.invalid_action_penalty if invalid else 0.0)
        self._ep_return += r
        terminated, truncated = bool(res.terminated[0]), bool(res.truncated[0])
        obs = self._obs()
        info = self._info()
        info["invalid_action"] = invalid
        info["harmful"] = bool(res.harmful[0])
        dd = self.sim_cfg.reward.duration_discount
        if dd is not None and dd < 1.0:  # the step's length, for semi-MDP discounting (policy/semi_mdp.py)
            info[ELAPSED_STEPS_KEY] = float(res.elapsed_steps[0])
        if terminated or truncated:
            info.update(self.sim.episode_stats(0))
            info["episode_return"] = self._ep_return
        return obs, r, terminated, truncated, info

    # ------------------------------------------------------------------ helpers
    def _in_space(self, c: int, t: int, r: int) -> bool:
        return 0 <= c < len(CATEGORIES) and 0 <= t < self.topology.T and 0 <= r < NUM_RATIOS

    def _decode(self, action) -> np.ndarray:
        if isinstance(action, Action):
            return self.encode(action)
        if isinstance(action, dict):
            action = (action.get("category"), action.get("target"), action.get("ratio"))
        try:
            c, t, r = (int(x) for x in action)
        except (TypeError, ValueError):
            raise SimError(f"action must be a (category, target, ratio) triple of integers, got {action!r}") from None
        a = np.array((c, t, r), np.int64)
        if not self._in_space(c, t, r):
            raise SimError(f"action {tuple(a)} is outside the action space: category in [0, {len(CATEGORIES)}) "
                           f"{list(CATEGORIES)}, target in [0, {self.topology.T}) {self.topology.targets}, "
                           f"ratio level in [0, {NUM_RATIOS}) {list(RATIO_LEVELS)}")
        return a

    def encode(self, action: Action) -> np.ndarray:
        """Action object (names) -> index triple; unknown names raise with the valid choices."""
        if action.category not in CATEGORIES:
            raise SimError(f"unknown action category {action.category!r}; valid: {list(CATEGORIES)}")
        c = CATEGORIES.index(action.category)
        t = 0
        if action.target is not None:
            if action.target not in self.topology.targets:
                raise SimError(f"unknown target {action.target!r}; valid: {self.topology.targets}")
            t = self.topology.targets.index(action.target)
        r = 0
        if action.ratio is not None:
            if action.ratio not in RATIO_LEVELS:
                raise SimError(f"unknown ratio {action.ratio!r}; valid: {list(RATIO_LEVELS)}")
            r = RATIO_LEVELS.index(action.ratio)
        return np.array([c, t, r], np.int64)

    def decode(self, a) -> Action:
        c, t, r = (int(x) for x in a)
        name = CATEGORIES[c]
        from ifshm_ray.sim.actions import CATEGORY_TARGET_KIND, RATIO_CATEGORIES
        return Action(name, None if CATEGORY_TARGET_KIND[name] == "none" else self.topology.targets[t],
                      RATIO_LEVELS[r] if name in RATIO_CATEGORIES else None)

    def _obs(self) -> dict:
        tm, rm = self.sim.action_masks()
        if self.render_telemetry:
            self._last_telemetry = self.renderer.telemetry(0)
        if self.mine_logs and self._last_telemetry is not None:
            counts, svc_lines, node_lines, _ = self.miner.mine(self._last_telemetry["logs"])
            x = self.featurizer.features(counts[None], svc_lines[None], node_lines[None])[0]
        else:
            x = self.featurizer.features()[0]
        return {"obs": x, "action_mask": tm[0], "ratio_mask": self._ratio_mask.copy()}  # (tm: fresh float32)

    def _info(self) -> dict:
        info: dict[str, Any] = {"time_s": float(self.sim.t[0])}
        if self.render_telemetry:
            info["telemetry"] = self._last_telemetry
        return info

    # ------------------------------------------------------------------ evaluation-only ground truth
    def incident(self) -> dict:
        """The injected faults (ground truth; for evaluation and the oracle, never for a policy)."""
        return self.sim.incident(0)

    def oracle_action(self) -> np.ndarray:
        """What a perfect operator does: the catalog's healing remedy with the least expected time to the fix for
        the first still-active fault, once its first symptom has shown (an intermittent one need not show right
        now); ``observe`` before that. It knows the remedies (their mean drawn duration, their failure probability,
        how many actions they take: one migration per service on a faulty node) and the cluster's free capacity,
        not its luck: a remedy that would run out of room is skipped (a migration off a node whose workload does not
        fit elsewhere, a scale-out into a full GPU pool), and a remedy that failed (disruption budget, aborted
        migration, GPU reset refused) is simply tried again. Used by the oracle baseline."""
        from ifshm_ray.sim.actions import CATEGORY_TARGET_KIND

        sim, cc, topo = self.sim, self.sim.cc, self.topology
        started = sim.symptoms_started(0)
        P = sim.P[0]
        gpu_used = P.T @ topo.svc_gpus                                   # [N]
        free = np.where(sim.cordoned[0], 0.0, np.maximum(topo.node_gpus - gpu_used, 0.0))
        tm, rm = sim.action_masks()
        for k in range(sim.f_id.shape[1]):
            f = int(sim.f_id[0, k])
            if f >= cc.F or not started[k]:
                continue
            root = int(sim.f_root[0, k])
            best, best_cost = None, np.inf
            for rem in cc.remedy_table(f):
                c = rem["category"]
                cname = CATEGORIES[c]
                kind = CATEGORY_TARGET_KIND[cname]
                if rem["spec"] == TGT_NAMED:
                    t = rem["named"]
                elif kind == "service" and not cc.target_is_node[f]:
                    t = root
                elif kind == "node" and cc.target_is_node[f]:
                    t = topo.S + root
                elif kind == "service":  # service on the root node
                    on = np.flatnonzero((P[:, root] > 1e-9) & ~topo.daemonset)
                    if len(on) == 0:
                        continue
                    t = int(on[np.argmax(topo.svc_gpus[on])])
                else:  # node hosting the root service
                    t = topo.S + sim._host(0, root)
                r = ratio_level_for(rem["min_ratio"]) if rem["min_ratio"] > 0 else 0
                n_actions = 1
                if cname == "migrate" and cc.target_is_node[f]:
                    # everything the fault hurts must fit on the other schedulable nodes
                    svcs = [t] if rem["spec"] == TGT_NAMED else np.flatnonzero(~topo.daemonset)
                    need = float((P[svcs, root] * topo.svc_gpus[svcs]).sum())
                    if need > free.sum() - free[root] + 1e-9:
                        continue
                    if rem["spec"] != TGT_NAMED:  # one migration per service left on the node
                        n_actions = int(((P[:, root] > 1e-9) & ~topo.daemonset).sum())
                if cname == "scale" and t < topo.S:
                    cur = float(sim.replicas[0, t])
                    new = min(round(cur * RATIO_LEVELS[r]), 4 * topo.base_replicas[t])
                    room = float((free * topo.allowed[t]).sum())
                    if topo.svc_gpus[t] > 0 and (new - cur) * topo.svc_gpus[t] > room + 1e-9:
                        continue
                cost = n_actions * rem["duration"] / max(1.0 - float(cc.fail_prob[f, c]), 1e-9)
                if tm[0, c * topo.T + t] > 0 and rm[c * NUM_RATIOS + r] > 0 and cost < best_cost:
                    best, best_cost = np.array([c, t, r], np.int64), cost
            if best is not None:
                return best
        return np.zeros(3, np.int64)


class FaultInjectionVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` clusters in one :class:`BatchedSim` (B clusters per numpy call) behind the gymnasium
    ``VectorEnv`` API, with gymnasium's default NEXT_STEP autoreset (the step after an episode ends resets that
    sub-env and ignores its action), as RLlib's env runners expect. Sub-env i seeded with ``seed + i`` (or with
    ``seed[i]`` when ``seed`` is a list) behaves exactly like ``FaultInjectionEnv({...})`` reset with that seed
    (the same observations as one rendering telemetry: they are computed from the arrays it is rendered from).
    ``reset(options={"faults": [...]})`` forces the fault of each sub-env (one entry per sub-env: a name, a list of
    names for a compound incident, or "none" for a fault-free episode; one string applies to all) for that reset;
    auto-resets draw from ``faults`` (fault-free with ``fault_free_prob``). Training uses it
    (``config.environment(env=make_vector_env)`` and ``gym_env_vectorize_mode="vector_entry_point"``), and
    ``benchmarks/bench_sim.py`` measures it.

    Episode-end info (``mttr_s``, ``recovered``, ``success``, ``escalated``, ``harmful_actions``, ``detect_s``,
    ``episode_return``, ``fault_free``, ``actions``)
    comes as gymnasium vector infos (value arrays plus ``_<key>`` masks)."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}
    _END_KEYS = ("mttr_s", "recovered", "success", "escalated", "harmful_actions", "detect_s", "episode_return",
                 "fault_free", "actions")

    def __init__(self, config: dict | None = None, num_envs: int = 1):
        config = dict(config or {})
        num_envs = int(config.pop("num_envs", num_envs))
        single = FaultInjectionEnv({**config, "render_telemetry": False})
        self.num_envs = num_envs
        self.single_observation_space = single.observation_space
        self.single_action_space = single.action_space
        self.observation_space = gym.vector.utils.batch_space(single.observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(single.action_space, num_envs)
        self.topology = single.topology
        self.action_space_hash = single.action_space_hash
        self.sim_cfg = single.sim_cfg
        self.sim = BatchedSim(self.sim_cfg, batch_size=num_envs)
        dd = self.sim_cfg.reward.duration_discount
        self._semi_mdp = dd is not None and dd < 1.0
        self.featurizer = Featurizer(self.sim)
        self.obs_layout = dict(self.featurizer.layout)
        self._rngs = [np.random.default_rng(i) for i in range(num_envs)]
        self._needs_reset = np.zeros(num_envs, bool)
        self._ret = np.zeros(num_envs)

    def _obs(self) -> dict:
        tm, rm = self.sim.action_masks()  # (tm: a fresh float32 array)
        return {"obs": self.featurizer.features(), "action_mask": tm,
                "ratio_mask": np.tile(rm.astype(np.float32), (self.num_envs, 1))}

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        if seed is not None:
            seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed + i for i in range(self.num_envs)]
            self._rngs = [np.random.default_rng(s) for s in seeds]
        keys = [int(r.integers(0, 2**63 - 1)) for r in self._rngs]
        faults = (options or {}).get("faults")
        if isinstance(faults, str):  # one name (or "none": fault-free) for every sub-env
            faults = [faults] * self.num_envs
        if faults is not None and len(faults) != self.num_envs:
            raise SimError(f"options['faults'] needs one entry per sub-env ({self.num_envs}), got {len(faults)}")
        self.sim.reset(np.arange(self.num_envs), keys, faults=faults)
        self._needs_reset[:] = False
        self._ret[:] = 0.0
        return self._obs(), {}

    def step(self, actions):
        if isinstance(actions, (tuple, list)) and len(actions) == 3 and np.ndim(actions[0]) == 1:
            a = np.stack([np.asarray(x, np.int64) for x in actions], axis=1)
        else:
            a = np.asarray(actions, np.int64).reshape(self.num_envs, 3)
        a = a.copy()
        resetting = self._needs_reset.copy()
        a[resetting] = 0
        # masked (but in-space) actions are executed as observe, like the single env's lenient mode
        T, R = self.topology.T, len(RATIO_LEVELS)
        c, t, r = a[:, 0], a[:, 1], a[:, 2]
        inspace = (c >= 0) & (c < len(CATEGORIES)) & (t >= 0) & (t < T) & (r >= 0) & (r < R)
        if not inspace.all():
            raise SimError(f"actions outside the action space: {a[~inspace].tolist()}")
        # (the masks are every env's row of the topology's static masks: looked up there, without building them)
        tm, rm = self.topology.target_mask.reshape(-1), self.topology.ratio_mask.reshape(-1)
        invalid = (tm[c * T + t] <= 0) | (rm[c * R + r] <= 0)
        a[invalid] = 0
        res = self.sim.step(a)
        rew = res.reward - invalid * self.sim_cfg.reward.invalid_action_penalty
        self._ret += rew
        term, trunc = res.terminated.copy(), res.truncated.copy()
        infos: dict = {}
        if self._semi_mdp:  # the step's length, for the semi-MDP discount of the learner's GAE (policy/semi_mdp.py)
            infos[ELAPSED_STEPS_KEY] = np.where(resetting, 1.0, res.elapsed_steps)
            infos["_" + ELAPSED_STEPS_KEY] = np.ones(self.num_envs, bool)
        done = term | trunc
        if done.any():
            stats = self.sim.episode_stats_batch(done)  # (episode_stats of the done envs, 0 elsewhere)
            for k in self._END_KEYS:
                infos[k] = self._ret.copy() if k == "episode_return" else stats[k]
                infos["_" + k] = done.copy()
        if resetting.any():
            idx = np.flatnonzero(resetting)
            keys = [int(self._rngs[i].integers(0, 2**63 - 1)) for i in idx]
            self.sim.reset(idx, keys)
            rew[idx] = 0.0
            term[idx] = False
            trunc[idx] = False
            self._ret[idx] = 0.0
        obs = self._obs()
        self._needs_reset = done & ~resetting
        self._ret[done] = 0.0
        return obs, rew.astype(np.float32), term, trunc, infos


def make_vector_env(config: dict | None = None) -> FaultInjectionVectorEnv:
    """RLlib env creator: ``config`` is the env_config (+ ``num_envs`` from RLlib)."""
    return FaultInjectionVectorEnv(dict(config or {}))

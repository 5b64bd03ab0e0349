"""Configuration of the replay pieces (no torch, no Ray imported here).

* :class:`ReplayConfig`: the stratified prioritized replay buffer and the Ray actor that holds it.
* :class:`LevelSamplerConfig`: prioritized level replay over fault types (Jiang et al. 2021).
* :class:`SILConfig`: the self-imitation loss (Oh et al. 2018).
* :class:`CloneConfig`: CLEAR's behavioural cloning on replayed experience (Rolnick et al. 2019).

Defaults follow the papers where they give a number (named in each docstring); every number lives here.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ifshm_ray.config import ConfigModel


class ReplayConfig(ConfigModel):
    """The shared prioritized replay: one RLlib ``PrioritizedEpisodeReplayBuffer`` per stratum under one capacity."""

    capacity: int = Field(50_000, ge=1)
    """Total capacity in env steps over all strata (RLlib's buffer counts env steps too)."""
    known_stratum: str = "known"
    """Name of the stratum that holds the known fault types; every other stratum is a novel cluster."""
    known_floor: float = Field(0.5, ge=0.5, lt=1.0)
    """Share of ``capacity`` the known stratum keeps when novel strata exist (at least half). Novel strata split the
    rest equally. A stratum may grow past its share while the total is under capacity; eviction only ever takes
    the oldest episodes of strata over their share."""
    alpha: float = Field(0.6, ge=0.0)
    """Prioritization exponent: sampling probability ~ priority**alpha (0.6: Schaul et al. 2016 and the
    self-imitation paper)."""
    beta: float = Field(0.4, ge=0.0, le=1.0)
    """Initial importance-sampling exponent, annealed linearly to 1 (0.4: Schaul et al. 2016)."""
    beta_anneal_samples: int = Field(10_000, ge=1)
    """Number of ``sample`` calls (learner updates) over which beta goes from ``beta`` to 1."""
    priority_eps: float = Field(1e-6, gt=0.0)
    """Added to every written priority, so a step with (R - V)+ = 0 keeps a small chance to be replayed."""
    gamma: float = Field(0.99, ge=0.0, le=1.0)
    """Discount of the returns-to-go stored with every step (use the PPO config's gamma)."""
    recovered_only: bool = True
    """Store only episodes that ended recovered (terminated), not those cut at the time limit. The analogue of the
    self-imitation paper storing only episodes with a positive reward: every reward here is <= 0."""
    max_oversample: float | None = Field(None, ge=1.0)
    """Cap of a stratum's share of a sample: at most this many times its share of the stored steps (the mix's other
    strata get what it gives up). Without it, a novel cluster of a few recorded incidents that the meta-controller's
    mix gives half of every sample has each of its steps drawn many times per update (measured in the continual
    pilot of 2026-11-30, seed 0: five clusters of 1-2 runbook-handled incidents, the self-imitation loss up from 0.03
    to 0.85-1.6 within an iteration and the policy's known-type MTTR 1,323 -> 3,330 s). None: no cap (as before)."""
    seed: int = 0
    """Seed of the sampling generators (one per stratum, derived from this seed and the stratum name)."""
    # ----- the Ray actor
    actor_name: str = "ifshm_replay"
    """Name under which env runners and learners find the actor (get-or-create)."""
    deterministic: bool = True
    """Synchronous mode: pushes are staged per source and added in a fixed order (source index, then arrival)
    on ``flush``, which the driver calls at a barrier; a seed then reproduces a run. False: pushes are added on
    arrival (for clusters)."""
    max_restarts: int = Field(-1, ge=-1)
    """Ray restarts of the actor after it dies (-1: unlimited); each restart reloads the last saved state."""
    max_task_retries: int = Field(3, ge=-1)
    """Retries of a call that was in flight when the actor died (-1: unlimited)."""
    num_cpus: float = Field(0.25, gt=0.0)
    """CPUs the actor reserves."""
    detached: bool = False
    """Detached lifetime (outlives the driver that created it; for a cluster where several jobs share it)."""

class LevelSamplerConfig(ConfigModel):
    """Prioritized level replay over fault types (Jiang et al. 2021, facebookresearch/level-replay)."""

    score_alpha: float = Field(1.0, gt=0.0, le=1.0)
    """Weight of a new score in the exponential moving average of a level's score (1.0: the latest score, as in
    the paper's code)."""
    temperature: float = Field(0.1, gt=0.0)
    """Temperature of the rank transform: weight = (1 / rank) ** (1 / temperature) (0.1: the paper's Procgen
    setting)."""
    staleness_coef: float = Field(0.1, ge=0.0, le=1.0)
    """Mixing weight of staleness: P = (1 - coef) * P_score + coef * P_staleness (0.1: the paper)."""
    staleness_temperature: float = Field(1.0, gt=0.0)
    """Temperature of the staleness power transform: weight = staleness ** (1 / temperature)."""
    rho: float = Field(0.0, ge=0.0, le=1.0)
    """Replay starts once this fraction of levels has been seen; until then only unseen levels are drawn
    (proportionate schedule: afterwards replay with probability = fraction seen, otherwise an unseen level)."""
    seed: int = 0
    """Seed of the draws."""

class SILConfig(ConfigModel):
    """Self-imitation loss (Oh et al. 2018): -log pi(a|s) (R - V)+ + value_weight * 0.5 ((R - V)+)^2."""

    weight: float = Field(1.0, ge=0.0)
    """Weight of the whole self-imitation term in the policy's loss."""
    value_weight: float = Field(0.01, ge=0.0)
    """Weight of the value term (0.01: the paper's beta^sil)."""
    adv_clip: float | None = Field(None, gt=0.0)
    """Upper clip of (R - V)+ (the official code clips at 1 for clipped Atari rewards); None: no clip."""
    max_nlogp: float | None = Field(5.0, gt=0.0)
    """Cap on -log pi(a|s) in the policy term (5: the official code), so that a step the policy now finds
    very unlikely cannot dominate; None: no cap."""
    clip_ratio: float | None = Field(None, gt=0.0)
    """PPO's trust region on the policy term: a replayed step stops pulling once pi(a|s) has risen past
    ``1 + clip_ratio`` times its probability at the start of the learner update (the module before the update's
    first gradient step), so that the update's epochs over one small replayed sample cannot move the policy far
    on it (PPO's clipped surrogate, Schulman et al. 2017, with the sample's (R - V)+ >= 0 as the advantage; clipped
    ratios on replayed data as in GePPO, Queeney et al. 2021). Use ``ppo.clip_param`` (0.2). None (the default):
    the paper's unbounded term."""
    adv_normalize: bool = True
    """Divide the policy term's (R - V)+ by the root mean square of R - V over the replayed sample, so that its
    gradient has the scale of PPO's standardized advantages whatever the reward scale (the paper's Atari rewards
    are clipped to [-1, 1]; this project's returns are in the tens to hundreds). False: the paper's raw (R - V)+
    (what the continual pilot of 2026-11-30 ran with). The priorities are the raw (R - V)+ either way."""
    min_valid: int = Field(1, ge=1)
    """The terms are averaged over max(number of steps with R > V, this) (64 in the official code for batches
    of 512)."""
    batch_size: int = Field(256, ge=1)
    """Steps sampled from the replay per learner update."""

    @model_validator(mode="after")
    def _check(self) -> "SILConfig":
        if self.min_valid > self.batch_size:
            raise ValueError(f"min_valid = {self.min_valid} must be <= batch_size = {self.batch_size}")
        return self


class CloneConfig(ConfigModel):
    """CLEAR's behavioural cloning on replayed experience (Rolnick et al. 2019, "Experience Replay for Continual
    Learning"): on the replayed steps of the chosen strata, the policy cloning term KL(pi_behaviour || pi) and the
    value cloning term (V - V_behaviour)^2, where pi_behaviour and V_behaviour are what the acting policy output when
    the step was taken (stored with the step). Total term: ``weight * (L_policy + value_weight * L_value)``."""

    weight: float = Field(0.0, ge=0.0)
    """Weight of the whole cloning term in the policy's loss. 0 (the default): off; the env runners then store no
    behaviour outputs with the replayed steps and nothing of a run changes."""
    value_weight: float = Field(0.5, ge=0.0)
    """Weight of the value cloning term relative to the policy cloning term (0.5: CLEAR's value cloning cost 0.005
    over its policy cloning cost 0.01, the values the continual_rl package's CLEAR configuration sets)."""
    strata: list[str] | Literal["all"] | None = None
    """The replay strata whose steps are cloned: None (the default) only the known stratum
    (``buffer.known_stratum``: the point is not to forget the known types); a list of stratum names; ``"all"``:
    every stratum (CLEAR as published, which has no strata)."""

    reference: str | None = None
    """Where the cloning targets come from. None (the default): the behaviour outputs stored with each step when it
    was taken (CLEAR as published). A path: a policy bundle (``jobs/train.py``'s ``policy_bundle/``) whose outputs
    on the replayed states are the targets, a fixed teacher (policy distillation from the policy before the new
    task, as in Learning without Forgetting, Li and Hoiem 2016, and policy consolidation): every replayed step of a
    cloned stratum is anchored to what that policy would do, so the env runners store no behaviour outputs. In the
    continual protocol the value ``phase1`` stands for the seed's phase-1 bundle."""

    @field_validator("strata")
    @classmethod
    def _check_strata(cls, value):
        if isinstance(value, list) and (not value or not all(isinstance(s, str) and s for s in value)):
            raise ValueError(f"strata must be None, 'all' or a non-empty list of stratum names, got {value!r}")
        return value

    @property
    def enabled(self) -> bool:
        """Whether the term is in the loss (and behaviour outputs are stored with the replayed steps)."""
        return self.weight > 0.0

    @property
    def stores_behaviour(self) -> bool:
        """Whether the env runners keep each step's behaviour outputs (the cloning targets when no ``reference``)."""
        return self.enabled and self.reference is None

    def applies_to(self, stratum: str, known_stratum: str) -> bool:
        """Whether the steps of ``stratum`` are cloned."""
        if self.strata is None:
            return stratum == known_stratum
        return self.strata == "all" or stratum in self.strata


class DemonstrationsConfig(ConfigModel):
    """Demonstrations stored in the replay before training starts: incidents of the split's known types handled by a
    blind reference (``policy``), recorded as episodes in the policy's action space and pushed into a stratum of their
    own, which the self-imitation term then samples beside the policy's own episodes (learning from demonstrations
    through self-imitation: Oh et al. 2018 sec. 5 use SIL's loss on demonstrations too; DQfD, Hester et al. 2018, and
    POfD, Kang et al. 2018, keep demonstrations in the replay for the whole run). SIL's (R - V)+ keeps a demonstrated
    step only while its return beats the policy's own value estimate there, so the policy stops imitating a
    demonstration once it does better. Only the split's known types (or ``replay.known_types``) are demonstrated, by a
    reference that knows only them (the blind runbook): an operator's runbooks, never the held-out types' answers."""

    policy: Literal["runbook", "runbook-instant"] | None = None
    """The demonstrating reference (``ifshm_ray.baselines``): ``runbook`` (the blind runbook of the env's split) or
    ``runbook-instant``; None (the default): no demonstrations."""
    incidents_per_type: int = Field(20, ge=1)
    """Incidents recorded per known fault type."""
    healed_only: bool = True
    """Store only the demonstrations that ended in success (healed without a page): the runbook's failed incidents
    (escalated, timed out) are not worth imitating (measured in the continual pilots: imitating the runbook's failed
    incidents made the known types collapse, README "pilot v6")."""
    stratum: str = "demo"
    """Replay stratum of the demonstrations (their own, so the policy's episodes never evict them while they stay
    under their share of the capacity)."""
    seed: int = 0
    """Seed of the demonstration incidents (mixed with ``run.seed`` by
    :func:`~ifshm_ray.replay.demonstrations.demo_seed`, a formula other than the evaluation's)."""

    @property
    def enabled(self) -> bool:
        return self.policy is not None


class ReplaySection(ConfigModel):
    """The ``replay:`` section of a training config (``jobs/train.py``): trajectory replay through the shared actor
    and the self-imitation term, and scenario replay over fault types. Off by default (plain PPO)."""

    enabled: bool = False
    """Create the named replay actor, push finished episodes from the env runners and add the self-imitation term
    to the learner's loss."""
    buffer: ReplayConfig = Field(default_factory=ReplayConfig)
    """The stratified prioritized buffer and its Ray actor (``gamma`` must equal ``ppo.gamma``)."""
    sil: SILConfig = Field(default_factory=SILConfig)
    """The self-imitation loss (``weight`` scales it in the PPO loss; 0 keeps pushing and sampling but adds
    nothing)."""
    clone: CloneConfig = Field(default_factory=CloneConfig)
    """CLEAR's behavioural cloning on the same replayed sample as the self-imitation term (``weight`` 0: off)."""
    scenario_replay: bool = True
    """Prioritized level replay over the env's fault types: per-level value-l1 scores from the env runners feed a
    :class:`~ifshm_ray.replay.level_sampler.LevelSampler` on the driver, whose weights are pushed back to every
    env runner after each iteration (``env_runner_group.foreach_env_runner``)."""
    level_sampler: LevelSamplerConfig = Field(default_factory=LevelSamplerConfig)
    """Settings of the level sampler."""
    novel_stratum: str = "novel"
    """Stratum of an episode whose fault type is not known in the job's split (the env runners have no encoder;
    the meta-controller's clusters name their own strata when it pushes recorded incidents). Set to
    ``buffer.known_stratum``, every episode goes to the known stratum (the continual protocol's no-strata
    ablation)."""
    known_types: list[str] | None = None
    """The fault types whose episodes count as known (the known stratum, and the known-type outcomes the
    meta-controller watches for forgetting); None: the env split's known types. A subset of them: the continual
    protocol's pseudo-unknown tuning passes the split's known types less the pseudo-unknown ones."""
    mix: dict[str, float] | None = None
    """Fixed weights per stratum of each replay sample (None: in proportion to the strata's sizes). The
    meta-controller, when present, replaces it."""
    demonstrations: DemonstrationsConfig = Field(default_factory=DemonstrationsConfig)
    """Demonstrations of the known types by a blind reference, stored before training (off by default)."""

    @model_validator(mode="after")
    def _check_demonstrations(self) -> "ReplaySection":
        d = self.demonstrations
        if d.enabled and not self.enabled:
            raise ValueError("replay.demonstrations are stored in the replay: set replay.enabled: true")
        if d.enabled and d.stratum in (self.buffer.known_stratum, self.novel_stratum):
            raise ValueError(f"replay.demonstrations.stratum {d.stratum!r} must differ from the known stratum "
                             f"{self.buffer.known_stratum!r} and the novel stratum {self.novel_stratum!r} (the "
                             "policy's own episodes would evict the demonstrations)")
        return self

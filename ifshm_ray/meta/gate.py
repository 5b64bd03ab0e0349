"""The gate as a policy (the baselines' ``Policy`` interface): for evaluation and the continual protocol.

:class:`GatedPolicy` wraps the learned policy, the blind runbook and a :class:`~ifshm_ray.meta.controller.MetaController`.
Once per incident, at the window ``meta.config.decide_on`` names (the first firing alarm; any alarm with
``pending``; with ``action`` the first window where the policy proposes anything but ``observe``, or a firing
alarm: :func:`gate_decides_here`), it asks the diagnoser for the unknown score (and the state vector, if it has one)
and the meta-controller for the decision, which holds for the rest of the incident. Before that window the policy
acts: with ``action`` it has only observed; with ``firing`` or ``pending`` an alert-triggered policy may already have
acted (the continual protocol refuses that pairing). The decision:

* ``policy``: the policy acts;
* ``runbook``: the blind runbook acts (it sees every window from then on);
* ``escalate``: one ``escalate`` action, then ``observe`` (a human owns the incident).

:meth:`GatedPolicy.record_outcome` gives the incident's outcome back to the meta-controller's trust table under
whoever acted. The decision is in :attr:`GatedPolicy.decision`. :func:`record_incident` runs one incident and
records it as an RLlib episode for the replay (a gated incident is still recorded, whoever acted; the protocol's arm
without the runbook's actions leaves out the incidents whose :attr:`RecordedIncident.deferred` is set), and
:func:`incident_stratum` names its stratum.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from ifshm_ray.baselines.policies import Policy
from ifshm_ray.env.fault_env import ELAPSED_STEPS_KEY
from ifshm_ray.meta.controller import GateDecision, MetaController
from ifshm_ray.sim.actions import CATEGORY_INDEX

Diagnose = Callable[[dict], "tuple[float | None, np.ndarray | None]"]
"""telemetry window -> (unknown score, semantic state vector or None)."""


def deciding_alarms(telemetry: dict, decide_on: str = "firing") -> list[dict]:
    """The alarms of a window the gate decides on: firing ones (``firing`` and ``action``), or every one with
    ``decide_on = "pending"``."""
    alarms = telemetry.get("alarms") or []
    return alarms if decide_on == "pending" else [a for a in alarms if a.get("state", "firing") == "firing"]


def gate_decides_here(telemetry: dict, decide_on: str, proposal: np.ndarray | None) -> bool:
    """Whether the gate decides at this window: it has a deciding alarm, or (``decide_on = "action"``) the policy's
    ``proposal`` for it is not ``observe``."""
    if deciding_alarms(telemetry, decide_on):
        return True
    return decide_on == "action" and proposal is not None and int(proposal[0]) != CATEGORY_INDEX["observe"]


class GatedPolicy(Policy):
    """See the module doc. ``update``: let the meta-controller cluster novel incidents (training, the protocol's
    stream); False in paired evaluations, which must not change it. ``keep_windows``: :attr:`windows` holds the
    telemetry window the gate decided at and the ones after it, up to this many per incident (the continual
    protocol's prompt tuning groups them by incident: ``meta.prompt_tuning.windows_per_incident``)."""

    def __init__(self, policy: Policy, runbook: Policy, meta: MetaController, diagnose: Diagnose,
                 update: bool = False, keep_windows: int = 1) -> None:
        self.policy, self.runbook, self.meta, self.diagnose, self.update = policy, runbook, meta, diagnose, update
        if keep_windows < 1:
            raise ValueError(f"keep_windows must be >= 1, got {keep_windows}")
        self.keep_windows = int(keep_windows)
        self.name = f"gated({getattr(policy, 'name', 'policy')})"
        self.decision: GateDecision | None = None
        self.windows: list[dict] = []
        """This incident's telemetry from the deciding window on (at most ``keep_windows``)."""
        self._escalated = False

    def reset(self, env, episode_seed: int | None = None) -> None:
        self.policy.reset(env, episode_seed=episode_seed)
        self.runbook.reset(env, episode_seed=episode_seed)
        self.decision = None
        self.windows = []
        self._escalated = False

    def act(self, obs: dict, info: dict, env) -> np.ndarray:
        if self.decision is not None and len(self.windows) < self.keep_windows:
            self.windows.append(info.get("telemetry"))
        if self.decision is None:
            telemetry = info.get("telemetry")
            if telemetry is None:
                raise ValueError("GatedPolicy needs info['telemetry'] (an env with render_telemetry on)")
            proposal = np.asarray(self.policy.act(obs, info, env), np.int64)
            if not gate_decides_here(telemetry, self.meta.config.decide_on, proposal):
                return proposal
            score, state = self.diagnose(telemetry)
            self.decision = self.meta.observe(score, state, update=self.update)
            self.windows = [telemetry]
            if self.decision.actor == "policy":
                return proposal  # (asked once per window: the proposal is the policy's action here)
        actor = self.decision.actor
        if actor == "policy":
            return np.asarray(self.policy.act(obs, info, env), np.int64)
        if actor == "runbook":
            return np.asarray(self.runbook.act(obs, info, env), np.int64)
        if not self._escalated:
            self._escalated = True
            return np.array([CATEGORY_INDEX["escalate"], 0, 0], np.int64)
        return np.array([CATEGORY_INDEX["observe"], 0, 0], np.int64)

    def record_outcome(self, success: bool, mttr_s: float) -> bool:
        """The finished incident's outcome into the trust table (novel incidents only: the table is about them);
        returns whether it was recorded."""
        d = self.decision
        if d is None or not d.novel:
            return False
        self.meta.record(d.cluster, d.actor, success, mttr_s)
        return True


@dataclasses.dataclass
class RecordedIncident:
    """One incident as the replay stores it: the policy-observation trajectory with the actions whoever acted
    took, the episode-end info, and the gate's decision (None for a policy without a gate)."""

    episode: SingleAgentEpisode
    info: dict
    decision: GateDecision | None

    @property
    def deferred(self) -> bool:
        return bool(self.decision is not None and self.decision.deferred)


def record_incident(env, policy: Policy, fault: str | list[str], seed: int) -> RecordedIncident:
    """Run one incident of ``fault`` with ``policy`` (a :class:`GatedPolicy` or any baselines ``Policy``) on a
    single ``FaultInjectionEnv`` and record it as an RLlib ``SingleAgentEpisode`` (actions as ``(c, t, r)`` tuples,
    the env's Tuple action space): a gated incident is still recorded, whoever acted."""
    obs, info = env.reset(seed=seed, options={"faults": fault})
    policy.reset(env, episode_seed=seed)
    observations, actions, rewards, infos = [obs], [], [], [{}]
    term = trunc = False
    while not (term or trunc):
        a = np.asarray(policy.act(obs, info, env), np.int64)
        obs, r, term, trunc, info = env.step(a)
        observations.append(obs)
        actions.append(tuple(int(x) for x in a))
        rewards.append(float(r))
        # only the step's length (semi-MDP discounting of the replay's returns), where the env reports it
        infos.append({ELAPSED_STEPS_KEY: info[ELAPSED_STEPS_KEY]} if ELAPSED_STEPS_KEY in info else {})
    episode = SingleAgentEpisode(observations=observations, actions=actions, rewards=rewards, infos=infos,
                                 observation_space=env.observation_space, action_space=env.action_space,
                                 terminated=bool(term), truncated=bool(trunc), len_lookback_buffer=0)
    return RecordedIncident(episode, info, getattr(policy, "decision", None))


def incident_stratum(incident: RecordedIncident, known_stratum: str, novel_stratum: str) -> str:
    """The replay stratum of a recorded incident: its novel cluster's, ``novel_stratum`` for a novel incident
    without a cluster, else the known stratum."""
    d = incident.decision
    if d is None or not d.novel:
        return known_stratum
    return d.stratum or novel_stratum

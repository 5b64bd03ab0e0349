"""Diagnosers for the gate: telemetry window -> (unknown score, state vector), the callable
:class:`~ifshm_ray.meta.gate.GatedPolicy` asks at an incident's first alarm.

* :class:`EncoderDiagnoser`: the fine-tuned semantic encoder (``SemanticEncoder.predict``: its unknown score, the
  distance to the nearest known prototype in units of its radius, and its semantic state). What the protocol's real
  runs use.
* :class:`FeatureDiagnoser`: the same score on the policy's numeric features instead of the LM's state: the
  observation vector that :class:`~ifshm_ray.env.observation.TelemetryObserver` rebuilds from the window (alert
  flags, log-template counts, metric features), standardised on known-type windows, with one prototype and radius
  per known type (:func:`~ifshm_ray.encoding.calibration.fit_prototypes` /
  :func:`~ifshm_ray.encoding.calibration.unknown_score`). No LM runs, so the tiny protocol fits on 2 cores; it is a
  stand-in, measured like the encoder (false-positive rate on known windows, recall on novel ones), not its equal.

A diagnoser is saved as ``diagnoser.json`` (:data:`DIAGNOSER_FILE`) beside ``meta_state.json`` (in a policy bundle
or run folder) and read back with :func:`load_diagnoser`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

DIAGNOSER_FILE = "diagnoser.json"
"""File name of a saved diagnoser in a bundle or run folder."""


def first_alarm_windows(sim_config: dict, faults: Sequence[str], seeds: Iterable[int],
                        max_steps: int | None = None, decide_on: str = "firing",
                        policy=None, windows: int = 1) -> list[tuple[str, int, dict]]:
    """``(fault, seed, telemetry)`` of the window the gate decides at (:func:`~ifshm_ray.meta.gate.gate_decides_here`:
    the first firing alarm, any alarm with ``decide_on = "pending"``, or with ``"action"`` also the first window the
    policy would act in), per fault and seed, with ``policy`` acting until then (None: ``observe`` actions); an
    incident whose episode ends without one gives nothing. ``windows`` > 1: also the windows after it, up to this many
    per incident (while the episode lasts), for fitting a diagnoser on more of the known types' telemetry. This is the window the gate decides on; a gated policy acts
    before it, and its actions change what the window shows, so calibrate with the policy the gate will wrap."""
    from ifshm_ray.env import FaultInjectionEnv
    from ifshm_ray.meta.gate import gate_decides_here

    env = FaultInjectionEnv({**sim_config, "render_telemetry": True})
    out = []
    observe = np.zeros(3, np.int64)
    for fault in faults:
        for seed in seeds:
            obs, info = env.reset(seed=int(seed), options={"faults": [fault]})
            if policy is not None:
                policy.reset(env, episode_seed=int(seed))
            steps, taken = 0, 0
            while True:
                tel = info.get("telemetry") or {}
                action = observe if policy is None else np.asarray(policy.act(obs, info, env), np.int64)
                if taken or gate_decides_here(tel, decide_on, action):
                    out.append((fault, int(seed), tel))
                    taken += 1
                    if taken >= windows:
                        break
                obs, _, term, trunc, info = env.step(action)
                steps += 1
                if term or trunc or (max_steps is not None and steps >= max_steps):
                    break
    env.close()
    return out


class FeatureDiagnoser:
    """See the module doc. ``mean``/``std`` standardise the feature vector; ``prototypes``/``radii`` are per known
    type (``fault_types``)."""

    kind = "features"

    def __init__(self, sim_config: dict, fault_types: Sequence[str], mean: Sequence[float], std: Sequence[float],
                 prototypes: Sequence[Sequence[float]], radii: Sequence[float],
                 unseen: Sequence[bool] | None = None, unseen_weight: float = 0.0) -> None:
        from ifshm_ray.config import SimConfig
        from ifshm_ray.env.fault_env import split_env_config
        from ifshm_ray.env.observation import TelemetryObserver

        self.sim_config = {k: v for k, v in dict(sim_config).items() if k not in ("render_telemetry", "mine_logs")}
        sim_cfg, _ = split_env_config(self.sim_config)
        self.observer = TelemetryObserver(sim_cfg if isinstance(sim_cfg, SimConfig) else SimConfig())
        self.fault_types = list(fault_types)
        self.mean = np.asarray(mean, np.float64)
        self.std = np.asarray(std, np.float64)
        self.prototypes = np.asarray(prototypes, np.float64)
        self.radii = np.asarray(radii, np.float64)
        self.unseen = np.zeros(self.mean.shape, bool) if unseen is None else np.asarray(unseen, bool)
        self.unseen_weight = float(unseen_weight)
        if self.unseen.shape != self.mean.shape or self.unseen_weight < 0:
            raise ValueError(f"diagnoser unseen mask {self.unseen.shape} vs mean {self.mean.shape}, weight "
                             f"{self.unseen_weight} (must be >= 0)")
        if self.prototypes.shape != (len(self.fault_types), self.mean.size) or self.radii.shape != (
                len(self.fault_types),) or self.std.shape != self.mean.shape:
            raise ValueError(f"diagnoser shapes disagree: {len(self.fault_types)} types, mean {self.mean.shape}, std "
                             f"{self.std.shape}, prototypes {self.prototypes.shape}, radii {self.radii.shape}")

    def features(self, telemetry: dict) -> np.ndarray:
        """The standardised feature vector of one window."""
        x = np.asarray(self.observer.observe(telemetry)["obs"], np.float64).ravel()
        return (x - self.mean) / self.std

    def __call__(self, telemetry: dict) -> tuple[float, np.ndarray]:
        """(unknown score, standardised features): the distance to the nearest known prototype in units of its
        radius, plus ``unseen_weight`` x the evidence never seen in a known window (the sum of |x - mean| over the
        features that were constant on every fitting window: a log template or alert no known incident showed)."""
        from ifshm_ray.encoding.calibration import unknown_score

        x = np.asarray(self.observer.observe(telemetry)["obs"], np.float64).ravel()
        z = (x - self.mean) / self.std
        if not np.any(z):
            z = z + 1e-9  # a window exactly at the mean: any direction is as near (score stays finite)
        score, _ = unknown_score(z[None, :], self.prototypes, self.radii)
        unseen = float(np.abs(x - self.mean)[self.unseen].sum()) if self.unseen_weight else 0.0
        return float(score[0]) + self.unseen_weight * unseen, z

    def scores(self, windows: Sequence[dict]) -> np.ndarray:
        return np.array([self(w)[0] for w in windows], np.float64)

    @classmethod
    def fit(cls, sim_config: dict, windows: Sequence[tuple[str, Any, dict]], quantile: float = 0.95,
            unseen_weight: float = 0.0) -> "FeatureDiagnoser":
        """From known-type windows ``[(fault, seed, telemetry), ...]`` (:func:`first_alarm_windows`); the features
        constant on all of them are the ``unseen`` ones, weighted by ``unseen_weight`` in the score."""
        from ifshm_ray.encoding.calibration import fit_prototypes

        if not windows:
            raise ValueError("FeatureDiagnoser.fit needs at least one known-type window")
        types = sorted({f for f, _, _ in windows})
        tmp = cls(sim_config, types, [0.0], [1.0], np.zeros((len(types), 1)), np.ones(len(types)))
        x = np.stack([np.asarray(tmp.observer.observe(t)["obs"], np.float64).ravel() for _, _, t in windows])
        mean, std = x.mean(0), x.std(0)
        unseen = std <= 1e-8
        std = np.where(unseen, 1.0, std)
        z = (x - mean) / std
        z[~z.any(axis=1)] = 1e-9
        labels = np.array([types.index(f) for f, _, _ in windows])
        protos, radii = fit_prototypes(z, labels, len(types), quantile)
        return cls(sim_config, types, mean, std, protos, radii, unseen, unseen_weight)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "sim_config": self.sim_config, "fault_types": self.fault_types,
                "mean": self.mean.tolist(), "std": self.std.tolist(), "prototypes": self.prototypes.tolist(),
                "radii": self.radii.tolist(), "unseen": self.unseen.astype(int).tolist(),
                "unseen_weight": self.unseen_weight}

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / DIAGNOSER_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict()))
        return path


class EncoderDiagnoser:
    """The fine-tuned semantic encoder's unknown score and state (loaded lazily: torch and the LM)."""

    kind = "encoder"

    def __init__(self, checkpoint: str, encoder=None) -> None:
        """``encoder``: the :class:`~ifshm_ray.encoding.semantic.SemanticEncoder` saved at ``checkpoint``, already
        in memory (after prompt tuning); None: loaded from ``checkpoint`` at the first call."""
        self.checkpoint = str(checkpoint)
        self._encoder = encoder
        if encoder is not None:
            encoder.modal.freeze()

    def __call__(self, telemetry: dict) -> tuple[float | None, np.ndarray | None]:
        if self._encoder is None:
            from ifshm_ray.encoding.semantic import SemanticEncoder

            # a frozen log-template miner: matching only, so what the gate sees (unknown types included) never
            # changes the templates its threshold was calibrated with (as the encoder service does)
            self._encoder = SemanticEncoder.load(self.checkpoint)
            self._encoder.modal.freeze()
        out = self._encoder.predict([telemetry])
        score = float(out["unknown_score"][0])
        return (score if np.isfinite(score) else None), np.asarray(out["state"][0], np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "checkpoint": self.checkpoint}

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / DIAGNOSER_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict()))
        return path


def diagnoser_from_dict(data: dict[str, Any]) -> FeatureDiagnoser | EncoderDiagnoser:
    kind = data.get("kind")
    if kind == "features":
        return FeatureDiagnoser(data["sim_config"], data["fault_types"], data["mean"], data["std"],
                                data["prototypes"], data["radii"], data.get("unseen"), data.get("unseen_weight", 0.0))
    if kind == "encoder":
        return EncoderDiagnoser(data["checkpoint"])
    raise ValueError(f"diagnoser kind {kind!r}; one of 'features', 'encoder'")


def load_diagnoser(path: str | Path) -> FeatureDiagnoser | EncoderDiagnoser:
    """From a ``diagnoser.json`` or the folder holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / DIAGNOSER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no diagnoser at {path} (jobs/continual.py writes one beside meta_state.json; or "
                                f"write EncoderDiagnoser(CHECKPOINT).save(FOLDER))")
    return diagnoser_from_dict(json.loads(path.read_text()))

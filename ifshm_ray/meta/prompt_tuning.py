"""Soft-prompt tuning of the semantic encoder on novel incidents, with a clustering loss and an anchor on the
known prototypes (issue 15, the encoder's loss; see :class:`~ifshm_ray.meta.config.PromptTuningSection`).

The encoder must carry a peft prompt-tuning adapter (``EncoderConfig.adapter: prompt_tuning``); only its soft-prompt
vectors train, everything else (backbone, projections, heads, prototypes) stays frozen. Per step, on the novel
windows (each tagged with its incident id) and a fixed set of known-fault windows (with their class labels):

    L_cluster = supervised contrastive loss of the unit states, positives = the other windows of the same incident
    L_anchor  = mean over known windows of 1 - cos(state, p_label), p = known prototypes before tuning
    L         = cluster_weight * L_cluster + anchor_weight * L_anchor

After tuning the LM-embedding cache is cleared (outputs changed); the caller saves the encoder and rebuilds the
policy's semantic table (:func:`ifshm_ray.encoding.rl_state.build_table`, through the encoder actor pool).

:class:`ClusterPromptTuner` is what the continual protocol (:mod:`ifshm_ray.meta.continual`) runs per arm: it
collects the recorded novel incidents' windows per meta-controller cluster and tunes the gate's encoder on every
cluster that is due (see its doc for the rule), then refits the known prototypes, recalibrates the novelty
threshold and re-embeds the clusters' centroids with the tuned encoder.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ifshm_ray.meta.config import PromptTuningSection


def supervised_contrastive(states: torch.Tensor, groups: torch.Tensor, temperature: float) -> torch.Tensor:
    """Khosla et al. (2020) L_out on unit vectors: for each anchor with at least one positive, minus the mean log
    softmax (over all other windows) of its positives. Windows whose incident has no other window are skipped."""
    z = torch.nn.functional.normalize(states, dim=-1)
    n = z.shape[0]
    sim = z @ z.T / temperature
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, -1e9)
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (groups[:, None] == groups[None, :]) & ~eye
    has = pos.any(dim=1)
    if not has.any():
        raise ValueError("the clustering loss needs at least one incident with two or more windows")
    per = -(log_prob * pos).sum(dim=1)[has] / pos.sum(dim=1)[has]
    return per.mean()


def prototype_anchor(states: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Mean cosine distance of known windows' states to their class prototypes."""
    z = torch.nn.functional.normalize(states, dim=-1)
    p = torch.nn.functional.normalize(prototypes, dim=-1)[labels]
    return (1.0 - (z * p).sum(dim=-1)).mean()


def prompt_parameters(encoder: Any) -> list[torch.nn.Parameter]:
    """The soft-prompt vectors of a prompt-tuned encoder's backbone (peft ``prompt_encoder``)."""
    params = [p for n, p in encoder.backbone.named_parameters() if "prompt_encoder" in n]
    if not params or getattr(encoder.config, "adapter", None) != "prompt_tuning":
        raise ValueError("prompt tuning needs an encoder built with EncoderConfig(adapter='prompt_tuning') (its "
                         f"adapter is {getattr(encoder.config, 'adapter', None)!r})")
    return params


def tune_prompt(encoder: Any, novel_windows: Sequence[Any], incident_ids: Sequence[int], known_windows: Sequence[Any],
                known_labels: Sequence[int], config: PromptTuningSection | None = None,
                mode: str | None = None) -> dict[str, Any]:
    """Tune the encoder's soft prompt (see the module doc); windows are telemetry dicts or encoded contexts,
    ``known_labels`` index ``encoder.fault_types``. Returns the loss terms at the first and the last step."""
    config = config or PromptTuningSection()
    if len(novel_windows) != len(incident_ids) or len(known_windows) != len(known_labels):
        raise ValueError("one incident id per novel window and one label per known window")
    if len(set(incident_ids)) < 2:
        raise ValueError("prompt tuning needs windows of at least two novel incidents (different incidents apart)")
    prompt = prompt_parameters(encoder)
    novel = encoder.encode_telemetry([w for w in novel_windows]) if isinstance(novel_windows[0], dict) \
        else list(novel_windows)
    known = encoder.encode_telemetry([w for w in known_windows]) if known_windows and \
        isinstance(known_windows[0], dict) else list(known_windows)
    groups = torch.as_tensor(np.asarray(incident_ids), device=encoder.device)
    labels = torch.as_tensor(np.asarray(known_labels, np.int64), device=encoder.device)
    frozen = {id(p) for p in prompt}
    saved_flags = [(p, p.requires_grad) for p in encoder.parameters()]
    for p in encoder.parameters():
        p.requires_grad_(id(p) in frozen)
    before = [p.detach().clone() for p in prompt]
    was_training = encoder.training
    encoder.train()
    try:
        with torch.no_grad():
            known_states0 = encoder(known, mode) if known else None
        encoder.clear_cache()
        protos = None
        if known_states0 is not None:  # the known prototypes before tuning: what the anchor holds on to
            protos = torch.stack([known_states0[labels == c].mean(0) if (labels == c).any()
                                  else torch.zeros(known_states0.shape[1], device=encoder.device)
                                  for c in range(len(encoder.fault_types))])
        opt = torch.optim.Adam(prompt, lr=config.lr)
        log: list[dict[str, float]] = []
        for _ in range(config.steps):
            opt.zero_grad()
            lc = supervised_contrastive(encoder(novel, mode), groups, config.temperature)
            la = prototype_anchor(encoder(known, mode), labels, protos) if protos is not None \
                else torch.zeros((), device=encoder.device)
            loss = config.cluster_weight * lc + config.anchor_weight * la
            loss.backward()
            opt.step()
            log.append({"loss": float(loss.detach()), "cluster": float(lc.detach()), "anchor": float(la.detach())})
        encoder.clear_cache()  # LM outputs cached before or during tuning are stale now
        with torch.no_grad():  # the terms after the last step
            lc = float(supervised_contrastive(encoder(novel, mode), groups, config.temperature))
            la = float(prototype_anchor(encoder(known, mode), labels, protos)) if protos is not None else 0.0
    finally:
        for p, flag in saved_flags:
            p.requires_grad_(flag)
        encoder.train(was_training)
        encoder.clear_cache()
    moved = float(sum((p.detach() - b).norm() ** 2 for p, b in zip(prompt, before)) ** 0.5)
    return {"steps": config.steps, "first": log[0], "final": {"loss": config.cluster_weight * lc
                                                              + config.anchor_weight * la, "cluster": lc,
                                                              "anchor": la},
            "prompt_change_l2": moved, "novel_windows": len(novel), "incidents": len(set(incident_ids)),
            "known_windows": len(known)}


def rebuild_semantic_table(encoder: Any, checkpoint_dir: str | Path, sim_config: dict | None, out: str | Path,
                           pool: Any = None) -> Path:
    """After tuning: save the encoder to ``checkpoint_dir`` and re-embed every simulator item text with it into the
    policy's semantic table ``out`` (:func:`ifshm_ray.encoding.rl_state.build_table`: through the encoder actor
    ``pool`` when given, or a pool of its own when Ray is running, else in this process)."""
    from ifshm_ray.encoding.rl_state import build_table

    saved = encoder.save(checkpoint_dir)
    return build_table(str(saved), sim_config, out, pool=pool)


class ClusterPromptTuner:
    """Prompt tuning of the gate's encoder per novel cluster, during the continual protocol's stream (one per arm).

    * :meth:`record`: every stream incident the gate flagged novel and clustered, with its telemetry from the
      deciding window on (:attr:`GatedPolicy.windows <ifshm_ray.meta.gate.GatedPolicy.windows>`, at most
      ``prompt_tuning.windows_per_incident``).
    * :meth:`due`, the rule: cluster k is due when it has at least ``prompt_tuning.min_episodes`` recorded
      incidents more than at its last tuning (0 before the first): first at ``min_episodes`` incidents, then again
      after every further ``min_episodes``. A tuning skipped (no incident of the cluster had two windows) counts as
      one, so it is not retried before the cluster grows by as many again.
    * :meth:`step` (after a stream block): tunes each due cluster in index order with :func:`tune_prompt` on the
      same encoder (one soft prompt for all clusters), the novel windows being the cluster's last
      ``prompt_tuning.max_incidents`` incidents' (grouped by incident) and the known windows ``known_windows``
      (labelled by fault type; never an unknown type). The first step loads ``checkpoint`` and gives it a soft
      prompt (:meth:`~ifshm_ray.encoding.semantic.SemanticEncoder.add_soft_prompt`: a LoRA encoder has its LoRA
      merged first). A new soft prompt and the tuning move every state, the known ones too, so after tuning the
      encoder's known prototypes are refitted on ``known_windows`` (the types without windows get none, so they are
      never the nearest: the gate knows the types it was fitted on), the novelty threshold is recalibrated on
      ``calibration_windows`` to ``meta.novelty.target_fpr`` (:func:`~ifshm_ray.meta.novelty.calibrate`; without
      that the old threshold would hold for another score), and every cluster's centroid is recomputed from its
      incidents' deciding windows under the tuned encoder (:meth:`~ifshm_ray.meta.controller.OnlineClusterer.reembed`).
      The tuned encoder is saved to ``out/encoder_NNN`` and returned as the arm's new
      :class:`~ifshm_ray.meta.diagnose.EncoderDiagnoser` (unknown score and states); each tuning is logged into the
      meta-controller (:meth:`~ifshm_ray.meta.controller.MetaController.record_prompt_tuning`) and ``out/log.json``.
    """

    def __init__(self, checkpoint: str | Path, known_windows: Sequence[tuple[str, Any, dict]],
                 calibration_windows: Sequence[tuple[str, Any, dict]], config: Any, out: str | Path,
                 progress: Callable[[str], None] | None = None) -> None:
        from ifshm_ray.meta.config import MetaConfig

        if not isinstance(config, MetaConfig):
            raise TypeError("ClusterPromptTuner needs the MetaConfig (prompt_tuning, novelty)")
        if not known_windows or not calibration_windows:
            raise ValueError("ClusterPromptTuner needs known-type windows for the anchor and the prototypes and "
                             "calibration windows for the threshold")
        self.checkpoint = str(checkpoint)
        self.known_windows = list(known_windows)
        self.calibration_windows = list(calibration_windows)
        self.config = config
        self.out = Path(out)
        self.progress = progress or (lambda _: None)
        self.incidents: list[tuple[int, list[dict]]] = []
        """(cluster, windows) of every recorded novel incident, in stream order."""
        self.tuned_at: dict[int, int] = {}
        """Cluster -> its number of recorded incidents at its last tuning."""
        self.log: list[dict[str, Any]] = []
        self.encoder = None
        self.version = 0

    def record(self, decision: Any, windows: Sequence[dict]) -> bool:
        """One stream incident (its gate decision and windows); kept when novel and clustered. Returns whether."""
        if decision is None or not decision.novel or decision.cluster is None:
            return False
        ws = [w for w in windows if w is not None][: self.config.prompt_tuning.windows_per_incident]
        if not ws:
            raise ValueError("a novel incident without its deciding window (GatedPolicy.windows is empty)")
        self.incidents.append((int(decision.cluster), ws))
        return True

    def counts(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for k, _ in self.incidents:
            out[k] = out.get(k, 0) + 1
        return out

    def due(self) -> list[int]:
        """The clusters due for tuning (see the class doc), in index order."""
        need = self.config.prompt_tuning.min_episodes
        return sorted(k for k, n in self.counts().items() if n - self.tuned_at.get(k, 0) >= need)

    def _load(self) -> Any:
        if self.encoder is None:
            from ifshm_ray.encoding.semantic import SemanticEncoder

            enc = SemanticEncoder.load(self.checkpoint)
            enc.modal.freeze()  # the miner's templates stay those of the checkpoint (see EncoderDiagnoser)
            enc.add_soft_prompt()
            missing = sorted({f for f, _, _ in self.known_windows} - set(enc.fault_types))
            if missing:
                raise ValueError(f"the gate's encoder {self.checkpoint!r} does not know the known types {missing} "
                                 "(its fault head's classes): it cannot anchor them")
            self.encoder = enc
        return self.encoder

    def step(self, meta: Any, label: str = "") -> Any:
        """Tune every due cluster (see the class doc); returns the new diagnoser, or None when nothing was tuned."""
        from ifshm_ray.meta.diagnose import EncoderDiagnoser
        from ifshm_ray.meta.novelty import calibrate

        due = self.due()
        if not due:
            return None
        pt = self.config.prompt_tuning
        known_tel = [t for _, _, t in self.known_windows]
        enc, known_labels = None, None
        counts = self.counts()
        entries = []
        for k in due:
            incs = [ws for c, ws in self.incidents if c == k][-pt.max_incidents:]
            self.tuned_at[k] = counts[k]
            entry: dict[str, Any] = {"label": label, "cluster": k, "incidents": len(incs),
                                     "cluster_incidents": counts[k], "windows": sum(len(w) for w in incs)}
            if not any(len(w) >= 2 for w in incs):
                entry["skipped"] = (f"none of the cluster's {len(incs)} incidents has two or more windows (the "
                                    "clustering loss needs one)")
                entries.append(entry)
                self.progress(f"prompt tuning of cluster {k} skipped: {entry['skipped']}")
                continue
            if enc is None:  # (loaded, and given its soft prompt, at the first tuning only)
                enc = self._load()
                known_labels = [enc.fault_types.index(f) for f, _, _ in self.known_windows]
            novel = [w for ws in incs for w in ws]
            ids = [i for i, ws in enumerate(incs) for _ in ws]
            t0 = time.perf_counter()
            res = tune_prompt(enc, novel, ids, known_tel, known_labels, pt)
            entry.update(steps=res["steps"], known_windows=res["known_windows"], loss_before=res["first"],
                         loss_after=res["final"], prompt_change_l2=res["prompt_change_l2"],
                         wall_s=round(time.perf_counter() - t0, 3))
            entries.append(entry)
            self.progress(f"prompt tuning of cluster {k} ({len(incs)} incidents, {len(novel)} windows): loss "
                          f"{res['first']['loss']:.4f} -> {res['final']['loss']:.4f} (clustering "
                          f"{res['first']['cluster']:.4f} -> {res['final']['cluster']:.4f}, anchor "
                          f"{res['first']['anchor']:.4f} -> {res['final']['anchor']:.4f}) in {entry['wall_s']:.1f} s")
        if all(e.get("skipped") for e in entries):
            for e in entries:
                meta.record_prompt_tuning(e)
            self.log.extend(entries)
            self._write_log()
            return None
        t0 = time.perf_counter()
        # the tuned encoder's known prototypes, threshold and cluster centroids (see the class doc)
        enc.fit_prototypes(enc.predict(known_tel)["state"], known_labels)
        old = meta.calibration
        scores = enc.predict([t for _, _, t in self.calibration_windows])["unknown_score"]
        meta.calibration = calibrate([float(x) for x in scores], config=self.config.novelty)
        for k in range(len(meta.clusters)):
            first = [ws[0] for c, ws in self.incidents if c == k]
            if len(first) == meta.clusters.counts[k]:
                meta.clusters.reembed(k, enc.predict(first)["state"])
            else:  # (a cluster with members this tuner did not record: left in the old space, said in the log)
                for e in entries:
                    e.setdefault("clusters_not_reembedded", []).append(k)
        self.version += 1
        path = enc.save(self.out / f"encoder_{self.version:03d}")
        for e in entries:
            e.update(checkpoint=str(path), threshold_before=None if old is None else float(old.threshold),
                     threshold_after=float(meta.calibration.threshold),
                     calibration_fpr_after=float(meta.calibration.calibration_fpr),
                     refit_s=round(time.perf_counter() - t0, 3))
            meta.record_prompt_tuning(e)
        self.log.extend(entries)
        self._write_log()
        return EncoderDiagnoser(str(path), enc)

    def _write_log(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "log.json").write_text(json.dumps(self.log, indent=1))

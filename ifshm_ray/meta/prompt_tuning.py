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
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

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

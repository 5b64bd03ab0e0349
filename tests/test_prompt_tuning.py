"""Soft-prompt tuning of the encoder on novel incidents (issue 15): only the soft prompt moves, the clustering loss
falls, the semantic table rebuilt with the tuned prompt differs, the anchor on the known prototypes is measured; the losses themselves on hand-made vectors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ifshm_ray.meta.config import PromptTuningSection
from ifshm_ray.encoding.rl_state import load_table
from ifshm_ray.meta.prompt_tuning import (prototype_anchor, rebuild_semantic_table, supervised_contrastive,
                                          tune_prompt)


def test_supervised_contrastive_prefers_grouped_states():
    groups = torch.tensor([0, 0, 1, 1])
    together = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    assert supervised_contrastive(together, groups, 0.1) < supervised_contrastive(mixed, groups, 0.1)
    with pytest.raises(ValueError, match="two or more windows"):
        supervised_contrastive(together, torch.tensor([0, 1, 2, 3]), 0.1)
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert float(prototype_anchor(torch.tensor([[2.0, 0.0], [0.0, 3.0]]), torch.tensor([0, 1]), protos)) == 0.0


def _incident_windows(faults, per_incident, seed):
    from ifshm_ray.env.fault_env import FaultInjectionEnv

    env = FaultInjectionEnv({"faults": "all"})
    windows, ids = [], []
    for k, fault in enumerate(faults):
        env.reset(seed=seed + k, options={"faults": fault})
        for _ in range(per_incident):
            _, _, term, trunc, info = env.step((0, 0, 0))
            windows.append(info["telemetry"])
            ids.append(k)
    return windows, ids


@pytest.mark.slow  # 18-75 s on 2 shared cores (load): 15 steps through the tiny LM, two table builds
@pytest.mark.timeout(300)
def test_tune_prompt_moves_only_the_prompt_and_lowers_the_clustering_loss(tmp_path):
    from ifshm_ray.encoding.config import EncoderConfig
    from ifshm_ray.encoding.semantic import SemanticEncoder
    from ifshm_ray.sim.catalog import load_catalog

    cat = load_catalog()
    known, unknown = cat.known_in(cat.default_split), cat.unknown_in(cat.default_split)
    enc = SemanticEncoder.build(EncoderConfig(model="tiny-llama", state_dim=16, adapter="prompt_tuning",
                                              num_virtual_tokens=4), known)
    novel_w, ids = _incident_windows([unknown[0], unknown[0], unknown[1], unknown[1]], 4, seed=11)
    known_w, kid = _incident_windows(known[:3], 4, seed=50)
    frozen_before = {n: p.detach().clone() for n, p in enc.named_parameters() if "prompt_encoder" not in n}
    table_before = rebuild_semantic_table(enc, tmp_path / "enc0", None, tmp_path / "before.npz")
    out = tune_prompt(enc, novel_w, ids, known_w, kid, PromptTuningSection(steps=15, lr=0.05))
    # the policy's semantic table, rebuilt with the tuned prompt (in this process: no Ray running here)
    table_after = rebuild_semantic_table(enc, tmp_path / "enc1", None, tmp_path / "after.npz")
    before, after = load_table(table_before), load_table(table_after)
    assert before["embeddings"].shape == after["embeddings"].shape
    assert not np.allclose(before["embeddings"], after["embeddings"])
    assert after["meta"]["encoder"].endswith("enc1")
    assert out["prompt_change_l2"] > 0
    assert all(torch.equal(p, frozen_before[n]) for n, p in enc.named_parameters() if n in frozen_before)
    assert out["final"]["cluster"] < out["first"]["cluster"], out
    assert out["final"]["anchor"] >= 0.0 and out["known_windows"] == 12 and out["incidents"] == 4
    with pytest.raises(ValueError, match="adapter='prompt_tuning'"):
        lora = SemanticEncoder.build(EncoderConfig(model="tiny-llama", state_dim=16, adapter="lora"), known)
        tune_prompt(lora, novel_w, ids, known_w, kid)

"""``policy.target_head: entity``: target logits scored per target with shared weights (EntityTargetHead)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from ifshm_ray.env import FaultInjectionEnv
from ifshm_ray.policy.module import EntityTargetHead, module_class
from ifshm_ray.policy.trigger import entity_layout

SMALL = {"encoder_hiddens": [32], "head_hiddens": [32], "vf_hiddens": [32], "category_embed_dim": 8}


def _module(**over):
    env = FaultInjectionEnv({"render_telemetry": False})
    torch.manual_seed(0)
    m = RLModuleSpec(module_class=module_class("hierarchical"), observation_space=env.observation_space,
                     action_space=env.action_space,
                     model_config={**SMALL, "entity_layout": entity_layout({}), **over}).build()
    return m, env


def _obs(env, n=6, seed=0):
    rows = []
    obs, _ = env.reset(seed=seed, options={"faults": "node_crash"})
    for i in range(n):
        rows.append(obs)
        obs, *_ = env.step(np.array([0, 0, 0]))
    return {k: torch.tensor(np.stack([r[k] for r in rows]), dtype=torch.float32) for k in rows[0]}


@pytest.mark.timeout(60)
def test_entity_head_is_equivariant_in_the_targets():
    head = EntityTargetHead(ent_dim=5, enc_dim=4, emb_dim=3, hidden=8, activation="tanh")
    ent, h, e = torch.randn(2, 7, 5), torch.randn(2, 4), torch.randn(2, 3)
    perm = torch.randperm(7)
    assert torch.allclose(head(ent[:, perm], h, e), head(ent, h, e)[:, perm], atol=1e-6)
    e_all = torch.randn(2, 10, 3)
    out = head(ent, h, e_all)
    assert out.shape == (2, 10, 7)
    assert torch.allclose(out[:, 4], head(ent, h, e_all[:, 4]), atol=1e-6)  # all categories = one at a time


@pytest.mark.timeout(60)
def test_module_with_entity_head_acts_trains_and_reads_each_targets_block():
    m, env = _module()
    obs = _obs(env)
    d = m.dims
    assert m._entities(obs).shape == (6, d.num_targets, m._entity["ent_dim"])
    out = m.forward_exploration({Columns.OBS: obs})
    c, t, r = out[Columns.ACTIONS]
    pair = obs["action_mask"].reshape(6, d.num_categories, d.num_targets) > 0.5
    assert bool(pair[torch.arange(6), c, t].all())  # masks hold
    # the low level of the stored category equals the all-categories pass at that category
    h, _, pm, rm = m._high(obs)
    t_all, _ = m._low_all(h, pm, rm, obs)
    t_given, _ = m._low_given(h, c, pm, rm, obs)
    assert torch.allclose(t_all[torch.arange(6), c], t_given, atol=1e-5)
    # a target's own block moves its logit through the entity head
    bumped = {k: v.clone() for k, v in obs.items()}
    f = m._entity["target_feat"]
    bumped["obs"][:, 3 * f: 4 * f] += 1.0
    delta = m._entity_head(m._entities(bumped), h, m._category_embedding(c)) - \
        m._entity_head(m._entities(obs), h, m._category_embedding(c))
    assert (delta[:, 3].abs() > 1e-6).all() and torch.allclose(delta[:, :3], torch.zeros_like(delta[:, :3]))
    train = m.forward_train({Columns.OBS: obs, Columns.ACTIONS: (c, t, r)})
    train[Columns.ACTION_DIST_INPUTS].sum().backward()
    assert m._entity_head.wx.weight.grad is not None and m._entity_head.wx.weight.grad.abs().sum() > 0
    env.close()


@pytest.mark.timeout(60)
def test_bad_entity_layout_and_config_are_refused():
    with pytest.raises(ValueError, match="does not fit the observation"):
        _module(entity_layout={**entity_layout({}), "memory_offset": 10**6})
    from ifshm_ray.config import ConfigError
    from ifshm_ray.policy.config import PolicySection

    with pytest.raises(ConfigError, match="needs kind: hierarchical"):
        PolicySection.from_dict({"kind": "flat", "target_head": "entity"})
    cfg = PolicySection.from_dict({"target_head": "entity"}).rl_module_config({})
    assert cfg["entity_layout"] == entity_layout({})
    assert "entity_layout" not in PolicySection().rl_module_config({})  # the default head: the old model config

"""Unit tests of the hierarchical and flat RLModules (no Ray cluster needed)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from ifshm_ray.policy.distributions import MASK_LOGIT
from ifshm_ray.policy.module import (
    ENTROPY_HIGH,
    ENTROPY_LOW,
    FlatRecoveryModule,
    HierarchicalRecoveryModule,
    module_class,
)

from test_policy_standin_env import C, F, R, T, StandInFaultEnv

KINDS = ["hierarchical", "flat"]
SMALL = {"encoder_hiddens": [32], "head_hiddens": [32], "vf_hiddens": [32], "category_embed_dim": 8}


def build(kind: str, **model_config):
    env = StandInFaultEnv()
    torch.manual_seed(0)
    return RLModuleSpec(
        module_class=module_class(kind),
        observation_space=env.observation_space,
        action_space=env.action_space,
        model_config={**SMALL, **model_config},
    ).build()


def random_obs(b: int, seed: int = 0, p_valid: float = 0.3) -> dict:
    """Random features and random masks; every row keeps >= 1 valid pair and ratio level 0 of every category."""
    rng = np.random.default_rng(seed)
    pair = rng.random((b, C, T)) < p_valid
    pair[np.arange(b), rng.integers(0, C, b), rng.integers(0, T, b)] = True
    ratio = rng.random((b, C, R)) < 0.5
    ratio[:, :, 0] = True
    return {
        "obs": torch.tensor(rng.normal(size=(b, F)), dtype=torch.float32),
        "action_mask": torch.tensor(pair.reshape(b, -1), dtype=torch.float32),
        "ratio_mask": torch.tensor(ratio.reshape(b, -1), dtype=torch.float32),
    }


def as_np_masks(obs):
    b = obs["obs"].shape[0]
    return obs["action_mask"].numpy().reshape(b, C, T) > 0.5, obs["ratio_mask"].numpy().reshape(b, C, R) > 0.5


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_output_shapes(kind):
    m = build(kind)
    obs = random_obs(7)
    for fwd in (m.forward_exploration, m.forward_inference):
        out = fwd({Columns.OBS: obs})
        c, t, r = out[Columns.ACTIONS]
        assert c.shape == t.shape == r.shape == (7,)
        assert out[Columns.ACTION_LOGP].shape == (7,)
        expected = C + T + R if kind == "hierarchical" else C * T * R
        assert out[Columns.ACTION_DIST_INPUTS].shape == (7, expected)
    train = m.forward_train({Columns.OBS: obs, Columns.ACTIONS: out[Columns.ACTIONS]})
    assert train[ENTROPY_HIGH].shape == train[ENTROPY_LOW].shape == (7,)
    assert m.compute_values({Columns.OBS: obs}).shape == (7,)
    assert m.action_probabilities(obs).shape == (7, C, T, R)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_masking_never_samples_invalid_actions(kind):
    m = build(kind)
    for seed in range(5):
        obs = random_obs(512, seed=seed, p_valid=0.05 + 0.1 * seed)
        pair, ratio = as_np_masks(obs)
        rows = np.arange(512)
        for fwd in (m.forward_exploration, m.forward_inference):
            with torch.no_grad():
                c, t, r = (a.numpy() for a in fwd({Columns.OBS: obs})[Columns.ACTIONS])
            assert pair[rows, c, t].all(), "sampled an invalid (category, target)"
            assert ratio[rows, c, r].all(), "sampled an invalid ratio level"
        probs = m.action_probabilities(obs).detach().numpy()
        joint_valid = pair[:, :, :, None] & ratio[:, :, None, :]
        assert probs[~joint_valid].max() == 0.0
        np.testing.assert_allclose(probs.sum(axis=(1, 2, 3)), 1.0, rtol=1e-5)


def manual_logp(m, obs, actions) -> np.ndarray:
    """log p(c) + log p(t|c) + log p(r|c) from the module's layers and numpy masking, independent of its code paths."""
    b = obs["obs"].shape[0]
    pair, ratio = as_np_masks(obs)
    c, t, r = (a.numpy() for a in actions)

    def log_softmax(x, mask):
        x = np.where(mask, x, -np.inf)
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    with torch.no_grad():
        h = m._encoder(obs["obs"])
        if isinstance(m, FlatRecoveryModule):
            logits = m._pi_head(h).numpy()
            joint = (pair[:, :, :, None] & ratio[:, :, None, :]).reshape(b, -1)
            idx = (c * T + t) * R + r
            return log_softmax(logits, joint)[np.arange(b), idx]
        cat = log_softmax(m._category_head(h).numpy(), pair.any(-1))
        x = torch.cat([h, m._category_embedding(torch.as_tensor(c))], -1)
        tl = log_softmax(m._target_head(x).numpy(), pair[np.arange(b), c])
        rl = log_softmax(m._ratio_head(x).numpy(), ratio[np.arange(b), c])
    rows = np.arange(b)
    return cat[rows, c] + tl[rows, t] + rl[rows, r]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_logp_of_sampled_actions_matches_manual_computation(kind):
    m = build(kind)
    obs = random_obs(256, seed=3)
    with torch.no_grad():
        out = m.forward_exploration({Columns.OBS: obs})
        actions = out[Columns.ACTIONS]
        expected = manual_logp(m, obs, actions)
        np.testing.assert_allclose(out[Columns.ACTION_LOGP].numpy(), expected, rtol=1e-4, atol=1e-4)
        # The learner's view: forward_train on the stored actions + the train distribution class.
        train = m.forward_train({Columns.OBS: obs, Columns.ACTIONS: actions})
        dist = m.get_train_action_dist_cls().from_logits(train[Columns.ACTION_DIST_INPUTS])
        np.testing.assert_allclose(dist.logp(actions).numpy(), expected, rtol=1e-4, atol=1e-4)
        # The exploration-time dist inputs (stored in the episodes) give the same logp (PPO's old policy).
        old = m.get_exploration_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
        np.testing.assert_allclose(old.logp(actions).numpy(), expected, rtol=1e-4, atol=1e-4)
        # And the joint probability table agrees.
        probs = m.action_probabilities(obs).numpy()
        c, t, r = (a.numpy() for a in actions)
        np.testing.assert_allclose(np.log(probs[np.arange(256), c, t, r]), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("low_entropy", ["expected", "sampled"])
def test_level_entropies(kind, low_entropy):
    """H_high + E[H_low] equals the joint entropy (chain rule); 'sampled' is an unbiased estimate of E[H_low]."""
    m = build(kind, low_entropy=low_entropy)
    obs = random_obs(64, seed=5)
    with torch.no_grad():
        out = m.forward_exploration({Columns.OBS: obs})
        train = m.forward_train({Columns.OBS: obs, Columns.ACTIONS: out[Columns.ACTIONS]})
        p = m.action_probabilities(obs).reshape(64, -1).numpy().astype(np.float64)
    joint = -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)).sum(-1)
    total = train[ENTROPY_HIGH].numpy() + train[ENTROPY_LOW].numpy()
    if kind == "flat" or low_entropy == "expected":
        np.testing.assert_allclose(total, joint, rtol=1e-4, atol=1e-4)
    else:
        assert np.isfinite(total).all() and abs(total.mean() - joint.mean()) < 0.5


@pytest.mark.timeout(60)
def test_ratio_term_is_zero_for_categories_without_ratio():
    m = build("hierarchical")
    obs = random_obs(32, seed=7)
    obs["ratio_mask"] = torch.zeros_like(obs["ratio_mask"]).reshape(32, C, R)
    obs["ratio_mask"][:, :, 0] = 1.0
    obs["ratio_mask"] = obs["ratio_mask"].reshape(32, -1)
    with torch.no_grad():
        _, r_logits = m.low_level_logits(obs, torch.full((32,), 3))
    logp_r = torch.log_softmax(r_logits, -1)
    assert torch.all(logp_r[:, 0] == 0.0)
    assert torch.all(r_logits[:, 1:] == MASK_LOGIT)


@pytest.mark.timeout(60)
def test_conditioning_on_category_changes_low_level_distribution():
    m = build("hierarchical")
    obs = random_obs(16, seed=11, p_valid=1.0)  # everything valid: only the category embedding differs
    with torch.no_grad():
        t1, r1 = m.low_level_logits(obs, torch.full((16,), 1))
        t2, r2 = m.low_level_logits(obs, torch.full((16,), 2))
        assert not torch.allclose(torch.softmax(t1, -1), torch.softmax(t2, -1))
        assert not torch.allclose(torch.softmax(r1, -1), torch.softmax(r2, -1))
        # forward_train conditions on the *stored* category.
        actions = (torch.full((16,), 2), torch.zeros(16, dtype=torch.long), torch.zeros(16, dtype=torch.long))
        train = m.forward_train({Columns.OBS: obs, Columns.ACTIONS: actions})
        np.testing.assert_allclose(train[Columns.ACTION_DIST_INPUTS][:, C:C + T].numpy(), t2.numpy(), rtol=1e-5)


@pytest.mark.timeout(60)
def test_category_without_valid_target_is_masked_at_high_level():
    m = build("hierarchical")
    obs = random_obs(256, seed=13, p_valid=0.5)
    pair = obs["action_mask"].reshape(256, C, T)
    pair[:, 3, :] = 0.0
    obs["action_mask"] = pair.reshape(256, -1)
    with torch.no_grad():
        probs = m.category_probabilities(obs)
        c = m.forward_exploration({Columns.OBS: obs})[Columns.ACTIONS][0]
    assert torch.all(probs[:, 3] == 0.0)
    assert not torch.any(c == 3)


@pytest.mark.timeout(60)
def test_gradients_are_finite_with_masked_actions():
    """Stored actions that are invalid under the current mask (PPO's artificial last timestep) stay finite."""
    m = build("hierarchical")
    obs = random_obs(32, seed=17, p_valid=0.2)
    actions = tuple(torch.zeros(32, dtype=torch.long) + k for k in (5, 21, 3))
    train = m.forward_train({Columns.OBS: obs, Columns.ACTIONS: actions})
    logp = m.get_train_action_dist_cls().from_logits(train[Columns.ACTION_DIST_INPUTS]).logp(actions)
    loss = torch.exp(logp - logp.detach()).mean() + train[ENTROPY_LOW].mean() + train[ENTROPY_HIGH].mean()
    loss.backward()
    assert torch.isfinite(logp).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


@pytest.mark.timeout(60)
def test_bad_spaces_and_config_are_refused():
    import gymnasium as gym

    env = StandInFaultEnv()
    with pytest.raises(ValueError, match="Tuple"):
        RLModuleSpec(module_class=HierarchicalRecoveryModule, observation_space=env.observation_space,
                     action_space=gym.spaces.Discrete(3)).build()
    with pytest.raises(ValueError, match="model_config"):
        build("hierarchical", not_a_key=1)
    with pytest.raises(ValueError, match="policy.kind"):
        module_class("nope")

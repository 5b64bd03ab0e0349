"""IFSHMPPOTorchLearner: entropy-coefficient contract and the extra-loss hook (local learner, no Ray cluster)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from ifshm_ray.policy.algo import build_ppo_config
from ifshm_ray.policy.config import load_train_config

from test_policy_standin_env import StandInFaultEnv

CALLS: list[str] = []
W, V = 2.0, 1.5  # weight and value of the extra term: it must add exactly W * V to total_loss


def constant_term(learner, *, module_id, config, batch, fwd_out):
    """An extra loss term as a later feature (replay, prompt tuning, clustering) would add it: value V, with a
    gradient path through the module's parameters (zero gradient)."""
    CALLS.append(module_id)
    module = learner.module[module_id]
    return sum((p ** 2).sum() for p in module.parameters()) * 0.0 + V


def _config(**learner_config):
    cfg = load_train_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    cfg.env.entry_point = "test_policy_standin_env:StandInFaultEnv"
    cfg.env.config = {}
    cfg.runners.gym_env_vectorize_mode = "sync"
    config = build_ppo_config(cfg)
    if learner_config:
        config.learners(learner_config_dict={**config.learner_config_dict, **learner_config})
    return config


def _episode(steps: int = 8):
    """A short stand-in episode with fixed actions and log-probs (the same each call)."""
    env = StandInFaultEnv()
    obs, _ = env.reset(seed=0)
    episode = SingleAgentEpisode(observations=[obs], observation_space=env.observation_space,
                                 action_space=env.action_space)
    for _ in range(steps):
        action = (0, 0, 0)
        obs, reward, terminated, truncated, _ = env.step(action)
        episode.add_env_step(obs, action, reward, terminated=terminated, truncated=truncated,
                             extra_model_outputs={"action_logp": np.float32(-3.0),
                                                  "action_dist_inputs": np.zeros(10 + 22 + 4, np.float32)})
        if terminated or truncated:
            break
    return episode.to_numpy()


def _update(group) -> dict:
    """One update; the losses logged are those of the last minibatch. The extra term has zero gradient, so both
    groups take the same optimizer steps and meet the same weights."""
    torch.manual_seed(0)
    results = group.update(episodes=[_episode()], num_epochs=1, minibatch_size=8)
    stats = results[0]["default_policy"] if isinstance(results, list) else results["default_policy"]
    return {k: float(v.peek()) for k, v in stats.items()}  # RLlib Stats objects -> their logged values


@pytest.mark.timeout(120)
def test_ppo_entropy_coeff_must_be_zero():
    config = _config().training(entropy_coeff=0.01)
    with pytest.raises(ValueError, match="entropy_coeff=0.0"):
        config.build_learner_group(env=StandInFaultEnv())


@pytest.mark.timeout(120)
def test_extra_loss_term_adds_weight_times_value_and_is_logged():
    """The same weights and batch with and without an extra term of weight W and value V: total_loss differs by
    W * V, every other term is unchanged, and the term is logged under loss/<name>."""
    plain = _config().build_learner_group(env=StandInFaultEnv())
    extra = _config(extra_losses={"const": {"fn": "test_policy_learner:constant_term", "coeff": W}}
                    ).build_learner_group(env=StandInFaultEnv())
    extra.set_weights(plain.get_weights())
    CALLS.clear()
    a, b = _update(plain), _update(extra)
    assert CALLS, "extra loss fn was not called"
    for key in ("policy_loss", "vf_loss", "entropy_high", "entropy_low", "entropy_loss", "total_loss", "loss/const"):
        assert key in b, f"{key} not logged; got {sorted(b)}"
    assert "loss/const" not in a
    assert b["loss/const"] == V
    for key in ("policy_loss", "vf_loss", "entropy_high", "entropy_low", "entropy_loss"):
        assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-6), key
    # float32 sums: the difference is W * V up to the rounding of total_loss (|total| ~ 10 -> ulp ~ 1e-6)
    assert b["total_loss"] - a["total_loss"] == pytest.approx(W * V, abs=1e-5)

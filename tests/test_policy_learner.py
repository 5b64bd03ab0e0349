"""IFSHMPPOTorchLearner: entropy-coefficient contract and the extra-loss hook (local learner, no Ray cluster)."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from ifshm_ray.policy.algo import build_ppo_config  # noqa: E402
from ifshm_ray.policy.config import load_train_config  # noqa: E402

from test_policy_standin_env import StandInFaultEnv  # noqa: E402

CALLS: list[str] = []


def l2_term(learner, *, module_id, config, batch, fwd_out):
    """An extra loss term as a later feature (replay, prompt tuning, clustering) would add it."""
    CALLS.append(module_id)
    module = learner.module[module_id]
    return sum((p ** 2).sum() for p in module.parameters()) * 0.0 + 1.5


def _config(**learner_config):
    cfg = load_train_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    cfg.env.entry_point = "test_policy_standin_env:StandInFaultEnv"
    cfg.env.config = {}
    cfg.runners.gym_env_vectorize_mode = "sync"
    config = build_ppo_config(cfg)
    if learner_config:
        config.learners(learner_config_dict={**config.learner_config_dict, **learner_config})
    return config


@pytest.mark.timeout(120)
def test_ppo_entropy_coeff_must_be_zero():
    config = _config().training(entropy_coeff=0.01)
    with pytest.raises(ValueError, match="entropy_coeff=0.0"):
        config.build_learner_group(env=StandInFaultEnv())


@pytest.mark.timeout(120)
def test_extra_loss_terms_are_added_and_logged():
    import numpy as np
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    config = _config(extra_losses={"l2": {"fn": "test_policy_learner:l2_term", "coeff": 2.0}})
    group = config.build_learner_group(env=StandInFaultEnv())
    env = StandInFaultEnv()
    obs, _ = env.reset(seed=0)
    episode = SingleAgentEpisode(observations=[obs], observation_space=env.observation_space,
                                 action_space=env.action_space)
    for _ in range(8):
        action = (0, 0, 0)
        obs, reward, terminated, truncated, _ = env.step(action)
        episode.add_env_step(obs, action, reward, terminated=terminated, truncated=truncated,
                             extra_model_outputs={"action_logp": np.float32(-3.0),
                                                  "action_dist_inputs": np.zeros(10 + 22 + 4, np.float32)})
        if terminated or truncated:
            break
    results = group.update(episodes=[episode.to_numpy()], num_epochs=1, minibatch_size=8)
    stats = results[0]["default_policy"] if isinstance(results, list) else results["default_policy"]
    keys = set(stats)
    for key in ("policy_loss", "vf_loss", "entropy_high", "entropy_low", "entropy_loss", "total_loss", "loss/l2"):
        assert key in keys, f"{key} not logged; got {sorted(keys)}"
    assert CALLS, "extra loss fn was not called"

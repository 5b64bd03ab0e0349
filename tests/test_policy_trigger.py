"""The alert trigger (``policy.act_on: alert``): the module observes while the telemetry shows no incident, and its
trigger is runbook-instant's (an alert other than the info-level ones pending or firing) or a broken SLO."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from ifshm_ray.baselines.policies import RUNBOOK_PATH, ignored_alerts, runbook_trigger
from ifshm_ray.env import FaultInjectionEnv, sample_valid_actions
from ifshm_ray.policy.config import PolicySection
from ifshm_ray.policy.module import module_class
from ifshm_ray.policy.trigger import trigger_spec
from ifshm_ray.sim.actions import CATEGORIES

SMALL = {"encoder_hiddens": [32], "head_hiddens": [32], "vf_hiddens": [32], "category_embed_dim": 8}
ENV_CFG = {"faults": "known", "compound_prob": 0.1}
OBSERVE = CATEGORIES.index("observe")


@pytest.fixture(scope="module")
def env():
    e = FaultInjectionEnv({**ENV_CFG, "render_telemetry": True})
    yield e
    e.close()


def build(kind: str, env, spec):
    torch.manual_seed(0)
    return RLModuleSpec(module_class=module_class(kind), observation_space=env.observation_space,
                        action_space=env.action_space, model_config={**SMALL, "act_trigger": spec}).build()


def as_batch(obs_list):
    return {k: torch.as_tensor(np.stack([o[k] for o in obs_list]), dtype=torch.float32)
            for k in ("obs", "action_mask", "ratio_mask")}


def rollout(env, episodes: int, seed: int):
    """(observations, telemetry) of random-action episodes of known faults and fault-free ones."""
    rng = np.random.default_rng(seed)
    obs_l, tel_l = [], []
    for ep in range(episodes):
        opts = {"faults": ["none"]} if ep % 4 == 0 else None
        obs, info = env.reset(seed=seed + ep, options=opts)
        done, n = False, 0
        while not done and n < 40:
            obs_l.append(obs)
            tel_l.append(info["telemetry"])
            a = sample_valid_actions(obs["action_mask"][None], rng, env.topology.T)[0] if n % 5 == 4 \
                else np.zeros(3, np.int64)
            obs, _, term, trunc, info = env.step(a)
            done, n = term or trunc, n + 1
    return obs_l, tel_l


@pytest.mark.timeout(120)
def test_spec_places_the_flags_of_the_incident_opening_rules(env):
    spec = trigger_spec(ENV_CFG)
    lay = env.obs_layout
    ignore = set(yaml.safe_load(RUNBOOK_PATH.read_text())["ignore_alerts"])  # read plainly, not by the helper
    assert ignored_alerts() == ignore
    names = [a.name for a in env.sim.alerts]
    assert spec["slo_green"] == lay["slo_green"] and spec["observe"] == OBSERVE
    assert [names[i - lay["global_offset"]] for i in spec["flags"]] == [n for n in names if n not in ignore]
    assert ignore & set(names), "the test needs an ignored rule in the catalog"
    # the continual protocol's stream env (a vector entry point with fault weights) has the same trigger
    assert trigger_spec({**ENV_CFG, "num_envs": 4, "fault_weights": {"node_crash": 1.0}}) == spec


@pytest.mark.timeout(180)
def test_module_trigger_equals_the_telemetry_trigger(env):
    """On random rollouts the module's incident test is exactly runbook-instant's trigger or a broken SLO, computed
    from the rendered telemetry (both calm and incident states occur)."""
    spec = trigger_spec(ENV_CFG)
    m = build("hierarchical", env, spec)
    ignore = ignored_alerts()
    obs_l, tel_l = rollout(env, 8, seed=11)
    got = m.incident_open(as_batch(obs_l)).numpy()
    slo_broken = np.array([o["obs"][env.obs_layout["slo_green"]] < 0.5 for o in obs_l])
    want = np.array([runbook_trigger(t, ignore) for t in tel_l]) | slo_broken
    assert got.tolist() == want.tolist()
    assert 0 < want.sum() < len(want)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["hierarchical", "flat"])
def test_calm_states_only_observe(kind, env):
    spec = trigger_spec(ENV_CFG)
    m, free = build(kind, env, spec), build(kind, env, None)
    obs_l, _ = rollout(env, 8, seed=5)
    batch = as_batch(obs_l)
    open_ = m.incident_open(batch)
    assert free.incident_open(batch).all()
    torch.manual_seed(1)
    for _ in range(3):
        c = m.forward_exploration({Columns.OBS: batch})[Columns.ACTIONS][0]
        assert (c[~open_] == OBSERVE).all()
    probs = m.action_probabilities(batch)
    cat = probs.sum(dim=(-1, -2))
    assert torch.allclose(cat[~open_, OBSERVE], torch.ones(int((~open_).sum())))
    # in an incident the mask is the env's: other categories keep probability
    assert (cat[open_, OBSERVE] < 0.999).all()
    assert (free.action_probabilities(batch).sum(dim=(-1, -2))[~open_, OBSERVE] < 0.999).all()


@pytest.mark.timeout(60)
def test_bad_trigger_config(env):
    with pytest.raises(ValueError, match="needs the env config"):
        PolicySection(act_on="alert").rl_module_config()
    with pytest.raises(ValueError, match="does not fit the observation"):
        build("hierarchical", env, {"flags": [10 ** 6], "slo_green": 0, "observe": 0})
    assert "act_trigger" not in PolicySection().rl_module_config()
    assert PolicySection(act_on="alert").rl_module_config(ENV_CFG)["act_trigger"] == trigger_spec(ENV_CFG)

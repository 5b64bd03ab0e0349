"""``RewardConfig.duration_discount``: semi-MDP discounting of the unhealthy time inside one step."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ifshm_ray.env import FaultInjectionEnv
from ifshm_ray.sim.actions import CATEGORY_INDEX

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
OBSERVE = np.array([CATEGORY_INDEX["observe"], 0, 0])
ESCALATE = np.array([CATEGORY_INDEX["escalate"], 0, 0])


def _run(discount, actions, fault="node_crash", seed=5):
    env = FaultInjectionEnv({"render_telemetry": False, "reward": {"duration_discount": discount}})
    env.reset(seed=seed, options={"faults": fault})
    out = []
    for a in actions:
        t0 = float(env.sim.t[0])
        _, r, term, trunc, _ = env.step(a)
        out.append((r, float(env.sim.t[0]) - t0, bool(env.sim.healthy[0]), float(env.sim.unhealthy_s[0])))
        if term or trunc:
            break
    env.close()
    return out


def test_plain_steps_unchanged_and_a_long_page_discounted_inside_its_step():
    g = 0.99
    actions = [OBSERVE] * 4 + [ESCALATE]
    plain, disc = _run(None, actions), _run(g, actions)
    assert len(plain) == len(disc) == 5
    for (r0, _, _, u0), (r1, _, _, u1) in zip(plain[:4], disc[:4]):
        assert r1 == r0 and u1 == u0  # no action duration: charged exactly as without the discount
    (r0, dt, healthy, u0), (r1, dt1, healthy1, u1) = plain[4], disc[4]
    assert dt == dt1 and healthy == healthy1 and u0 == u1  # the dynamics and the unhealthy-time metric unchanged
    step_s = 30.0
    act_s = dt - step_s  # the page (the fixed human: 900 + 300 s)
    assert act_s == pytest.approx(1200.0)
    n = act_s / step_s
    charged = step_s * (1 - g ** n) / (1 - g) + (g ** n) * step_s * (not healthy)
    undiscounted = act_s + step_s * (not healthy)
    assert r1 - r0 == pytest.approx((undiscounted - charged) / 60.0, rel=1e-6)
    assert r1 > r0  # the page costs less than its whole duration undiscounted


def test_discount_one_is_the_plain_reward_and_training_checks_the_gamma():
    actions = [OBSERVE] * 3 + [ESCALATE]
    assert [x[0] for x in _run(1.0, actions)] == [x[0] for x in _run(None, actions)]
    from ifshm_ray.config import ConfigError
    from ifshm_ray.policy.config import load_train_config

    cfg = load_train_config(TINY, ["env.config.reward.duration_discount=0.99", "ppo.gamma=0.99"])
    assert cfg.env.config["reward"]["duration_discount"] == 0.99
    with pytest.raises(ConfigError, match="must equal ppo.gamma"):
        load_train_config(TINY, ["env.config.reward.duration_discount=0.9", "ppo.gamma=0.99"])

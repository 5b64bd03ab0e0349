"""Self-imitation loss: hand-computed values and gradients, zero gradients where R <= V, options."""
from __future__ import annotations

import math

import pytest
import torch

from ifshm_ray.replay.config import SILConfig
from ifshm_ray.replay.sil import hierarchical_logp, sil_loss, sil_loss_from_config


def inputs(logp=(math.log(0.5), math.log(0.25), math.log(0.1)), values=(1.0, 2.0, 0.0), returns=(3.0, 1.0, 0.5)):
    lp = torch.tensor(logp, dtype=torch.float64, requires_grad=True)
    v = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    return lp, v, torch.tensor(returns, dtype=torch.float64)


def test_values_and_gradients_by_hand():
    logp, v, r = inputs()
    w = torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64)
    out = sil_loss(logp, v, r, w, value_weight=0.01)
    # (R - V)+ = [2, 0, 0.5]; N = 2 steps with R > V
    assert out.num_valid == 2
    assert out.policy_loss.item() == pytest.approx((1 * 2 * math.log(2) + 2 * 0.5 * math.log(10)) / 2)
    assert out.value_loss.item() == pytest.approx((1 * 0.5 * 4 + 2 * 0.5 * 0.25) / 2)
    assert out.loss.item() == pytest.approx(out.policy_loss.item() + 0.01 * out.value_loss.item())
    assert out.priorities.tolist() == pytest.approx([2.0, 0.0, 0.5])
    out.loss.backward()
    # d/dlogp_i = -w_i (R-V)+_i / N; d/dV_i = -value_weight w_i (R-V)+_i / N (the policy term's advantage is fixed)
    assert logp.grad.tolist() == pytest.approx([-1.0, 0.0, -0.5])
    assert v.grad.tolist() == pytest.approx([-0.01, 0.0, -0.005])


def test_no_gradient_where_the_return_is_not_better_than_the_value():
    logp, v, r = inputs(values=(3.0, 2.0, 0.5), returns=(3.0, 1.0, 0.5))  # R <= V everywhere (two ties)
    out = sil_loss(logp, v, r)
    assert out.num_valid == 0 and out.loss.item() == 0.0
    out.loss.backward()
    assert logp.grad.tolist() == [0.0, 0.0, 0.0] and v.grad.tolist() == [0.0, 0.0, 0.0]


def test_hierarchical_logp_is_the_joint_log_probability():
    c = torch.log(torch.tensor([0.5]))
    t = torch.log(torch.tensor([0.2]))
    rr = torch.log(torch.tensor([0.4]))
    assert hierarchical_logp(c, t, rr).exp().item() == pytest.approx(0.5 * 0.2 * 0.4)
    lc, lt, lr = (torch.tensor([math.log(p)], requires_grad=True) for p in (0.5, 0.2, 0.4))
    out = sil_loss(hierarchical_logp(lc, lt, lr), torch.tensor([0.0]), torch.tensor([1.0]))
    out.loss.backward()
    assert lc.grad.item() == lt.grad.item() == lr.grad.item() == pytest.approx(-1.0)  # every level imitates


def test_min_valid_denominator_and_default_weights():
    logp, v, r = inputs()
    out = sil_loss(logp, v, r, min_valid=4)
    assert out.policy_loss.item() == pytest.approx((2 * math.log(2) + 0.5 * math.log(10)) / 4)


def test_adv_clip_gives_a_huber_value_term_and_clipped_priorities():
    logp, v, r = inputs()
    out = sil_loss(logp, v, r, adv_clip=1.0, value_weight=1.0)
    assert out.priorities.tolist() == pytest.approx([1.0, 0.0, 0.5])
    # d = 2 > clip: 1 * (2 - 0.5) = 1.5; d = 0.5: 0.5 * 0.25
    assert out.value_loss.item() == pytest.approx((1.5 + 0.125) / 2)
    assert out.policy_loss.item() == pytest.approx((1.0 * math.log(2) + 0.5 * math.log(10)) / 2)
    out.value_loss.backward()
    assert v.grad.tolist() == pytest.approx([-0.5, 0.0, -0.25])  # -min(d, clip) / N


def test_max_nlogp_caps_the_value_not_the_gradient():
    logp, v, r = inputs()
    out = sil_loss(logp, v, r, max_nlogp=1.0)
    assert out.policy_loss.item() == pytest.approx((2 * math.log(2) + 0.5 * 1.0) / 2)
    out.policy_loss.backward()
    assert logp.grad.tolist() == pytest.approx([-1.0, 0.0, -0.25])


def test_adv_normalize_divides_the_policy_weight_by_the_rms_of_r_minus_v():
    logp, v, r = inputs()
    raw = sil_loss(logp, v, r, value_weight=0.01)
    logp2, v2, r2 = inputs()
    out = sil_loss(logp2, v2, r2, value_weight=0.01, adv_normalize=True)
    rms = math.sqrt((2.0 ** 2 + 1.0 ** 2 + 0.5 ** 2) / 3)  # R - V = [2, -1, 0.5]
    assert out.policy_loss.item() == pytest.approx(raw.policy_loss.item() / rms)
    assert out.value_loss.item() == pytest.approx(raw.value_loss.item())  # the value term is unchanged
    assert out.priorities.tolist() == pytest.approx([2.0, 0.0, 0.5])  # priorities stay the raw (R - V)+
    out.loss.backward()
    assert logp2.grad.tolist() == pytest.approx([-1.0 / rms, 0.0, -0.25 / rms])


def test_adv_normalize_makes_the_policy_term_independent_of_the_reward_scale():
    logp, v, r = inputs()
    a = sil_loss(logp, v, r, adv_normalize=True)
    logp, v, r = inputs(values=(100.0, 200.0, 0.0), returns=(300.0, 100.0, 50.0))
    b = sil_loss(logp, v, r, adv_normalize=True)
    assert b.policy_loss.item() == pytest.approx(a.policy_loss.item())
    one = sil_loss(*(t[:1] for t in inputs()), adv_normalize=True)  # one row: its weight is 1
    assert one.policy_loss.item() == pytest.approx(math.log(2))
    # near-zero differences keep a near-zero weight (the RMS is floored at 1e-4, as RLlib floors the std)
    tiny = sil_loss(*inputs(values=(0.0, 0.0, 0.0), returns=(1e-6, -1e-6, 1e-6)), adv_normalize=True)
    assert tiny.policy_loss.item() < 0.05
    # with adv_clip the RMS is of the clipped differences: R - V = +-50 clipped at 1 gives weights of 1
    big = sil_loss(*inputs(values=(0.0, 0.0, 0.0), returns=(50.0, -50.0, 50.0)), adv_normalize=True, adv_clip=1.0)
    assert big.policy_loss.item() == pytest.approx((math.log(2) + math.log(10)) / 2)


def test_from_config_and_shape_check():
    logp, v, r = inputs()
    assert SILConfig().adv_normalize is True
    cfg = SILConfig(value_weight=0.5, max_nlogp=None, min_valid=1, adv_normalize=False)
    a = sil_loss_from_config(logp, v, r, None, cfg)
    b = sil_loss(logp, v, r, value_weight=0.5)
    assert a.loss.item() == pytest.approx(b.loss.item())
    with pytest.raises(ValueError, match="1-D"):
        sil_loss(logp, v[:2], r)


def test_priorities_from_the_loss_steer_the_replay():
    """The pieces together: replayed steps whose return beat the value estimate are drawn more often after the
    priorities (R - V)+ are written back."""
    import numpy as np
    from ray.rllib.core.columns import Columns

    from ifshm_ray.replay.buffer import StratifiedReplayBuffer
    from ifshm_ray.replay.config import ReplayConfig
    from test_replay_buffer import episode

    buf = StratifiedReplayBuffer(ReplayConfig(capacity=100, alpha=1.0, seed=2))
    buf.add([episode(k, 1, reward=-1.0) for k in range(4)], "known")  # R = -1 for every step
    value_of_tag = torch.tensor([-3.0, -2.0, -1.0, 0.0], dtype=torch.float64)  # R - V = 2, 1, 0, -1
    batch = buf.sample(64)
    rows = torch.as_tensor(batch.columns[Columns.OBS][:, 0]).long()
    out = sil_loss(torch.zeros(len(rows), dtype=torch.float64), value_of_tag[rows],
                   torch.as_tensor(batch.columns[Columns.RETURNS_TO_GO], dtype=torch.float64),
                   torch.as_tensor(batch.weights))
    buf.update_priorities(batch.handle, out.priorities.numpy())
    freq = np.bincount(buf.sample(3000).columns[Columns.OBS][:, 0].astype(int), minlength=4) / 3000
    np.testing.assert_allclose(freq, [2 / 3, 1 / 3, 0, 0], atol=0.03)


def test_clip_ratio_stops_the_gradient_of_steps_past_the_trust_region():
    logp, v, r = inputs()  # (R - V)+ = [2, 0, 0.5]
    # step 0: pi rose from 0.25 to 0.5 since the update's start (ratio 2 > 1.2); step 2: from 0.095 to 0.1 (1.05)
    old = torch.log(torch.tensor([0.25, 0.25, 0.095], dtype=torch.float64))
    out = sil_loss(logp, v, r, clip_ratio=0.2, logp_old=old)
    ref = sil_loss(*inputs())
    assert out.num_clipped == 1
    assert out.loss.item() == pytest.approx(ref.loss.item())  # the term's value is kept, only its gradient goes
    out.loss.backward()
    assert logp.grad.tolist() == pytest.approx([0.0, 0.0, -0.25])  # step 2 inside the region: -w d / N as before
    # at the update's first minibatch (logp_old = logp) the clipped term is the paper's, gradient and all
    logp2, v2, r2 = inputs()
    first = sil_loss(logp2, v2, r2, clip_ratio=0.2, logp_old=logp2.detach())
    first.loss.backward()
    assert first.num_clipped == 0 and logp2.grad.tolist() == pytest.approx([-1.0, 0.0, -0.25])
    with pytest.raises(ValueError, match="logp_old"):
        sil_loss(*inputs(), clip_ratio=0.2)
    assert SILConfig().clip_ratio is None  # off by default: the paper's term


def test_clip_ratio_bounds_how_far_one_update_moves_the_policy_on_a_replayed_step():
    # one replayed step of an action the policy finds unlikely (p = 0.02), many gradient steps within one update
    def run(clip):
        torch.manual_seed(0)
        logits = torch.zeros(5, requires_grad=True)
        with torch.no_grad():
            logits[0] = math.log(0.02 * 4 / 0.98)
        opt = torch.optim.SGD([logits], lr=0.05)
        old = torch.log_softmax(logits, -1)[0].detach().reshape(1)
        for _ in range(64):  # gradient steps over the same replayed sample within one update
            opt.zero_grad()
            lp = torch.log_softmax(logits, -1)[0].reshape(1)
            sil_loss(lp, torch.zeros(1), torch.ones(1), clip_ratio=clip, logp_old=old if clip else None).loss.backward()
            opt.step()
        return torch.softmax(logits, -1)[0].item()

    free, clipped = run(None), run(0.2)
    assert free > 0.2  # unclipped: the update imitates the one step outright (> 10x its probability)
    assert 0.02 * 1.2 <= clipped < 0.02 * 1.2 * 1.06  # clipped: stops just past 1.2x (one gradient step of overshoot)

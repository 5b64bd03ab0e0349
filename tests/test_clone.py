"""CLEAR's behavioural cloning (ifshm_ray/replay/clone.py): hand-computed KL and gradients, the hierarchical KL
estimate against the exact joint KL, masking of rows without behaviour outputs, the buffer's behaviour columns,
the learner term's stratum mask, and the config."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from ifshm_ray.config import ConfigError
from ifshm_ray.policy.distributions import MASK_LOGIT
from ifshm_ray.replay.buffer import StratifiedReplayBuffer, has_key
from ifshm_ray.replay.clone import categorical_kl, clone_loss, clone_loss_from_config, policy_kl
from ifshm_ray.replay.config import CloneConfig, ReplayConfig, ReplaySection

from test_policy_module import build, random_obs
from test_policy_standin_env import C, R, T


def t64(x, grad=False):
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


# ----------------------------------------------------------------------------------------------- the KL
def test_categorical_kl_by_hand_and_its_gradient():
    p = t64([[math.log(0.5), math.log(0.5)]])
    q = t64([[math.log(0.25), math.log(0.75)]], grad=True)
    kl = categorical_kl(p, q)
    assert kl.item() == pytest.approx(0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75))
    kl.sum().backward()
    # d KL / d q_logits = softmax(q) - p: a gradient step moves the current policy towards the behaviour
    assert q.grad[0].tolist() == pytest.approx([0.25 - 0.5, 0.75 - 0.5])


def test_kl_is_zero_when_the_current_policy_is_the_behaviour():
    logits = t64([[0.3, -1.2, 2.0], [0.0, 0.0, 0.0]], grad=True)
    kl = categorical_kl(logits.detach(), logits)
    assert kl.tolist() == [0.0, 0.0]
    kl.sum().backward()
    assert logits.grad.abs().max().item() < 1e-12


def test_masked_choices_contribute_nothing():
    # the masked entry (MASK_LOGIT in both, as the module masks both from the same observation) adds 0, no NaN
    p = torch.tensor([[0.0, math.log(3.0), MASK_LOGIT]], dtype=torch.float32)
    q = torch.tensor([[math.log(3.0), 0.0, MASK_LOGIT]], dtype=torch.float32, requires_grad=True)
    kl = categorical_kl(p, q)
    expected = 0.25 * math.log(0.25 / 0.75) + 0.75 * math.log(0.75 / 0.25)
    assert kl.item() == pytest.approx(expected, rel=1e-5)
    kl.sum().backward()
    assert torch.isfinite(q.grad).all() and q.grad[0, 2].item() == 0.0


def test_policy_kl_sums_the_blocks_and_checks_shapes():
    b = t64([[0.0, 1.0, 0.5, 0.5, 2.0, 0.0, -1.0]])
    c = t64([[1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    sizes = (2, 2, 3)
    expected = sum(categorical_kl(x, y) for x, y in zip(torch.split(b, sizes, -1), torch.split(c, sizes, -1)))
    assert policy_kl(b, c, sizes).item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="do not fit"):
        policy_kl(b, c, (2, 2, 2))


@pytest.mark.timeout(60)
def test_hierarchical_kl_estimate_is_unbiased_for_the_joint_kl():
    """E over the behaviour's category of the stored-category estimate = the exact KL of the joint (c, t, r)."""
    behaviour, current = build("hierarchical"), build("hierarchical")
    with torch.no_grad():  # a different current policy
        for p in current.parameters():
            p.add_(0.3 * torch.randn_like(p))
    obs = random_obs(5, seed=3)
    sizes = (C, T, R)
    with torch.no_grad():
        pb, pc = behaviour.action_probabilities(obs), current.action_probabilities(obs)  # (B, C, T, R)
        exact = torch.where(pb > 0, pb * (pb.log() - pc.log()), torch.zeros_like(pb)).sum((1, 2, 3))
        p_cat = pb.sum((2, 3))
        expected = torch.zeros(5)
        for c in range(C):
            act = (torch.full((5,), c), torch.zeros(5, dtype=torch.long), torch.zeros(5, dtype=torch.long))
            fb = behaviour.forward_train({Columns.OBS: obs, Columns.ACTIONS: act})[Columns.ACTION_DIST_INPUTS]
            fc = current.forward_train({Columns.OBS: obs, Columns.ACTIONS: act})[Columns.ACTION_DIST_INPUTS]
            expected += p_cat[:, c] * policy_kl(fb, fc, sizes)
    assert exact.min().item() > 1e-3  # the two policies differ
    np.testing.assert_allclose(expected.numpy(), exact.numpy(), rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------- the loss
def test_clone_loss_by_hand_with_masks_and_weights():
    kl = t64([0.2, 0.4, 5.0], grad=True)
    v = t64([1.0, -2.0, 3.0], grad=True)
    vb = t64([0.0, -1.0, 100.0])  # the last row's outputs are placeholders: masked out
    w = t64([1.0, 0.5, 1.0])
    m = torch.tensor([True, True, False])
    out = clone_loss(kl, v, vb, w, m, m, value_weight=0.5)
    assert (out.num_policy, out.num_value) == (2, 2)
    assert out.policy_loss.item() == pytest.approx((0.2 + 0.5 * 0.4) / 2)
    assert out.value_loss.item() == pytest.approx((1.0 + 0.5 * 1.0) / 2)
    assert out.loss.item() == pytest.approx(out.policy_loss.item() + 0.5 * out.value_loss.item())
    out.loss.backward()
    assert kl.grad.tolist() == pytest.approx([0.5, 0.25, 0.0])
    # d/dV_i = value_weight * w_i * 2 (V_i - V_b,i) / N: V moves towards the behaviour's value
    assert v.grad.tolist() == pytest.approx([0.5 * 2 * 1.0 / 2, 0.5 * 0.5 * 2 * -1.0 / 2, 0.0])


def test_rows_without_behaviour_outputs_give_zero_loss_and_gradient():
    kl = t64([3.0, 1.0], grad=True)
    v = t64([1.0, 2.0], grad=True)
    none = torch.tensor([False, False])
    out = clone_loss(kl, v, t64([7.0, -7.0]), None, none, none)
    assert out.loss.item() == 0.0 and (out.num_policy, out.num_value) == (0, 0)
    out.loss.backward()
    assert kl.grad.tolist() == [0.0, 0.0] and v.grad.tolist() == [0.0, 0.0]
    # the policy and the value masks are separate
    out = clone_loss(kl.detach(), v.detach(), t64([0.0, 0.0]), None, torch.tensor([True, False]),
                     torch.tensor([False, True]), value_weight=1.0)
    assert out.policy_loss.item() == 3.0 and out.value_loss.item() == 4.0
    cfg = CloneConfig(weight=1.0, value_weight=0.25)
    assert clone_loss_from_config(kl.detach(), v.detach(), t64([0.0, 0.0]), None, None, None,
                                  cfg).loss.item() == pytest.approx(2.0 + 0.25 * 2.5)
    with pytest.raises(ValueError, match="1-D of one length"):
        clone_loss(kl, v, t64([1.0]))
    with pytest.raises(ValueError, match="masks must have shape"):
        clone_loss(kl, v, t64([0.0, 0.0]), None, torch.tensor([True]))


# ----------------------------------------------------------------------------------------------- config
def test_clone_config_defaults_off_and_validates():
    cfg = CloneConfig()
    assert cfg.weight == 0.0 and not cfg.enabled
    assert ReplaySection().clone == cfg
    assert cfg.applies_to("known", "known") and not cfg.applies_to("novel", "known")
    assert CloneConfig(strata="all").applies_to("novel-3", "known")
    listed = CloneConfig(strata=["novel"])
    assert listed.applies_to("novel", "known") and not listed.applies_to("known", "known")
    for bad in ({"weight": -1.0}, {"value_weight": -0.1}, {"strata": []}, {"strata": "known"}, {"strata": [""]},
                {"wieght": 1.0}):
        with pytest.raises(ConfigError):
            CloneConfig.from_dict(bad, source="test")


def test_clone_is_set_from_a_training_config_override():
    from pathlib import Path

    from ifshm_ray.policy.config import load_train_config

    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    cfg = load_train_config(tiny, ["replay.enabled=true", "replay.clone.weight=1", "replay.clone.strata=all"])
    assert cfg.replay.clone.enabled and cfg.replay.clone.strata == "all"
    assert not load_train_config(tiny, ["replay.enabled=true"]).replay.clone.enabled


# ----------------------------------------------------------------------------------------------- buffer and learner
def _episode(tag: int, n: int, behaviour: bool) -> SingleAgentEpisode:
    extra = None
    if behaviour:
        extra = {Columns.ACTION_DIST_INPUTS: [np.full(4, tag + t, np.float32) for t in range(n)],
                 Columns.VF_PREDS: [np.float32(-tag - t) for t in range(n)]}
    return SingleAgentEpisode(observations=[np.array([tag, t], np.float32) for t in range(n + 1)],
                              actions=[np.int64(t % 3) for t in range(n)], rewards=[-1.0] * n, terminated=True,
                              extra_model_outputs=extra, len_lookback_buffer=0)


def test_buffer_returns_behaviour_columns_with_masks():
    buf = StratifiedReplayBuffer(ReplayConfig(capacity=1000, seed=1))
    buf.add([_episode(10, 5, True), _episode(20, 5, False)], stratum="known")
    batch = buf.sample(64)
    obs = batch.columns[Columns.OBS]
    has = batch.columns[has_key(Columns.ACTION_DIST_INPUTS)]
    np.testing.assert_array_equal(has, obs[:, 0] == 10)
    np.testing.assert_array_equal(batch.columns[has_key(Columns.VF_PREDS)], has)
    assert has.any() and not has.all()
    t = obs[:, 1]
    np.testing.assert_array_equal(batch.columns[Columns.ACTION_DIST_INPUTS][has], np.repeat((10 + t[has])[:, None],
                                                                                           4, axis=1))
    np.testing.assert_array_equal(batch.columns[Columns.VF_PREDS][has], -10 - t[has])
    assert not batch.columns[Columns.ACTION_DIST_INPUTS][~has].any()
    # without any behaviour outputs: no columns (the sample of a run with cloning off is unchanged)
    plain = StratifiedReplayBuffer(ReplayConfig(capacity=1000, seed=1))
    plain.add([_episode(20, 5, False)], stratum="known")
    assert Columns.ACTION_DIST_INPUTS not in plain.sample(8).columns


class _Remote:
    def __init__(self, fn):
        self.remote = fn


class _FakeActor:
    """What SILReplay calls on the replay actor, answering from a local buffer (ray.get is patched to identity)."""

    def __init__(self, buf):
        self.flush = _Remote(lambda: 0)
        self.sample_or_none = _Remote(lambda n, mix: buf.sample(n, mix))
        self.update_priorities = _Remote(lambda handle, p: buf.update_priorities(handle, p))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["hierarchical", "flat"])
def test_learner_term_clones_only_the_known_stratum_rows_with_behaviour_outputs(monkeypatch, kind):
    import ray

    from ifshm_ray.policy.replay import SILReplay

    module = build(kind)
    rng = np.random.default_rng(0)
    obs = random_obs(12, seed=5)

    def ep(rows, behaviour):
        n = len(rows) - 1
        o = [{k: v[i].numpy() for k, v in obs.items()} for i in rows]
        extra = None
        if behaviour:
            with torch.no_grad():
                sub = {k: v[rows[:-1]] for k, v in obs.items()}
                out = module.forward_exploration({Columns.OBS: sub})
            acts = [tuple(np.int64(a[i]) for a in out[Columns.ACTIONS]) for i in range(n)]
            inputs = out[Columns.ACTION_DIST_INPUTS].numpy()
            noisy = inputs + rng.normal(size=inputs.shape).astype(np.float32)
            extra = {Columns.ACTION_DIST_INPUTS: list(noisy),
                     Columns.VF_PREDS: list(rng.normal(size=n).astype(np.float32))}
        else:
            acts = [(np.int64(0), np.int64(0), np.int64(0))] * n
        return SingleAgentEpisode(observations=o, actions=acts, rewards=[-1.0] * n, terminated=True,
                                  extra_model_outputs=extra, len_lookback_buffer=0)

    buf = StratifiedReplayBuffer(ReplayConfig(capacity=1000, seed=2))
    buf.add([ep([0, 1, 2, 3], True), ep([4, 5, 6, 7], False)], stratum="known")
    buf.add([ep([8, 9, 10, 11], True)], stratum="novel")
    monkeypatch.setattr(ray, "get", lambda x, *a, **k: x)
    section = ReplaySection(enabled=True, clone=CloneConfig(weight=1.0), sil={"batch_size": 48})
    sil = SILReplay(section)
    sil._actor = _FakeActor(buf)
    sil.before_update()
    pmask = sil.batch["clone_policy_mask"].numpy()
    first = sil.batch[Columns.OBS]["obs"][:, 0].numpy()
    from_known_with = np.isin(first, obs["obs"][[0, 1, 2], 0].numpy())
    np.testing.assert_array_equal(pmask, from_known_with)
    np.testing.assert_array_equal(sil.batch["clone_value_mask"].numpy(), from_known_with)
    assert pmask.any() and not pmask.all()
    terms, logs = sil.losses(module)
    assert set(terms) == {"sil", "clone"} and terms["clone"][1] == 1.0
    assert logs["clone_num_policy"].item() == pmask.sum() and logs["clone_policy_loss"].item() > 0
    assert logs["clone_value_loss"].item() > 0
    # the clone term's gradient comes from the masked rows only: a loss on the other rows alone is zero
    section_none = ReplaySection(enabled=True, clone=CloneConfig(weight=1.0, strata=["absent"]),
                                 sil={"batch_size": 48})
    other = SILReplay(section_none)
    other._actor = _FakeActor(buf)
    other.before_update()
    terms, logs = other.losses(module)
    assert terms["clone"][0].item() == 0.0 and logs["clone_num_policy"].item() == 0
    # cloning off: only the self-imitation term, no behaviour columns read
    off = SILReplay(ReplaySection(enabled=True, sil={"batch_size": 48}))
    off._actor = _FakeActor(buf)
    off.before_update()
    terms, logs = off.losses(module)
    assert set(terms) == {"sil"} and not any(k.startswith("clone") for k in logs)


@pytest.mark.timeout(60)
def test_the_clear_continual_config_turns_cloning_on_in_its_clear_arm_only(tmp_path):
    from pathlib import Path

    from ifshm_ray.config import load_config
    from ifshm_ray.meta.continual import ContinualConfig, Protocol
    from ifshm_ray.policy.config import TrainConfig

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(ContinualConfig, repo / "configs" / "continual_pseudo_clear.yaml")
    assert [a.name for a in cfg.arms] == ["full", "full_clear", "finetune"] and cfg.seeds == [1, 2]
    cfg.train_config = str(repo / cfg.train_config)
    protocol = Protocol(cfg, tmp_path / "out", progress=lambda _: None)  # checks every arm's training config
    protocol.calibration_path = tmp_path / "novelty_calibration.json"
    from ifshm_ray.sim.catalog import load_catalog

    known, new = load_catalog().known_in(cfg.split)[:2], load_catalog().unknown_in(cfg.split)[0]
    protocol.blind_known = known
    clone = {}
    for arm in cfg.arms:
        d = protocol._train_dict([new, *known], 4, 1, arm, {new: 0.9, known[0]: 0.05, known[1]: 0.05})
        tc = TrainConfig.from_dict(d, source="test")
        clone[arm.name] = (tc.replay.enabled, tc.replay.clone.weight, tc.replay.level_sampler.temperature)
    assert clone == {"full": (True, 0.0, 1.0), "full_clear": (True, 1.0, 1.0), "finetune": (False, 0.0, 1.0)}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["hierarchical", "flat"])
def test_reference_policy_is_the_teacher_on_every_known_row(monkeypatch, kind):
    """``clone.reference``: a fixed policy's outputs on the replayed states are the targets (distillation from the
    policy before the new task): every row of the cloned stratum counts, stored behaviour outputs or not; the
    term is zero when the learner's module is the teacher and positive when it has moved."""
    import copy

    import ray

    import ifshm_ray.policy.bundle as bundle_mod
    from ifshm_ray.policy.replay import SILReplay

    teacher = build(kind)
    moved = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(0.3 * torch.randn_like(p))
    obs = random_obs(12, seed=7)

    def ep(rows):
        n = len(rows) - 1
        return SingleAgentEpisode(observations=[{k: v[i].numpy() for k, v in obs.items()} for i in rows],
                                  actions=[(np.int64(1), np.int64(0), np.int64(1))] * n, rewards=[-1.0] * n,
                                  terminated=True, len_lookback_buffer=0)

    buf = StratifiedReplayBuffer(ReplayConfig(capacity=1000, seed=3))
    buf.add([ep([0, 1, 2, 3]), ep([4, 5, 6, 7])], stratum="known")
    buf.add([ep([8, 9, 10, 11])], stratum="novel")
    monkeypatch.setattr(ray, "get", lambda x, *a, **k: x)
    loads = []

    class _Bundle:
        def __init__(self, module):
            self.module = module

    def fake_load(path, **_):
        loads.append(path)
        return _Bundle(copy.deepcopy(teacher))

    monkeypatch.setattr(bundle_mod, "load_policy_bundle", fake_load)
    section = ReplaySection(enabled=True, clone=CloneConfig(weight=2.0, reference="/somewhere/policy_bundle"),
                            sil={"batch_size": 48})
    assert section.clone.enabled and not section.clone.stores_behaviour
    sil = SILReplay(section)
    sil._actor = _FakeActor(buf)
    sil.before_update()
    first = sil.batch[Columns.OBS]["obs"][:, 0].numpy()
    known_rows = np.isin(first, obs["obs"][:7, 0].numpy())
    np.testing.assert_array_equal(sil.batch["clone_policy_mask"].numpy(), known_rows)
    assert known_rows.any() and not known_rows.all()
    learner = copy.deepcopy(teacher)
    for p in learner.parameters():
        p.requires_grad_(True)
    terms, logs = sil.losses(learner)
    assert terms["clone"][1] == 2.0 and logs["clone_num_policy"].item() == known_rows.sum()
    assert abs(logs["clone_policy_loss"].item()) < 1e-5 and abs(logs["clone_value_loss"].item()) < 1e-8
    terms["clone"][0].backward()  # at the teacher the term's gradient vanishes
    assert all(p.grad is None or p.grad.abs().max() < 1e-5 for p in learner.parameters())
    terms, logs = sil.losses(moved)
    assert logs["clone_policy_loss"].item() > 1e-3 and logs["clone_value_loss"].item() > 0
    terms["clone"][0].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in moved.parameters())
    sil.before_update()  # the teacher is loaded once
    assert loads == ["/somewhere/policy_bundle"]


def test_reference_that_is_not_a_bundle_is_a_clear_error(tmp_path, monkeypatch):
    import ray

    from ifshm_ray.policy.replay import SILReplay

    buf = StratifiedReplayBuffer(ReplayConfig(capacity=100, seed=1))
    buf.add([_episode(10, 5, False)], stratum="known")
    monkeypatch.setattr(ray, "get", lambda x, *a, **k: x)
    sil = SILReplay(ReplaySection(enabled=True, clone=CloneConfig(weight=1.0, reference=str(tmp_path / "nope")),
                                  sil={"batch_size": 8}))
    sil._actor = _FakeActor(buf)
    with pytest.raises(FileNotFoundError, match="replay.clone.reference"):
        sil.before_update()


@pytest.mark.timeout(60)
def test_learner_sil_clip_measures_the_ratio_against_the_update_start(monkeypatch):
    """sil.clip_ratio in the learner: log pi at the update's first minibatch is the reference of the trust region;
    after many gradient steps on the same sample the imitated rows fall outside it; the next update starts afresh."""
    import ray

    from ifshm_ray.policy.replay import SILReplay

    module = build("hierarchical")
    obs = random_obs(6, seed=7)
    o = [{k: v[i].numpy() for k, v in obs.items()} for i in range(6)]
    torch.manual_seed(7)
    with torch.no_grad():  # valid actions (not masked at their states), as the runbook's are; better than expected
        out = module.forward_exploration({Columns.OBS: {k: v[:5] for k, v in obs.items()}})[Columns.ACTIONS]
    acts = [tuple(np.int64(a[i]) for a in out) for i in range(5)]
    buf = StratifiedReplayBuffer(ReplayConfig(capacity=1000, seed=3))
    buf.add([SingleAgentEpisode(observations=o, actions=acts, rewards=[50.0] * 5, terminated=True,
                                len_lookback_buffer=0)], stratum="novel")
    monkeypatch.setattr(ray, "get", lambda x, *a, **k: x)
    sil = SILReplay(ReplaySection(enabled=True, sil={"batch_size": 16, "clip_ratio": 0.2}))
    sil._actor = _FakeActor(buf)
    opt = torch.optim.Adam(module.parameters(), lr=0.05)
    sil.before_update()
    clipped = []
    for _ in range(12):
        opt.zero_grad()
        terms, logs = sil.losses(module)
        clipped.append(logs["sil_num_clipped"].item())
        terms["sil"][0].backward()
        opt.step()
    assert clipped[0] == 0 and logs["sil_num_valid"].item() == 16
    assert clipped[-1] == 16  # every row
    sil.after_update()
    sil.before_update()  # a new update: its own start is the reference again
    terms, logs = sil.losses(module)
    assert logs["sil_num_clipped"].item() == 0

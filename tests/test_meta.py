"""Meta-controller (issue 15): novelty threshold calibration (FPR on held-out known windows reported), online
clustering, trust table, the gate's choices and reasons, steering, and its state round trip."""
from __future__ import annotations

import numpy as np
import pytest

from ifshm_ray.encoding.calibration import fit_prototypes, unknown_score
from ifshm_ray.meta.config import MetaConfig, NoveltyConfig
from ifshm_ray.meta.controller import MetaController, OnlineClusterer
from ifshm_ray.meta.novelty import calibrate, calibrate_threshold, flag_rate


def _windows(rng, centres, n, noise):
    labels = rng.integers(0, len(centres), n)
    return centres[labels] + noise * rng.standard_normal((n, centres.shape[1])), labels


def test_calibration_on_encoder_scores_reports_heldout_fpr_and_recall():
    rng = np.random.default_rng(0)
    dim = 16
    known_centres = rng.standard_normal((4, dim))
    novel_centres = rng.standard_normal((2, dim))
    train, ytrain = _windows(rng, known_centres, 400, 0.3)
    protos, radii = fit_prototypes(train, ytrain, 4)
    val, _ = _windows(rng, known_centres, 500, 0.3)
    held, _ = _windows(rng, known_centres, 500, 0.3)
    novel, _ = _windows(rng, novel_centres, 300, 0.3)
    score = lambda x: unknown_score(x, protos, radii)[0]  # noqa: E731
    cal = calibrate(score(val), score(held), score(novel), NoveltyConfig(target_fpr=0.02))
    assert cal.calibration_fpr <= 0.02 and cal.calibration_windows == 500
    # the held-out rate is measured, not assumed: it is the fraction of held-out windows above the threshold
    assert cal.heldout_windows == 500
    assert cal.heldout_fpr == pytest.approx(flag_rate(score(held), cal.threshold))
    lo, hi = cal.heldout_fpr_ci95
    assert lo <= cal.heldout_fpr <= hi
    assert cal.recall is not None and cal.recall > 0.5  # well-separated novel types are mostly flagged


def test_threshold_rule_ties_and_bad_input():
    scores = np.arange(100, dtype=float)  # 0..99
    thr = calibrate_threshold(scores, 0.02)
    assert thr == 97.0 and flag_rate(scores, thr) == 0.02
    assert flag_rate(np.full(100, 5.0), calibrate_threshold(np.full(100, 5.0), 0.02)) == 0.0  # ties: not flagged
    with pytest.raises(ValueError, match="at least novelty.min_calibration_windows"):
        calibrate(np.arange(10.0))
    with pytest.raises(ValueError, match="finite"):
        calibrate(np.r_[np.arange(60.0), np.nan])


def test_online_clusterer_separates_and_is_deterministic():
    rng = np.random.default_rng(1)
    a, b = np.eye(8)[0], np.eye(8)[5]
    stream = [(a if i % 3 else b) + 0.05 * rng.standard_normal(8) for i in range(30)]
    c1, c2 = OnlineClusterer(), OnlineClusterer()
    got1 = [c1.assign(x)[0] for x in stream]
    got2 = [c2.assign(x)[0] for x in stream]
    assert got1 == got2 and len(c1) == 2
    assert len({got1[i] for i in range(30) if i % 3}) == 1 and got1[0] != got1[1]
    with pytest.raises(ValueError):
        c1.assign(np.zeros(8))


def _controller(**trust):
    m = MetaController(MetaConfig(enabled=True, trust={"min_episodes": 2, **trust}))
    m.calibration = calibrate(np.linspace(0, 1, 100))  # threshold 0.98
    return m


def test_gate_known_goes_to_policy_and_untrusted_novel_is_deferred():
    m = _controller(fallback="escalate")
    known = m.observe(0.5, np.eye(4)[0])
    assert known.actor == "policy" and not known.novel and not known.deferred and "<= threshold" in known.reason
    first = m.observe(3.0, np.eye(4)[1])
    assert first.novel and first.deferred and first.actor == "escalate" and first.new_cluster
    assert "configured fallback" in first.reason and first.stratum == "novel-0"
    # measured on this cluster: the runbook is faster than a human -> runbook
    for _ in range(2):
        m.record(first.cluster, "runbook", True, 300.0)
        m.record(first.cluster, "escalate", True, 900.0)
    again = m.observe(3.0, np.eye(4)[1] + 0.01)
    assert again.cluster == first.cluster and again.actor == "runbook" and "cluster 0" in again.reason
    # escalation measured better on another cluster
    other = m.observe(4.0, np.eye(4)[2])
    assert other.cluster == 1
    m.record(1, "runbook", False, 3600.0)
    m.record(1, "escalate", True, 800.0)
    assert m.observe(4.0, np.eye(4)[2]).actor == "escalate"


def test_gate_trusts_the_policy_once_it_beats_the_runbook():
    m = _controller()
    d = m.observe(3.0, np.eye(4)[1])
    for _ in range(2):
        m.record(d.cluster, "runbook", True, 400.0)
    m.record(d.cluster, "policy", True, 200.0)
    assert m.observe(3.0, np.eye(4)[1]).deferred  # one policy outcome: not enough
    m.record(d.cluster, "policy", True, 250.0)
    trusted = m.observe(3.0, np.eye(4)[1])
    assert trusted.actor == "policy" and trusted.novel and not trusted.deferred and "trusted" in trusted.reason
    m.record(d.cluster, "policy", False, 3600.0)  # the rolling MTTR gets worse than the runbook's: untrusted again
    assert m.observe(3.0, np.eye(4)[1]).deferred


def test_gate_without_state_vector_uses_pooled_outcomes_and_does_not_cluster():
    m = _controller()
    m.record(None, "runbook", True, 500.0)
    m.record(None, "escalate", True, 200.0)
    d = m.observe(2.0, None)
    assert d.cluster is None and d.actor == "escalate" and "novel incidents overall" in d.reason
    assert len(m.clusters) == 0
    uncal = MetaController()
    assert uncal.observe(10.0).actor == "policy"  # no calibration: nothing is gated


def test_steering_mix_and_scenario_weights():
    default = _controller()  # the default ramps a new cluster's part up over 10 incidents
    assert default.config.steering.ramp_incidents == 10
    default.observe(3.0, np.eye(4)[1])
    assert default.replay_mix() == pytest.approx({"known": 1.0 - 0.5 / 10, "novel-0": 0.5 / 10})
    m = _controller()
    m.config = m.config.model_copy(update={"steering": m.config.steering.model_copy(update={"ramp_incidents": 1})})
    assert m.replay_mix() is None
    m.observe(3.0, np.eye(4)[1])
    m.observe(3.0, np.eye(4)[2])
    mix = m.replay_mix()
    assert mix == pytest.approx({"known": 0.5, "novel-0": 0.25, "novel-1": 0.25})
    for _ in range(2):
        m.record(0, "runbook", True, 400.0)
        m.record(0, "policy", True, 100.0)
    mix = m.replay_mix()  # cluster 0 trusted: weight 0.25 against 1 for the untrusted one
    assert mix["novel-0"] == pytest.approx(0.5 * 0.25 / 1.25) and sum(mix.values()) == pytest.approx(1.0)
    # a cluster enters the mix once it holds min_cluster_incidents incidents
    from ifshm_ray.meta.config import MetaConfig

    cfg = m.config.model_copy(update={"steering": m.config.steering.model_copy(update={"min_cluster_incidents": 2})})
    small = MetaController(MetaConfig.from_dict(cfg.to_dict()), m.calibration)
    small.observe(3.0, np.eye(4)[1])
    small.observe(3.0, np.eye(4)[2])
    assert small.replay_mix() is None  # two clusters of one incident each: as without clusters
    small.observe(3.0, np.eye(4)[1])
    assert small.replay_mix() == pytest.approx({"known": 0.5, "novel-0": 0.5})
    # ramp_incidents: a cluster's part grows with its incidents, the rest going to the known stratum
    cfg = m.config.model_copy(update={"steering": m.config.steering.model_copy(update={"ramp_incidents": 4})})
    ramp = MetaController(MetaConfig.from_dict(cfg.to_dict()), m.calibration)
    ramp.observe(3.0, np.eye(4)[1])
    assert ramp.replay_mix() == pytest.approx({"known": 1.0 - 0.5 / 4, "novel-0": 0.5 / 4})
    ramp.observe(3.0, np.eye(4)[2])
    assert ramp.replay_mix() == pytest.approx({"known": 1.0 - 0.25 / 4 * 2, "novel-0": 0.25 / 4, "novel-1": 0.25 / 4})
    for _ in range(5):
        ramp.observe(3.0, np.eye(4)[1])
    mix = ramp.replay_mix()  # cluster 0 holds 6 >= 4 incidents: its whole part; cluster 1 still a quarter of its own
    assert mix == pytest.approx({"known": 0.5 + 0.25 * 3 / 4, "novel-0": 0.25, "novel-1": 0.25 / 4})
    assert list(mix) == ["known", "novel-0", "novel-1"]
    levels = {"a": 0.7, "b": 0.2, "c": 0.1}
    assert m.scenario_weights(levels) == levels  # no baseline: unchanged
    m.set_known_baseline({"a": 100.0, "c": 100.0})
    m.record_known("c", 200.0)  # c regressed by 100%
    m.record_known("a", 101.0)  # within the 5% tolerance
    w = m.scenario_weights(levels)
    assert sum(w.values()) == pytest.approx(1.0) and w["c"] == pytest.approx(0.5 * 0.1 + 0.5)


def test_state_round_trip(tmp_path):
    m = _controller()
    d = m.observe(3.0, np.eye(4)[1])
    m.record(d.cluster, "runbook", True, 300.0)
    m.set_known_baseline({"a": 10.0})
    m.record_known("a", 12.0)
    path = m.save(tmp_path)
    back = MetaController.load(tmp_path)
    assert path.name == "meta_state.json" and back.state() == m.state()
    assert back.observe(3.0, np.eye(4)[1], update=False) == m.observe(3.0, np.eye(4)[1], update=False)
    with pytest.raises(FileNotFoundError):
        MetaController.load(tmp_path / "nothing")


def test_trust_prior_shrinks_a_new_cluster_towards_the_pooled_outcomes():
    m = _controller(prior_strength=2.0)
    a = m.observe(3.0, np.eye(4)[1])
    for _ in range(2):  # cluster 0: the policy beats the runbook (pooled too)
        m.record(a.cluster, "runbook", True, 1000.0)
        m.record(a.cluster, "policy", True, 400.0)
    b = m.observe(3.0, np.eye(4)[2])
    assert b.new_cluster and b.cluster == 1 and not b.deferred and b.actor == "policy"
    assert "shrunk towards" in b.reason
    # its own outcomes take over: the policy fails there twice while the runbook heals fast
    for _ in range(2):
        m.record(b.cluster, "policy", False, 3600.0)
        m.record(b.cluster, "runbook", True, 300.0)
    assert m.observe(3.0, np.eye(4)[2]).deferred
    shr = m.trust.shrunk(b.cluster, "policy")  # pooled window: 400, 400, 3600, 3600 -> 2000; own 3600
    assert shr.n == 2 and shr.mttr_mean_s == pytest.approx((2 * 3600 + 2 * 2000) / 4)
    # without the prior (default) a new cluster waits for min_episodes outcomes of its own
    plain = _controller()
    c = plain.observe(3.0, np.eye(4)[1])
    for _ in range(2):
        plain.record(c.cluster, "runbook", True, 1000.0)
        plain.record(c.cluster, "policy", True, 400.0)
    assert plain.observe(3.0, np.eye(4)[2]).deferred
    assert plain.trust.shrunk(0, "policy") is None

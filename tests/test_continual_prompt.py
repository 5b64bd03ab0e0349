"""Prompt tuning inside the continual protocol (issue 15): a LoRA encoder gets a soft prompt and still saves and
loads; the gate keeps an incident's windows; the protocol's per-arm tuner tunes a novel cluster once it reaches
``meta.prompt_tuning.min_episodes`` recorded incidents (and again only after as many more), the tuned encoder
replaces the arm's diagnoser (other states for the cluster's windows, refitted threshold, re-embedded centroids),
the ablation arm gets no tuner, and a seed reproduces the tuning; config validation. A tiny random encoder built from
a config (no downloads); no Ray."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ifshm_ray.meta.config import MetaConfig
from ifshm_ray.meta.continual import ArmConfig, ContinualConfig

REPO = Path(__file__).resolve().parents[1]
KNOWN = ["api_5xx_storm", "cuda_oom_model_server", "disk_full_checkpoint_volume"]
SIM = {"split": "handpicked", "time_limit_s": 900}


def _meta_config(**prompt) -> MetaConfig:
    return MetaConfig.from_dict({"enabled": True, "novelty": {"target_fpr": 0.1, "min_calibration_windows": 6},
                                 "clusters": {"max_distance": 2.0},  # every novel incident joins cluster 0
                                 "prompt_tuning": {"min_episodes": 3, "steps": 6, "lr": 0.05,
                                                   "windows_per_incident": 3, **prompt}})


@pytest.fixture(scope="module")
def encoder_ckpt(tmp_path_factory):
    """A tiny LoRA encoder (random 2-layer Llama, the MiniLM tokenizer) with prototypes on three known types."""
    from ifshm_ray.encoding.config import EncoderConfig
    from ifshm_ray.encoding.semantic import SemanticEncoder
    from ifshm_ray.meta.diagnose import first_alarm_windows
    from ifshm_ray.sim.catalog import load_catalog

    known_all = load_catalog().known_in("handpicked")
    enc = SemanticEncoder.build(EncoderConfig(model="tiny-llama", state_dim=16, adapter="lora"), known_all,
                                split="handpicked")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a LoRA that is not the identity (B starts at zero)
        for n, p in enc.named_parameters():
            if "lora_B" in n:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    wins = first_alarm_windows(SIM, KNOWN, range(100, 104))
    enc.fit_prototypes(enc.predict([t for _, _, t in wins])["state"], [known_all.index(f) for f, _, _ in wins])
    return enc.save(tmp_path_factory.mktemp("enc") / "ckpt")


@pytest.fixture(scope="module")
def windows():
    from ifshm_ray.meta.diagnose import first_alarm_windows

    return first_alarm_windows(SIM, KNOWN, range(200, 203)), first_alarm_windows(SIM, KNOWN, range(300, 303))


@pytest.mark.timeout(120)
def test_lora_encoder_gets_a_soft_prompt_that_saves_and_loads(encoder_ckpt, windows, tmp_path):
    from ifshm_ray.encoding.semantic import SemanticEncoder
    from ifshm_ray.meta.prompt_tuning import prompt_parameters

    tel = [t for _, _, t in windows[0][:4]]
    enc = SemanticEncoder.load(encoder_ckpt)
    assert enc.config.adapter == "lora" and enc.merged_lora is None
    assert enc.add_soft_prompt(4) is True and enc.config.adapter == "prompt_tuning"
    assert enc.merged_lora and "adapter_config.json" in enc.merged_lora
    assert len(prompt_parameters(enc)) >= 1
    assert enc.add_soft_prompt() is False  # already has one
    before = enc.predict(tel)["state"]
    enc.save(tmp_path / "pt")
    assert (tmp_path / "pt" / "merged_lora" / "adapter_config.json").is_file()
    loaded = SemanticEncoder.load(tmp_path / "pt")
    assert loaded.config.adapter == "prompt_tuning" and loaded.merged_lora is not None
    np.testing.assert_allclose(loaded.predict(tel)["state"], before, atol=1e-5)
    # the soft prompt is seeded: a second conversion of the same checkpoint gives the same encoder
    again = SemanticEncoder.load(encoder_ckpt)
    again.add_soft_prompt(4)
    np.testing.assert_allclose(again.predict(tel)["state"], before, atol=1e-6)


def _protocol(tmp_path, encoder_ckpt, arms, **extra):
    from ifshm_ray.meta.continual import Protocol

    cfg = ContinualConfig.from_dict({
        "train_config": str(REPO / "configs" / "tiny.yaml"), "seeds": [0], "known_types": 3,
        "gate": {"encoder": str(encoder_ckpt)}, "arms": arms,
        "meta": _meta_config().to_dict(), **extra})
    return Protocol(cfg, tmp_path / "out", progress=lambda _: None)


def _stream(meta, diagnose, tuner, incidents):
    """Gated stream incidents (the runbook wrapped and deferred to), recorded into ``tuner``."""
    from ifshm_ray.env import FaultInjectionEnv
    from ifshm_ray.meta.continual import reference_policy
    from ifshm_ray.meta.gate import GatedPolicy, record_incident

    env = FaultInjectionEnv({**SIM, "render_telemetry": True, "faults": "all"})
    runbook = reference_policy("runbook", env.sim_cfg)
    out = []
    for fault, seed in incidents:
        gp = GatedPolicy(runbook, reference_policy("runbook", env.sim_cfg), meta, diagnose, update=True,
                         keep_windows=meta.config.prompt_tuning.windows_per_incident)
        rec = record_incident(env, gp, fault, seed)
        assert gp.decision is not None and 1 <= len(gp.windows) <= gp.keep_windows
        assert tuner.record(rec.decision, gp.windows)
        out.append(gp.windows)
    env.close()
    return out


def _tuned_run(tmp_path, encoder_ckpt, windows):
    """One arm's tuner through a stream: 3 novel incidents (due), 2 more (not due), 1 more (due again)."""
    from ifshm_ray.meta.controller import MetaController
    from ifshm_ray.meta.diagnose import EncoderDiagnoser
    from ifshm_ray.meta.novelty import NoveltyCalibration

    proto = _protocol(tmp_path, encoder_ckpt, [{"name": "full", "replay": False, "learn": False, "prompt_tuning": True},
                                               {"name": "no_prompt_tuning", "replay": False, "learn": False,
                                                "prompt_tuning": False}])
    proto._tuning_windows = windows
    full, ablation = proto.cfg.arms
    assert proto.prompt_tunes(full) and not proto.prompt_tunes(ablation)
    assert proto._prompt_tuner(ablation, tmp_path / "abl") is None  # the ablation arm never tunes
    tuner = proto._prompt_tuner(full, tmp_path / "full")
    # everything is novel (threshold below every score): the stream's incidents all go to cluster 0
    meta = MetaController(proto.cfg.meta, NoveltyCalibration(-1.0, 0.1, 9, 1.0))
    original = EncoderDiagnoser(str(encoder_ckpt))
    unknown = ["bad_config_push", "network_partition"]
    assert not set(unknown) & set(KNOWN)
    first = _stream(meta, original, tuner, [(unknown[0], 11), (unknown[1], 12), (unknown[0], 13)])
    assert tuner.due() == [0]
    return proto, tuner, meta, original, first, unknown


@pytest.mark.slow  # 29 s on 2 shared cores: 6 gated incidents, two tunings of 6 steps through the tiny LM
@pytest.mark.timeout(600)
def test_protocol_tunes_a_cluster_at_min_episodes_and_the_tuned_encoder_is_the_gate(encoder_ckpt, windows,
                                                                                   tmp_path):
    from ifshm_ray.meta.diagnose import load_diagnoser
    from ifshm_ray.meta.novelty import NoveltyCalibration

    proto, tuner, meta, original, first, unknown = _tuned_run(tmp_path, encoder_ckpt, windows)
    threshold0 = meta.threshold
    tuned = tuner.step(meta, label="t#1")
    assert tuned is not None and tuned.checkpoint.endswith("encoder_001")
    (entry,) = tuner.log
    assert entry["cluster"] == 0 and entry["incidents"] == 3 and entry["steps"] == 6 and entry["wall_s"] > 0
    assert entry["loss_after"]["cluster"] < entry["loss_before"]["cluster"], entry
    assert entry["known_windows"] == len(windows[0]) and entry["prompt_change_l2"] > 0
    assert meta.prompt_tunings == [entry] and meta.stats()["prompt_tunings"] == 1
    # the threshold is recalibrated on the known calibration windows for the tuned encoder's scores
    assert meta.threshold != threshold0 and entry["threshold_after"] == meta.threshold
    assert meta.calibration.calibration_fpr <= proto.cfg.meta.novelty.target_fpr
    # the cluster's windows get other states (and scores) from the tuned encoder; its centroid is re-embedded
    w = [ws[0] for ws in first]
    old = np.stack([original(t)[1] for t in w])
    new = np.stack([tuned(t)[1] for t in w])
    assert np.abs(old - new).max() > 1e-3
    unit = new / np.linalg.norm(new, axis=1, keepdims=True)
    np.testing.assert_allclose(meta.clusters.sums[0], unit.sum(0), atol=1e-5)
    # the saved checkpoint is that encoder (what diagnoser.json will name)
    tuned.save(tmp_path / "arm")
    reloaded = load_diagnoser(tmp_path / "arm")
    np.testing.assert_allclose(reloaded(w[0])[1], new[0], atol=1e-5)
    # not due again until the cluster has gained min_episodes more incidents (the stream stays all novel)
    assert tuner.step(meta) is None and len(tuner.log) == 1
    meta.calibration = NoveltyCalibration(-1.0, 0.1, 9, 1.0)
    _stream(meta, tuned, tuner, [(unknown[1], 14), (unknown[0], 15)])
    assert tuner.due() == [] and tuner.step(meta) is None
    _stream(meta, tuned, tuner, [(unknown[1], 16)])
    assert tuner.due() == [0]
    second = tuner.step(meta, label="t#2")
    assert second is not None and second.checkpoint.endswith("encoder_002")
    assert [e["cluster_incidents"] for e in tuner.log] == [3, 6] and meta.stats()["prompt_tunings"] == 2
    assert (tmp_path / "full" / "prompt_tuning" / "log.json").is_file()
    assert (tmp_path / "full" / "prompt_tuning" / "encoder_002" / "merged_lora").is_dir()


@pytest.mark.slow  # 27 s on 2 shared cores: the stream and the tuning twice
@pytest.mark.timeout(600)
def test_prompt_tuning_is_deterministic_under_a_seed(encoder_ckpt, windows, tmp_path):
    runs = []
    for k in range(2):
        _, tuner, meta, _, first, _ = _tuned_run(tmp_path / f"r{k}", encoder_ckpt, windows)
        tuned = tuner.step(meta)
        runs.append((tuner.log[0], np.stack([tuned(ws[0])[1] for ws in first]), meta.threshold))
    (a, sa, ta), (b, sb, tb) = runs
    for key in ("loss_before", "loss_after", "prompt_change_l2"):
        assert a[key] == b[key], key
    np.testing.assert_array_equal(sa, sb)
    assert ta == tb


@pytest.mark.timeout(60)
def test_prompt_tuning_config_is_validated(encoder_ckpt, tmp_path):
    from ifshm_ray.config import ConfigError, load_config

    base = {"train_config": str(REPO / "configs" / "tiny.yaml"), "seeds": [0]}
    with pytest.raises(ConfigError, match="gate.encoder is null"):
        ContinualConfig.from_dict({**base, "arms": [{"name": "full", "prompt_tuning": True}]})
    with pytest.raises(ConfigError, match="gate: false"):
        ContinualConfig.from_dict({**base, "gate": {"encoder": str(encoder_ckpt)},
                                   "arms": [{"name": "f", "gate": False, "replay": False, "prompt_tuning": True}]})
    with pytest.raises(ConfigError, match="gate.encoder"):  # pseudo-unknown tuning with the encoder: still refused
        ContinualConfig.from_dict({**base, "pseudo_unknown": 1, "gate": {"encoder": str(encoder_ckpt)}})
    # defaults: the feature gate has nothing to tune (no error); gate_only does not tune
    cfg = ContinualConfig.from_dict(base)
    assert all(a.prompt_tuning is None for a in cfg.arms)
    assert ArmConfig(name="x", prompt_tuning=False).prompt_tuning is False
    # a saved config loads again (jobs/continual.py writes OUT/config.yaml; --summarise-only reads it)
    for c in (cfg, load_config(ContinualConfig, REPO / "configs" / "continual.yaml"),
              load_config(ContinualConfig, REPO / "configs" / "continual_prompt_tiny.yaml")):
        assert ContinualConfig.from_dict(c.to_dict()) == c
    # with the LM gate: the learning gated arms tune, gate_only (no learning) and ungated arms do not
    proto = _protocol(tmp_path, encoder_ckpt, [a.to_dict() for a in ContinualConfig.from_dict(base).arms])
    assert {a.name: proto.prompt_tunes(a) for a in proto.cfg.arms} == {
        "full": True, "finetune": False, "uniform": True, "gate_only": False, "frozen": False}
    # the policy's semantic state from the same encoder: its table would not reach training, refused
    with pytest.raises(ValueError, match="semantic state"):
        _protocol(tmp_path, encoder_ckpt, [{"name": "full"}],
                  train_overrides=[f"policy.encoder_checkpoint={encoder_ckpt}"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _protocol(tmp_path, tmp_path / "nope", [{"name": "full"}])


@pytest.mark.timeout(60)
def test_shipped_prompt_tuning_config_loads():
    from ifshm_ray.config import load_config

    cfg = load_config(ContinualConfig, REPO / "configs" / "continual_prompt_tiny.yaml")
    assert cfg.gate.encoder and [a.name for a in cfg.arms] == ["full", "no_prompt_tuning"]
    full, abl = (a.to_dict() for a in cfg.arms)
    assert [k for k in full if k != "name" and full[k] != abl[k]] == ["prompt_tuning"] and not abl["prompt_tuning"]


@pytest.mark.timeout(120)
def test_a_cluster_without_multi_window_incidents_is_skipped_and_logged(encoder_ckpt, windows, tmp_path):
    from ifshm_ray.meta.controller import GateDecision, MetaController
    from ifshm_ray.meta.novelty import NoveltyCalibration
    from ifshm_ray.meta.prompt_tuning import ClusterPromptTuner

    cfg = _meta_config()
    tuner = ClusterPromptTuner(encoder_ckpt, windows[0], windows[1], cfg, tmp_path)
    meta = MetaController(cfg, NoveltyCalibration(-1.0, 0.1, 9, 1.0))
    known = GateDecision("policy", False, False, "known", 0.1, 1.0)
    assert not tuner.record(known, [windows[0][0][2]])  # a known incident is not kept
    for i in range(3):  # three novel incidents of cluster 0 whose episodes gave one window each
        assert tuner.record(GateDecision("runbook", True, True, "novel", 9.0, 1.0, cluster=0), [windows[0][i][2]])
    assert tuner.due() == [0]
    assert tuner.step(meta, label="x#1") is None  # nothing tuned: the diagnoser stays
    assert tuner.log[0]["skipped"].startswith("none of the cluster's 3 incidents")
    assert meta.prompt_tunings and meta.stats()["prompt_tunings"] == 0 and tuner.due() == []
    with pytest.raises(TypeError, match="MetaConfig"):
        ClusterPromptTuner(encoder_ckpt, windows[0], windows[1], cfg.prompt_tuning, tmp_path)

"""Modal-aware encoder: log parsing and templates, metric features, alarms, the bounded prompt, the miner state."""
from __future__ import annotations

import numpy as np
import pytest

from ifshm_ray.encoding.config import ConfigError, EncoderConfig, config_from_dict, load_config
from ifshm_ray.encoding.modal import ModalEncoder, metric_stats, parse_line, template_count_vector

OSLO = ("2018-06-30 03:23:16.796 2019 ERROR oslo.service.loopingcall [req-dcb972e7-9f87-4a80-a523-06f4b715258f "
        "6d8b37fc134649cdb78d2d648a4d92e2 0756a888 - default default] Fixed interval looping call failed")


def window(n_err: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    logs = [f"2026-11-28T09:03:{i:02d}.116Z ctl-{i % 3} cinder-volume: 2026-11-28 09:03:{i:02d}.116 {900 + i} ERROR "
            f"cinder.volume.manager [req-{i:08x}-b80c-b0c6-3c99-b7159d6fd822 - - - - -] Unable to attach volume "
            f"vol-{rng.integers(1000)}: iSCSI target not found" for i in range(n_err)]
    logs += [f"2026-11-28T09:03:{i:02d}.000Z gpu-0 inference-server: 10.20.0.{i} - - \"GET /v2/health/ready "
             f"HTTP/1.1\" 200 OK" for i in range(5)]
    return {"logs": logs,
            "metrics": {"cinder-volume": {"error_rate": [0.01, 0.01, 0.011, 0.01, 0.3, 0.5],
                                          "cpu_util": [0.3, 0.31, 0.3, 0.29, 0.3, 0.3]},
                        "gpu-0": {"DCGM_FI_DEV_GPU_TEMP": [60.0, 61, 60, 60, 61, 60]}},
            "alarms": [{"name": "ServiceErrorBudgetBurn", "severity": "critical", "entity": "cinder-volume",
                        "state": "firing", "active_for_s": 60.0},
                       {"name": "KubePodNotReady", "severity": "warning", "entity": "cinder-volume",
                        "state": "pending"}]}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("line, level, component, starts", [
    (OSLO, "ERROR", "oslo.service.loopingcall", "Fixed interval"),
    ("[rank0]:[E1128 10:15:03.000000000 ProcessGroupNCCL.cpp:607] [Rank 0] Watchdog caught collective operation "
     "timeout", "ERROR", "ProcessGroupNCCL.cpp:607", "[Rank 0] Watchdog"),
    ("2026-11-28T09:03:00.116Z ctl-0 nova-api: 2026-11-28 09:03:00.116 9027 WARNING nova.osapi_compute.wsgi.server "
     "[req-93a1409e-b80c-b0c6-3c99-b7159d6fd822 - - - - -] slow", "WARNING", "nova.osapi_compute.wsgi.server", "slow"),
    ("2026-11-28T09:03:01.937Z gpu-0 training-worker: [rank7] step 968 loss=1.54", "LOG", "training-worker",
     "[rank7] step"),
    ("[155044.078590] NVRM: Xid (PCI:0000:06:00): 79, GPU has fallen off the bus.", "LOG", "", "NVRM: Xid"),
])
def test_parse_line(line, level, component, starts):
    lv, comp, msg = parse_line(line)
    assert (lv, comp) == (level, component)
    assert msg.startswith(starts)


@pytest.mark.timeout(20)
def test_templates_counts_and_masks():
    enc = ModalEncoder(EncoderConfig())
    ctx = enc.encode(window(n_err=4))
    attach = [t for t in ctx.template_counts if "Unable to attach volume" in t]
    assert len(attach) == 1 and ctx.template_counts[attach[0]] == 4
    assert "req-" not in attach[0]
    assert "<NUM>" in attach[0] or "<*>" in attach[0]
    assert ctx.items[0].startswith("ALARM critical ServiceErrorBudgetBurn")
    assert ctx.kinds[:2] == ["alarm", "alarm"] and set(ctx.kinds[2:]) == {"log"}
    assert len(ctx.items) == len(ctx.counts) == len(ctx.kinds)
    # the severe template comes before the benign one
    logs = [i for i, k in zip(ctx.items, ctx.kinds) if k == "log"]
    assert "attach" in logs[0]
    assert any("Unable to attach" in line for line in ctx.key_lines)
    assert any("cinder-volume error_rate rising" in s for s in ctx.metric_summary)


@pytest.mark.timeout(20)
def test_deterministic_and_fixed_size_features():
    a, b = ModalEncoder(), ModalEncoder()
    ca, cb = a.encode(window()), b.encode(window())
    assert ca.prompt == cb.prompt and ca.items == cb.items
    np.testing.assert_array_equal(ca.features, cb.features)
    small = a.encode({"logs": [], "metrics": {"x": {"m": [1.0]}}, "alarms": []})
    assert small.features.shape == ca.features.shape == (a.feature_dim,)
    assert small.items == [] and "Logs: none" in small.prompt
    assert template_count_vector(ca, 64).shape == (64,)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("budget", [32, 64, 256])
def test_prompt_respects_token_budget(budget):
    cfg = EncoderConfig(max_prompt_tokens=budget)
    enc = ModalEncoder(cfg)
    big = window(n_err=30)
    big["logs"] += [f"2026-11-28 09:04:{i % 60:02d}.1 1 ERROR svc.mod{i} distinct failure kind {i} " + "x" * 50
                    for i in range(40)]
    ctx = enc.encode(big)
    assert enc.count_tokens(ctx.prompt) <= budget


@pytest.mark.timeout(20)
def test_metric_stats_and_alarm_features():
    z, rel, level, tail = metric_stats([1, 1, 1, 1, 5, 6, 7, 8])
    assert z > 3 and rel > 1 and tail == pytest.approx(7.5)
    assert metric_stats([]) is None
    enc = ModalEncoder()
    f_on = enc.encode(window()).features
    f_off = enc.encode({**window(), "alarms": []}).features
    assert not np.allclose(f_on, f_off)


@pytest.mark.timeout(20)
def test_miner_state_roundtrip_and_freeze():
    enc = ModalEncoder()
    enc.encode(window())
    n = enc.num_templates
    other = ModalEncoder()
    other.load_miner_state(enc.miner_state())
    assert other.num_templates == n
    other.freeze()
    ctx = other.encode({"logs": ["2026-11-28 10:00:00.000 1 ERROR brand.new totally unseen line 42"]})
    assert other.num_templates == n
    assert any("totally unseen line <NUM>" in t for t in ctx.items)
    assert other.encode(window()).items == enc.encode(window()).items


@pytest.mark.timeout(10)
def test_config_validation_messages(tmp_path):
    with pytest.raises(ConfigError, match="mode = 'whole': Input should be 'templates' or 'context'"):
        EncoderConfig(mode="whole")
    with pytest.raises(ConfigError, match="valid keys"):
        config_from_dict({"encoder": {"modle": "minilm"}})
    with pytest.raises(ConfigError, match="zero_stage = 4: Input should be 0, 1, 2 or 3"):
        config_from_dict({"finetune": {"zero_stage": 4}})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    for name in ("encoder.yaml", "encoder_smoke.yaml", "encoder_minilm.yaml"):
        from pathlib import Path

        cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / name)
        assert cfg.encoder.model

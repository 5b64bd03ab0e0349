"""The one configuration layer: every config in configs/ loads through its loader; the values a review found read
wrong are read right or refused at load time with a message naming the file, the YAML path and what is allowed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ifshm_ray.config import ConfigError, ConfigModel, read_yaml
from ifshm_ray.encoding.config import EncoderJobConfig, config_from_dict
from ifshm_ray.encoding.config import load_config as load_encoder_config
from ifshm_ray.policy.config import TrainConfig, load_train_config, train_config_from_dict
from ifshm_ray.serve.config import ServeConfig, serve_config_from_args

pytestmark = pytest.mark.timeout(60)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TRAIN_CONFIGS = sorted(CONFIGS.glob("demo*.yaml")) + [CONFIGS / "tiny.yaml", CONFIGS / "cluster_train.yaml"]
ENCODER_CONFIGS = sorted(CONFIGS.glob("encoder*.yaml"))
SERVE_CONFIGS = [CONFIGS / "serve.yaml", CONFIGS / "cluster_serve.yaml"]


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------------- every shipped config loads
@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_train_configs_load(path):
    cfg = load_train_config(path)
    assert isinstance(cfg, TrainConfig) and cfg.ppo.minibatch_size <= cfg.ppo.train_batch_size
    assert train_config_from_dict(cfg.to_dict()) == cfg  # to_dict round-trips (jobs/train.py writes it)


@pytest.mark.parametrize("path", ENCODER_CONFIGS, ids=lambda p: p.name)
def test_encoder_configs_load(path):
    cfg = load_encoder_config(path)
    assert isinstance(cfg, EncoderJobConfig) and cfg.encoder.model
    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=lambda p: p.name)
def test_serve_configs_load(path):
    for app in read_yaml(path)["applications"]:
        assert isinstance(serve_config_from_args(app["args"]), ServeConfig)


def test_semantic_configs_name_the_encoder_checkpoint():
    for name in ("demo_semantic.yaml", "demo_semantic_counts.yaml"):
        assert load_train_config(CONFIGS / name).policy.encoder_checkpoint == "results/encoder"


@pytest.mark.parametrize("cls", [TrainConfig, EncoderJobConfig, ServeConfig])
def test_every_field_is_documented(cls):
    """Field docstrings become the models' descriptions (and the JSON schema's)."""
    seen, todo = set(), [cls]
    while todo:
        model = todo.pop()
        seen.add(model)
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no docstring"
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, ConfigModel) and ann not in seen:
                todo.append(ann)
    assert len(seen) > 1 or cls is ServeConfig


# ------------------------------------------------------------------------------------- the review's defects
def test_lr_written_as_yaml_string_is_read_as_a_number(tmp_path):
    # YAML 1.1 reads 2e-3 (no dot) as a string
    p = write(tmp_path, "ppo:\n  lr: 2e-3\n")
    assert read_yaml(p)["ppo"]["lr"] == "2e-3"
    assert load_train_config(p).ppo.lr == pytest.approx(0.002)
    p = write(tmp_path, "finetune:\n  lr: 2e-3\n  lora_lr: 5e-4\n", "enc.yaml")
    cfg = load_encoder_config(p)
    assert (cfg.finetune.lr, cfg.finetune.lora_lr) == (pytest.approx(0.002), pytest.approx(5e-4))


def test_number_written_as_string_becomes_an_int(tmp_path):
    cfg = load_encoder_config(write(tmp_path, 'encoder:\n  state_dim: "64"\n'))
    assert cfg.encoder.state_dim == 64 and type(cfg.encoder.state_dim) is int
    with pytest.raises(ConfigError, match=r"encoder.state_dim = '6.5': Input should be a valid integer"):
        config_from_dict({"encoder": {"state_dim": "6.5"}})


def test_false_written_as_string_is_false(tmp_path):
    cfg = load_train_config(write(tmp_path, 'policy:\n  vf_share_encoder: "false"\n'))
    assert cfg.policy.vf_share_encoder is False
    with pytest.raises(ConfigError, match=r"policy.vf_share_encoder = 'maybe': Input should be a valid boolean"):
        train_config_from_dict({"policy": {"vf_share_encoder": "maybe"}})


def test_unsupported_activation_is_refused_at_load_listing_the_allowed_ones(tmp_path):
    p = write(tmp_path, "policy:\n  activation: gelu\n")
    with pytest.raises(ConfigError) as e:
        load_train_config(p)
    assert str(p) in str(e.value)
    assert "policy.activation = 'gelu': Input should be 'tanh' or 'relu'" in str(e.value)


def test_keep_checkpoints_zero_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"run.keep_checkpoints = 0: Input should be greater than or equal to 1"):
        load_train_config(write(tmp_path, "run:\n  keep_checkpoints: 0\n"))


@pytest.mark.parametrize("bad, match", [
    ({"policy": {"kind": "tree"}}, r"policy.kind = 'tree': Input should be 'hierarchical' or 'flat'"),
    ({"policy": {"low_entropy": "exact"}}, r"Input should be 'expected' or 'sampled'"),
    ({"runners": {"gym_env_vectorize_mode": "thread"}}, r"'sync', 'async' or 'vector_entry_point'"),
    ({"runners": {"rollout_fragment_length": 0}}, r"rollout_fragment_length = 0: use a number of steps >= 1"),
    ({"ppo": {"minibatch_size": 4096, "train_batch_size": 2048}}, r"ppo: minibatch_size \(4096\) must be <= "
                                                                   r"train_batch_size \(2048\)"),
    ({"ppo": {"lr": "fast"}}, r"ppo.lr = 'fast': Input should be a valid number"),
    ({"ppo": {"gamma": 1.5}}, r"ppo.gamma = 1.5: Input should be less than or equal to 1"),
    ({"policy": {"encoder_hiddens": [64, 0]}}, r"policy.encoder_hiddens.1 = 0: .*greater than or equal to 1"),
    ({"run": {"iterations": 0}}, r"run.iterations = 0"),
])
def test_bad_train_values_are_refused(bad, match):
    with pytest.raises(ConfigError, match=match):
        train_config_from_dict(bad)


def test_rollout_fragment_length_reads_auto_or_a_number():
    assert train_config_from_dict({"runners": {"rollout_fragment_length": "64"}}).runners.rollout_fragment_length == 64
    assert TrainConfig().runners.rollout_fragment_length == "auto"


@pytest.mark.parametrize("bad, match", [
    ({"encoder": {"pooling": "max"}}, r"encoder.pooling = 'max': Input should be 'mean', 'last', 'cls' or 'auto'"),
    ({"encoder": {"adapter": "qlora"}}, r"'none', 'lora' or 'prompt_tuning'"),
    ({"encoder": {"max_prompt_tokens": 16}}, r"max_prompt_tokens = 16: Input should be greater than or equal to 32"),
    ({"encoder": {"drain_sim_th": 1.0}}, r"drain_sim_th = 1.0: Input should be less than 1"),
    ({"finetune": {"zero_stage": 4}}, r"finetune.zero_stage = 4: Input should be 0, 1, 2 or 3"),
    ({"finetune": {"lr": 0}}, r"finetune.lr = 0: Input should be greater than 0"),
    ({"service": {"num_cpus": 0, "num_gpus": 0}}, r"service: num_cpus and num_gpus are both 0"),
])
def test_bad_encoder_values_are_refused(bad, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(bad)


def test_serve_args_read_strings_as_their_types():
    cfg = serve_config_from_args({"checkpoint": "x", "encoder_checkpoint": "None", "encoder_mode": "",
                                  "auth_token": "null", "max_alarms": "7", "ingress_num_cpus": "0.25"})
    assert cfg.encoder_checkpoint is None and cfg.encoder_mode is None and cfg.auth_token is None
    assert (cfg.max_alarms, cfg.ingress_num_cpus) == (7, 0.25)
    assert serve_config_from_args({"checkpoint": "x", "encoder_mode": "context"}).encoder_mode == "context"
    # "none" means None only where None is allowed: a required string keeps it
    assert serve_config_from_args({"checkpoint": "x", "model": "none"}).model == "none"
    with pytest.raises(ConfigError, match=r"encoder_mode = 'whole': Input should be 'templates' or 'context'"):
        serve_config_from_args({"checkpoint": "x", "encoder_mode": "whole"})
    with pytest.raises(ConfigError, match=r"cache_size = '-1': Input should be greater than or equal to 0"):
        serve_config_from_args({"checkpoint": "x", "cache_size": "-1"})


# ------------------------------------------------------------------------------------- keys, files, overrides
def test_unknown_key_lists_the_valid_keys_and_the_yaml_path(tmp_path):
    p = write(tmp_path, "ppo:\n  learning_rate: 1e-3\n")
    with pytest.raises(ConfigError) as e:
        load_train_config(p)
    msg = str(e.value)
    assert msg.startswith(str(p)) and "ppo.learning_rate: unknown config key" in msg
    assert "'lr'" in msg and "'minibatch_size'" in msg
    with pytest.raises(ConfigError, match=r"polcy: unknown config key; valid keys here: \['env', 'fault_tolerance'"):
        train_config_from_dict({"polcy": {}})
    with pytest.raises(ConfigError, match=r"finetune.epoch: unknown config key; valid keys here: .*'epochs'"):
        load_encoder_config(write(tmp_path, "finetune:\n  epoch: 2\n", "enc.yaml"))


def test_an_empty_section_takes_its_defaults(tmp_path):
    cfg = load_train_config(write(tmp_path, "policy:\nfault_tolerance:\nrun:\n  seed: 3\n"))
    assert cfg.policy == TrainConfig().policy and cfg.run.seed == 3
    assert config_from_dict({"service": None}).service.num_actors == 1


def test_a_section_that_is_no_mapping_is_refused():
    with pytest.raises(ConfigError, match=r"policy = \[\]: Input should be a valid dictionary"):
        train_config_from_dict({"policy": []})


@pytest.mark.parametrize("load", [load_train_config, load_encoder_config])
def test_missing_config_file(load, tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml' does not exist"):
        load(tmp_path / "nope.yaml")


@pytest.mark.parametrize("bad, new", [
    ({"policy": {"semantic_encoder": "results/encoder"}}, "policy: key 'semantic_encoder' was renamed: use "
                                                          "'encoder_checkpoint'"),
])
def test_old_encoder_checkpoint_names_are_refused_with_the_new_name(bad, new):
    with pytest.raises(ConfigError, match=new):
        train_config_from_dict(bad)
    with pytest.raises(ConfigError, match="service: key 'adapter' was renamed: use 'encoder_checkpoint'"):
        config_from_dict({"service": {"adapter": "results/encoder"}})
    with pytest.raises(ConfigError, match="key 'encoder' was renamed: use 'encoder_checkpoint'"):
        serve_config_from_args({"checkpoint": "x", "encoder": "results/encoder"})


def test_set_overrides_apply_on_top_of_the_file():
    cfg = load_train_config(CONFIGS / "tiny.yaml", overrides=["ppo.lr=1e-3", "policy.activation=relu",
                                                               "env.config.faults=[node_crash]"])
    assert cfg.ppo.lr == pytest.approx(1e-3) and cfg.policy.activation == "relu"
    assert cfg.env.config == {"faults": ["node_crash"], "render_telemetry": False, "time_limit_s": 600}
    assert cfg.ppo.train_batch_size == 256  # the file's other values stay
    enc = load_encoder_config(CONFIGS / "encoder_smoke.yaml", ["finetune.epochs=2", "service.encoder_checkpoint=x"])
    assert (enc.finetune.epochs, enc.service.encoder_checkpoint) == (2, "x")
    assert load_encoder_config(CONFIGS / "encoder_smoke.yaml", {"encoder.model": "minilm"}).encoder.model == "minilm"


def test_bad_overrides_say_what_is_wrong():
    with pytest.raises(ConfigError, match=r"tiny.yaml \+ overrides: policy.activation = 'gelu'"):
        load_train_config(CONFIGS / "tiny.yaml", overrides=["policy.activation=gelu"])
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_train_config(CONFIGS / "tiny.yaml", overrides=["ppo.lr"])
    with pytest.raises(ConfigError, match="ppo.lrr: unknown config key"):
        load_train_config(CONFIGS / "tiny.yaml", overrides=["ppo.lrr=1e-3"])


def test_assignment_is_validated():
    cfg = TrainConfig()
    cfg.run.seed = 3
    with pytest.raises(ConfigError, match="keep_checkpoints = 0"):
        cfg.run.keep_checkpoints = 0
    with pytest.raises(ConfigError, match=r"PPOSection: minibatch_size \(10000\) must be <= train_batch_size"):
        cfg.ppo.minibatch_size = 10_000
    assert cfg.ppo.minibatch_size == 500  # a refused assignment leaves the old value
    assert cfg.validate() is cfg and cfg.run.seed == 3


def test_policy_rl_module_config():
    p = train_config_from_dict({"policy": {"activation": "relu", "encoder_hiddens": ["64"]}}).policy
    mc = p.rl_module_config()
    assert mc["activation"] == "relu" and mc["encoder_hiddens"] == [64] and "semantic_table" not in mc


def test_training_hash_covers_encoder_and_finetune_only():
    base = load_encoder_config(CONFIGS / "encoder_smoke.yaml")
    h = base.training_hash()
    assert len(h) == 16 and h == EncoderJobConfig.from_dict(base.to_dict()).training_hash()
    assert load_encoder_config(CONFIGS / "encoder_smoke.yaml", ["service.num_actors=3"]).training_hash() == h
    assert load_encoder_config(CONFIGS / "encoder_smoke.yaml", ["finetune.lr=1e-3"]).training_hash() != h


# ------------------------------------------------------------------------------------- invalid-action penalty
def _invalid_step_rewards(penalty: float) -> tuple[float, np.ndarray]:
    from ifshm_ray.env import FaultInjectionEnv
    from ifshm_ray.env.fault_env import FaultInjectionVectorEnv

    cfg = {"render_telemetry": False, "reward": {"invalid_action_penalty": penalty}}
    env = FaultInjectionEnv(cfg)
    env.reset(seed=0)
    _, r, _, _, info = env.step((6, 0, 0))  # drain a service: masked
    assert info["invalid_action"]
    venv = FaultInjectionVectorEnv({**cfg, "num_envs": 2})
    venv.reset(seed=0)
    _, vr, *_ = venv.step(np.array([[6, 0, 0], [0, 0, 0]]))  # env 0 invalid, env 1 a valid observe
    return r, vr


def test_invalid_action_penalty_comes_from_the_reward_config():
    r1, v1 = _invalid_step_rewards(1.0)
    r3, v3 = _invalid_step_rewards(3.5)
    assert r1 - r3 == pytest.approx(2.5)
    assert v1[0] - v3[0] == pytest.approx(2.5) and v1[1] == v3[1]
    with pytest.raises(ConfigError, match="invalid_action_penalty"):
        _invalid_step_rewards(-1.0)

"""Policy bundle export/load round trip and its refusals (no Ray cluster needed)."""
from __future__ import annotations

import json

import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from ifshm_ray.policy.bundle import (
    BUNDLE_DIRNAME,
    MANIFEST,
    PolicyBundleError,
    action_space_hash_of_env,
    export_policy_bundle,
    load_policy_bundle,
)
from ifshm_ray.policy.module import module_class

from test_policy_standin_env import StandInFaultEnv

SMALL = {"encoder_hiddens": [32], "head_hiddens": [32], "vf_hiddens": [32], "category_embed_dim": 8}


def make_bundle(out, kind="hierarchical"):
    env = StandInFaultEnv()
    module = RLModuleSpec(module_class=module_class(kind), observation_space=env.observation_space,
                          action_space=env.action_space, model_config=SMALL).build()
    path = export_policy_bundle(None, out, env=env, env_entry_point="tests.test_policy_standin_env:StandInFaultEnv",
                                env_config={}, policy_kind=kind, model_config=SMALL, module=module)
    return env, module, path


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["hierarchical", "flat"])
def test_bundle_round_trip(tmp_path, kind):
    env, module, path = make_bundle(tmp_path, kind)
    assert path == tmp_path / BUNDLE_DIRNAME
    for where in (tmp_path, path):  # the --out dir or the bundle dir
        policy = load_policy_bundle(where, expected_action_space_hash=action_space_hash_of_env(env))
        obs, _ = env.reset(seed=0)
        obs["telemetry"] = {"ignored": True}
        c, t, r = policy.act(obs)
        batch = {k: torch.as_tensor(obs[k])[None] for k in ("obs", "action_mask", "ratio_mask")}
        with torch.no_grad():
            ref = module.forward_inference({Columns.OBS: batch})[Columns.ACTIONS]
        assert (c, t, r) == tuple(int(a[0]) for a in ref)
        dist = policy.action_distribution(obs, top_k=4)
        assert len(dist["top_actions"]) == 4
        assert dist["top_actions"][0]["prob"] >= dist["top_actions"][-1]["prob"]
        assert abs(sum(x["prob"] for x in dist["categories"]) - 1.0) < 1e-5
        mask = obs["action_mask"].reshape(10, -1)
        assert all(mask[a["category"], a["target"]] == 1.0 for a in dist["top_actions"])
        assert dist["top_actions"][0]["target_name"] == env.target_names[dist["top_actions"][0]["target"]]
        assert isinstance(policy.act(obs, deterministic=False)[0], int)


@pytest.mark.timeout(60)
def test_bundle_refuses_missing_files(tmp_path):
    with pytest.raises(PolicyBundleError, match="No policy bundle"):
        load_policy_bundle(tmp_path)
    _, _, path = make_bundle(tmp_path)
    (path / "rl_module" / "module_state.pkl").unlink()
    with pytest.raises(PolicyBundleError, match="missing"):
        load_policy_bundle(tmp_path)


@pytest.mark.timeout(60)
def test_bundle_refuses_mismatching_action_space_hash(tmp_path):
    _, _, path = make_bundle(tmp_path)
    with pytest.raises(PolicyBundleError, match="hash mismatch"):
        load_policy_bundle(path, expected_action_space_hash="0" * 64)
    # A bundle trained with other action definitions (e.g. a category renamed since).
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["action_space_signature"]["categories"][1] = "reboot"
    from ifshm_ray.policy.spaces import hash_signature

    manifest["signature_hash"] = hash_signature(manifest["action_space_signature"])
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PolicyBundleError, match="hash mismatch"):
        load_policy_bundle(path)
    # A hand-edited hash.
    manifest["signature_hash"] = "f" * 64
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PolicyBundleError, match="does not match the action-space signature"):
        load_policy_bundle(path)


@pytest.mark.timeout(60)
def test_other_topology_hash_differs():
    env = StandInFaultEnv()
    other = StandInFaultEnv()
    other.target_names = list(reversed(other.target_names))
    assert action_space_hash_of_env(env) != action_space_hash_of_env(other)


@pytest.mark.timeout(120)
def test_bundle_loads_from_a_relative_path(tmp_path, monkeypatch):
    """`make demo` writes results/demo/...: a relative bundle path must load (RLModule needs absolute paths)."""
    from ifshm_ray.policy.bundle import load_policy_bundle
    from ifshm_ray.serve.testing import untrained_policy_bundle

    untrained_policy_bundle(tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    bundle = load_policy_bundle("run")
    assert bundle.manifest["format"].startswith("ifshm-policy-bundle")


@pytest.mark.timeout(60)
def test_bundle_records_its_split_and_refuses_another(tmp_path):
    from ifshm_ray.policy.bundle import check_bundle_split, manifest_split, read_manifest

    env = StandInFaultEnv()
    module = RLModuleSpec(module_class=module_class("hierarchical"), observation_space=env.observation_space,
                          action_space=env.action_space, model_config=SMALL).build()
    for sub, kw, want in (("explicit", {"split": "random2"}, "random2"),
                          ("from_env", {"env_config": {"split": "logo_gpu"}}, "logo_gpu"),
                          ("default", {}, "handpicked")):
        kw = {"env_config": {}, **kw}
        path = export_policy_bundle(None, tmp_path / sub, env=env, env_entry_point="x:y", policy_kind="hierarchical",
                                    model_config=SMALL, module=module, **kw)
        assert read_manifest(path)["split"] == want and load_policy_bundle(path).split == want
        assert check_bundle_split(path, want) == want
    with pytest.raises(PolicyBundleError, match="trained on split 'random2'.*uses split 'random1'.*--split random2"):
        check_bundle_split(tmp_path / "explicit", "random1")
    # a bundle from before splits were recorded counts as handpicked, and the refusal says so
    mpath = tmp_path / "default" / BUNDLE_DIRNAME / MANIFEST
    manifest = json.loads(mpath.read_text())
    del manifest["split"]
    mpath.write_text(json.dumps(manifest))
    assert manifest_split(read_manifest(tmp_path / "default")) == ("handpicked", False)
    assert load_policy_bundle(tmp_path / "default").split == "handpicked"
    assert check_bundle_split(tmp_path / "default", "handpicked") == "handpicked"
    with pytest.raises(PolicyBundleError, match="records no split.*counts as 'handpicked'"):
        check_bundle_split(tmp_path / "default", "random3")

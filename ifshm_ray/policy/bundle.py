"""Policy bundle: everything needed to act with a trained policy, without the training stack.

Layout of ``<out>/policy_bundle/`` (written by :func:`export_policy_bundle` at the end of ``jobs/train.py``)::

    manifest.json               format, policy kind, model_config, space sizes, action_space_hash (the env's own,
                                ``env.action_space_hash``), action-space signature (sizes, category names, ratio
                                levels, target names) + its signature_hash,
                                env entry point + config (topology), split (the named known/unknown split the
                                policy was trained on; a bundle without one counts as ``handpicked``, the one
                                fixed split of that time), encoder (the ``meta`` of the semantic
                                item table when the policy has the LLM semantic state: encoder checkpoint or
                                preset, model, adapter, catalog hash, ...; None without it), training summary
                                (iterations, env steps, seed), list of files
    rl_module/                  the RLModule checkpoint (``RLModule.from_checkpoint`` format: class + ctor args +
                                weights), taken from the learner's module
    connectors/env_to_module/   RLlib connector state (the default pipeline is stateless; kept for completeness)
    connectors/module_to_env/

:func:`load_policy_bundle` is the one loader (serving, evaluation, tests). It accepts the bundle directory or the
``--out`` directory of a finished run, and refuses a bundle whose files are missing or whose action-space hash does
not match the current action definitions (``ifshm_ray.sim.actions``) or an expected hash.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ifshm_ray.policy.spaces import (
    ACTION_MASK_KEY,
    OBS_KEY,
    RATIO_MASK_KEY,
    action_space_signature,
    env_target_names,
    hash_signature,
)

logger = logging.getLogger(__name__)

BUNDLE_DIRNAME = "policy_bundle"
MANIFEST = "manifest.json"
FORMAT = "ifshm-policy-bundle/v1"
MODULE_DIR = "rl_module"
_MODULE_FILES = ("class_and_ctor_args.pkl", "module_state.pkl", "metadata.json")
_CKPT_MODULE = Path("learner_group/learner/rl_module/default_policy")
_CKPT_CONNECTORS = {
    "env_to_module": Path("env_runner/env_to_module_connector"),
    "module_to_env": Path("env_runner/module_to_env_connector"),
}


class PolicyBundleError(RuntimeError):
    """A policy bundle is missing files or does not fit the current action space."""


def action_space_hash_of_env(env: Any) -> str:
    """The action-space hash a bundle must carry to act in ``env``.

    The env's own ``action_space_hash`` (``ifshm_ray.env``: space, categories, ratios, topology) when it has one,
    else the hash of :func:`~ifshm_ray.policy.spaces.action_space_signature` (sizes, categories, ratios, targets).
    """
    own = getattr(getattr(env, "unwrapped", env), "action_space_hash", None)
    if isinstance(own, str) and own:
        return own
    return hash_signature(action_space_signature(env.action_space, target_names=env_target_names(env)))


def export_policy_bundle(
    algo: Any | None,
    out_dir: str | Path,
    *,
    env: Any,
    env_entry_point: str,
    env_config: Mapping[str, Any],
    policy_kind: str,
    model_config: Mapping[str, Any],
    checkpoint_dir: str | Path | None = None,
    module: Any | None = None,
    encoder: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    split: str | None = None,
) -> Path:
    """Writes ``<out_dir>/policy_bundle/`` from a (trained) RLlib ``Algorithm``; returns the bundle path.

    Args:
        algo: the Algorithm (used to write a checkpoint unless ``checkpoint_dir`` is given).
        out_dir: the run's output directory.
        env: a local instance of the training env (for the action-space signature and target names).
        env_entry_point, env_config: how to rebuild the env (recorded in the manifest).
        policy_kind, model_config: the policy's kind and model config (recorded).
        checkpoint_dir: an existing ``algo.save_to_path`` directory of the final weights.
        module: an RLModule to bundle directly (instead of ``algo``/``checkpoint_dir``; tools and tests).
        encoder: the ``meta`` of the policy's semantic item table (:func:`ifshm_ray.encoding.rl_state.load_table`:
            encoder checkpoint or preset, model, adapter, catalog hash, ...) when it has the LLM semantic state, as
            ``jobs/train.py`` passes it; None otherwise.
        training: free-form summary (iterations, env steps, seed).
        split: the named known/unknown split the policy was trained on (default: ``env_config``'s ``split``, else
            ``SimConfig``'s default).
    """
    if split is None:
        from ifshm_ray.config import SimConfig

        split = str(dict(env_config).get("split", SimConfig.model_fields["split"].default))
    out_dir = Path(out_dir)
    bundle = out_dir / BUNDLE_DIRNAME
    tmp_ckpt = None
    if module is None and checkpoint_dir is None:
        if algo is None:
            raise ValueError("export_policy_bundle needs one of algo, checkpoint_dir or module.")
        tmp_ckpt = tempfile.mkdtemp(prefix="ifshm_bundle_ckpt_")
        checkpoint_dir = algo.save_to_path(tmp_ckpt)
    try:
        staging = out_dir / (BUNDLE_DIRNAME + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        connectors = {}
        if module is not None:
            module.save_to_path(str(staging / MODULE_DIR))
        else:
            checkpoint_dir = Path(checkpoint_dir)
            src_module = checkpoint_dir / _CKPT_MODULE
            if not src_module.is_dir():
                raise PolicyBundleError(f"checkpoint {checkpoint_dir} has no RLModule at {_CKPT_MODULE}.")
            shutil.copytree(src_module, staging / MODULE_DIR)
            for name, rel in _CKPT_CONNECTORS.items():
                if (checkpoint_dir / rel).is_dir():
                    shutil.copytree(checkpoint_dir / rel, staging / "connectors" / name)
                    connectors[name] = f"connectors/{name}"
        signature = action_space_signature(env.action_space, target_names=env_target_names(env))
        obs_space = env.observation_space
        manifest = {
            "format": FORMAT,
            "created_unix_s": time.time(),
            "policy_kind": policy_kind,
            "model_config": dict(model_config),
            "spaces": {
                "num_categories": int(env.action_space[0].n),
                "num_targets": int(env.action_space[1].n),
                "num_ratios": int(env.action_space[2].n),
                "num_features": int(obs_space[OBS_KEY].shape[0]),
            },
            "action_space_signature": signature,
            "signature_hash": hash_signature(signature),
            "action_space_hash": action_space_hash_of_env(env),
            "env": {"entry_point": env_entry_point, "config": _jsonable(dict(env_config))},
            "split": split,
            "encoder": dict(encoder) if encoder else None,
            "connectors": connectors,
            "training": _jsonable(dict(training or {})),
            "files": {"rl_module": MODULE_DIR},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        shutil.rmtree(bundle, ignore_errors=True)
        staging.rename(bundle)
    finally:
        if tmp_ckpt is not None:
            shutil.rmtree(tmp_ckpt, ignore_errors=True)
    return bundle


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str))


def _find_bundle(path: Path) -> Path:
    if (path / MANIFEST).is_file():
        return path
    if (path / BUNDLE_DIRNAME / MANIFEST).is_file():
        return path / BUNDLE_DIRNAME
    raise PolicyBundleError(
        f"No policy bundle at {path}: expected {path / MANIFEST} or {path / BUNDLE_DIRNAME / MANIFEST} "
        "(written by jobs/train.py at the end of a run)."
    )


def read_manifest(path: str | Path) -> dict:
    """The manifest of the bundle at ``path`` (bundle or run output dir) alone: no RLModule is loaded."""
    bundle = _find_bundle(Path(path).expanduser().resolve())
    return json.loads((bundle / MANIFEST).read_text())


def manifest_split(manifest: Mapping[str, Any]) -> tuple[str, bool]:
    """``(split, recorded)``: the named split a bundle was trained on (its ``split``, else its env config's), and
    whether its manifest records it (a bundle written before splits were recorded counts as ``LEGACY_SPLIT``, i.e.
    ``handpicked``)."""
    from ifshm_ray.sim.catalog import LEGACY_SPLIT

    split = manifest.get("split") or (manifest.get("env") or {}).get("config", {}).get("split")
    return (str(split), True) if split else (LEGACY_SPLIT, False)


def check_bundle_split(path: str | Path, split: str, what: str = "evaluation") -> str:
    """``split`` if the bundle at ``path`` was trained on it; else :class:`PolicyBundleError` naming both splits
    (``what``: who uses the policy, for the message). Returns the bundle's split."""
    have, recorded = manifest_split(read_manifest(path))
    if have != split:
        note = "" if recorded else (" (its manifest records no split: it was written before splits were recorded, "
                                    f"so it counts as {have!r}, the one split of that time)")
        raise PolicyBundleError(
            f"policy bundle {path} was trained on split {have!r}{note}, but {what} uses split {split!r}: its known "
            f"fault types differ, so its 'unknown' results would not be unknown to it. Evaluate it with "
            f"--split {have} (or retrain it with env.config.split={split}).")
    return have


def load_policy_bundle(path: str | Path, *, expected_action_space_hash: str | None = None) -> "PolicyBundle":
    """Loads a policy bundle (its directory, or the ``--out`` directory of a finished ``jobs/train.py`` run).

    Args:
        path: bundle dir or run output dir.
        expected_action_space_hash: if given (e.g. :func:`action_space_hash_of_env` of the serving env), the
            bundle's hash must equal it.

    Raises:
        PolicyBundleError: missing files, unknown format, or an action-space hash that does not match the
            current action definitions (``ifshm_ray.sim.actions``), the bundle's own signature, or the expected
            hash.
    """
    bundle = _find_bundle(Path(path).expanduser().resolve())  # RLModule.from_checkpoint needs an absolute path
    manifest = json.loads((bundle / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise PolicyBundleError(f"{bundle}: unknown bundle format {manifest.get('format')!r}; expected {FORMAT!r}.")
    missing = [f"{MODULE_DIR}/{f}" for f in _MODULE_FILES if not (bundle / MODULE_DIR / f).is_file()]
    if missing:
        raise PolicyBundleError(f"{bundle}: policy bundle is missing {missing}; re-export it with jobs/train.py.")

    signature = manifest["action_space_signature"]
    stored_hash = manifest["action_space_hash"]
    if hash_signature(signature) != manifest.get("signature_hash"):
        raise PolicyBundleError(f"{bundle}: signature_hash does not match the action-space signature (edited manifest?).")
    import gymnasium as gym

    sizes = signature["sizes"]
    current = action_space_signature(
        gym.spaces.Tuple(tuple(gym.spaces.Discrete(n) for n in sizes)), target_names=signature.get("targets")
    )
    if hash_signature(current) != manifest["signature_hash"]:
        raise PolicyBundleError(
            f"{bundle}: action-space hash mismatch: the bundle was trained with categories "
            f"{signature['categories']} / ratio levels {signature['ratio_levels']}, the code now defines "
            f"{current['categories']} / {current['ratio_levels']}. Retrain or use a matching checkout."
        )
    if expected_action_space_hash is not None and expected_action_space_hash != stored_hash:
        raise PolicyBundleError(
            f"{bundle}: action-space hash mismatch: bundle {stored_hash[:12]}..., expected "
            f"{expected_action_space_hash[:12]}... (different topology/targets or action definitions)."
        )

    from ray.rllib.core.rl_module.rl_module import RLModule

    module = RLModule.from_checkpoint(bundle / MODULE_DIR)
    module.eval()
    if [int(s.n) for s in module.action_space] != list(sizes):
        raise PolicyBundleError(
            f"{bundle}: RLModule action space {module.action_space} does not match the manifest sizes {sizes}."
        )
    return PolicyBundle(module=module, manifest=manifest, path=bundle)


class PolicyBundle:
    """A loaded policy: ``act`` for one observation, ``action_distribution`` for explanations/serving."""

    def __init__(self, module: Any, manifest: dict, path: Path):
        self.module = module
        self.manifest = manifest
        self.path = path
        sig = manifest["action_space_signature"]
        self.categories: list[str] = list(sig["categories"])
        self.ratio_levels: list[float] = list(sig["ratio_levels"])
        self.target_names: list[str] | None = sig.get("targets")

    @property
    def action_space_hash(self) -> str:
        return self.manifest["action_space_hash"]

    @property
    def split(self) -> str:
        """The named known/unknown split the policy was trained on (``handpicked`` for bundles that record none)."""
        return manifest_split(self.manifest)[0]

    def _batch(self, obs: Mapping[str, Any]) -> dict:
        import torch

        missing = [k for k in (OBS_KEY, ACTION_MASK_KEY, RATIO_MASK_KEY) if k not in obs]
        if missing:
            raise KeyError(f"observation is missing {missing}; expected the env's Dict observation.")
        return {
            k: torch.as_tensor(np.asarray(obs[k], dtype=np.float32)).reshape(1, -1)
            for k in (OBS_KEY, ACTION_MASK_KEY, RATIO_MASK_KEY)
        }

    def act(self, obs: Mapping[str, Any], deterministic: bool = True) -> tuple[int, int, int]:
        """The action ``(category, target, ratio)`` for one env observation (extra keys are ignored)."""
        import torch
        from ray.rllib.core.columns import Columns

        batch = {Columns.OBS: self._batch(obs)}
        with torch.no_grad():
            out = self.module.forward_inference(batch) if deterministic else self.module.forward_exploration(batch)
        c, t, r = out[Columns.ACTIONS]
        return int(c[0]), int(t[0]), int(r[0])

    def action_distribution(self, obs: Mapping[str, Any], top_k: int = 5) -> dict:
        """Probabilities of the categories and of the ``top_k`` most likely (category, target, ratio) actions.

        Returns ``{"categories": [{"index", "name", "prob"}, ...] (descending), "top_actions": [{"category",
        "category_name", "target", "target_name", "ratio", "ratio_level", "prob"}, ...], "value": V(s)}``.
        Masked actions have probability 0 and never appear in ``top_actions``.
        """
        import torch
        from ray.rllib.core.columns import Columns

        batch = self._batch(obs)
        with torch.no_grad():
            joint = self.module.action_probabilities(batch)[0]  # (C, T, R)
            value = float(self.module.compute_values({Columns.OBS: batch})[0])
        cat_p = joint.sum(dim=(1, 2))
        order = torch.argsort(cat_p, descending=True)
        categories = [
            {"index": int(i), "name": self._cat_name(int(i)), "prob": float(cat_p[i])} for i in order if cat_p[i] > 0
        ]
        flat = joint.reshape(-1)
        k = min(int(top_k), int((flat > 0).sum()))
        probs, idx = torch.topk(flat, k)
        _, t_n, r_n = joint.shape
        top = []
        for p, i in zip(probs.tolist(), idx.tolist()):
            c, rest = divmod(i, t_n * r_n)
            t, r = divmod(rest, r_n)
            top.append({
                "category": c, "category_name": self._cat_name(c),
                "target": t, "target_name": self.target_names[t] if self.target_names else None,
                "ratio": r, "ratio_level": self.ratio_levels[r] if r < len(self.ratio_levels) else None,
                "prob": p,
            })
        return {"categories": categories, "top_actions": top, "value": value}

    def _cat_name(self, c: int) -> str:
        return self.categories[c] if c < len(self.categories) else str(c)

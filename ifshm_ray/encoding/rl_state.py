"""The LLM semantic state inside the PPO loop: a table of LM embeddings of every log template and alarm text.

Why a table (measured, see :mod:`ifshm_ray.encoding.semantic`): on 2 CPU cores the LM embeds ~3 texts/s uncached,
PPO samples ~1,000 env steps/s, and a window holds ~13 distinct template / alarm texts out of ~100 the platform can
emit. So the LM runs once per *distinct text* (the template-level cache taken to its limit: the simulator's
template set is closed), and the policy's RLModule holds the resulting embeddings as a frozen table. Per window,
the module turns the observation's template counts and alarm flags into a count-weighted, learned attention pooling
over those embeddings (initialised from the fine-tuned encoder's own pooling and projection, then trained by PPO)
and fuses the pooled semantic vector with the numeric metric features (see
:class:`ifshm_ray.policy.module.SemanticStateBlock`).

The text the LM sees for a template is exactly what the encoder saw in fine-tuning: an example line of that template,
rendered by the simulator and parsed by the encoder's own (frozen) Drain3 miner. An alarm's text is
``ALARM <severity> <name>``, as in :meth:`ifshm_ray.encoding.modal.ModalEncoder._alarm_part`.

The table file (``semantic_items.npz``) holds:

* ``texts`` [N], ``kinds`` [N] ("log" / "alarm"), ``embeddings`` [N, H] float32 (pooled LM output);
* ``count_index`` [N]: where the item's count sits in the numeric observation (log1p template count for logs, the
  alert's pending flag -- pending includes firing -- for alarms), and ``count_is_log1p`` [N];
* ``drop_index``: observation columns the semantic block replaces (the raw template counts);
* the encoder's pooling and projection weights (``attn_key_w``, ``attn_key_b``, ``attn_query``, ``count_weight``,
  ``text_proj_w``, ``text_proj_b``) to initialise the policy's copy;
* ``meta``: JSON (encoder path, model, adapter, catalog hash, ``split`` -- the named known/unknown split of the
  simulator config, which a fine-tuned encoder must have been trained on --, build time, LM passes, encoder actors
  used).
"""
from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

TABLE_FILENAME = "semantic_items.npz"
TABLE_FORMAT = "ifshm.semantic_items/v1"


class SemanticTableError(ValueError):
    """The semantic item table is missing, malformed, or does not fit the environment."""


def _example_line(renderer, tpl, services: list[str], node: str) -> str:
    from ifshm_ray.sim.render import EPOCH_DAY, _clock

    svc = services[0]
    vals = renderer._fields(random.Random(0), tpl, svc, services[-1], node, 9 * 3600.0)
    body = tpl.body.format(**vals) if tpl.fields else tpl.body.format()
    source = tpl.source.format(svc=svc) if "{" in tpl.source else tpl.source
    return f"{EPOCH_DAY}T{_clock(9 * 3600.0)}Z {node} {source}: {body}"


def item_texts(sim_config: dict | None, modal) -> dict:
    """The texts the LM embeds for the simulator of ``sim_config`` and where their counts are in the observation.

    ``modal``: the encoder's :class:`~ifshm_ray.encoding.modal.ModalEncoder` (its miner makes the log texts)."""
    from ifshm_ray.env.fault_env import split_env_config
    from ifshm_ray.env.features import obs_layout
    from ifshm_ray.sim.core import BatchedSim
    from ifshm_ray.sim.render import Renderer

    sim_cfg, _ = split_env_config(sim_config)
    sim = BatchedSim(sim_cfg, batch_size=1)
    topo = sim.topo
    renderer = Renderer(sim)
    A, L = len(sim.alerts), len(sim.catalog.templates)
    layout = obs_layout(sim)
    off = layout["global_offset"]
    pending0, counts0 = off, off + 2 * A
    was_learning = getattr(modal, "learn", False)
    modal.learn = False  # match only: embedding the table must not change the encoder's miner
    texts, kinds, count_index, is_log1p = [], [], [], []
    try:
        for ai, rule in enumerate(sim.alerts):
            texts.append(f"ALARM {rule.severity} {rule.name}")
            kinds.append("alarm")
            count_index.append(pending0 + ai)
            is_log1p.append(False)
        node = topo.nodes[-1]
        for tid, tpl in enumerate(sim.catalog.templates):
            line = _example_line(renderer, tpl, topo.services, node)
            (template,) = modal._templates([line]).keys()
            texts.append(template)
            kinds.append("log")
            count_index.append(counts0 + tid)
            is_log1p.append(True)
    finally:
        modal.learn = was_learning
    return {"texts": texts, "kinds": kinds, "count_index": np.asarray(count_index, np.int64),
            "count_is_log1p": np.asarray(is_log1p, bool),
            "drop_index": np.arange(counts0, counts0 + L, dtype=np.int64),
            "obs_dim": int(layout["obs_dim"]), "catalog_sha256": sim.catalog.sha256}


def sim_split(sim_config: dict | None) -> str:
    """The named known/unknown split of an env / simulator config dict (``SimConfig.split``, its default if absent)."""
    from ifshm_ray.env.fault_env import split_env_config

    return split_env_config(sim_config)[0].split


def _lm_source(encoder: str, overrides: dict, split: str) -> dict:
    """EncoderWorker / EncoderPool arguments for ``encoder``: a checkpoint folder (checked now, so a wrong path, or a
    checkpoint fine-tuned on another split than ``split``, is a clear error before any actor starts) or a model preset
    / name (an un-tuned encoder over the known faults of ``split``)."""
    from ifshm_ray.encoding.config import EncoderConfig
    from ifshm_ray.encoding.semantic import check_checkpoint_split, checkpoint_dir
    from ifshm_ray.sim.catalog import load_catalog

    path = Path(encoder).expanduser()
    if path.exists() or "/" in str(encoder):
        path = checkpoint_dir(path)  # AdapterNotFoundError naming jobs/finetune_encoder.py when it is none
        check_checkpoint_split(path, split, "the simulator config of the semantic table")
        return {"checkpoint": str(path.resolve()), "overrides": overrides}
    return {"encoder_config": EncoderConfig(model=encoder, adapter="none", **overrides),
            "fault_types": load_catalog().known_in(split)}


def build_table(encoder: str, sim_config: dict | None, out: str | Path, pool=None, service_config=None,
                **encoder_overrides) -> Path:
    """Embed every item text with the encoder (a checkpoint folder written by ``jobs/finetune_encoder.py``, or a
    model preset / name for an un-tuned encoder) and write ``out`` (a file, or a folder that gets
    ``semantic_items.npz``). Each distinct text goes through the LM once.

    The LM runs in the encoder actor pool (:class:`~ifshm_ray.encoding.service.EncoderPool`): ``pool`` if given
    (an ``EncoderWorker`` works too; when ``encoder`` is a checkpoint it does not serve yet, it loads it first: e.g.
    re-embedding after prompt tuning is ``build_table(new_checkpoint, sim_config, out, pool=pool)``), else, when Ray is running, a pool started here with ``service_config`` (a
    :class:`~ifshm_ray.encoding.config.ServiceConfig`; default: one actor) and shut down after. Without Ray (the
    CLI below, unit tests) the same :class:`~ifshm_ray.encoding.service.EncoderWorker` runs in this process."""
    from ifshm_ray.encoding.service import EncoderPool, EncoderWorker, ray_running

    t0 = time.time()
    split = sim_split(sim_config)
    source = _lm_source(encoder, encoder_overrides, split)
    own_pool = pool is None and ray_running()
    if own_pool:
        pool = EncoderPool(service_config=service_config, **source)
    lm = pool if pool is not None else EncoderWorker(service_config=service_config, **source)
    lm_actors = len(getattr(lm, "replicas", ()))  # 0: in this process
    try:
        info = lm.info()
        if pool is not None and source.get("checkpoint") not in (None, info["checkpoint"]):
            lm.load_checkpoint(source["checkpoint"])
            info = lm.info()
        items = lm.item_texts(sim_config)
        misses0 = lm.stats()["misses"]
        emb = lm.embed_texts(items["texts"])
        lm_passes = lm.stats()["misses"] - misses0
        sd = lm.head_weights()
    finally:
        if own_pool:
            pool.shutdown()
    meta = {"format": TABLE_FORMAT, "encoder": source.get("checkpoint", encoder), "model": info["model"],
            "adapter": info["adapter"], "hidden_size": int(emb.shape[1]), "state_dim": info["state_dim"],
            "items": len(items["texts"]), "lm_passes": int(lm_passes),
            "distinct_texts": len(set(items["texts"])), "obs_dim": items["obs_dim"],
            "catalog_sha256": items["catalog_sha256"], "split": split, "lm_actors": lm_actors,
            "build_s": round(time.time() - t0, 1)}
    out = Path(out)
    if out.suffix != ".npz":
        out = out / TABLE_FILENAME
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, texts=np.asarray(items["texts"]), kinds=np.asarray(items["kinds"]), embeddings=emb,
             count_index=items["count_index"], count_is_log1p=items["count_is_log1p"],
             drop_index=items["drop_index"],
             attn_key_w=sd["attn_key.weight"], attn_key_b=sd["attn_key.bias"], attn_query=sd["attn_query"],
             count_weight=sd["count_weight"], text_proj_w=sd["text_proj.weight"], text_proj_b=sd["text_proj.bias"],
             meta=np.asarray(json.dumps(meta)))
    log.info("semantic item table: %d texts (%d distinct) embedded by %s (%d LM passes, %s) in %.1f s -> %s",
             len(items["texts"]), meta["distinct_texts"], meta["encoder"], lm_passes,
             f"{meta['lm_actors']} encoder actor(s)" if meta["lm_actors"] else "in-process", meta["build_s"], out)
    return out


TABLE_KEYS = ("texts", "kinds", "embeddings", "count_index", "count_is_log1p", "drop_index", "attn_key_w",
              "attn_key_b", "attn_query", "count_weight", "text_proj_w", "text_proj_b", "meta")


def load_table(path: str | Path, obs_dim: int | None = None) -> dict:
    """Read a table written by :func:`build_table`; checks its keys and (if given) that it fits ``obs_dim``."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / TABLE_FILENAME
    if not path.is_file():
        raise SemanticTableError(f"semantic item table {str(path)!r} does not exist; build it with "
                                 "`python -m ifshm_ray.encoding.rl_state --encoder results/encoder --out DIR` "
                                 "(or set policy.encoder_checkpoint so that jobs/train.py builds it)")
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in TABLE_KEYS if k not in z.files]
        if missing:
            raise SemanticTableError(f"{path}: not a semantic item table ({missing} missing)")
        table = {k: z[k] for k in TABLE_KEYS}
    table["meta"] = json.loads(str(table["meta"]))
    if obs_dim is not None and table["meta"]["obs_dim"] != obs_dim:
        raise SemanticTableError(f"{path}: built for observations of size {table['meta']['obs_dim']}, the env has "
                                 f"{obs_dim}: rebuild it with the same simulator config")
    return table


def table_split(meta: dict) -> str:
    """The named split a semantic table was built for (tables from before splits were recorded: ``handpicked``)."""
    from ifshm_ray.sim.catalog import LEGACY_SPLIT

    return meta.get("split") or LEGACY_SPLIT


def check_semantic_split(encoder_checkpoint: str | None, semantic_table: str | None, split: str) -> None:
    """Refuse (ValueError) an LLM semantic state of another split than the training run's ``split``: a fine-tuned
    encoder checkpoint, or a prebuilt table, whose known fault types are another split's. Model presets (un-tuned)
    and paths that do not exist (reported later, where they are read) pass."""
    from ifshm_ray.encoding.semantic import check_checkpoint_split

    if semantic_table:
        path = Path(semantic_table).expanduser()
        if path.exists():
            have = table_split(load_table(path)["meta"])
            if have != split:
                raise ValueError(f"policy.semantic_table {semantic_table!r} was built for split {have!r}, the run "
                                 f"trains on split {split!r}; rebuild it with the run's simulator config")
    elif encoder_checkpoint and Path(encoder_checkpoint).expanduser().exists():
        check_checkpoint_split(encoder_checkpoint, split, "the training run (env.config.split)")


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description="Build the semantic item table (LM embeddings of every log template "
                                            "and alarm text of the simulator) for PPO with the LLM state.")
    p.add_argument("--encoder", default="results/encoder",
                   help="encoder checkpoint folder (jobs/finetune_encoder.py --out) or a model preset/name")
    p.add_argument("--sim-config", default=None, help="simulator config YAML (default config when absent); its "
                   "split must be the one the encoder checkpoint was fine-tuned on")
    p.add_argument("--out", required=True, help="output .npz file or folder")
    a = p.parse_args(argv)
    sim_cfg = None
    if a.sim_config:
        import yaml

        sim_cfg = yaml.safe_load(Path(a.sim_config).read_text()) or {}
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(build_table(a.encoder, sim_cfg, a.out))


if __name__ == "__main__":
    main()

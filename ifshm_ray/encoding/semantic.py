"""LLM semantic encoder: modal-aware context -> semantic state s_t, fault-mode diagnosis, "unknown" score.

Two paths, chosen by ``EncoderConfig.mode`` (both always available, the switch is per call too):

``templates`` (the RL path, cheap)
    The LM embeds each *distinct* log template and alarm text once; embeddings are cached (LRU, keyed by a hash of
    the exact text the model sees plus the adapter version), and the set of templates is small, so in steady state
    almost every item is a cache hit. A learned attention pooling (query . tanh(W e_i) + w * log(1 + count_i))
    joins a window's item embeddings, weighted by counts.
``context`` (diagnosis, serving, GPU)
    One LM pass over the whole bounded prompt of the window; the pooled output is cached per prompt.

Either pooled vector goes through a linear projection to ``state_dim`` and is summed with a learned projection of the
standardised numeric features (metrics, alarms, log levels): the modal-aware fusion. A LayerNorm gives s_t.

Heads: a linear fault-mode head over the known fault types with temperature scaling (:meth:`calibrate`, fitted on
validation data) and an unknown score (cosine distance to the nearest known-fault prototype / its radius;
:meth:`fit_prototypes`).

Cost of the two paths (measured 2026-11-28; ``benchmarks/bench_encoder.py`` prints the CPU numbers)
--------------------------------------------------------------------------------------------------------
A simulator window has ~13 distinct log templates / alarm texts; 32 windows of 2 episodes hold 61 distinct texts,
and the 1632 windows of the default fine-tuning set only 96. So in ``templates`` mode almost every text is a cache
hit after a few steps, while every window has a new prompt in ``context`` mode (its numbers and counts change).

=========================================  ===========================  ==================================
contexts/s, SmolLM2-135M                    CPU, 2 shared cores, fp32     H100, fp32 (random weights, same
                                            (load avg 9-12 from others)   shape; fp16 DeepSpeed similar)
=========================================  ===========================  ==================================
templates, batch 16/32, uncached            3.4                           211
templates, batch 16/32, cached (warm)       258                           309
templates, batch 1, uncached / cached       0.04 (contended) / 73         17.5 / 107
context (256-token prompt), batched, unc.   2.0                           171
context, batched, cached (same prompt)      221                           313
=========================================  ===========================  ==================================

On CPU the cached template path is ~75x the uncached one and the only affordable choice inside the RL loop; on a
GPU the whole-context pass (171 contexts/s uncached) is affordable for diagnosis and serving. Cached throughput is
bounded by the CPU-side modal encoding (Drain3, metric statistics: ~3 ms per window). A ZeRO-2 LoRA training step
(batch 32, templates mode) takes ~6-7 s per worker on one CPU core and 0.13 s on the H100.

Checkpoints (:meth:`save` / :meth:`load`): ``encoder.json`` (config, fault types, the named split whose known types
are the head's classes: :func:`checkpoint_split`), ``heads.safetensors`` (everything
but the backbone), ``miner.bin`` (Drain3 templates) and ``adapter/`` (peft ``save_pretrained``) when an adapter is used.
An encoder whose LoRA was merged to carry a soft prompt (:meth:`SemanticEncoder.add_soft_prompt`) also has
``merged_lora/`` (that LoRA, folded into the backbone's weights again on load, before ``adapter/``'s soft prompt).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ifshm_ray.encoding import adapters as ad
from ifshm_ray.encoding.cache import LRUCache, text_key
from ifshm_ray.encoding.calibration import fit_prototypes, fit_temperature, unknown_score
from ifshm_ray.encoding.config import EncoderConfig
from ifshm_ray.encoding.modal import EncodedContext, ModalEncoder
from ifshm_ray.encoding.models import default_pooling, load_backbone

logger = logging.getLogger(__name__)

CHECKPOINT_FILES = ("encoder.json", "heads.safetensors")
MERGED_LORA_DIRNAME = "merged_lora"
"""Checkpoint subfolder of the LoRA adapter merged into the backbone under a soft prompt
(:meth:`SemanticEncoder.add_soft_prompt`)."""


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Pool token states [B, T, H] with attention mask [B, T'] (T' <= T: missing leading positions, e.g. soft-prompt
    tokens, count as real) into [B, H]: masked ``mean``, ``last`` real token, or ``cls`` (first token)."""
    if mask.shape[1] < hidden.shape[1]:
        extra = hidden.shape[1] - mask.shape[1]
        mask = torch.cat([mask.new_ones(mask.shape[0], extra), mask], dim=1)
    mask = mask.to(hidden.dtype)
    if how == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)
    if how == "last":
        last = mask.shape[1] - 1 - torch.flip(mask, dims=[1]).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if how == "cls":
        return hidden[:, 0]
    raise ValueError(f"pooling {how!r}: use 'mean', 'last' or 'cls'")


def checkpoint_dir(directory: str | Path) -> Path:
    """The encoder checkpoint folder ``directory`` names (its ``adapter/`` subfolder names it too); raises
    :class:`~ifshm_ray.encoding.adapters.AdapterNotFoundError` when it is missing or is no checkpoint."""
    directory = Path(directory).expanduser()
    if directory.name == ad.ADAPTER_DIRNAME and not (directory / "encoder.json").exists():
        directory = directory.parent
    if not directory.exists():
        raise ad.AdapterNotFoundError(
            f"encoder checkpoint {str(directory)!r} does not exist; pass the --out folder of "
            f"jobs/finetune_encoder.py (it holds encoder.json, heads.safetensors and adapter/)")
    missing = [f for f in CHECKPOINT_FILES if not (directory / f).is_file()]
    if missing:
        raise ad.AdapterNotFoundError(
            f"{str(directory)!r} is no encoder checkpoint: {missing} missing (written by "
            f"jobs/finetune_encoder.py --out DIR)")
    return directory


def checkpoint_split(directory: str | Path) -> str:
    """The named split an encoder checkpoint was fine-tuned on (its head's classes are that split's known types);
    a checkpoint written before splits were recorded counts as ``LEGACY_SPLIT`` (``handpicked``)."""
    from ifshm_ray.sim.catalog import LEGACY_SPLIT

    meta = json.loads((checkpoint_dir(directory) / "encoder.json").read_text())
    return meta.get("split") or LEGACY_SPLIT


def check_checkpoint_split(directory: str | Path, split: str, what: str) -> str:
    """``split`` if the encoder checkpoint in ``directory`` was fine-tuned on it; else a ValueError that names both
    (``what``: who wants the encoder, for the message)."""
    have = checkpoint_split(directory)
    if have != split:
        raise ValueError(f"{what} uses split {split!r}, but the encoder checkpoint {str(directory)!r} was fine-tuned on "
                         f"split {have!r} (its fault head and prototypes know that split's known types, some of which "
                         f"are held out in {split!r}); fine-tune an encoder with --set split={split} "
                         "(jobs/finetune_encoder.py) or use the matching split")
    return split


class SemanticEncoder(nn.Module):
    """Backbone (+ adapter) + modal-aware fusion + fault head. Build with :meth:`build` or :meth:`load`.

    ``split``: the named split whose known fault types ``fault_types`` are (recorded in the checkpoint; None for an
    encoder not fine-tuned on a split)."""

    def __init__(self, config: EncoderConfig, fault_types: Sequence[str], backbone, tokenizer,
                 split: str | None = None, tasks: dict[str, Sequence[str]] | None = None):
        super().__init__()
        self.config = config.validate()
        if not fault_types:
            raise ValueError("fault_types is empty: give the known fault types (the head's classes)")
        self.fault_types = list(fault_types)
        self.split = split
        self.tokenizer = tokenizer
        self.backbone = backbone
        self.modal = ModalEncoder(config, count_tokens=self.count_tokens)
        self.pooling = config.pooling if config.pooling != "auto" else default_pooling(config.model)
        hidden = int(backbone.config.hidden_size)
        d, fdim, c = config.state_dim, self.modal.feature_dim, len(self.fault_types)
        g = torch.Generator().manual_seed(config.seed)
        self.hidden_size = hidden
        self.attn_key = nn.Linear(hidden, d)
        self.attn_query = nn.Parameter(torch.randn(d, generator=g) / math.sqrt(d))
        self.count_weight = nn.Parameter(torch.ones(1))  # 1-d: DeepSpeed cannot broadcast 0-d tensors
        self.empty = nn.Parameter(torch.zeros(hidden))
        self.text_proj = nn.Linear(hidden, d)
        self.feat_proj = nn.Linear(fdim, d)
        self.out_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, c)
        # one head per real data set's label set (multi-task fine-tuning, issue 14): task name -> class names
        self.tasks = {k: list(v) for k, v in (tasks or {}).items()}
        self.task_heads = nn.ModuleDict({k: nn.Linear(d, len(v)) for k, v in self.tasks.items()})
        self.register_buffer("feat_mean", torch.zeros(fdim))
        self.register_buffer("feat_std", torch.ones(fdim))
        self.register_buffer("temperature", torch.ones(1))
        self.register_buffer("prototypes", torch.zeros(c, d))
        self.register_buffer("radii", torch.ones(c))
        self.embed_cache = LRUCache(config.template_cache_size)
        self.merged_lora: dict[str, bytes] | None = None
        """The files of a LoRA adapter merged into the backbone's weights (:meth:`add_soft_prompt`), written to
        ``merged_lora/`` by :meth:`save`; None: no merged LoRA."""
        self.items_total = 0
        self.items_distinct = 0
        self._version = 0
        self._salt = f"{config.model}|{config.adapter}|{self.pooling}|v0"

    # ----- construction ------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, config: EncoderConfig, fault_types: Sequence[str], backbone=None, tokenizer=None,
              with_adapter: bool = True, split: str | None = None,
              tasks: dict[str, Sequence[str]] | None = None) -> "SemanticEncoder":
        """Load the backbone named by ``config.model`` (unless given) and wrap it in the configured adapter."""
        config = config.validate()
        if backbone is None or tokenizer is None:
            backbone, tokenizer = load_backbone(config.model, config.cache_dir, seed=config.seed)
        if with_adapter:
            torch.manual_seed(config.seed)  # the adapter's random init (LoRA A, soft prompts): the same in every run
            backbone = ad.apply_adapter(backbone, config.adapter, r=config.lora_r, alpha=config.lora_alpha,
                                        dropout=config.lora_dropout, target_modules=config.lora_target_modules,
                                        num_virtual_tokens=config.num_virtual_tokens,
                                        last_layers=config.lora_layers)
        torch.manual_seed(config.seed)
        return cls(config, fault_types, backbone, tokenizer, split=split, tasks=tasks)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def backbone_trainable(self) -> bool:
        return any(p.requires_grad for p in self.backbone.parameters())

    def clear_cache(self) -> None:
        """Forget cached LM outputs (call after the backbone or adapter changed)."""
        self._version += 1
        self._salt = f"{self.config.model}|{self.config.adapter}|{self.pooling}|v{self._version}"
        self.embed_cache.clear()

    def cache_stats(self) -> dict:
        s = self.embed_cache.stats()
        s["items_total"] = self.items_total
        s["items_distinct"] = self.items_distinct
        return s

    def add_soft_prompt(self, num_virtual_tokens: int | None = None) -> bool:
        """Give the backbone a trainable peft soft prompt (``EncoderConfig.adapter`` becomes ``prompt_tuning``), for
        :func:`ifshm_ray.meta.prompt_tuning.tune_prompt`. peft cannot stack a prompt-learning adapter on a LoRA one
        in one model (its mixed models take LoRA-like adapters only), so a LoRA-fine-tuned encoder first has its LoRA
        merged into the backbone's weights (:func:`~ifshm_ray.encoding.adapters.merge_lora`: the same function up to
        float rounding); the LoRA's files are kept (:attr:`merged_lora`) and :meth:`save` writes them, so that
        :meth:`load` rebuilds the same backbone (base + merged LoRA + soft prompt). An encoder without an adapter gets
        the soft prompt directly; one that has a soft prompt already keeps it (returns False: nothing changed). The
        soft prompt's random initialisation is seeded with ``config.seed`` (the caller's torch RNG is untouched);
        ``num_virtual_tokens``: None for ``config.num_virtual_tokens``. The LM-output cache is cleared."""
        import tempfile

        if self.config.adapter == "prompt_tuning":
            return False
        if isinstance(self.backbone, _DSInference):
            raise ValueError("add_soft_prompt: this encoder's backbone is a DeepSpeed inference engine (its adapters "
                             "are merged and its weights frozen); load the checkpoint again without it")
        n = int(num_virtual_tokens or self.config.num_virtual_tokens)
        backbone = self.backbone
        if self.config.adapter == "lora":
            if not ad.is_peft(backbone) or ad.num_virtual_tokens(backbone):
                raise ValueError("add_soft_prompt: the config says adapter 'lora' but the backbone carries no LoRA "
                                 "adapter")
            with tempfile.TemporaryDirectory() as tmp:
                backbone.save_pretrained(tmp)
                self.merged_lora = {f.name: f.read_bytes() for f in Path(tmp).iterdir() if f.is_file()}
            backbone = ad.merge_lora(backbone)
        for p in backbone.parameters():
            p.requires_grad_(False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self.backbone = ad.apply_prompt_tuning(backbone, num_virtual_tokens=n).to(self.device)
        self.config = self.config.model_copy(update={"adapter": "prompt_tuning", "num_virtual_tokens": n})
        self.clear_cache()
        return True

    # ----- the LM pass -------------------------------------------------------------------------------------------
    def _lm(self, texts: list[str], max_length: int) -> torch.Tensor:
        out = []
        bs = self.config.embed_batch_size
        for i in range(0, len(texts), bs):
            enc = self.tokenizer(texts[i:i + bs], return_tensors="pt", padding=True, truncation=True,
                                 max_length=max_length)
            enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            hidden = self.backbone(**enc).last_hidden_state if not isinstance(self.backbone, _DSInference) \
                else self.backbone(**enc)
            out.append(pool_hidden(hidden.float(), enc["attention_mask"], self.pooling))
        return torch.cat(out) if out else torch.zeros(0, self.hidden_size, device=self.device)

    def embed_texts(self, texts: Sequence[str], max_length: int, use_cache: bool | None = None) -> torch.Tensor:
        """Pooled LM output [N, hidden] of ``texts``; each distinct text runs once. With the cache on (default:
        whenever no gradient flows into the backbone), outputs are reused across calls."""
        if use_cache is None:
            use_cache = not (torch.is_grad_enabled() and self.backbone_trainable())
        uniq = list(dict.fromkeys(texts))
        self.items_total += len(texts)
        self.items_distinct += len(uniq)
        if not use_cache:
            emb = self._lm(uniq, max_length)
        else:
            keys = [text_key(t, self._salt) for t in uniq]
            found = [self.embed_cache.get(k) for k in keys]
            missing = [i for i, f in enumerate(found) if f is None]
            if missing:
                new = self._lm([uniq[i] for i in missing], max_length).detach()
                for j, i in enumerate(missing):
                    found[i] = new[j]
                    self.embed_cache.put(keys[i], new[j])
            emb = torch.stack(found) if found else torch.zeros(0, self.hidden_size, device=self.device)
        index = {t: i for i, t in enumerate(uniq)}
        return emb[[index[t] for t in texts]] if len(texts) != len(uniq) else emb

    # ----- forward -----------------------------------------------------------------------------------------------
    def _pool_templates(self, ctxs: Sequence[EncodedContext]) -> torch.Tensor:
        uniq = list(dict.fromkeys(t for c in ctxs for t in c.items))
        self.items_total += sum(len(c.items) for c in ctxs) - len(uniq)  # repeats inside the batch count as reuse
        emb = self.embed_texts(uniq, self.config.max_template_tokens) if uniq else None
        lmax = max((len(c.items) for c in ctxs), default=0)
        b = len(ctxs)
        if lmax == 0:
            return self.empty.unsqueeze(0).expand(b, -1)
        index = {t: i for i, t in enumerate(uniq)}
        idx = torch.zeros(b, lmax, dtype=torch.long)
        mask = torch.zeros(b, lmax, dtype=torch.bool)
        cnt = torch.zeros(b, lmax)
        for r, c in enumerate(ctxs):
            n = len(c.items)
            if n:
                idx[r, :n] = torch.tensor([index[t] for t in c.items])
                mask[r, :n] = True
                cnt[r, :n] = torch.as_tensor(c.counts[:n])
        idx, mask, cnt = idx.to(self.device), mask.to(self.device), cnt.to(self.device)
        keys = torch.tanh(self.attn_key(emb))                       # [U, d]
        score = keys @ self.attn_query / math.sqrt(keys.shape[1])   # [U]
        logits = score[idx] + self.count_weight * torch.log1p(cnt)
        logits = logits.masked_fill(~mask, -1e9)
        w = torch.softmax(logits, dim=1) * mask                     # [B, L]
        pooled = torch.einsum("bl,blh->bh", w, emb[idx])
        empty = ~mask.any(dim=1)
        if empty.any():
            pooled = torch.where(empty.unsqueeze(1), self.empty.unsqueeze(0), pooled)
        return pooled

    def _pool_context(self, ctxs: Sequence[EncodedContext]) -> torch.Tensor:
        return self.embed_texts([c.prompt for c in ctxs], self.config.max_prompt_tokens + 16)

    def forward(self, ctxs: Sequence[EncodedContext], mode: str | None = None, with_logits: bool = False):
        """Semantic states [B, state_dim] of encoded contexts (``mode`` overrides the config's path); with
        ``with_logits`` also the fault head's raw logits (one forward, as DeepSpeed ZeRO-3 needs)."""
        mode = mode or self.config.mode
        if mode not in ("templates", "context"):
            raise ValueError(f"mode {mode!r}: use 'templates' or 'context'")
        pooled = self._pool_templates(ctxs) if mode == "templates" else self._pool_context(ctxs)
        feats = torch.as_tensor(np.stack([c.features for c in ctxs]), dtype=torch.float32, device=self.device)
        feats = ((feats - self.feat_mean) / self.feat_std).clamp(-6.0, 6.0)
        states = self.out_norm(self.text_proj(pooled) + self.feat_proj(feats))
        return (states, self.head(states)) if with_logits else states

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        return self.head(states)

    def task_logits(self, states: torch.Tensor, task: str) -> torch.Tensor:
        """Logits of the real data set's head ``task`` (:attr:`tasks`) over its classes."""
        if task not in self.task_heads:
            raise KeyError(f"no head for task {task!r}; this encoder has {sorted(self.tasks) or 'none'}")
        return self.task_heads[task](states)

    # ----- fitting the numeric parts -----------------------------------------------------------------------------
    def fit_feature_norm(self, features: np.ndarray) -> None:
        """Standardise the numeric features with the training set's mean and std."""
        f = np.asarray(features, np.float32)
        self.feat_mean.copy_(torch.as_tensor(f.mean(0)))
        self.feat_std.copy_(torch.as_tensor(np.maximum(f.std(0), 1e-3)))

    def calibrate(self, val_logits, val_labels) -> float:
        """Fit the temperature on validation logits / labels (ints into ``fault_types``); returns it."""
        t = fit_temperature(val_logits, val_labels)
        self.temperature.fill_(t)
        return t

    def fit_prototypes(self, states, labels) -> None:
        protos, radii = fit_prototypes(states, labels, len(self.fault_types), self.config.unknown_quantile)
        self.prototypes.copy_(torch.as_tensor(protos))
        self.radii.copy_(torch.as_tensor(radii))

    # ----- inference ---------------------------------------------------------------------------------------------
    def encode_telemetry(self, telemetry: Sequence[dict]) -> list[EncodedContext]:
        return [self.modal.encode(t) for t in telemetry]

    @torch.no_grad()
    def predict(self, batch: Sequence[dict | EncodedContext], mode: str | None = None) -> dict:
        """Diagnose telemetry windows (dicts) or encoded contexts. Returns numpy arrays: ``state`` [B, d],
        ``probs`` [B, C] (temperature-scaled), ``fault`` (names), ``confidence`` [B], ``unknown_score`` [B]."""
        ctxs = [c if isinstance(c, EncodedContext) else self.modal.encode(c) for c in batch]
        was_training = self.training
        self.eval()
        try:
            states, logits = self.forward(ctxs, mode, with_logits=True)
            z = logits / self.temperature
        finally:
            self.train(was_training)
        probs = torch.softmax(z, dim=-1).cpu().numpy()
        s = states.cpu().numpy()
        unk, _ = unknown_score(s, self.prototypes.cpu().numpy(), self.radii.cpu().numpy())
        top = probs.argmax(1)
        return {"state": s, "probs": probs, "fault": [self.fault_types[i] for i in top],
                "confidence": probs.max(1), "unknown_score": unk}

    def enable_deepspeed_inference(self, tp_size: int = 1, dtype: torch.dtype | None = None) -> None:
        """Wrap the backbone in DeepSpeed ``init_inference`` (tensor parallel over ``tp_size`` GPUs; on CPU world
        size 1, a thin wrapper). Adapters are merged into the weights first."""
        import deepspeed

        base = ad.merge_lora(self.backbone)
        dtype = dtype or (torch.float16 if torch.cuda.is_available() else torch.float32)
        engine = deepspeed.init_inference(base, tensor_parallel={"tp_size": tp_size}, dtype=dtype,
                                          replace_with_kernel_inject=False)
        self.backbone = _DSInference(engine)
        self.clear_cache()

    # ----- checkpoints -------------------------------------------------------------------------------------------
    def head_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(self.head_state_dict(), str(directory / "heads.safetensors"))
        meta = {"config": self.config.to_dict(), "fault_types": self.fault_types,
                "feature_dim": self.modal.feature_dim, "hidden_size": self.hidden_size, "pooling": self.pooling,
                "split": self.split, "tasks": self.tasks, "format": "ifshm.encoder/v1",
                "merged_lora": self.merged_lora is not None}
        (directory / "encoder.json").write_text(json.dumps(meta, indent=2))
        (directory / "miner.bin").write_bytes(self.modal.miner_state())
        ad.save_adapter(self.backbone, directory / ad.ADAPTER_DIRNAME)
        if self.merged_lora is not None:
            (directory / MERGED_LORA_DIRNAME).mkdir(exist_ok=True)
            for name, data in self.merged_lora.items():
                (directory / MERGED_LORA_DIRNAME / name).write_bytes(data)
        return directory

    @classmethod
    def load(cls, directory: str | Path, backbone=None, tokenizer=None, trainable: bool = False,
             **config_overrides) -> "SemanticEncoder":
        """Rebuild a saved encoder. A missing path, or one without ``encoder.json``, raises
        :class:`~ifshm_ray.encoding.adapters.AdapterNotFoundError`."""
        from safetensors.torch import load_file

        directory = checkpoint_dir(directory)
        meta = json.loads((directory / "encoder.json").read_text())
        cfg_dict = {**meta["config"], **config_overrides}
        config = EncoderConfig(**cfg_dict)
        if backbone is None or tokenizer is None:
            backbone, tokenizer = load_backbone(config.model, config.cache_dir, seed=config.seed)
        merged = None
        if meta.get("merged_lora"):  # a LoRA folded into the weights under the soft prompt (add_soft_prompt)
            lora_dir = directory / MERGED_LORA_DIRNAME
            if not lora_dir.is_dir():
                raise ad.AdapterNotFoundError(f"{str(directory)!r} was saved with a merged LoRA but has no "
                                              f"{MERGED_LORA_DIRNAME}/ folder")
            merged = {f.name: f.read_bytes() for f in lora_dir.iterdir() if f.is_file()}
            backbone = ad.merge_lora(ad.load_adapter(backbone, lora_dir))
        if (directory / ad.ADAPTER_DIRNAME).exists():
            backbone = ad.load_adapter(backbone, directory / ad.ADAPTER_DIRNAME, trainable=trainable)
        elif meta["config"].get("adapter", "none") != "none":
            raise ad.AdapterNotFoundError(f"{str(directory)!r} was saved with adapter "
                                          f"{meta['config']['adapter']!r} but has no {ad.ADAPTER_DIRNAME}/ folder")
        else:
            ad.apply_adapter(backbone, "none")
        from ifshm_ray.sim.catalog import LEGACY_SPLIT

        enc = cls(config, meta["fault_types"], backbone, tokenizer, split=meta.get("split") or LEGACY_SPLIT,
                  tasks=meta.get("tasks") or None)
        enc.merged_lora = merged
        state = load_file(str(directory / "heads.safetensors"))
        result = enc.load_state_dict(state, strict=False)
        bad = [k for k in result.missing_keys if not k.startswith("backbone.")]
        if bad or result.unexpected_keys:
            raise ValueError(f"checkpoint {directory} does not fit this encoder: missing {bad}, "
                             f"unexpected {list(result.unexpected_keys)}")
        if (directory / "miner.bin").is_file():
            enc.modal.load_miner_state((directory / "miner.bin").read_bytes())
        enc.eval()
        return enc


class _DSInference(nn.Module):
    """Adapts a DeepSpeed InferenceEngine to return the last hidden state."""

    def __init__(self, engine):
        super().__init__()
        self.engine = engine
        self.config = engine.module.config

    def forward(self, **kw):
        return self.engine(**kw).last_hidden_state

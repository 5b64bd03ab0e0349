"""Encoding: modal-aware encoder (logs, metrics, alarms -> one context) and the LLM semantic encoder.

Modules (this package re-exports nothing: import from the module, e.g. ``from ifshm_ray.encoding.config import
EncoderConfig``. Plain re-exports would make ``import ifshm_ray.encoding.config``, which the jobs import first to check
their config, load torch and transformers too: ~4 s against <0.1 s, measured):

* :mod:`.config`      -- ``EncoderConfig`` / ``FinetuneConfig`` / ``ServiceConfig``, loaded from ``configs/encoder*.yaml``
* :mod:`.models`      -- backbones by preset name (``smollm2``, ``minilm``, ``tiny-llama``, ``tiny-bert``) or path
* :mod:`.modal`       -- ``ModalEncoder``: telemetry window -> ``EncodedContext`` (numpy + drain3 only)
* :mod:`.semantic`    -- ``SemanticEncoder``: context -> semantic state, fault head, calibration, unknown score
* :mod:`.adapters`    -- LoRA and prompt tuning (peft), save / load, ``AdapterNotFoundError``
* :mod:`.calibration` -- temperature scaling, ECE, prototypes, macro-F1, Wilson intervals
* :mod:`.cache`       -- ``LRUCache`` and ``text_key`` (hash of the exact text the model sees)
* :mod:`.linear`      -- a small logistic regression (the baseline, the leave-one-out head on real samples)
* :mod:`.real_data`   -- readers of the real sets: OpenStack fault-injection samples (service logs only) and the label
  map, Failure-Dataset-OpenStack campaigns (event counts, as text), Nezha TrainTicket; each validates its folder
* :mod:`.real_eval`   -- classical baselines on them (scikit-learn), grouped folds, group-bootstrap intervals
* :mod:`.simdata`     -- labelled telemetry windows from the simulator (fault type per window)
* :mod:`.train`       -- the Ray Train + DeepSpeed per-worker loop of ``jobs/finetune_encoder.py``
* :mod:`.service`     -- ``EncoderWorker`` / ``EncoderPool`` (Ray actors, batching, LRU cache) and the env wrapper

Typical use::

    from ifshm_ray.encoding.config import EncoderConfig
    from ifshm_ray.encoding.semantic import SemanticEncoder
    enc = SemanticEncoder.build(EncoderConfig(model="minilm"), fault_types=["gpu_xid", "oom", ...])
    out = enc.predict([telemetry_window])   # state, probs, fault, confidence, unknown_score
"""

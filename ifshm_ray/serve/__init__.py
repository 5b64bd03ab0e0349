"""Ray Serve application of IFSHM: ``POST /v1/diagnose``, ``/v1/heal``, ``/v1/alertmanager``, ``GET /v1/faults``,
``/healthz`` and the OpenAPI docs (``/docs``).

* :mod:`.config`  -- ``ServeConfig`` (builder args / Serve config YAML ``args``)
* :mod:`.schemas` -- pydantic request / response models (the OpenAPI schema)
* :mod:`.service` -- ``HealingService`` and ``EncoderDiagnoser``: the logic as plain classes (no Ray, no HTTP)
* :mod:`.http`    -- ``create_app``: the FastAPI app (limits, auth, error messages)
* :mod:`.app`     -- the Serve deployments and ``build_app``

Run::

    serve run ifshm_ray.serve:build_app checkpoint=results/train model=minilm
    serve deploy configs/serve.yaml
    python jobs/serve.py --checkpoint results/train

Names are imported lazily: importing this package loads neither Ray nor torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_app": "app", "EncoderDeployment": "app", "IngressDeployment": "app",
    "ServeConfig": "config", "serve_config_from_args": "config",
    "HealingService": "service", "EncoderDiagnoser": "service", "alertmanager_to_telemetry": "service",
    "create_app": "http",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

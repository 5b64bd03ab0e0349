"""Ray Serve application of IFSHM: ``POST /v1/diagnose``, ``/v1/heal``, ``/v1/alertmanager``, ``GET /v1/faults``,
``/healthz`` and the OpenAPI docs (``/docs``).

* :mod:`.config`  -- ``ServeConfig`` (builder args / Serve config YAML ``args``)
* :mod:`.schemas` -- pydantic request / response models (the OpenAPI schema)
* :mod:`.service` -- ``HealingService`` and ``serve_encoder``: the logic as plain classes (no Ray, no HTTP)
* :mod:`.http`    -- ``create_app``: the FastAPI app (limits, auth, error messages)
* :mod:`.app`     -- the Serve deployments and ``build_app``

Run::

    serve run ifshm_ray.serve.app:build_app checkpoint=results/train model=minilm
    serve deploy configs/serve.yaml
    python jobs/serve.py --checkpoint results/train

This package re-exports nothing (import from the module): re-exporting ``build_app`` would make ``import
ifshm_ray.serve.config`` load Ray and FastAPI too (~2.4 s against <0.1 s, measured).
"""

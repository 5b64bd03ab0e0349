"""The FastAPI application: routes, validation errors, body-size limit and optional bearer-token auth.

:func:`create_app` takes a :class:`~ifshm_ray.serve.service.HealingService`; the Serve ingress deployment builds it
on its replica (``__serve_build_asgi_app__``), tests build it in-process with ``fastapi.testclient.TestClient``.

Errors always carry ``{"detail": "<what is wrong>"}``: 422 for malformed JSON, wrong types or unknown entity names,
413 for bodies or telemetry larger than the configured limits, 401 for a missing or wrong bearer token.

The OpenAPI document (``/openapi.json``) says what the app enforces: the request bodies name the served topology's
entities as enums (:func:`~ifshm_ray.serve.schemas.request_models`), Alertmanager alerts require
``labels.alertname``, and the bearer-token security scheme (with the 401 answers) is declared on the ``/v1/*``
operations only when a token is configured, so a client or fuzzer generated from it sends what the app accepts.
"""
# No `from __future__ import annotations`: the request models are built per app (per topology) inside create_app,
# and FastAPI reads the endpoints' annotations as objects; postponed (string) annotations would be looked up in
# the module's globals, where those models are not.
import hmac
import logging

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from ifshm_ray.serve.schemas import (AlertmanagerResponse, AlertmanagerWebhook, Diagnosis, ErrorResponse,
                                     HealResponse, request_models)
from ifshm_ray.serve.service import HealingService, InputError, LimitError
from ifshm_ray.telemetry import describe_errors

logger = logging.getLogger(__name__)

_ERRORS = {401: {"model": ErrorResponse, "description": "Missing or wrong bearer token."},
           413: {"model": ErrorResponse, "description": "Body or telemetry larger than a configured limit."},
           422: {"model": ErrorResponse, "description": "Malformed JSON, wrong types or unknown entity names."}}


class BodySizeLimit:
    """ASGI middleware: answer 413 when a request body exceeds ``max_bytes`` (``Content-Length`` or streamed)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        msg = f"request body larger than max_body_bytes={self.max_bytes}"
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    return await JSONResponse({"detail": msg}, status_code=413)(scope, receive, send)
        # No (or a false) Content-Length: read the body here, up to the limit, then hand it to the app.
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                return await JSONResponse({"detail": msg}, status_code=413)(scope, receive, send)
            chunks.append(chunk)
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _format_errors(errors) -> str:
    for e in errors:
        if e.get("type") == "json_invalid":  # loc = ("body", character offset)
            pos = e.get("loc", ())[-1]
            return f"malformed JSON at character {pos}: {(e.get('ctx') or {}).get('error', e.get('msg'))}"
    body_relative = [{**e, "loc": tuple(x for x in e.get("loc", ()) if x != "body") or ("body",)} for e in errors]
    return "invalid request: " + describe_errors(body_relative, limit=10)


def create_app(service: HealingService) -> FastAPI:
    """The HTTP API over ``service`` (see the module docstring and ``/docs``)."""
    cfg = service.cfg
    app = FastAPI(
        title="IFSHM fault self-healing",
        version="1.0",
        description="Diagnosis and recommended recovery actions for a cloud AI platform from its telemetry "
                    "(logs, metrics, alarms), by the IFSHM semantic encoder and hierarchical PPO policy "
                    "(arXiv 2506.07411). Entity names must belong to the topology the policy was trained on "
                    "(`GET /healthz` lists them).",
    )
    app.add_middleware(BodySizeLimit, max_bytes=cfg.max_body_bytes)
    DiagnoseRequest, HealRequest = request_models(tuple(service.services), tuple(service.nodes))
    token = cfg.resolved_token()  # read once, when the app is built (on the replica under Serve)
    bearer = HTTPBearer(auto_error=False, description="Bearer token: the served config's auth_token or the value "
                                                      "of its auth_token_env variable.")

    async def require_token(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if creds is None or creds.scheme.lower() != "bearer" or not hmac.compare_digest(
                creds.credentials.encode(), token.encode()):
            raise StarletteHTTPException(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                                         headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        return JSONResponse({"detail": _format_errors(exc.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:  # FastAPI could not decode the body (e.g. invalid UTF-8): malformed input
            return JSONResponse({"detail": f"malformed request body: {exc.detail} (send UTF-8 JSON)"},
                                status_code=422)
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(InputError)
    async def _input(_: Request, exc: InputError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(LimitError)
    async def _limit(_: Request, exc: LimitError):
        return JSONResponse({"detail": str(exc)}, status_code=413)

    # Auth off: no security requirement and no 401 in the document (an OpenAPI-driven client would otherwise
    # insist on an Authorization header the app never checks).
    auth = [Depends(require_token)] if token is not None else []
    errors = _ERRORS if token is not None else {k: v for k, v in _ERRORS.items() if k != 401}

    @app.post("/v1/diagnose", response_model=Diagnosis, responses=errors, dependencies=auth,
              summary="Diagnose a telemetry window: fault mode, confidence, unknown score, explanation.")
    async def diagnose(req: DiagnoseRequest) -> dict:
        return await service.diagnose(service.check(req.telemetry.to_telemetry()))

    @app.post("/v1/heal", response_model=HealResponse, responses=errors, dependencies=auth,
              summary="Diagnose and recommend a hierarchical recovery action (category, target, ratio).")
    async def heal(req: HealRequest) -> dict:
        telemetry = service.check(req.telemetry.to_telemetry())
        history = None if req.history is None else [h.model_dump() for h in req.history]
        return await service.heal(telemetry, req.last_action, req.cordoned, history, req.incident_gate)

    @app.post("/v1/alertmanager", response_model=AlertmanagerResponse, responses=errors, dependencies=auth,
              summary="Prometheus Alertmanager webhook receiver (payload version 4).")
    async def alertmanager(req: AlertmanagerWebhook) -> dict:
        return await service.alertmanager(req.model_dump())

    @app.get("/v1/faults", dependencies=auth, responses={k: v for k, v in errors.items() if k == 401},
             summary="The fault catalog: name, family, known/unknown in the served policy's split, description, "
                     "remedies.")
    async def faults() -> list[dict]:
        return service.faults()

    @app.get("/healthz", summary="Liveness and what is served (policy, topology, encoder).")
    async def healthz() -> dict:
        return await service.health()

    return app

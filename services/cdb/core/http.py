"""The HTTP face every service shares: ``/health``, ``/status`` and ``/metrics``.

``/health`` is the contract for people and monitors (``ok``, or ``stale``/``starting`` with
503). Kubernetes probes use ``/livez`` (liveness) and ``/readyz`` (readiness), so a quiet
market neither restarts a pod nor takes it out of its Service (and out of Prometheus).

Read-only endpoints are open (on the pod network only); every state-changing endpoint a
service adds depends on :func:`admin_credential`: ``Authorization: Bearer <ADMIN_TOKEN>``
(the token from a Secret, compared in constant time), else 401; with no token configured
the endpoint refuses everything (403). Each accepted or refused call is logged with the
caller's address, for the audit trail.
"""

from __future__ import annotations

import hmac
import importlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from cdb.core.metrics import Health, ServiceMetrics

if TYPE_CHECKING:
    from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query
    from fastapi.routing import APIRoute

# The kernel owns the web framework (an import contract holds it): a service's routes take
# these names from here. FastAPI (about 10 MiB of modules) is loaded only by a service that
# adds routes: its names below come from :func:`__getattr__` on first use, and a service
# without routes serves the kernel's endpoints from Starlette alone (requests and
# responses are Starlette's classes either way; FastAPI re-exports them).
__all__ = [
    "APIRoute",
    "APIRouter",
    "Depends",
    "FastAPI",
    "FileResponse",
    "HTMLResponse",
    "HTTPException",
    "HttpState",
    "JSONResponse",
    "Query",
    "RedirectResponse",
    "Request",
    "Response",
    "Starlette",
    "StreamingResponse",
    "admin_credential",
    "create_app",
]
_FROM_FASTAPI = {
    "APIRoute": "fastapi.routing",
    "APIRouter": "fastapi",
    "Depends": "fastapi",
    "FastAPI": "fastapi",
    "HTTPException": "fastapi",
    "Query": "fastapi",
}


def __getattr__(name: str) -> Any:
    module = _FROM_FASTAPI.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


log = logging.getLogger("cdb.http")


def admin_credential(token: str) -> Callable[[Request], None]:
    """A FastAPI dependency: the request carries ``Authorization: Bearer <token>``."""
    expected = token.encode()

    from fastapi import HTTPException  # a service with routes has FastAPI loaded

    def check(request: Request) -> None:
        caller = request.client.host if request.client else "?"
        what = f"{request.method} {request.url.path}"
        if not expected:
            log.warning("state-changing request refused: no ADMIN_TOKEN configured",
                        extra={"request": what, "caller": caller})  # fmt: skip
            raise HTTPException(403, "disabled: this service has no ADMIN_TOKEN configured")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected):
            log.warning("state-changing request refused: bad or missing credential",
                        extra={"request": what, "caller": caller})  # fmt: skip
            raise HTTPException(401, "credential required", headers={"WWW-Authenticate": "Bearer"})
        log.warning("state-changing request accepted", extra={"request": what, "caller": caller})

    return check


class HttpState:
    """What the endpoints read; the runner flips ``ready`` once dependencies are up."""

    def __init__(
        self,
        service: str,
        health: Health,
        metrics: ServiceMetrics,
        status: Callable[[], dict[str, Any]],
    ) -> None:
        self.service = service
        self.health = health
        self.metrics = metrics
        self.status = status
        self.ready = False
        # while starting: what the service waits for (a dependency, a lock), for people
        self.waiting_for = ""


def counters(metrics: ServiceMetrics) -> dict[str, float]:
    """Totals of the kernel's counters across their labels, for ``/status``."""
    totals: dict[str, float] = {}
    for family in metrics.registry.collect():
        if family.type != "counter" or family.name.startswith(("process_", "python_")):
            continue  # the process collectors' series are for Prometheus, not /status
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = sample.name.removeprefix("cdb_")
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def create_app(state: HttpState, router: APIRouter | None = None) -> Starlette:
    """The kernel's endpoints, plus the service's ``router`` in a FastAPI app; a service
    without routes gets a Starlette app serving the same endpoints."""

    async def health() -> JSONResponse:
        if not state.ready:
            return JSONResponse(_starting(state), status_code=503)
        current = state.health.state()
        body: dict[str, Any] = {"status": current}
        if current != "ok":
            body["last_event_age_s"] = round(state.health.age_s(), 3)
            body["stale_after_s"] = state.health.stale_after_s
            return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    async def livez() -> JSONResponse:
        """Kubernetes liveness: the process serves. Never fails for a quiet input."""
        return JSONResponse({"status": "alive"})

    async def readyz() -> JSONResponse:
        """Kubernetes readiness: dependencies are up. A stale input is /health's business."""
        if not state.ready:
            return JSONResponse(_starting(state), status_code=503)
        return JSONResponse({"status": "ready"})

    async def status() -> JSONResponse:
        return JSONResponse(
            {
                "service": state.service,
                "ready": state.ready,
                "health": state.health.state() if state.ready else "starting",
                "last_event_at": state.health.last_event_at,
                "waiting_for": state.waiting_for if not state.ready else "",
                "counters": counters(state.metrics),
                **state.status(),
            }
        )

    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # async: answered on the event loop, never in a worker thread (each thread would
    # cost the process a thread pool and a malloc arena for a few microseconds of work)
    endpoints: dict[str, Callable[[], Awaitable[Response]]] = {
        "/health": health,
        "/livez": livez,
        "/readyz": readyz,
        "/status": status,
        "/metrics": metrics,
    }
    if router is None:
        return Starlette(
            routes=[
                Route(path, _no_request(endpoint), methods=["GET"])
                for path, endpoint in endpoints.items()
            ]
        )
    from fastapi import FastAPI

    app = FastAPI(title=f"cdb {state.service}", docs_url=None, redoc_url=None)
    for path, endpoint in endpoints.items():
        app.add_api_route(path, endpoint, methods=["GET"])
    app.include_router(router)
    return app


def _no_request(
    endpoint: Callable[[], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint (it gets the request) for one that needs none."""

    async def serve(request: Request) -> Response:
        return await endpoint()

    return serve


def _starting(state: HttpState) -> dict[str, str]:
    body = {"status": "starting"}
    if state.waiting_for:
        body["waiting_for"] = state.waiting_for
    return body

"""The HTTP face every service shares: ``/health``, ``/status`` and ``/metrics``.

``/health`` is the contract for people and monitors (``ok``, or ``stale``/``starting`` with
503). Kubernetes probes use ``/livez`` (liveness) and ``/readyz`` (readiness), so a quiet
market neither restarts a pod nor takes it out of its Service (and out of Prometheus).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from cdb.core.metrics import Health, ServiceMetrics

__all__ = ["HttpState", "create_app"]


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
        if family.type != "counter":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = sample.name.removeprefix("cdb_")
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def create_app(state: HttpState, router: APIRouter | None = None) -> FastAPI:
    app = FastAPI(title=f"cdb {state.service}", docs_url=None, redoc_url=None)

    @app.get("/health")
    def health() -> JSONResponse:
        if not state.ready:
            return JSONResponse(_starting(state), status_code=503)
        current = state.health.state()
        body: dict[str, Any] = {"status": current}
        if current != "ok":
            body["last_event_age_s"] = round(state.health.age_s(), 3)
            body["stale_after_s"] = state.health.stale_after_s
            return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    @app.get("/livez")
    def livez() -> dict[str, str]:
        """Kubernetes liveness: the process serves. Never fails for a quiet input."""
        return {"status": "alive"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """Kubernetes readiness: dependencies are up. A stale input is /health's business."""
        if not state.ready:
            return JSONResponse(_starting(state), status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/status")
    def status() -> dict[str, Any]:
        return {
            "service": state.service,
            "ready": state.ready,
            "health": state.health.state() if state.ready else "starting",
            "last_event_at": state.health.last_event_at,
            "waiting_for": state.waiting_for if not state.ready else "",
            "counters": counters(state.metrics),
            **state.status(),
        }

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    if router is not None:
        app.include_router(router)
    return app


def _starting(state: HttpState) -> dict[str, str]:
    body = {"status": "starting"}
    if state.waiting_for:
        body["waiting_for"] = state.waiting_for
    return body

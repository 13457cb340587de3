"""The kopf handlers, registered into a registry built for one configuration.

``build_registry(env)`` is what ``python -m cdb_operator`` runs and what the tests hand
to :class:`kopf.testing.KopfRunner`; nothing is registered at import time.

* create / update (spec) / resume of a TradingBot → :func:`reconcile`.
* a timer re-reconciles every bot each ``UNIVERSE_REFRESH_S``: universe bots re-resolve
  their symbols, and an owned object deleted by hand is recreated (drift repair).
* events of the screener StatefulSets → the owning bot's Ready/Progressing.
* delete → pause trading (if the bot drives the pipeline) and audit, retried until both
  succeed; Kubernetes' GC removes the owned objects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import kopf

from cdb.core.bus import Bus, connect_redis
from cdb.core.db import Database, apply_migrations
from cdb_operator.audit import AuditLog
from cdb_operator.context import OperatorContext
from cdb_operator.http import HttpServer
from cdb_operator.kube import KubeClient
from cdb_operator.metrics import OperatorMetrics
from cdb_operator.reconcile import reconcile, refresh_readiness, retire
from cdb_operator.settings import OperatorEnv
from cdb_operator.universe import UniverseClient

__all__ = ["GROUP", "PLURAL", "VERSION", "build_registry", "configure_kopf"]

GROUP, VERSION, PLURAL = "cdb.io", "v1alpha1", "tradingbots"
MEMO_KEY = "cdb"

log = logging.getLogger("cdb_operator")


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """kopf's own bookkeeping under the cdb.io prefix; Events only for what matters."""
    settings.persistence.finalizer = "cdb.io/tradingbot"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="cdb.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="cdb.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = 4
    # One namespace and a CRD the chart installs: nothing to discover at run time. Scanning
    # would list namespaces and CRDs cluster-wide, which the chart's namespaced Role rightly
    # refuses (on a real API server: ~1 minute of retries and 18 ERROR lines per start).
    settings.scanning.disabled = True
    # A bot deleted while its refresh timer is mid-reconcile: kopf removes the finalizer
    # only once the timer has exited, and looks again after this many seconds (default 60,
    # so `kubectl delete` could hang a minute when nothing else touches the bot).
    settings.background.cancellation_polling = 1.0


def resolve_connection(
    explicit: kopf.ConnectionInfo | None, settings: kopf.OperatorSettings
) -> Callable[[], kopf.ConnectionInfo]:
    """How both kopf and our client reach the API: explicit, service account, kubeconfig."""

    def connect() -> kopf.ConnectionInfo:
        info = (
            explicit
            or kopf.login_with_service_account(settings=settings)
            or kopf.login_with_kubeconfig(settings=settings)
        )
        if info is None:
            raise kopf.LoginError("no service account token and no kubeconfig found")
        return info

    return connect


def context_of(memo: kopf.Memo) -> OperatorContext:
    ctx = memo.get(MEMO_KEY)
    if not isinstance(ctx, OperatorContext):
        raise kopf.TemporaryError("operator is still starting", delay=1)
    return ctx


def build_registry(
    env: OperatorEnv, connection: kopf.ConnectionInfo | None = None
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    bots = (GROUP, VERSION, PLURAL)

    @kopf.on.startup(registry=registry)
    async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure_kopf(settings)
        metrics = OperatorMetrics()
        bus = Bus(
            connect_redis(env, socket_timeout=env.bus_publish_timeout_s),
            metrics=metrics.kernel,
            publish_timeout_s=env.bus_publish_timeout_s,
        )
        db = Database(env, min_size=0, max_size=2)
        await db.open(wait=False)
        ctx = OperatorContext(
            env=env,
            kube=KubeClient(resolve_connection(connection, settings)),
            bus=bus,
            db=db,
            audit=AuditLog(db),
            universe=UniverseClient(env.bot_rest_url, env.universe_timeout_s),
            metrics=metrics,
        )
        server = HttpServer(ctx)
        await server.start()
        memo[MEMO_KEY] = ctx
        memo["cdb_http"] = server
        try:
            await apply_migrations(env)
        except Exception as error:  # PostgreSQL down: audits retry per bot, start anyway
            log.warning(f"migrations not applied yet: {type(error).__name__}: {error}")
        ctx.ready = True

    @kopf.on.cleanup(registry=registry)
    async def stop(memo: kopf.Memo, **_: Any) -> None:
        server = memo.get("cdb_http")
        if isinstance(server, HttpServer):
            await server.stop()
        ctx = memo.get(MEMO_KEY)
        if isinstance(ctx, OperatorContext):
            await ctx.close()

    @kopf.on.login(registry=registry)
    def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
        return resolve_connection(connection, settings)()

    @kopf.on.resume(*bots, registry=registry, id="reconcile")
    @kopf.on.create(*bots, registry=registry, id="reconcile")
    @kopf.on.update(*bots, field="spec", registry=registry, id="reconcile")
    async def on_change(
        body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, memo: kopf.Memo, **_: Any
    ) -> None:
        await reconcile(context_of(memo), body, patch, logger)

    @kopf.timer(
        *bots,
        registry=registry,
        id="refresh",
        interval=env.universe_refresh_s,
        initial_delay=env.universe_refresh_s,
    )
    async def refresh(
        body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, memo: kopf.Memo, **_: Any
    ) -> None:
        await reconcile(context_of(memo), body, patch, logger)

    @kopf.on.event(
        "apps",
        "v1",
        "statefulsets",
        registry=registry,
        labels={"app.kubernetes.io/managed-by": "cdb-operator"},
    )
    async def workload_changed(
        body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any
    ) -> None:
        if type in (None, "ADDED", "MODIFIED"):
            await refresh_readiness(context_of(memo), body)

    # No retry limit: after the last try kopf would drop the finalizer, and an outage of
    # Redis or PostgreSQL would lose the pause and the audit row. retire() backs off itself
    # (TemporaryError delays); `backoff` covers an unexpected exception.
    @kopf.on.delete(*bots, registry=registry, id="retire", retries=None, backoff=env.retry_delay_s)
    async def on_delete(
        body: kopf.Body,
        patch: kopf.Patch,
        logger: kopf.Logger,
        memo: kopf.Memo,
        retry: int,
        **_: Any,
    ) -> None:
        await retire(context_of(memo), body, patch, logger, retry)

    return registry

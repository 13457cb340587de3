"""Reconcile one TradingBot: resolve, audit, write the owned objects, publish, report.

1. Parse the spec (pydantic, the CRD's defaults). Only the namespace's active bot (the
   oldest, :mod:`cdb_operator.pipeline`) goes on; any other stands by. Resolve the symbols
   (the list, or the universe from bot_rest; on a bot_rest outage the last set stays).
2. Diff the resolved config against the one in force (the ConfigMap) field by field and
   record the changes in ``config_audit`` *before* applying them: no unrecorded change.
3. Write the ConfigMap and the StatefulSet, each only if its desired state
   changed (hash annotation), so a replayed reconcile writes nothing.
4. Publish a ``control`` event when the live settings changed (status.liveConfigHash).
5. Patch the status (only keys that changed) and post one Event per applied change.

Failures that will pass (API, bus, database, bot_rest) set ``Degraded`` with a reason and
raise :class:`kopf.TemporaryError`: kopf retries with a delay; the operator never crashes.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import kopf
from pydantic import ValidationError

from cdb.core.bus import BUS_ERRORS
from cdb.core.db import DB_ERRORS
from cdb.core.events import Control, ControlSettings, deterministic_id
from cdb_operator.audit import (
    OPERATOR_ACTOR,
    UNIVERSE_ACTOR,
    FieldChange,
    Transition,
    actor_of,
    diff_configs,
)
from cdb_operator.conditions import (
    Problem,
    WorkloadState,
    merge_conditions,
    same_conditions,
    workload_conditions,
)
from cdb_operator.context import OperatorContext
from cdb_operator.kube import ApiError, ObjectRef
from cdb_operator.pipeline import STANDBY_REASON, BotIdentity, active_bot, standby_message
from cdb_operator.resources import (
    HASH_ANNOTATION,
    build_config_map,
    build_stateful_set,
    config_map_name,
    owner_reference,
    workload_name,
)
from cdb_operator.spec import ResolvedConfig, TradingBotSpec, stable_hash
from cdb_operator.universe import UniverseUnavailable

__all__ = ["reconcile", "refresh_readiness", "retire"]

log = logging.getLogger("cdb_operator.reconcile")

MAX_EVENTS_PER_CHANGE = 10
APPLIED_DESPITE = ("UniverseUnavailable",)
PUBLISHED_TTL_S = 7 * 24 * 3600
# what a deletion waits out (retried with backoff, the finalizer kept)
RETIRE_ERRORS: tuple[type[BaseException], ...] = (*BUS_ERRORS, *DB_ERRORS, ApiError)
UNIVERSE_FIELDS = {"symbols", "chunks"}
RETIRE_REASON = "DeletionBlocked"
RETIRE_MAX_DELAY_S = 300.0
BOTS_API, BOTS_PLURAL = "cdb.io/v1alpha1", "tradingbots"
# A status landing late, or a readiness write refused (409) by a newer one: try again,
# 0.25 s apart at first, then up to 2 s apart, for about two minutes in all.
READINESS_ROUNDS, READINESS_ROUND_S, READINESS_ROUND_MAX_S = 60, 0.25, 2.0


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _generation(body: kopf.Body) -> int | None:
    value = body.metadata.get("generation")
    return int(value) if value is not None else None


def _owned_by(manifest: Mapping[str, Any], uid: str) -> bool:
    references = (manifest.get("metadata") or {}).get("ownerReferences") or []
    return bool(uid) and any(ref.get("uid") == uid for ref in references)


async def _pipeline(
    ctx: OperatorContext, namespace: str, me: Mapping[str, Any]
) -> tuple[BotIdentity, Mapping[str, Any] | None]:
    """The namespace's active bot, and ``me`` as just listed (None if not listed yet)."""
    bots = await ctx.kube.list(ObjectRef(BOTS_API, BOTS_PLURAL, namespace, ""))
    mine = BotIdentity.of(me)
    listed = next((bot for bot in bots if BotIdentity.of(bot).same(mine)), None)
    return active_bot(me, bots), listed


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return f"{len(value)} symbols" if len(value) > 3 else json.dumps(value)
    return json.dumps(value)


def _change_message(change: FieldChange) -> str:
    message = f"{change.field}: {_describe(change.old)} -> {_describe(change.new)}"
    if isinstance(change.old, list) and isinstance(change.new, list):
        added = len(set(change.new) - set(change.old))
        removed = len(set(change.old) - set(change.new))
        message += f" (+{added} -{removed})"
    return message[:1000]


class Reconciler:
    """One reconcile of one bot; ``run`` is the whole job."""

    def __init__(
        self, ctx: OperatorContext, body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger
    ) -> None:
        self.ctx = ctx
        self.body = body
        self.patch = patch
        self.logger = logger
        self.name = str(body.metadata.name)
        self.namespace = str(body.metadata.namespace or ctx.env.operator_namespace)
        self.generation = _generation(body)
        self.status: Mapping[str, Any] = body.status
        # The status as just listed: kopf's body can lag behind our own last status patch.
        self.listed_status: Mapping[str, Any] = body.status

    def ref(self, api_version: str, plural: str, name: str) -> ObjectRef:
        return ObjectRef(api_version, plural, self.namespace, name)

    async def run(self) -> None:
        try:
            spec = TradingBotSpec.model_validate(dict(self.body.spec))
        except ValidationError as error:
            message = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}"
                for e in error.errors()[:5]
            )
            self.fail(Problem(reason="InvalidSpec", message=message[:1000]), "invalid")
            raise kopf.PermanentError(f"invalid spec: {message}") from None
        owner = owner_reference(self.body)
        active, listed = await self.call(_pipeline, self.ctx, self.namespace, self.body)
        if listed is not None:
            self.listed_status = listed.get("status") or {}
        if not active.same(BotIdentity.of(self.body)):
            await self.stand_by(active)
            return

        config_map = await self.call(
            self.ctx.kube.get, self.ref("v1", "configmaps", config_map_name(self.name))
        )
        applied = _applied_document(config_map)
        problem, symbols, resolved_at = await self.resolve_symbols(spec, applied)
        config = ResolvedConfig.build(spec, symbols)
        changes = diff_configs(applied, config.document())
        actor = self.actor(spec, applied, changes)

        previous_hash = _applied_hash(config_map, applied)
        recorded = await self.record(previous_hash, config, changes, actor)
        # The change is durable in config_audit: its Events and status.lastChange go out
        # now, once per recorded row. A step failing after this is retried against the
        # ConfigMap already written, which shows no change left to announce.
        self.announce(recorded, actor, first=applied is None, config=config)
        stateful_set = await self.write_objects(owner, config)
        await self.publish(spec, config)

        self.ctx.metrics.reconciles.labels("applied" if changes else "unchanged").inc()
        workload = WorkloadState.of(stateful_set, config.chunks)
        updates: dict[str, Any] = {
            "chunks": config.chunks,
            "symbols": len(config.symbols),
            "configHash": config.config_hash,
            "standbyFor": None,  # removed: this bot drives the pipeline now
        }
        if self.generation is not None:
            updates["observedGeneration"] = self.generation
        if resolved_at is not None:
            updates["universeResolvedAt"] = resolved_at
        self.write_status(updates, workload_conditions(workload, True, problem))
        self.ctx.bots[f"{self.namespace}/{self.name}"] = {
            "config_hash": config.config_hash,
            "chunks": config.chunks,
            "symbols": len(config.symbols),
            "paused": config.paused,
            "mode": config.mode,
            "degraded": problem.reason if problem else None,
            "active": True,
        }

    def actor(
        self,
        spec: TradingBotSpec,
        applied: Mapping[str, Any] | None,
        changes: Sequence[FieldChange],
    ) -> str:
        """Who made the change: the spec's last editor, unless the spec did not change.

        With the generation already applied, a change comes from the operator itself: the
        timer's universe refresh, or re-applying a lost ConfigMap.
        """
        observed = self.listed_status.get("observedGeneration")
        if not changes or self.generation is None or observed != self.generation:
            return actor_of(self.body.metadata, [c.field for c in changes])
        if spec.universe and applied is not None and {c.field for c in changes} <= UNIVERSE_FIELDS:
            return UNIVERSE_ACTOR
        return OPERATOR_ACTOR

    async def stand_by(self, active: BotIdentity) -> None:
        """Another bot drives the pipeline: no control events, no screener; say so."""
        message = standby_message(active, self.namespace)
        ref = self.ref("apps/v1", "statefulsets", workload_name(self.name))
        current = await self.call(self.ctx.kube.get, ref)
        if current is not None and _owned_by(current, self.body.metadata.uid or ""):
            # It ran while this bot was active (or before bots were exclusive): stop it.
            await self.call(self.ctx.kube.delete, ref)
            self.logger.info(f"standing by for {active.name}: screener removed")
        self.ctx.metrics.reconciles.labels("standby").inc()
        updates: dict[str, Any] = {"standbyFor": active.describe(), "liveConfigHash": None}
        if self.status.get("chunks"):
            updates["chunks"] = 0
        idle = f"no screener while {active.name} is active"
        wanted = [
            {"type": "Ready", "status": "False", "reason": "Standby", "message": message},
            {"type": "Progressing", "status": "False", "reason": "Standby", "message": idle},
            {"type": "Degraded", "status": "True", "reason": STANDBY_REASON, "message": message},
        ]
        conditions = self.listed_status.get("conditions") or []
        degraded: Mapping[str, Any] = next(
            (c for c in conditions if c.get("type") == "Degraded"), {}
        )
        self.write_status(updates, wanted)
        if degraded.get("reason") != STANDBY_REASON:
            kopf.warn(self.body, reason=STANDBY_REASON, message=message)
        self.ctx.bots[f"{self.namespace}/{self.name}"] = {
            "active": False,
            "standby_for": active.name,
            "degraded": STANDBY_REASON,
        }

    async def call(self, operation: Any, *args: Any) -> Any:
        """An API call; a refusal marks the bot Degraded (ApiError) and retries later."""
        try:
            return await operation(*args)
        except ApiError as error:
            self.fail(Problem(reason="ApiError", message=str(error)[:1000]))
            raise kopf.TemporaryError(str(error), delay=self.ctx.env.retry_delay_s) from error

    async def resolve_symbols(
        self, spec: TradingBotSpec, applied: Mapping[str, Any] | None
    ) -> tuple[Problem | None, list[str], str | None]:
        if spec.universe is None:
            return None, list(spec.symbols), None
        try:
            symbols = await self.ctx.universe.resolve(spec.universe)
            return None, symbols, _now()
        except UniverseUnavailable as error:
            problem = Problem(reason="UniverseUnavailable", message=str(error)[:1000])
            known = applied.get("symbols") if applied else None
            if applied and applied.get("universe") == spec.universe and known:
                self.logger.warning(f"universe unavailable, keeping {len(known)} symbols: {error}")
                return problem, list(known), None
            self.fail(problem)
            raise kopf.TemporaryError(str(error), delay=self.ctx.env.retry_delay_s) from error

    async def record(
        self,
        previous_hash: str,
        config: ResolvedConfig,
        changes: Sequence[FieldChange],
        actor: str,
    ) -> list[FieldChange]:
        transition = Transition(
            bot=self.name,
            bot_uid=self.body.metadata.uid or "",
            generation=self.generation or 0,
            previous_hash=previous_hash,
            config_hash=config.config_hash,
        )
        try:
            written = await self.ctx.audit.record(transition, changes, actor)
        except DB_ERRORS as error:
            message = f"config_audit not writable: {type(error).__name__}: {error}"[:1000]
            self.fail(Problem(reason="AuditUnavailable", message=message))
            raise kopf.TemporaryError(message, delay=self.ctx.env.retry_delay_s) from error
        self.ctx.metrics.audit_rows.inc(len(written))
        return written

    async def write_objects(
        self, owner: dict[str, Any], config: ResolvedConfig
    ) -> dict[str, Any] | None:
        env = self.ctx.env
        await self.ensure(
            self.ref("v1", "configmaps", config_map_name(self.name)),
            build_config_map(self.name, self.namespace, owner, config),
        )
        return await self.ensure(
            self.ref("apps/v1", "statefulsets", workload_name(self.name)),
            build_stateful_set(self.name, self.namespace, owner, config, env),
        )

    async def ensure(self, ref: ObjectRef, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """Create the object, or merge-patch it when its desired state changed; else nothing."""
        current = await self.call(self.ctx.kube.get, ref)
        if current is None:
            return dict(await self.call(self.ctx.kube.create, ref, manifest))
        annotations = (current.get("metadata") or {}).get("annotations") or {}
        if annotations.get(HASH_ANNOTATION) == manifest["metadata"]["annotations"][HASH_ANNOTATION]:
            return dict(current)
        patch = dict(manifest)
        patch.pop("apiVersion", None)
        patch.pop("kind", None)
        return dict(await self.call(self.ctx.kube.patch, ref, patch))

    async def publish(self, spec: TradingBotSpec, config: ResolvedConfig) -> None:
        settings = spec.live_settings()
        live_hash = stable_hash(settings.model_dump(mode="json"))
        previous = self.status.get("liveConfigHash")
        if previous == live_hash:
            return
        # Taking over from another bot: a new event id, even if this bot published the
        # same settings at this generation before it stood by.
        previous = previous or self.status.get("standbyFor")
        uid = self.body.metadata.uid or ""
        event = Control(
            event_id=deterministic_id(
                "control", self.namespace, self.name, uid, self.generation, previous, live_hash
            ),
            bot=self.name,
            bot_uid=uid,
            generation=self.generation or 0,
            config_hash=config.config_hash,
            settings=settings,
            timestamp=time.time(),
        )
        published_key = f"cdb:operator:published:{event.event_id}"
        try:
            # A stale body (watch replays) can carry an old liveConfigHash: the marker keeps
            # the same transition from being published twice (consumers dedupe it anyway).
            if await self.ctx.bus.publish_once(event, published_key, PUBLISHED_TTL_S):
                self.ctx.metrics.control_events.inc()
                self.logger.info(f"control event published: {settings.model_dump()}")
        except BUS_ERRORS as error:
            message = f"control event not published (redis): {type(error).__name__}: {error}"
            self.fail(Problem(reason="BusUnreachable", message=message[:1000]))
            raise kopf.TemporaryError(message, delay=self.ctx.env.retry_delay_s) from error
        self.patch.status["liveConfigHash"] = live_hash

    def fail(self, problem: Problem, outcome: str = "retry") -> None:
        """Show the problem in status now (kopf applies the patch even though we raise)."""
        self.ctx.metrics.reconciles.labels(outcome).inc()
        current = {str(c.get("type")): c for c in self.status.get("conditions") or []}
        progressing = current.get("Progressing") or {}
        wanted = [
            {
                "type": "Ready",
                "status": "False",
                "reason": "ConfigNotApplied",
                "message": f"the latest spec is not applied: {problem.reason}",
            },
            {
                "type": "Progressing",
                "status": str(progressing.get("status", "True")),
                "reason": str(progressing.get("reason", "Reconciling")),
                "message": str(progressing.get("message", "")),
            },
            {
                "type": "Degraded",
                "status": "True",
                "reason": problem.reason,
                "message": problem.message,
            },
        ]
        self.write_status({}, wanted)
        kopf.warn(self.body, reason=problem.reason, message=problem.message)

    def write_status(self, updates: Mapping[str, Any], conditions: list[dict[str, str]]) -> None:
        for key, value in updates.items():
            if self.status.get(key) != value:
                self.patch.status[key] = value
        merged = merge_conditions(self.status.get("conditions"), conditions, self.generation)
        if not same_conditions(self.status.get("conditions"), merged):
            self.patch.status["conditions"] = merged

    def announce(
        self, changes: Sequence[FieldChange], actor: str, *, first: bool, config: ResolvedConfig
    ) -> None:
        """status.lastChange and one Event per recorded change (kopf applies the status
        patch even when a later step raises)."""
        if not changes:
            return
        self.patch.status["lastChange"] = {
            "actor": actor,
            "fields": [c.field for c in changes][:20],
            "at": _now(),
        }
        if first:
            kopf.event(
                self.body,
                type="Normal",
                reason="ConfigApplied",
                message=(
                    f"created by {actor}: {len(config.symbols)} symbols in {config.chunks} "
                    f"chunks, mode {config.mode}, paused {str(config.paused).lower()} "
                    f"(config {config.config_hash})"
                ),
            )
            return
        for change in changes[:MAX_EVENTS_PER_CHANGE]:
            kopf.event(
                self.body,
                type="Normal",
                reason="ConfigChanged",
                message=f"{_change_message(change)} by {actor}",
            )
        if len(changes) > MAX_EVENTS_PER_CHANGE:
            rest = len(changes) - MAX_EVENTS_PER_CHANGE
            kopf.event(
                self.body,
                type="Normal",
                reason="ConfigChanged",
                message=f"{rest} more fields by {actor}",
            )


def _applied_hash(config_map: Mapping[str, Any] | None, applied: Mapping[str, Any] | None) -> str:
    """The hash of the config in force ("" when none is)."""
    if applied is None:
        return ""
    written = ((config_map or {}).get("data") or {}).get("config-hash")
    return str(written) if written else stable_hash(applied)


def _applied_document(config_map: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not config_map:
        return None
    raw = (config_map.get("data") or {}).get("config.json")
    try:
        document = json.loads(raw) if raw else None
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


async def reconcile(
    ctx: OperatorContext, body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger
) -> None:
    """The whole reconcile of one bot, one at a time per bot."""
    reconciler = Reconciler(ctx, body, patch, logger)
    async with ctx.lock(reconciler.namespace, reconciler.name):
        await reconciler.run()


async def refresh_readiness(ctx: OperatorContext, stateful_set: Mapping[str, Any]) -> None:
    """A screener StatefulSet changed: bring its bot's Ready/Progressing up to date.

    kopf writes a reconcile's status after the handler returns, outside the bot's lock.
    Until it lands (``observedGeneration`` behind ``generation``) the bot's conditions are
    the previous generation's: computing from them would write stale conditions over the
    new ones. So the refresh waits for it, a bounded number of short rounds, and reads the
    StatefulSet afresh each round (a newer event's state, never an older one's)."""
    metadata = stateful_set.get("metadata") or {}
    bot = (metadata.get("labels") or {}).get("cdb.io/bot")
    namespace = metadata.get("namespace") or ctx.env.operator_namespace
    if not bot or not metadata.get("name"):
        return
    ref = ObjectRef(BOTS_API, BOTS_PLURAL, namespace, bot)
    workload = ObjectRef("apps/v1", "statefulsets", namespace, str(metadata["name"]))
    delay = READINESS_ROUND_S
    for _ in range(READINESS_ROUNDS):
        async with ctx.lock(namespace, bot):
            if not await _refresh_once(ctx, ref, workload):
                return
        await asyncio.sleep(delay)
        delay = min(delay * 1.25, READINESS_ROUND_MAX_S)
    log.warning(f"{namespace}/{bot}: readiness not refreshed after {READINESS_ROUNDS} tries; "
                "the next screener event or the refresh timer brings it up to date")  # fmt: skip


async def _refresh_once(ctx: OperatorContext, ref: ObjectRef, workload: ObjectRef) -> bool:
    """One refresh; True when the bot's status still lags behind its spec (try again)."""
    current = await ctx.kube.get(ref)
    if current is None or (current.get("metadata") or {}).get("deletionTimestamp"):
        return False
    status = current.get("status") or {}
    chunks = status.get("chunks")
    if not chunks:
        # The reconcile's status has not landed yet, and it was computed before this event:
        # once it lands, these readiness conditions must be computed again from it.
        return True
    conditions = status.get("conditions") or []
    degraded = next((c for c in conditions if c.get("type") == "Degraded"), None)
    if degraded is not None and degraded.get("reason") == STANDBY_REASON:
        return False  # standing by: its conditions say so, whatever its old screener does
    meta_generation = (current.get("metadata") or {}).get("generation")
    generation = int(meta_generation) if meta_generation is not None else None
    observed = status.get("observedGeneration", generation)
    if observed != generation:
        return True  # the reconcile's status for this spec has not landed yet
    stateful_set = await ctx.kube.get(workload)
    if stateful_set is None:
        return False
    problem = None
    if degraded is not None and degraded.get("status") == "True":
        problem = Problem(
            reason=str(degraded.get("reason")), message=str(degraded.get("message", ""))
        )
    applied = problem is None or problem.reason in APPLIED_DESPITE
    wanted = workload_conditions(WorkloadState.of(stateful_set, int(chunks)), applied, problem)
    merged = merge_conditions(conditions, wanted, observed)
    if same_conditions(conditions, merged):
        return False
    # Conditions computed from this read may only replace this read's: the resourceVersion
    # makes the API server refuse (409) a write over a newer status, and the next round
    # computes again from a fresh read.
    version = (current.get("metadata") or {}).get("resourceVersion")
    patch = {"status": {"conditions": merged}, "metadata": {"resourceVersion": version}}
    try:
        await ctx.kube.patch(ref, patch, subresource="status")
    except ApiError as error:
        if error.status != 409:
            raise
        ctx.metrics.status_conflicts.inc()
        return True
    return False


def retire_delay(base_s: float, retry: int) -> float:
    """Exponential backoff for a deletion that waits: base, 2 x base, … up to 5 minutes."""
    return float(min(base_s * 2 ** min(retry, 16), max(base_s, RETIRE_MAX_DELAY_S)))


async def retire(
    ctx: OperatorContext,
    body: kopf.Body,
    patch: kopf.Patch,
    logger: kopf.Logger,
    retry: int = 0,
) -> None:
    """The bot is being deleted: pause trading if it drives the pipeline, and audit it.

    Until both are done the finalizer stays (kopf retries without limit, backing off), so
    an outage of Redis or PostgreSQL delays the deletion instead of losing the pause. A
    bot standing by for another publishes nothing: the pipeline is not its to pause.
    The owned objects are removed by Kubernetes' garbage collector (ownerReferences).
    """
    name = str(body.metadata.name)
    namespace = str(body.metadata.namespace or ctx.env.operator_namespace)
    uid = body.metadata.uid or ""
    config_hash = str(body.status.get("configHash") or "none")
    event = Control(
        event_id=deterministic_id("control-retire", namespace, name, uid),
        bot=name,
        bot_uid=uid,
        generation=_generation(body) or 0,
        config_hash=config_hash,
        settings=ControlSettings(paused=True),
        timestamp=time.time(),
    )
    transition = Transition(
        bot=name,
        bot_uid=uid,
        generation=_generation(body) or 0,
        previous_hash=str(body.status.get("configHash") or ""),
        config_hash=f"deleted-{uid}",
    )
    step = "listing the namespace's bots"
    try:
        active, _ = await _pipeline(ctx, namespace, body)
        drives = active.same(BotIdentity.of(body))
        if drives:
            step = "publishing paused=true"
            published_key = f"cdb:operator:published:{event.event_id}"
            # once, not once per attempt
            if await ctx.bus.publish_once(event, published_key, PUBLISHED_TTL_S):
                ctx.metrics.control_events.inc()
        step = "writing the deleted audit row"
        await ctx.audit.record(
            transition, [FieldChange("deleted", config_hash, None)], actor_of(body.metadata)
        )
    except RETIRE_ERRORS as error:
        delay = retire_delay(ctx.env.retry_delay_s, retry)
        message = (
            f"deletion waits, {step} failed: {type(error).__name__}: {error}; "
            f"attempt {retry + 1}, next in {delay:g} s (the finalizer stays until it succeeds)"
        )[:1000]
        logger.warning(message)
        conditions = [{"type": "Degraded", "status": "True", "reason": RETIRE_REASON,
                       "message": message}]  # fmt: skip
        current = body.status.get("conditions") or []
        kept = [dict(c) for c in current if c.get("type") not in ("Degraded", "Stalled")]
        patch.status["conditions"] = kept + merge_conditions(current, conditions, _generation(body))
        kopf.warn(body, reason=RETIRE_REASON, message=message)
        raise kopf.TemporaryError(message, delay=delay) from error
    ctx.bots.pop(f"{namespace}/{name}", None)
    if drives:
        logger.info("bot deleted: trading paused; owned objects go with it (ownerReferences)")
    else:
        logger.info("bot deleted while standing by: the pipeline is left as it is")

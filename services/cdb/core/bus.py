"""The event bus: Redis Streams read through consumer groups, exactly once in effect.

* ``publish`` appends one event (``XADD … MAXLEN ~ n``); a dead Redis is retried with
  backoff and then surfaces as :class:`TransientError`, never as a silent loss.
* A :class:`Consumer` acknowledges an entry only after its handler returned (the effect
  is durable), records the event id so a redelivered or re-published event is skipped
  (unless the handler is keyed in PostgreSQL itself: ``Consumer.done_keys``),
  claims entries a dead consumer left pending (``XAUTOCLAIM``), and dead-letters an
  entry that does not parse, that its handler refuses (:class:`Refused`), or whose handler
  raised ``max_attempts`` times, with the reason.
* A consumer with a ``batch_handler`` hands it every event of one read together (one
  transaction, one ``XACK`` for them all after it returned); when it raises, nothing of it
  counts and the same events go through ``handler`` one at a time, as without one, so
  refusals, failures and dead letters stay per event. A read of one entry (a quiet
  stream) takes the per-event road: no batch is waited for. Failed attempts are counted durably per
  event id and group in Redis (``cdb:attempts:<group>:<event_id>``), never from Redis's
  delivery counter: a consumer killed again and again while its handler waits (a lock, an
  outage) re-reads the entry each time, and that is no failure of the entry.
* Transient failures (Redis or PostgreSQL unreachable) are retried for as long as it
  takes: an outage delays events, it never dead-letters or drops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg
import psycopg_pool
from pydantic import ValidationError
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from cdb.core.config import RedisSettings
from cdb.core.events import STREAMS, Event, Stream
from cdb.core.metrics import Health, ServiceMetrics

__all__ = [
    "BUS_ERRORS",
    "UNREACHABLE",
    "BatchHandler",
    "Bus",
    "BusAuthError",
    "Consumer",
    "Handler",
    "RedisClient",
    "Refused",
    "TransientError",
    "is_transient",
]

log = logging.getLogger("cdb.bus")

E = TypeVar("E", bound=Event)
Handler = Callable[[E], Awaitable[None]]
BatchHandler = Callable[[Sequence[E]], Awaitable[None]]

# The kernel owns the Redis client (an import contract holds it): others name it so.
RedisClient = Redis
BusAuthError = redis_errors.AuthenticationError
# Redis not reachable (down, a network error): wait and try again.
UNREACHABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    OSError,
)

PAYLOAD_FIELD = b"event"
# How long an acknowledged event id is remembered, so a re-published copy is skipped.
# Copies come from redeliveries and outbox re-flushes, within minutes; every money-path
# effect is keyed by its id in PostgreSQL as well. A day bounds Redis memory: a key per
# event and group (about 100 B) for a day of candles of 450 contracts is about 65 MB.
DONE_TTL_S = 24 * 3600
# Price streams (candles, market_data) are applied idempotently by design (a price mark, a
# candle upsert): an hour covers any redelivery and keeps their keys to a few MB.
PRICE_DONE_TTL_S = 3600
DEAD_LETTER_MAX_LEN = 100_000


class TransientError(Exception):
    """A failure that will pass (a dependency is down): retry, never dead-letter."""


class Refused(Exception):
    """The handler will never accept this event (e.g. an order without a risk decision):
    dead-letter it at once with this reason, no retries."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.OutOfMemoryError,  # Redis full (noeviction): wait for memory, lose nothing
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    ConnectionError,
    TimeoutError,
)


# Everything a bus call can raise that is the bus's fault (Redis refused, unreachable,
# timed out), for callers that report it rather than retry here.
BUS_ERRORS: tuple[type[BaseException], ...] = (TransientError, redis_errors.RedisError, OSError)


def is_transient(error: BaseException) -> bool:
    return isinstance(error, TRANSIENT_ERRORS)


@dataclass
class Backoff:
    """Jittered exponential backoff: 0.1 s doubling up to ``cap`` seconds."""

    base: float = 0.1
    cap: float = 5.0
    attempt: int = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * (2**self.attempt))
        self.attempt += 1
        jitter: float = 0.5 + random.random() / 2
        return float(delay) * jitter

    def reset(self) -> None:
        self.attempt = 0


async def sleep_unless(stop: asyncio.Event | None, seconds: float) -> None:
    """Sleep, but wake up early when ``stop`` is set."""
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def connect_redis(settings: RedisSettings, *, socket_timeout: float = 10.0) -> Redis:
    return Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        db=settings.redis_db,
        username=settings.redis_username,
        password=settings.redis_password.get_secret_value(),
        socket_connect_timeout=5.0,
        socket_timeout=socket_timeout,
        health_check_interval=30,
    )


class Bus:
    """Publishing and the plumbing consumers share; one per process."""

    def __init__(
        self,
        redis: Redis,
        *,
        metrics: ServiceMetrics | None = None,
        max_len: int = 100_000,
        publish_timeout_s: float = 30.0,
    ) -> None:
        self.redis = redis
        self.metrics = metrics
        self.max_len = max_len
        self.publish_timeout_s = publish_timeout_s
        self._published: dict[Stream, Any] = {}  # events_published's child per stream

    def _count_published(self, stream: Stream) -> None:
        if self.metrics is None:
            return
        child = self._published.get(stream)
        if child is None:  # looked up once: a labels() call per event costs a lock and more
            child = self._published[stream] = self.metrics.events_published.labels(stream.value)
        child.inc()

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except TRANSIENT_ERRORS:
            return False

    async def wait_ready(self, stop: asyncio.Event | None = None) -> None:
        """Block until Redis answers, logging one line per failed attempt."""
        backoff = Backoff()
        while True:
            try:
                await self.redis.ping()
                return
            except redis_errors.AuthenticationError:
                raise
            except TRANSIENT_ERRORS as error:
                self._count_bus_error()
                delay = backoff.next_delay()
                log.warning(
                    "redis unreachable, retrying",
                    extra={"error": str(error), "retry_in_s": round(delay, 2)},
                )
                await sleep_unless(stop, delay)
                if stop is not None and stop.is_set():
                    raise TransientError("stopped while waiting for redis") from error

    async def publish(self, event: Event, stream: Stream | None = None) -> str:
        """Append ``event`` to its stream; returns the entry id."""
        target = stream or STREAMS[type(event)]
        (entry_id,) = await self.publish_payloads([(target, event.model_dump_json().encode())])
        return entry_id

    async def publish_payloads(self, items: Sequence[tuple[Stream, bytes]]) -> list[str]:
        """Append serialised events (``Event.model_dump_json``), in order, in one round
        trip; returns their entry ids. A dead or full Redis is retried with backoff for
        ``publish_timeout_s``, then raises :class:`TransientError`; a retry may append
        some of them twice, which consumers skip by event id."""
        if not items:
            return []
        deadline = time.monotonic() + self.publish_timeout_s
        backoff = Backoff()
        while True:
            try:
                if len(items) == 1:  # no pipeline object for the common single event
                    stream, payload = items[0]
                    ids = [
                        await self.redis.xadd(
                            stream.value,
                            {PAYLOAD_FIELD: payload},
                            maxlen=self.max_len,
                            approximate=True,
                        )
                    ]
                else:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for stream, payload in items:
                            pipe.xadd(
                                stream.value,
                                {PAYLOAD_FIELD: payload},
                                maxlen=self.max_len,
                                approximate=True,
                            )
                        ids = await pipe.execute()
                for stream, _ in items:
                    self._count_published(stream)
                return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
            except (
                redis_errors.ConnectionError,
                redis_errors.TimeoutError,
                redis_errors.OutOfMemoryError,
            ) as error:
                self._count_bus_error()
                streams = ",".join(sorted({stream.value for stream, _ in items}))
                if time.monotonic() >= deadline:
                    raise TransientError(f"publish to {streams} failed: {error}") from error
                delay = backoff.next_delay()
                log.warning(
                    "redis unreachable or full while publishing, retrying",
                    extra={"stream": streams, "error": str(error), "retry_in_s": delay},
                )
                await asyncio.sleep(delay)

    async def publish_once(self, event: Event, marker: str, ttl_s: int) -> bool:
        """Publish ``event`` unless ``marker`` (a key of the publisher's own) says it was;
        then set the marker for ``ttl_s``. True when it was published now. For a writer
        that may repeat a transition (a watch replaying an old body): consumers skip a
        copy by its event id anyway, the marker keeps the stream free of it."""
        if await self.redis.exists(marker):
            return False
        await self.publish(event)
        await self.redis.set(marker, b"1", ex=ttl_s)
        return True

    async def history(self, stream: Stream, model: type[E], page: int = 1000) -> list[E]:
        """Every event still on ``stream``, oldest first (``XRANGE``), without a group:
        for folding a small stream at start. Entries that do not parse are skipped (its
        consumers dead-letter them with the reason)."""
        events: list[E] = []
        cursor = "-"
        while True:
            entries: Any = await self.redis.xrange(stream.value, min=cursor, count=page)
            events += _parsed(entries, model)
            if len(entries) < page:
                return events
            cursor = "(" + _text(entries[-1][0])

    async def recent(self, stream: Stream, model: type[E], count: int) -> list[E]:
        """The newest ``count`` entries of ``stream`` that parse, newest first
        (``XREVRANGE``): a look at the stream for a reader outside every group."""
        entries: Any = await self.redis.xrevrange(stream.value, count=count)
        return _parsed(entries, model)

    async def last_id(self, stream: Stream) -> str:
        """The id of the newest entry of ``stream`` ("0-0" when empty): a cursor after
        which only later entries count."""
        newest: Any = await self.redis.xrevrange(stream.value, count=1)
        return _text(newest[0][0]) if newest else "0-0"

    async def arrived_after(self, stream: Stream, entry_id: str, block_ms: int) -> bool:
        """Whether an entry later than ``entry_id`` is on ``stream``, waiting up to
        ``block_ms`` for one (``XREAD BLOCK``, no group)."""
        reply: Any = await self.redis.xread({stream.value: entry_id}, count=1, block=block_ms)
        return bool(reply)

    async def ensure_group(self, stream: Stream, group: str, start: str = "0") -> None:
        try:
            await self.redis.xgroup_create(stream.value, group, id=start, mkstream=True)
        except redis_errors.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def _count_bus_error(self) -> None:
        if self.metrics is not None:
            self.metrics.bus_errors.inc()


@dataclass
class Consumer(Generic[E]):
    """One handler reading one stream in one consumer group.

    ``group`` is normally the service name, so replicas of a service share the work and
    every service sees every event. ``start`` is where a new group begins reading.
    """

    stream: Stream
    model: type[E]
    handler: Callable[[E], Awaitable[None]]
    group: str
    start: str = "0"
    max_attempts: int = 5
    claim_idle_ms: int = 30_000
    block_ms: int = 1_000
    batch: int = 64
    touches_health: bool = True
    done_ttl_s: int = DONE_TTL_S
    # False where the handler is idempotent on a key of its own in PostgreSQL (a
    # redelivered or re-published event finds its row and does nothing new): no Redis
    # key per event then, which saves a round trip and two commands per event.
    done_keys: bool = True
    # The events of one read (more than one) in one call: all of their effect in one
    # transaction, or none of it (it raises, and ``handler`` takes them one at a time).
    # Idempotent on the same keys as ``handler``: a read handled, not yet acknowledged,
    # comes again after a crash.
    batch_handler: Callable[[Sequence[E]], Awaitable[None]] | None = None

    def done_key(self, event_id: str) -> str:
        return f"cdb:done:{self.group}:{event_id}"

    def attempts_key(self, event_id: str) -> str:
        """Failed handler attempts of one event in this group; survives restarts."""
        return f"cdb:attempts:{self.group}:{event_id}"

    async def run(
        self,
        bus: Bus,
        consumer_name: str,
        stop: asyncio.Event,
        health: Health | None = None,
    ) -> None:
        """Consume until ``stop`` is set; the entry being handled is finished first."""
        runner = _ConsumerRun(self, bus, consumer_name, stop, health)
        await runner.run()


class _ConsumerRun(Generic[E]):
    """The state of one running consumer; lives as long as :meth:`Consumer.run`."""

    def __init__(
        self,
        spec: Consumer[E],
        bus: Bus,
        consumer_name: str,
        stop: asyncio.Event,
        health: Health | None,
    ) -> None:
        self.spec = spec
        self.bus = bus
        self.redis = bus.redis
        self.name = consumer_name
        self.stop = stop
        self.health = health
        self.metrics = bus.metrics
        self.stream = spec.stream.value
        self.backoff = Backoff()
        self.claim_cursor = "0-0"
        self.last_claim = 0.0
        self.held: list[bytes] = []  # read or claimed, not yet finished: ours to keep
        self.failed_attempts = 0  # handler failures counted by this run
        # the per-event metrics' children of this stream, looked up once (not per event)
        self.consumed = bus.metrics.events_consumed.labels(self.stream) if bus.metrics else None
        self.handler_seconds = (
            bus.metrics.handler_seconds.labels(self.stream) if bus.metrics else None
        )

    async def run(self) -> None:
        leases = asyncio.create_task(self._keep_leases())
        try:
            await self._consume()
        finally:
            leases.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await leases

    async def _keep_leases(self) -> None:
        """Entries this consumer holds (a batch waiting behind a slow handler, the entry in
        a long handler) are kept fresh, so a live peer never claims them at
        ``claim_idle_ms``: one consumer handles an entry while it lives. Only entries still
        ours are touched (``XCLAIM … JUSTID``, which does not count as a delivery)."""
        interval = self.spec.claim_idle_ms / 3000
        while True:
            await asyncio.sleep(interval)
            held = list(self.held)
            if not held:
                continue
            try:
                pending: Any = await self.redis.xpending_range(
                    self.stream,
                    self.spec.group,
                    min=held[0],
                    max=held[-1],
                    count=len(held) * 2,
                    consumername=self.name,
                )
                wanted = set(held)
                mine = [p["message_id"] for p in pending if p["message_id"] in wanted]
                if mine:
                    await self.redis.xclaim(
                        self.stream, self.spec.group, self.name, 0, mine, justid=True
                    )
            except (redis_errors.RedisError, OSError) as error:  # retried next interval
                log.debug("lease renewal failed", extra={"error": str(error)})

    async def _consume(self) -> None:
        backlog = True  # first our own pending entries (a restart with the same name)
        group_ready = False
        while not self.stop.is_set():
            try:
                if not group_ready:
                    await self.bus.ensure_group(self.spec.stream, self.spec.group, self.spec.start)
                    group_ready = True
                # first delivery: no earlier attempt can have left a failure count
                first = False
                if backlog:
                    entries = await self._read("0")
                    if not entries:
                        backlog = False
                        continue
                    entries = await self._drop_poison(entries)
                else:
                    entries = await self._claim()
                    if not entries:
                        entries, first = await self._read(">"), True
                self.backoff.reset()
                try:
                    batch_handler = self.spec.batch_handler
                    if batch_handler is not None and len(entries) > 1 and not self.stop.is_set():
                        self.held = [held_id for held_id, _ in entries]
                        entries = await self._process_batch(batch_handler, entries, first)
                    for index, (entry_id, fields) in enumerate(entries):
                        if self.stop.is_set():
                            break  # left pending: re-read on restart or claimed by a peer
                        self.held = [held_id for held_id, _ in entries[index:]]
                        await self._process(entry_id, fields, first)
                finally:
                    self.held = []  # what is left unfinished may be claimed again
            except redis_errors.ResponseError as error:
                if "NOGROUP" not in str(error):
                    raise
                group_ready = False  # the stream or group vanished (e.g. a flushed Redis)
                log.warning("consumer group missing, recreating", extra={"stream": self.stream})
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as error:
                self.bus._count_bus_error()
                delay = self.backoff.next_delay()
                log.warning(
                    "redis unreachable, consumer retrying",
                    extra={"stream": self.stream, "error": str(error), "retry_in_s": delay},
                )
                await sleep_unless(self.stop, delay)

    async def _read(self, cursor: str) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
        block = None if cursor == "0" else self.spec.block_ms
        reply: Any = await self.redis.xreadgroup(
            self.spec.group,
            self.name,
            {self.stream: cursor},
            count=self.spec.batch,
            block=block,
        )
        if not reply:
            return []
        _, entries = reply[0]
        return list(entries)

    async def _claim(self) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
        """Take over entries another consumer read but did not acknowledge in time."""
        now = time.monotonic()
        if now - self.last_claim < self.spec.claim_idle_ms / 2000:
            return []
        self.last_claim = now
        reply: Any = await self.redis.xautoclaim(
            self.stream,
            self.spec.group,
            self.name,
            min_idle_time=self.spec.claim_idle_ms,
            start_id=self.claim_cursor,
            count=self.spec.batch,
        )
        next_cursor, entries = reply[0], reply[1]
        deleted = reply[2] if len(reply) > 2 else []
        self.claim_cursor = (
            next_cursor.decode() if isinstance(next_cursor, bytes) else str(next_cursor)
        )
        for entry_id in deleted:  # trimmed away before anyone handled it: say so loudly
            log.error(
                "pending entry was trimmed from the stream before it was handled",
                extra={"stream": self.stream, "entry_id": _text(entry_id)},
            )
            await self.redis.xack(self.stream, self.spec.group, entry_id)
        claimed = [(entry_id, fields) for entry_id, fields in entries if fields is not None]
        if claimed:
            if self.metrics is not None:
                self.metrics.claimed.labels(self.stream).inc(len(claimed))
            log.info(
                "claimed pending entries from a stalled consumer",
                extra={"stream": self.stream, "count": len(claimed)},
            )
            return await self._drop_poison(claimed)
        return []

    async def _drop_poison(
        self, entries: list[tuple[bytes, dict[bytes, bytes] | None]]
    ) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
        """Say loudly when an entry keeps being redelivered (consumers die while handling it),
        but keep it: a delivery is no failed attempt. Only handler failures, counted per
        event id in Redis, dead-letter an event (see ``_handle``)."""
        if not entries:
            return entries
        first, last = entries[0][0], entries[-1][0]
        pending: Any = await self.redis.xpending_range(
            self.stream, self.spec.group, min=first, max=last, count=len(entries) * 2
        )
        for p in pending:
            times = int(p["times_delivered"])
            if times > self.spec.max_attempts + 1:
                log.error(
                    "entry redelivered many times without acknowledgement (consumers died "
                    "while handling it); kept: only handler failures dead-letter an event",
                    extra={
                        "stream": self.stream,
                        "entry_id": _text(p["message_id"]),
                        "times_delivered": times,
                    },
                )
        return entries

    async def _process(
        self, entry_id: bytes, fields: dict[bytes, bytes] | None, first: bool = False
    ) -> None:
        """``first``: the entry's first delivery (read with ``>``), so no failure of it
        can have been counted before."""
        raw = (fields or {}).get(PAYLOAD_FIELD)
        if raw is None:
            await self._dead_letter(entry_id, fields, "entry has no 'event' field")
            return
        try:
            event = self.spec.model.model_validate_json(raw)
        except (ValidationError, ValueError) as error:
            await self._dead_letter(entry_id, fields, f"malformed event: {_summary(error)}")
            return
        if self.spec.done_keys and await self._retrying(
            lambda: self.redis.exists(self.spec.done_key(event.event_id))
        ):
            if self.metrics is not None:
                self.metrics.duplicates.labels(self.stream).inc()
            await self._retrying(lambda: self.redis.xack(self.stream, self.spec.group, entry_id))
            return
        failed = self.failed_attempts
        if not await self._handle(entry_id, fields, event):
            return
        # a failure count can only exist if this entry was delivered before or failed now
        counted = not first or self.failed_attempts != failed
        await self._retrying(lambda: self._acknowledge(entry_id, event.event_id, counted))
        if self.consumed is not None:
            self.consumed.inc()
        if self.health is not None and self.spec.touches_health:
            self.health.touch()

    async def _process_batch(
        self,
        batch_handler: Callable[[Sequence[E]], Awaitable[None]],
        entries: list[tuple[bytes, dict[bytes, bytes] | None]],
        first: bool,
    ) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
        """The events of one read through ``batch_handler`` together, acknowledged in one
        round trip after it returned. Entries that do not parse are dead-lettered as one at
        a time would; copies already done are acknowledged. Returns what is left to handle
        one at a time: nothing, or every event of the batch when the handler raised (its
        transaction rolled back; the per-event road refuses, retries and dead-letters each
        as without batches, and a failed batch counts no failed attempt)."""
        parsed: list[tuple[bytes, dict[bytes, bytes] | None, E]] = []
        for entry_id, fields in entries:
            raw = (fields or {}).get(PAYLOAD_FIELD)
            if raw is None:
                await self._dead_letter(entry_id, fields, "entry has no 'event' field")
                continue
            try:
                parsed.append((entry_id, fields, self.spec.model.model_validate_json(raw)))
            except (ValidationError, ValueError) as error:
                await self._dead_letter(entry_id, fields, f"malformed event: {_summary(error)}")
        if self.spec.done_keys and parsed:
            parsed = await self._skip_done(parsed)
        seen: set[str] = set()
        batch: list[E] = []  # a copy of an event earlier in the read is skipped, as one by
        for _, _, event in parsed:  # one would (its done key, or its row in PostgreSQL)
            if event.event_id not in seen:
                seen.add(event.event_id)
                batch.append(event)
        if not batch:
            return []
        started = time.perf_counter()
        try:
            await batch_handler(batch)
        except Exception as error:
            log.warning(
                "batch failed, its events are handled one at a time",
                extra={"stream": self.stream, "events": len(parsed), "error": str(error)[:300]},
            )
            return [(entry_id, fields) for entry_id, fields, _ in parsed]
        if self.handler_seconds is not None:
            share = (time.perf_counter() - started) / len(batch)
            for _ in batch:
                self.handler_seconds.observe(share)
        if self.metrics is not None and len(batch) < len(parsed):
            self.metrics.duplicates.labels(self.stream).inc(len(parsed) - len(batch))
        await self._retrying(lambda: self._acknowledge_batch(parsed, counted=not first))
        if self.consumed is not None:
            self.consumed.inc(len(batch))
        if self.health is not None and self.spec.touches_health:
            self.health.touch()
        return []

    async def _skip_done(
        self, parsed: list[tuple[bytes, dict[bytes, bytes] | None, E]]
    ) -> list[tuple[bytes, dict[bytes, bytes] | None, E]]:
        """The events without a done key; the others acknowledged (one round trip for the
        whole read; ``EXISTS`` per key, the command a service's Redis user may run)."""

        async def look_up() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, _, event in parsed:
                    pipe.exists(self.spec.done_key(event.event_id))
                return list(await pipe.execute())

        done: list[Any] = await self._retrying(look_up)
        copies = [entry_id for (entry_id, _, _), flag in zip(parsed, done, strict=True) if flag]
        if copies:
            if self.metrics is not None:
                self.metrics.duplicates.labels(self.stream).inc(len(copies))
            await self._retrying(lambda: self.redis.xack(self.stream, self.spec.group, *copies))
        return [item for item, flag in zip(parsed, done, strict=True) if not flag]

    async def _acknowledge_batch(
        self, parsed: list[tuple[bytes, dict[bytes, bytes] | None, E]], counted: bool
    ) -> None:
        """:meth:`_acknowledge` for a batch: its done keys, its failure counts (``counted``)
        and one ``XACK`` of all its entries, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, _, event in parsed:  # a copy's keys twice: the same value
                if self.spec.done_keys:
                    pipe.set(self.spec.done_key(event.event_id), b"1", ex=self.spec.done_ttl_s)
                if counted:
                    pipe.delete(self.spec.attempts_key(event.event_id))
            pipe.xack(self.stream, self.spec.group, *[entry_id for entry_id, _, _ in parsed])
            await pipe.execute()

    async def _handle(self, entry_id: bytes, fields: dict[bytes, bytes] | None, event: E) -> bool:
        """Run the handler until it succeeds; False if the entry was dead-lettered or left."""
        backoff = Backoff(cap=10.0)
        while True:
            started = time.perf_counter()
            try:
                await self.spec.handler(event)
            except Refused as refusal:
                if self.metrics is not None:
                    self.metrics.handler_errors.labels(self.stream, "refused").inc()
                await self._dead_letter(entry_id, fields, f"refused: {refusal}", event.event_id)
                return False
            except Exception as error:
                transient = is_transient(error)
                if self.metrics is not None:
                    kind = "transient" if transient else "error"
                    self.metrics.handler_errors.labels(self.stream, kind).inc()
                if transient:
                    delay = backoff.next_delay()
                    log.warning(
                        "dependency unavailable, retrying event",
                        extra={
                            "stream": self.stream,
                            "event_id": event.event_id,
                            "error": str(error),
                            "retry_in_s": round(delay, 2),
                        },
                    )
                    await sleep_unless(self.stop, delay)
                    if self.stop.is_set():
                        return False  # stays pending; handled after restart or by a peer
                    continue
                failures = await self._retrying(lambda: self._count_failure(event.event_id))
                log.exception(
                    "handler failed",
                    extra={"stream": self.stream, "event_id": event.event_id, "attempt": failures},
                )
                if failures >= self.spec.max_attempts:
                    reason = f"handler failed {failures} times: {type(error).__name__}: {error}"
                    await self._dead_letter(entry_id, fields, reason, event.event_id)
                    return False
                await sleep_unless(self.stop, backoff.next_delay())
                if self.stop.is_set():
                    return False  # stays pending; its failures so far are remembered
                continue
            if self.handler_seconds is not None:
                self.handler_seconds.observe(time.perf_counter() - started)
            return True

    async def _count_failure(self, event_id: str) -> int:
        """One more failed attempt of ``event_id`` in this group, durably; the new total."""
        self.failed_attempts += 1
        key = self.spec.attempts_key(event_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, self.spec.done_ttl_s)
            total, _ = await pipe.execute()
        return int(total)

    async def _acknowledge(self, entry_id: bytes, event_id: str, counted: bool = True) -> None:
        """The entry acknowledged, with its done key (``done_keys``) and without its
        failure count (``counted``: one may exist); a bare ``XACK`` when neither applies."""
        if not self.spec.done_keys and not counted:
            await self.redis.xack(self.stream, self.spec.group, entry_id)
            return
        # no MULTI: each command stands alone (a done key without its XACK: the entry
        # comes again and is skipped; an XACK without its done key: a later copy reaches
        # the handler, as without done keys), in one round trip
        async with self.redis.pipeline(transaction=False) as pipe:
            if self.spec.done_keys:
                pipe.set(self.spec.done_key(event_id), b"1", ex=self.spec.done_ttl_s)
            if counted:
                pipe.delete(self.spec.attempts_key(event_id))
            pipe.xack(self.stream, self.spec.group, entry_id)
            await pipe.execute()

    async def _dead_letter(
        self,
        entry_id: bytes,
        fields: dict[bytes, bytes] | None,
        reason: str,
        event_id: str = "",
    ) -> None:
        payload = (fields or {}).get(PAYLOAD_FIELD, b"")[:65536]
        log.error(
            "entry dead-lettered",
            extra={"stream": self.stream, "entry_id": _text(entry_id), "reason": reason},
        )

        async def write() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xadd(
                    Stream.DEAD_LETTER.value,
                    {
                        b"stream": self.stream.encode(),
                        b"group": self.spec.group.encode(),
                        b"consumer": self.name.encode(),
                        b"entry_id": entry_id,
                        b"event_id": event_id.encode(),
                        b"reason": reason.encode()[:4096],
                        b"payload": payload,
                        b"ts": str(time.time()).encode(),
                    },
                    maxlen=DEAD_LETTER_MAX_LEN,
                    approximate=True,
                )
                if event_id:
                    pipe.delete(self.spec.attempts_key(event_id))  # a replay starts afresh
                pipe.xack(self.stream, self.spec.group, entry_id)
                await pipe.execute()

        await self._retrying(write)
        if self.metrics is not None:
            self.metrics.dead_letters.labels(self.stream).inc()

    async def _retrying(self, operation: Callable[[], Awaitable[Any]]) -> Any:
        """Repeat a Redis call until it goes through: the effect is done, only the ack waits."""
        backoff = Backoff()
        while True:
            try:
                return await operation()
            except (redis_errors.ConnectionError, redis_errors.TimeoutError) as error:
                self.bus._count_bus_error()
                delay = backoff.next_delay()
                log.warning(
                    "redis unreachable after the handler ran; retrying acknowledgement",
                    extra={"stream": self.stream, "error": str(error), "retry_in_s": delay},
                )
                await asyncio.sleep(delay)


def _parsed(entries: Any, model: type[E]) -> list[E]:
    events = []
    for _, fields in entries:
        raw = (fields or {}).get(PAYLOAD_FIELD)
        if raw is None:
            continue
        try:
            events.append(model.model_validate_json(raw))
        except ValueError:  # pydantic's ValidationError is one
            continue
    return events


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _summary(error: Exception) -> str:
    if isinstance(error, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in error.errors()
        ]
        return "; ".join(parts[:5])
    return str(error)[:300]

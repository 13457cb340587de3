"""The bus on a real Redis: delivery, acknowledgement, dead letters, claims, outages."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError

from cdb.core.bus import DONE_TTL_S, PRICE_DONE_TTL_S, Bus, Consumer, Refused, is_transient
from cdb.core.events import MarketData, Stream
from cdb.core.metrics import Health, ServiceMetrics
from tests.support import REDIS_PASSWORD, eventually_async, market


def consumer_of(
    handler: Callable[[MarketData], Awaitable[None]], group: str = "g", **options: Any
) -> Consumer[MarketData]:
    return Consumer(Stream.MARKET_DATA, MarketData, handler, group=group, block_ms=100, **options)


async def run_until(
    bus: Bus,
    consumer: Consumer[MarketData],
    done: Callable[[], bool],
    name: str = "c1",
    timeout: float = 20.0,
) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(bus, name, stop))
    try:
        await eventually_async(done, "the consumer's condition", timeout=timeout, every=0.02)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def pending(bus: Bus, group: str = "g") -> int:
    info: Any = await bus.redis.xpending(Stream.MARKET_DATA.value, group)
    return int(info["pending"])


async def dead_letters(bus: Bus) -> list[dict[bytes, bytes]]:
    entries: Any = await bus.redis.xrange(Stream.DEAD_LETTER.value)
    return [fields for _, fields in entries]


async def test_round_trip_delivers_every_event_once_and_acknowledges(bus: Bus) -> None:
    sent = [market(f"S{i}_USDT") for i in range(20)]
    for event in sent:
        await bus.publish(event)
    seen: list[MarketData] = []

    async def handle(event: MarketData) -> None:
        seen.append(event)

    await run_until(bus, consumer_of(handle), lambda: len(seen) == 20)
    assert [e.event_id for e in seen] == [e.event_id for e in sent]
    assert seen[0] == sent[0]
    assert await pending(bus) == 0


async def test_entry_is_acknowledged_only_after_the_handler_returns(bus: Bus) -> None:
    await bus.publish(market())
    release = asyncio.Event()
    started = asyncio.Event()
    finished: list[str] = []

    async def handle(event: MarketData) -> None:
        started.set()
        await release.wait()
        finished.append(event.event_id)

    stop = asyncio.Event()
    task = asyncio.create_task(consumer_of(handle).run(bus, "c1", stop))
    await asyncio.wait_for(started.wait(), 10)
    assert await pending(bus) == 1, "acknowledged before the effect"
    release.set()
    while not finished:
        await asyncio.sleep(0.01)
    for _ in range(100):
        if await pending(bus) == 0:
            break
        await asyncio.sleep(0.02)
    assert await pending(bus) == 0
    stop.set()
    await task


async def test_malformed_entries_are_dead_lettered_and_good_ones_flow(bus: Bus) -> None:
    stream = Stream.MARKET_DATA.value
    await bus.publish(market("A_USDT"))
    await bus.redis.xadd(stream, {b"event": b"{not json"})
    await bus.redis.xadd(stream, {b"other": b"field"})
    bad_field = market("B_USDT").model_dump(mode="json") | {"surprise": 1}
    await bus.redis.xadd(stream, {b"event": __import__("json").dumps(bad_field).encode()})
    mistyped = market("C_USDT").model_dump(mode="json") | {"price": "expensive"}
    await bus.redis.xadd(stream, {b"event": __import__("json").dumps(mistyped).encode()})
    await bus.publish(market("D_USDT"))
    seen: list[str] = []

    async def handle(event: MarketData) -> None:
        seen.append(event.symbol)

    await run_until(bus, consumer_of(handle), lambda: len(seen) == 2)
    for _ in range(100):
        if len(await dead_letters(bus)) == 4:
            break
        await asyncio.sleep(0.02)
    assert seen == ["A_USDT", "D_USDT"]
    letters = await dead_letters(bus)
    reasons = [fields[b"reason"].decode() for fields in letters]
    assert len(reasons) == 4
    assert "malformed event" in reasons[0]
    assert "no 'event' field" in reasons[1]
    assert "surprise" in reasons[2] and "Extra inputs" in reasons[2]
    assert "price" in reasons[3]
    assert letters[0][b"payload"] == b"{not json"
    assert all(f[b"stream"] == stream.encode() for f in letters)
    assert await pending(bus) == 0


async def test_a_handler_that_keeps_failing_is_dead_lettered_after_max_attempts(bus: Bus) -> None:
    await bus.publish(market("BAD_USDT"))
    await bus.publish(market("GOOD_USDT"))
    calls: dict[str, int] = {}

    async def handle(event: MarketData) -> None:
        calls[event.symbol] = calls.get(event.symbol, 0) + 1
        if event.symbol == "BAD_USDT":
            raise ValueError("cannot size this position")

    await run_until(bus, consumer_of(handle, max_attempts=3), lambda: "GOOD_USDT" in calls)
    assert calls == {"BAD_USDT": 3, "GOOD_USDT": 1}
    (letter,) = await dead_letters(bus)
    assert letter[b"reason"].decode() == (
        "handler failed 3 times: ValueError: cannot size this position"
    )
    assert await pending(bus) == 0


async def test_transient_failures_are_retried_never_dead_lettered(bus: Bus) -> None:
    await bus.publish(market())
    calls: list[int] = []

    async def handle(event: MarketData) -> None:
        calls.append(1)
        if len(calls) <= 6:  # more failures than max_attempts: still not a dead letter
            raise psycopg.OperationalError("connection refused")

    await run_until(bus, consumer_of(handle, max_attempts=2), lambda: len(calls) == 7)
    assert await dead_letters(bus) == []
    assert await pending(bus) == 0


async def test_a_republished_event_id_is_handled_once(bus: Bus) -> None:
    event = market()
    await bus.publish(event)
    await bus.publish(event)
    await bus.publish(market("OTHER_USDT"))
    seen: list[str] = []

    async def handle(e: MarketData) -> None:
        seen.append(e.symbol)

    await run_until(bus, consumer_of(handle), lambda: "OTHER_USDT" in seen)
    assert seen == ["BTC_USDT", "OTHER_USDT"]
    assert bus.metrics is not None
    assert bus.metrics.duplicates.labels(Stream.MARKET_DATA.value)._value.get() == 1


async def test_done_keys_expire_so_redis_memory_stays_bounded(bus: Bus) -> None:
    """The remembered event ids expire: a day by default, what a consumer asks for else."""
    default, short = market("A_USDT"), market("B_USDT")
    await bus.publish(default)
    seen: list[str] = []

    async def handle(e: MarketData) -> None:
        seen.append(e.symbol)

    await run_until(bus, consumer_of(handle, group="day"), lambda: seen == ["A_USDT"])
    ttl = await bus.redis.ttl(f"cdb:done:day:{default.event_id}")
    assert DONE_TTL_S - 60 < ttl <= DONE_TTL_S == 24 * 3600
    await bus.publish(short)
    await run_until(
        bus,
        consumer_of(handle, group="hour", done_ttl_s=PRICE_DONE_TTL_S),
        lambda: seen.count("B_USDT") == 1,
    )
    ttl = await bus.redis.ttl(f"cdb:done:hour:{short.event_id}")
    assert PRICE_DONE_TTL_S - 60 < ttl <= PRICE_DONE_TTL_S == 3600


async def test_without_done_keys_a_copy_reaches_the_handler_and_no_key_is_written(
    bus: Bus,
) -> None:
    """``done_keys=False`` (a handler keyed in PostgreSQL): nothing per event in Redis; a
    re-published copy goes to the handler, whose own key must then decide."""
    event = market("KEYED_USDT")
    await bus.publish(event)
    await bus.publish(event)  # the same event again, as an outbox re-flush makes it
    seen: list[str] = []

    async def handle(e: MarketData) -> None:
        seen.append(e.event_id)

    keyed = consumer_of(handle, group="keyed", done_keys=False)
    await run_until(bus, keyed, lambda: len(seen) == 2)
    assert seen == [event.event_id, event.event_id]
    assert await bus.redis.keys("cdb:done:keyed:*") == []
    assert await pending(bus, "keyed") == 0


async def test_without_done_keys_a_failure_count_is_still_cleared(bus: Bus) -> None:
    """An event that failed before it went through leaves no failure count behind, so a
    later copy starts afresh; on its first delivery without a failure nothing is cleared
    (a bare XACK)."""
    failing, clean = market("ONCE_USDT"), market("CLEAN_USDT")
    await bus.publish(failing)
    await bus.publish(clean)
    calls: list[str] = []

    async def handle(e: MarketData) -> None:
        calls.append(e.symbol)
        if calls.count("ONCE_USDT") == 1 and e.symbol == "ONCE_USDT":
            raise ValueError("first attempt fails")

    keyed = consumer_of(handle, group="keyed", done_keys=False, max_attempts=3)
    await run_until(bus, keyed, lambda: calls.count("CLEAN_USDT") == 1)
    assert calls == ["ONCE_USDT", "ONCE_USDT", "CLEAN_USDT"]
    assert await bus.redis.exists(f"cdb:attempts:keyed:{failing.event_id}") == 0
    assert await dead_letters(bus) == []
    assert await pending(bus, "keyed") == 0


async def test_entries_of_a_stalled_consumer_are_claimed_by_a_live_one(bus: Bus) -> None:
    stream = Stream.MARKET_DATA.value
    await bus.ensure_group(Stream.MARKET_DATA, "g")
    for i in range(3):
        await bus.publish(market(f"S{i}_USDT"))
    taken: Any = await bus.redis.xreadgroup("g", "dead-consumer", {stream: ">"}, count=10)
    assert len(taken[0][1]) == 3  # read, never acknowledged: the consumer "died"
    seen: list[str] = []

    async def handle(e: MarketData) -> None:
        seen.append(e.symbol)

    live = consumer_of(handle, claim_idle_ms=200)
    await run_until(bus, live, lambda: len(seen) == 3, name="live")
    assert sorted(seen) == ["S0_USDT", "S1_USDT", "S2_USDT"]
    assert await pending(bus) == 0


async def test_a_slow_live_consumer_keeps_its_batch_from_a_peer(bus: Bus) -> None:
    """A batch waits behind a slow handler far longer than the claim idle time; the live
    consumer keeps its entries, so the peer claims none and each is handled once."""
    for i in range(6):
        await bus.publish(market(f"L{i}_USDT"))
    handled: list[tuple[str, str]] = []

    def slow(name: str) -> Callable[[MarketData], Awaitable[None]]:
        async def handle(e: MarketData) -> None:
            handled.append((name, e.symbol))
            # six of these: 3.6 s against a 1.5 s claim idle; leases renew every 0.5 s, so
            # a stall of under 1 s on a loaded machine cannot let the peer claim
            await asyncio.sleep(0.6)

        return handle

    stop = asyncio.Event()
    first = asyncio.create_task(consumer_of(slow("a"), claim_idle_ms=1500).run(bus, "a", stop))
    # "a" read the whole batch and is on its first entry
    await eventually_async(lambda: handled, "a's first entry", every=0.01)
    second = asyncio.create_task(consumer_of(slow("b"), claim_idle_ms=1500).run(bus, "b", stop))
    await eventually_async(lambda: len(handled) >= 6, "six entries handled", timeout=20)
    await asyncio.sleep(0.5)  # time for a claim that should not happen
    stop.set()
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert handled == [("a", f"L{i}_USDT") for i in range(6)]
    assert bus.metrics is not None
    assert bus.metrics.claimed.labels(Stream.MARKET_DATA.value)._value.get() == 0
    assert await pending(bus) == 0


async def test_a_full_redis_makes_publishers_wait_not_fail(bus: Bus) -> None:
    """maxmemory reached (noeviction): the publish retries until memory is freed; the
    error counts as transient, so a handler that publishes is retried, never dead-lettered."""
    assert is_transient(OutOfMemoryError("OOM command not allowed"))
    await bus.redis.config_set("maxmemory-policy", "noeviction")
    await bus.redis.config_set("maxmemory", "1")
    try:
        publishing = asyncio.create_task(bus.publish(market("FULL_USDT")))
        await asyncio.sleep(1.0)
        assert not publishing.done()  # still retrying, not failed
        assert await bus.redis.xlen(Stream.MARKET_DATA.value) == 0
    finally:
        await bus.redis.config_set("maxmemory", "0")
    await asyncio.wait_for(publishing, 10)
    assert await bus.redis.xlen(Stream.MARKET_DATA.value) == 1


async def test_redis_restart_mid_stream_loses_nothing(aof_redis: Any) -> None:
    def connect() -> Bus:
        client = Redis(host=aof_redis.host, port=aof_redis.port, password=REDIS_PASSWORD)
        return Bus(client, metrics=ServiceMetrics("t", Health(60)), publish_timeout_s=60)

    producer, consumer_bus = connect(), connect()
    seen: list[str] = []

    async def handle(e: MarketData) -> None:
        seen.append(e.event_id)

    stop = asyncio.Event()
    task = asyncio.create_task(consumer_of(handle).run(consumer_bus, "c1", stop))
    sent: list[str] = []
    for i in range(300):
        if i == 150:
            await asyncio.to_thread(aof_redis.stop)  # graceful: AOF flushed, then gone
            restart = asyncio.create_task(asyncio.to_thread(aof_redis.start))
        event = market(f"S{i}_USDT")
        await producer.publish(event)  # waits (with backoff) while Redis is down
        sent.append(event.event_id)
    await restart
    try:
        await eventually_async(lambda: len(set(seen)) >= 300, "300 events seen", timeout=30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    assert sorted(set(seen)) == sorted(sent)
    assert len(seen) == len(set(seen)), "an event was handled twice"
    await producer.close()
    await consumer_bus.close()


async def test_an_entry_redelivered_by_dying_consumers_is_handled_not_dead_lettered(
    bus: Bus,
) -> None:
    """Deliveries are no failures: consumers killed while the handler waited (a lock, an
    outage) raise Redis's delivery counter, and the event must still be handled."""
    stream = Stream.MARKET_DATA.value
    await bus.ensure_group(Stream.MARKET_DATA, "g")
    await bus.publish(market("WAITED_USDT"))
    taken: Any = await bus.redis.xreadgroup("g", "crashed", {stream: ">"}, count=1)
    entry_id = taken[0][1][0][0]
    # as if six consumers in a row had died while their handler waited on it
    await bus.redis.xclaim(stream, "g", "crashed", 0, [entry_id], retrycount=6)
    await bus.publish(market("GOOD_USDT"))
    seen: list[str] = []

    async def handle(e: MarketData) -> None:
        seen.append(e.symbol)

    live = consumer_of(handle, claim_idle_ms=100, max_attempts=3)
    await asyncio.sleep(0.15)
    await run_until(bus, live, lambda: len(seen) == 2, name="live")
    assert sorted(seen) == ["GOOD_USDT", "WAITED_USDT"]
    assert await dead_letters(bus) == []
    assert await pending(bus) == 0


async def test_failed_attempts_are_counted_across_restarts(bus: Bus) -> None:
    """A handler that fails once per run of its consumer is dead-lettered after
    ``max_attempts`` failures in all, not retried for ever by a restarting service."""
    event = market("BAD_USDT")
    await bus.publish(event)
    calls: list[int] = []

    async def handle(e: MarketData) -> None:
        calls.append(1)
        stop_after_failure.set()
        raise ValueError("cannot size this position")

    for run in range(3):
        stop_after_failure = asyncio.Event()
        stop = asyncio.Event()
        task = asyncio.create_task(consumer_of(handle, max_attempts=3).run(bus, "c1", stop))
        await asyncio.wait_for(stop_after_failure.wait(), 10)
        stop.set()  # as a restart: the entry stays pending with its failures counted
        await asyncio.wait_for(task, 10)
        assert len(calls) == run + 1
    letters = await dead_letters(bus)
    assert len(letters) == 1
    assert letters[0][b"reason"].startswith(b"handler failed 3 times")
    assert letters[0][b"event_id"] == event.event_id.encode()
    assert await bus.redis.exists(f"cdb:attempts:g:{event.event_id}") == 0
    assert await pending(bus) == 0


async def test_a_refused_event_is_dead_lettered_at_once(bus: Bus) -> None:
    event = market("FORGED_USDT")
    await bus.publish(event)
    calls: list[int] = []

    async def handle(e: MarketData) -> None:
        calls.append(1)
        raise Refused("no risk decision for this order")

    await run_until(bus, consumer_of(handle, max_attempts=5), lambda: len(calls) == 1)
    for _ in range(100):
        if await dead_letters(bus):
            break
        await asyncio.sleep(0.02)
    (letter,) = await dead_letters(bus)
    assert letter[b"reason"] == b"refused: no risk decision for this order"
    assert calls == [1]
    assert await pending(bus) == 0


async def test_the_bus_counts_each_event_published_and_handled_per_stream(bus: Bus) -> None:
    """``cdb_events_published_total``, ``cdb_events_consumed_total`` and the handler's
    histogram count every event of their stream, alone or in a batch, and no other."""
    for i in range(3):
        await bus.publish(market(f"C{i}_USDT"))
    batch = [market(f"D{i}_USDT").model_dump_json().encode() for i in range(2)]
    await bus.publish_payloads([(Stream.MARKET_DATA, payload) for payload in batch])
    await bus.publish_payloads([(Stream.CANDLES, b"{}")])  # another stream's
    seen: list[str] = []

    async def handle(event: MarketData) -> None:
        seen.append(event.event_id)

    await run_until(bus, consumer_of(handle), lambda: len(seen) == 5)
    assert bus.metrics is not None
    registry = bus.metrics.registry
    for stream, published, handled in ((Stream.MARKET_DATA, 5, 5), (Stream.CANDLES, 1, None)):
        labels = {"stream": stream.value}
        assert registry.get_sample_value("cdb_events_published_total", labels) == published
        assert registry.get_sample_value("cdb_events_consumed_total", labels) == handled
        assert registry.get_sample_value("cdb_handler_duration_seconds_count", labels) == handled

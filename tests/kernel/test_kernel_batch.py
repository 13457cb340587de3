"""A consumer's ``batch_handler`` on a real Redis: the events of one read in one call,
acknowledged after it returned; a failed batch handled again one event at a time, so
poison entries, refusals and dead letters stay per event."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from cdb.core.bus import Bus, Consumer, Refused
from cdb.core.events import MarketData, Stream
from tests.support import eventually_async, market


def batching(
    handler: Callable[[MarketData], Awaitable[None]],
    batch_handler: Callable[[Sequence[MarketData]], Awaitable[None]],
    **options: Any,
) -> Consumer[MarketData]:
    return Consumer(
        Stream.MARKET_DATA,
        MarketData,
        handler,
        group="g",
        block_ms=100,
        batch_handler=batch_handler,
        **options,
    )


async def run_until(bus: Bus, consumer: Consumer[MarketData], done: Callable[[], bool]) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(bus, "c1", stop))
    try:
        await eventually_async(done, "the consumer's condition", timeout=20, every=0.02)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def pending(bus: Bus) -> int:
    info: Any = await bus.redis.xpending(Stream.MARKET_DATA.value, "g")
    return int(info["pending"])


async def dead_letters(bus: Bus) -> list[dict[bytes, bytes]]:
    entries: Any = await bus.redis.xrange(Stream.DEAD_LETTER.value)
    return [fields for _, fields in entries]


async def test_one_read_is_one_batch_acknowledged_after_the_handler_returned(bus: Bus) -> None:
    sent = [market(f"S{i}_USDT") for i in range(10)]
    for event in sent:
        await bus.publish(event)
    await bus.publish(sent[3])  # a copy (an outbox re-flush): skipped, as one by one
    batches: list[list[str]] = []
    singles: list[str] = []
    release = asyncio.Event()

    async def handle(event: MarketData) -> None:
        singles.append(event.event_id)

    async def handle_batch(events: Sequence[MarketData]) -> None:
        batches.append([event.event_id for event in events])
        await release.wait()

    stop = asyncio.Event()
    task = asyncio.create_task(batching(handle, handle_batch).run(bus, "c1", stop))
    try:
        await eventually_async(lambda: bool(batches), "the batch handler called")
        assert await pending(bus) == 11, "acknowledged before the batch's effect"
        release.set()
        for _ in range(200):
            if await pending(bus) == 0:
                break
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert batches == [[event.event_id for event in sent]]
    assert singles == []
    assert await pending(bus) == 0
    for event in sent:  # done keys as one at a time writes them
        assert await bus.redis.exists(f"cdb:done:g:{event.event_id}") == 1


async def test_a_failed_batch_is_handled_one_event_at_a_time(bus: Bus) -> None:
    sent = [market(f"S{i}_USDT") for i in range(5)]
    stream = Stream.MARKET_DATA.value
    for event in sent[:2]:
        await bus.publish(event)
    await bus.redis.xadd(stream, {b"event": b"{not json"})  # poison inside the batch
    for event in sent[2:]:
        await bus.publish(event)
    batches: list[list[str]] = []
    effects: list[str] = []

    async def handle(event: MarketData) -> None:
        if event.symbol == "S1_USDT":
            raise Refused("not this one")
        effects.append(event.symbol)

    async def handle_batch(events: Sequence[MarketData]) -> None:
        batches.append([event.symbol for event in events])
        if any(event.symbol == "S1_USDT" for event in events):
            raise Refused("a refused event in the batch")  # rolled back: nothing took effect
        effects.extend(event.symbol for event in events)

    await run_until(
        bus,
        batching(handle, handle_batch, max_attempts=3),
        lambda: len(effects) == 4,
    )
    for _ in range(200):
        if len(await dead_letters(bus)) == 2 and await pending(bus) == 0:
            break
        await asyncio.sleep(0.02)
    assert batches == [["S0_USDT", "S1_USDT", "S2_USDT", "S3_USDT", "S4_USDT"]]
    assert effects == ["S0_USDT", "S2_USDT", "S3_USDT", "S4_USDT"]  # each once
    reasons = [letter[b"reason"].decode() for letter in await dead_letters(bus)]
    assert len(reasons) == 2
    assert "malformed event" in reasons[0]
    assert reasons[1] == "refused: not this one"
    assert await pending(bus) == 0
    attempts: Any = await bus.redis.keys("cdb:attempts:*")
    assert attempts == [], "a failed batch counted a failed attempt"


async def test_a_read_of_one_entry_takes_the_one_event_road(bus: Bus) -> None:
    event = market("ALONE_USDT")
    await bus.publish(event)
    singles: list[str] = []
    batches: list[int] = []

    async def handle(e: MarketData) -> None:
        singles.append(e.event_id)

    async def handle_batch(events: Sequence[MarketData]) -> None:
        batches.append(len(events))

    await run_until(bus, batching(handle, handle_batch), lambda: len(singles) == 1)
    assert singles == [event.event_id] and batches == []
    payload: Any = await bus.redis.xrange(Stream.MARKET_DATA.value)
    assert json.loads(payload[0][1][b"event"])["event_id"] == event.event_id


async def test_events_done_before_are_acknowledged_not_handled_again(bus: Bus) -> None:
    first = [market(f"D{i}_USDT") for i in range(3)]
    for event in first:
        await bus.publish(event)
    batches: list[list[str]] = []

    async def handle(event: MarketData) -> None:
        batches.append([event.symbol])

    async def handle_batch(events: Sequence[MarketData]) -> None:
        batches.append([event.symbol for event in events])

    consumer = batching(handle, handle_batch)
    await run_until(bus, consumer, lambda: len(batches) == 1)
    for event in [*first, market("NEW_USDT")]:  # re-published copies, then a new event
        await bus.publish(event)
    await run_until(bus, consumer, lambda: len(batches) == 2)
    await eventually_async(lambda: _acknowledged(bus), "the copies acknowledged")
    assert batches == [["D0_USDT", "D1_USDT", "D2_USDT"], ["NEW_USDT"]]


async def _acknowledged(bus: Bus) -> bool:
    return await pending(bus) == 0

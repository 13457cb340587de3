"""``cdb dead-letter list|show|replay`` on a real Redis: a dead-lettered event is shown,
replayed once to its stream and handled; a second replay publishes nothing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from typer.testing import CliRunner

from cdb.cli import app
from cdb.core.bus import Bus, Consumer, Refused
from cdb.core.events import MarketData, Stream
from tests.support import market


def run(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(app, ["dead-letter", *args], env=env, catch_exceptions=False)


async def handled_by(bus: Bus, accept: bool) -> list[str]:
    """Run one consumer over the market stream until it is idle; what it handled."""
    seen: list[str] = []

    async def handle(event: MarketData) -> None:
        if not accept:
            raise Refused("not today")
        seen.append(event.event_id)

    stop = asyncio.Event()
    consumer = Consumer(Stream.MARKET_DATA, MarketData, handle, group="g", block_ms=100)
    task = asyncio.create_task(consumer.run(bus, "c1", stop))
    for _ in range(50):
        info: Any = await bus.redis.xinfo_groups(Stream.MARKET_DATA.value)
        if info and info[0]["pending"] == 0 and info[0]["lag"] == 0:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 10)
    return seen


async def test_list_show_and_replay_once(bus: Bus, redis_only_env: dict[str, str]) -> None:
    event = market("LOST_USDT")
    await bus.publish(event)
    assert await handled_by(bus, accept=False) == []

    listed = await asyncio.to_thread(run, redis_only_env, "list", "--json")
    assert listed.exit_code == 0, listed.output
    (row,) = [json.loads(line) for line in listed.output.splitlines()]
    assert row["event_id"] == event.event_id
    assert row["stream"] == Stream.MARKET_DATA.value and row["group"] == "g"
    assert row["reason"] == "refused: not today" and row["replayed_as"] is None

    shown = await asyncio.to_thread(run, redis_only_env, "show", row["id"])
    assert json.loads(shown.output)["payload"]["symbol"] == "LOST_USDT"

    first = await asyncio.to_thread(run, redis_only_env, "replay", row["id"])
    assert first.exit_code == 0 and "replayed event" in first.output, first.output
    length = await bus.redis.xlen(Stream.MARKET_DATA.value)
    second = await asyncio.to_thread(run, redis_only_env, "replay", row["id"])
    assert second.exit_code == 0 and "nothing published" in second.output, second.output
    assert await bus.redis.xlen(Stream.MARKET_DATA.value) == length

    assert await handled_by(bus, accept=True) == [event.event_id]
    listed = await asyncio.to_thread(run, redis_only_env, "list", "--json")
    assert json.loads(listed.output.splitlines()[0])["replayed_as"] is not None


async def test_a_letter_that_cannot_be_replayed_says_why(
    bus: Bus, redis_only_env: dict[str, str]
) -> None:
    await bus.redis.xadd(Stream.MARKET_DATA.value, {b"event": b"{not json"})
    await handled_by(bus, accept=True)
    (row,) = [
        json.loads(line)
        for line in (await asyncio.to_thread(run, redis_only_env, "list", "--json")).output.split(
            "\n"
        )
        if line
    ]
    result = await asyncio.to_thread(run, redis_only_env, "replay", row["id"])
    assert result.exit_code == 1
    assert "no valid MarketData" in result.output
    missing = await asyncio.to_thread(run, redis_only_env, "replay", "1-1")
    assert missing.exit_code == 1 and "no dead letter 1-1" in missing.output

"""One shape of live config: the control stream folded through the bus (a process without
a database) ends where control_state does; the bus's reads for readers outside a group."""

from __future__ import annotations

from typing import Any

from cdb.core.bus import Bus
from cdb.core.config import ServiceSettings
from cdb.core.control import StreamControl, apply_control
from cdb.core.db import Database, apply_migrations
from cdb.core.events import Control, ControlSettings, MarketData, Stream


def control(generation: int, bot: str = "momentum", uid: str = "u1", **settings: Any) -> Control:
    return Control(bot=bot, bot_uid=uid, generation=generation, config_hash=f"h{generation}",
                   timestamp=1.0, settings=ControlSettings(**settings))  # fmt: skip


STORY = [
    control(2, lookback_min=20, signal_threshold_pct=4.0),
    control(3, paused=True),
    control(1, lookback_min=99),  # older generation of the same bot: ignored
    control(7, bot="other", lookback_min=30),  # another bot
    control(1, uid="u2", lookback_min=25),  # the bot deleted and created again
]


async def test_the_stream_fold_and_control_state_agree(
    bus: Bus, settings: ServiceSettings, postgresql: Any
) -> None:
    for event in STORY:
        await bus.publish(event)
    await bus.redis.xadd(Stream.CONTROL.value, {b"event": b'{"type":"control"}'})  # malformed
    await apply_migrations(settings)
    db = Database(settings)
    await db.open()
    try:
        stored = None
        for event in STORY:
            stored = await apply_control(db, "svc", event) or stored
    finally:
        await db.close()

    folded = await StreamControl().restore(bus, "svc")
    assert folded == stored
    assert folded is not None and folded.settings.lookback_min == 25
    assert folded.settings.paused is True  # merged over, as in the table
    # one bot's screener counts only its own bot's events
    own = await StreamControl("momentum").restore(bus, "svc2")
    assert own is not None and (own.bot_uid, own.settings.lookback_min) == ("u2", 25)
    live = StreamControl("momentum")
    assert live.apply(control(4, bot="other", lookback_min=5)) is None
    assert live.apply(control(4, lookback_min=5)) is not None
    assert live.apply(control(4, lookback_min=5)) is None  # nothing new


async def test_history_pages_recent_and_publish_once(bus: Bus) -> None:
    events = [
        MarketData(symbol="BTC_USDT", price=float(i + 1), volume=1.0, pct_change=0.1,
                   timestamp=i, interval="15m")
        for i in range(25)
    ]  # fmt: skip
    for event in events:
        await bus.publish(event)
    assert await bus.history(Stream.MARKET_DATA, MarketData, page=10) == events
    assert await bus.recent(Stream.MARKET_DATA, MarketData, 3) == events[:-4:-1]

    once = control(1, paused=True)
    marker = "cdb:operator:published:test"
    assert await bus.publish_once(once, marker, 60) is True
    assert await bus.publish_once(once, marker, 60) is False
    assert await bus.history(Stream.CONTROL, Control) == [once]
    assert 0 < await bus.redis.ttl(marker) <= 60

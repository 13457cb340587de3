"""Live configuration kept in PostgreSQL: merged, ordered by generation, per bot instance."""

from __future__ import annotations

from typing import Any

from cdb.core.config import ServiceSettings
from cdb.core.control import apply_control, load_control
from cdb.core.db import Database, apply_migrations
from cdb.core.events import Control, ControlSettings


def control(generation: int, uid: str = "uid-1", **settings: Any) -> Control:
    return Control(bot="mexc-momentum", bot_uid=uid, generation=generation,
                   config_hash=f"h{generation}", timestamp=1.0,
                   settings=ControlSettings(**settings))  # fmt: skip


async def test_controls_merge_survive_a_reload_and_ignore_older_generations(
    settings: ServiceSettings, postgresql: Any
) -> None:
    await apply_migrations(settings)
    db = Database(settings)
    await db.open()
    try:
        assert await load_control(db, "svc") is None
        await apply_control(db, "svc", control(2, signal_threshold_pct=4.0))
        applied = await apply_control(db, "svc", control(3, paused=True))
        assert applied is not None
        assert applied.settings.signal_threshold_pct == 4.0 and applied.settings.paused
        assert await apply_control(db, "svc", control(1, signal_threshold_pct=9.0)) is None
        reloaded = await load_control(db, "svc")
        assert reloaded == applied
        # the same name deleted and created again: a new uid, generations from 1 again
        recreated = await apply_control(db, "svc", control(1, uid="uid-2", paused=False))
        assert recreated is not None and recreated.settings.paused is False
        assert recreated.generation == 1 and recreated.bot_uid == "uid-2"
        # what a service adopts in memory: never an older generation of the same bot
        first = await apply_control(db, "mem", control(1, paused=True))
        second = await apply_control(db, "mem", control(2, paused=False))
        assert first is not None and second is not None
        assert first.older_than(second) and not second.older_than(first)
        assert not first.older_than(None) and not recreated.older_than(applied)
        assert await apply_control(db, "other", control(1)) is not None  # per service
    finally:
        await db.close()

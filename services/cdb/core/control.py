"""Live configuration from ``control`` events: the one shape every process keeps it in.

A control event carries the settings it sets; :func:`merge_control` merges them over what
is in force into an :class:`AppliedControl`, and an event older than the one in force for
the same bot is ignored — "the same bot" meaning the same name *and* ``metadata.uid``: a
bot deleted and created again starts its generations at 1 anew. Where it is kept:

* a service with a database (signal_engine, risk_manager, execution_service, ml_advisor)
  stores it in PostgreSQL (``control_state``, :func:`apply_control`), so a restart keeps
  the operator's settings and every replica reads the same row where it decides;
* a process without one (the screener, bot_ws) keeps a :class:`StreamControl`: restored
  at start by merging the control stream's history read through the bus, then every
  event merged as it comes — the same rule, so both end in the same settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cdb.core.bus import Bus
from cdb.core.db import AsyncConnection, AsyncCursor, Database, Jsonb
from cdb.core.events import Control, ControlSettings, Stream

__all__ = [
    "AppliedControl",
    "StreamControl",
    "apply_control",
    "ask_control",
    "current_control",
    "is_stale",
    "load_control",
    "merge_control",
    "read_control",
]


def is_stale(control: Control, bot: str | None, bot_uid: str | None, generation: int) -> bool:
    """True when ``control`` is older than what is in force for the same bot."""
    return control.bot == bot and control.bot_uid == bot_uid and control.generation < generation


@dataclass(frozen=True)
class AppliedControl:
    bot: str
    bot_uid: str
    generation: int
    config_hash: str
    settings: ControlSettings

    def older_than(self, other: AppliedControl | None) -> bool:
        """True when ``other`` is a later generation of the same bot. A handler that read
        the stored config just before a newer one was applied must not put it back."""
        return (
            other is not None
            and self.bot == other.bot
            and self.bot_uid == other.bot_uid
            and self.generation < other.generation
        )

    def supersedes(self, current: AppliedControl | None) -> bool:
        """Whether a service should adopt this over ``current``: different, and not an
        older generation of the same bot."""
        return self != current and not self.older_than(current)

    def describe(self) -> dict[str, Any]:
        return {
            "bot": self.bot,
            "generation": self.generation,
            "config_hash": self.config_hash,
            "settings": self.settings.model_dump(exclude_none=True),
        }


def _settings(stored: Any) -> dict[str, Any]:
    return dict(stored if isinstance(stored, dict) else json.loads(stored))


def merge_control(current: AppliedControl | None, control: Control) -> AppliedControl | None:
    """``control``'s settings merged over ``current``'s; None when ``control`` is stale."""
    merged: dict[str, Any] = {}
    if current is not None:
        if is_stale(control, current.bot, current.bot_uid, current.generation):
            return None
        merged = current.settings.model_dump(exclude_none=True)
    merged.update(control.settings.model_dump(exclude_none=True))
    return AppliedControl(
        control.bot,
        control.bot_uid,
        control.generation,
        control.config_hash,
        ControlSettings.model_validate(merged),
    )


async def current_control(
    conn: AsyncConnection[Any], service: str, *, for_update: bool = False
) -> AppliedControl | None:
    """What is in force for ``service``, read on ``conn`` (inside the caller's transaction).

    A control event reaches one replica of a service (one consumer group per service);
    every replica reads the stored settings where it decides, so all decide alike."""
    return await read_control(await ask_control(conn, service, for_update=for_update))


async def ask_control(
    conn: AsyncConnection[Any], service: str, *, for_update: bool = False
) -> AsyncCursor[Any]:
    """:func:`current_control`'s query sent (queued in pipeline mode); see
    :func:`read_control`."""
    return await conn.execute(
        "SELECT bot, bot_uid, generation, config_hash, settings FROM control_state "
        "WHERE service = %s" + (" FOR UPDATE" if for_update else ""),
        (service,),
    )


async def read_control(cursor: AsyncCursor[Any]) -> AppliedControl | None:
    row = await cursor.fetchone()
    if row is None:
        return None
    settings = ControlSettings.model_validate(_settings(row[4]))
    return AppliedControl(row[0], row[1], int(row[2]), row[3], settings)


async def load_control(db: Database, service: str) -> AppliedControl | None:
    async with db.connection() as conn:
        return await current_control(conn, service)


async def apply_control(db: Database, service: str, control: Control) -> AppliedControl | None:
    """Merge and store ``control``; returns what is now in force, or None if it was stale."""
    async with db.connection() as conn, conn.transaction():
        applied = merge_control(await current_control(conn, service, for_update=True), control)
        if applied is None:
            return None
        await conn.execute(
            """
            INSERT INTO control_state (service, bot, bot_uid, generation, config_hash, settings)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (service) DO UPDATE SET bot = EXCLUDED.bot, bot_uid = EXCLUDED.bot_uid,
                generation = EXCLUDED.generation, config_hash = EXCLUDED.config_hash,
                settings = EXCLUDED.settings, applied_at = now()
            """,
            (
                service,
                applied.bot,
                applied.bot_uid,
                applied.generation,
                applied.config_hash,
                Jsonb(applied.settings.model_dump(exclude_none=True)),
            ),
        )
    return applied


class StreamControl:
    """The live config of a process without a database, in the same shape and by the same
    rule as ``control_state``. ``bot`` set: only that bot's events count (the control
    stream is shared by the namespace)."""

    def __init__(self, bot: str | None = None) -> None:
        self.bot = bot
        self.current: AppliedControl | None = None

    async def restore(self, bus: Bus, group: str) -> AppliedControl | None:
        """Merge the control stream's history. ``group`` (the process's consumer group of
        the stream) is created first, so an event sent meanwhile is both merged here and
        delivered (merging it twice changes nothing)."""
        await bus.ensure_group(Stream.CONTROL, group, "$")
        for control in await bus.history(Stream.CONTROL, Control):
            self.apply(control)
        return self.current

    def apply(self, control: Control) -> AppliedControl | None:
        """What is in force after ``control``, or None when it changed nothing (another
        bot's, stale, or the same)."""
        if self.bot is not None and control.bot != self.bot:
            return None
        applied = merge_control(self.current, control)
        if applied is None or not applied.supersedes(self.current):
            return None
        self.current = applied
        return applied

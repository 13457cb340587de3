"""Live configuration from ``control`` events, kept in PostgreSQL (``control_state``).

Every service that takes live settings from the operator uses this one module. A control
event carries the settings it sets; they are merged over what was applied before and
stored, so a restart keeps the operator's settings. An event older than the stored
generation of the same bot is ignored — "the same bot" meaning the same name *and*
``metadata.uid``: a bot deleted and created again starts its generations at 1 anew.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from cdb.core.db import Database
from cdb.core.events import Control, ControlSettings

__all__ = ["AppliedControl", "apply_control", "current_control", "is_stale", "load_control"]


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


async def current_control(conn: AsyncConnection[Any], service: str) -> AppliedControl | None:
    """What is in force for ``service``, read on ``conn`` (inside the caller's transaction).

    A control event reaches one replica of a service (one consumer group per service);
    every replica reads the stored settings where it decides, so all decide alike."""
    cursor = await conn.execute(
        "SELECT bot, bot_uid, generation, config_hash, settings FROM control_state "
        "WHERE service = %s",
        (service,),
    )
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
        cursor = await conn.execute(
            "SELECT bot, bot_uid, generation, settings FROM control_state "
            "WHERE service = %s FOR UPDATE",
            (service,),
        )
        row = await cursor.fetchone()
        merged: dict[str, Any] = {}
        if row is not None:
            if is_stale(control, row[0], row[1], int(row[2])):
                return None
            merged = _settings(row[3])
        merged.update(control.settings.model_dump(exclude_none=True))
        settings = ControlSettings.model_validate(merged)
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
                control.bot,
                control.bot_uid,
                control.generation,
                control.config_hash,
                Jsonb(merged),
            ),
        )
    return AppliedControl(
        control.bot, control.bot_uid, control.generation, control.config_hash, settings
    )

"""Live configuration from ``control`` events, kept in PostgreSQL (``control_state``).

A control event carries only the fields it changes; they are merged over what was applied
before and stored, so a restart keeps the operator's settings. An event older than the
stored generation of the same bot is ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from cdb.core.db import Database
from cdb.core.events import Control, ControlSettings

__all__ = ["AppliedControl", "apply_control", "load_control"]


@dataclass(frozen=True)
class AppliedControl:
    bot: str
    generation: int
    config_hash: str
    settings: ControlSettings

    def describe(self) -> dict[str, Any]:
        return {
            "bot": self.bot,
            "generation": self.generation,
            "config_hash": self.config_hash,
            "settings": self.settings.model_dump(exclude_none=True),
        }


async def load_control(db: Database, service: str) -> AppliedControl | None:
    async with db.connection() as conn:
        cursor = await conn.execute(
            "SELECT bot, generation, config_hash, settings FROM control_state WHERE service = %s",
            (service,),
        )
        row = await cursor.fetchone()
    if row is None:
        return None
    stored = row[3] if isinstance(row[3], dict) else json.loads(row[3])
    return AppliedControl(row[0], int(row[1]), row[2], ControlSettings.model_validate(stored))


async def apply_control(db: Database, service: str, control: Control) -> AppliedControl | None:
    """Merge and store ``control``; returns what is now in force, or None if it was stale."""
    async with db.connection() as conn, conn.transaction():
        cursor = await conn.execute(
            "SELECT bot, generation, settings FROM control_state WHERE service = %s FOR UPDATE",
            (service,),
        )
        row = await cursor.fetchone()
        merged: dict[str, Any] = {}
        if row is not None:
            if row[0] == control.bot and int(row[1]) > control.generation:
                return None
            merged = dict(row[2] if isinstance(row[2], dict) else json.loads(row[2]))
        merged.update(control.settings.model_dump(exclude_none=True))
        settings = ControlSettings.model_validate(merged)
        await conn.execute(
            """
            INSERT INTO control_state (service, bot, generation, config_hash, settings)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (service) DO UPDATE SET bot = EXCLUDED.bot,
                generation = EXCLUDED.generation, config_hash = EXCLUDED.config_hash,
                settings = EXCLUDED.settings, applied_at = now()
            """,
            (service, control.bot, control.generation, control.config_hash, Jsonb(merged)),
        )
    return AppliedControl(control.bot, control.generation, control.config_hash, settings)

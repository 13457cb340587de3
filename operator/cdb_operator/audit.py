"""Who changed what: field-level changes between two resolved configs, and their record.

Every applied change becomes one row per field in ``config_audit`` (bot, generation,
config hash, field, old and new value as JSON, actor). The row is keyed by
``(bot, config_hash, field)``, so a replayed reconcile of the same config writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from cdb.core.db import Database

__all__ = ["AuditLog", "FieldChange", "actor_of", "diff_configs"]

ACTOR_ANNOTATION = "cdb.io/changed-by"
UNKNOWN_ACTOR = "kubectl"
OWN_MANAGERS = ("kopf", "cdb-operator")


@dataclass(frozen=True)
class FieldChange:
    field: str
    old: Any
    new: Any


def _flatten(document: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in (document or {}).items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def diff_configs(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[FieldChange]:
    """The leaves that differ (lists compare whole); a first config lists every field."""
    before, after = _flatten(old), _flatten(new)
    return [
        FieldChange(field, before.get(field), after.get(field))
        for field in sorted(set(before) | set(after))
        if field not in before or field not in after or before[field] != after[field]
    ]


def actor_of(metadata: Mapping[str, Any]) -> str:
    """Who made the last spec change.

    An explicit ``cdb.io/changed-by`` annotation wins; otherwise the field manager of the
    newest ``managedFields`` entry that owns part of ``spec`` (``kubectl-client-side-apply``,
    ``kubectl-edit``, ``helm``, …); otherwise ``kubectl``.
    """
    annotations = metadata.get("annotations") or {}
    explicit = annotations.get(ACTOR_ANNOTATION)
    if isinstance(explicit, str) and explicit.strip():
        return explicit.strip()[:253]
    newest: tuple[str, str] | None = None
    for entry in metadata.get("managedFields") or []:
        if not isinstance(entry, Mapping) or entry.get("subresource"):
            continue
        manager = str(entry.get("manager") or "")
        fields = entry.get("fieldsV1") or {}
        if not manager or manager.startswith(OWN_MANAGERS) or "f:spec" not in fields:
            continue
        when = str(entry.get("time") or "")
        if newest is None or when >= newest[0]:
            newest = (when, manager)
    return newest[1][:253] if newest else UNKNOWN_ACTOR


class AuditLog:
    """Writes ``config_audit`` rows; idempotent on (bot, config_hash, field)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(
        self,
        bot: str,
        generation: int,
        config_hash: str,
        changes: Sequence[FieldChange],
        actor: str,
    ) -> int:
        """Insert what is not recorded yet; returns how many rows were new."""
        if not changes:
            return 0
        written = 0
        async with self.db.connection() as conn, conn.transaction():
            for change in changes:
                cursor = await conn.execute(
                    """
                    INSERT INTO config_audit
                        (bot, generation, config_hash, field, old_value, new_value, actor)
                    VALUES (%s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (bot, config_hash, field) DO NOTHING
                    """,
                    (
                        bot,
                        generation,
                        config_hash,
                        change.field,
                        Jsonb(change.old),
                        Jsonb(change.new),
                        actor,
                    ),
                )
                written += cursor.rowcount
        return written

"""Who changed what: field-level changes between two resolved configs, and their record.

Every applied change becomes one row per field in ``config_audit`` (bot, its uid,
generation, the config hash before and after, field, old and new value as JSON, actor).
A row records a transition: a retry of the same reconcile (the latest row of the field is
this very transition) writes nothing, while every real change is recorded, also one back
to an earlier config (migrations/0007_config_audit_transitions.sql says why).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cdb.core.db import Database, Jsonb

__all__ = ["AuditLog", "FieldChange", "Transition", "actor_of", "diff_configs"]

ACTOR_ANNOTATION = "cdb.io/changed-by"
UNKNOWN_ACTOR = "kubectl"
UNIVERSE_ACTOR = "universe-refresh"  # the timer re-resolved a universe, no spec edit
OPERATOR_ACTOR = "cdb-operator"  # re-applied without a spec edit (a lost ConfigMap)
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


def _owns(fields: Mapping[str, Any], path: str) -> bool:
    """Whether a ``managedFields`` entry's ``fieldsV1`` owns ``spec.<path>`` (dotted, as
    the config document's camelCase paths match the spec's); an atomic parent owns it."""
    node: Any = fields.get("f:spec")
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return False
        if not node:  # an atomic map or list: owned whole
            return True
        if f"f:{part}" not in node:
            return False
        node = node[f"f:{part}"]
    return True


def actor_of(metadata: Mapping[str, Any], changed: Iterable[str] = ()) -> str:
    """Who made the last spec change.

    An explicit ``cdb.io/changed-by`` annotation wins; otherwise the field manager
    (``kubectl-client-side-apply``, ``kubectl-edit``, ``helm``, …) of the newest
    ``managedFields`` entry that owns one of the ``changed`` spec paths, or, when none
    does (a change only in defaulted fields, or no paths given), part of ``spec``;
    otherwise ``kubectl``.

    Ownership comes first because the API server stamps ``managedFields`` in whole seconds
    and orders entries of the same second by manager name: two edits within one second
    look equally new. An update moves the ownership of the fields it changed to its
    manager, so the owner of a changed field is who changed it.
    """
    annotations = metadata.get("annotations") or {}
    explicit = annotations.get(ACTOR_ANNOTATION)
    if isinstance(explicit, str) and explicit.strip():
        return explicit.strip()[:253]
    editors: list[tuple[str, str, Mapping[str, Any]]] = []
    for entry in metadata.get("managedFields") or []:
        if not isinstance(entry, Mapping) or entry.get("subresource"):
            continue
        manager = str(entry.get("manager") or "")
        fields = entry.get("fieldsV1") or {}
        if not manager or manager.startswith(OWN_MANAGERS) or "f:spec" not in fields:
            continue
        editors.append((str(entry.get("time") or ""), manager, fields))
    paths = list(changed)
    owners = [e for e in editors if any(_owns(e[2], path) for path in paths)]
    newest: tuple[str, str] | None = None
    for when, manager, _ in owners or editors:
        if newest is None or when >= newest[0]:
            newest = (when, manager)
    return newest[1][:253] if newest else UNKNOWN_ACTOR


@dataclass(frozen=True)
class Transition:
    """Which bot instance went from which config to which, at which generation."""

    bot: str
    bot_uid: str
    generation: int
    previous_hash: str  # "" when no config was in force
    config_hash: str


class AuditLog:
    """Writes ``config_audit`` rows, one per changed field and transition."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(
        self, transition: Transition, changes: Sequence[FieldChange], actor: str
    ) -> list[FieldChange]:
        """Insert what is not recorded yet; returns the changes that were new.

        A change is skipped only when the latest row of its field for this bot instance is
        the same transition: that is a retry of the same reconcile, never a real change.
        """
        if not changes:
            return []
        t = transition
        written: list[FieldChange] = []
        async with self.db.connection() as conn, conn.transaction():
            # One writer per bot decides at a time (an operator restart can overlap).
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"config_audit/{t.bot}",)
            )
            for change in changes:
                cursor = await conn.execute(
                    """
                    INSERT INTO config_audit
                        (bot, bot_uid, generation, previous_config_hash, config_hash, field,
                         old_value, new_value, actor)
                    SELECT %(bot)s, %(uid)s, %(generation)s, %(previous)s, %(hash)s, %(field)s,
                           %(old)s, %(new)s, %(actor)s
                    WHERE NOT EXISTS (
                        SELECT 1 FROM (
                            SELECT generation, previous_config_hash, config_hash
                            FROM config_audit
                            WHERE bot = %(bot)s AND bot_uid = %(uid)s AND field = %(field)s
                            ORDER BY id DESC LIMIT 1
                        ) latest
                        WHERE latest.generation = %(generation)s
                          AND latest.previous_config_hash = %(previous)s
                          AND latest.config_hash = %(hash)s
                    )
                    """,
                    {
                        "bot": t.bot,
                        "uid": t.bot_uid,
                        "generation": t.generation,
                        "previous": t.previous_hash,
                        "hash": t.config_hash,
                        "field": change.field,
                        "old": Jsonb(change.old),
                        "new": Jsonb(change.new),
                        "actor": actor,
                    },
                )
                if cursor.rowcount:
                    written.append(change)
        return written

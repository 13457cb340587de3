"""One TradingBot per namespace drives the pipeline.

signal_engine, risk_manager, execution_service and ml_advisor of a namespace form ONE
pipeline, and a ``control`` event sets its live settings whichever bot sent it. So one bot
is active: the oldest by ``metadata.creationTimestamp`` (a tie: the name). Only the active
bot publishes control events and runs a screener; every other bot stands by (status
``Degraded=True``, reason ``AnotherBotActive``) and takes over once it is the oldest left.

A bot being deleted stays active until it is gone: its deletion pauses the pipeline, and
a successor taking over earlier would have its settings overwritten by that pause.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["STANDBY_REASON", "BotIdentity", "active_bot", "standby_message"]

STANDBY_REASON = "AnotherBotActive"


@dataclass(frozen=True)
class BotIdentity:
    name: str
    uid: str
    created: str  # RFC 3339 as the API server writes it ("2026-11-25T05:00:00Z")

    @classmethod
    def of(cls, bot: Mapping[str, Any]) -> BotIdentity:
        metadata = bot.get("metadata") or {}
        return cls(
            name=str(metadata.get("name") or ""),
            uid=str(metadata.get("uid") or ""),
            created=str(metadata.get("creationTimestamp") or ""),
        )

    @property
    def key(self) -> str:
        return self.uid or self.name

    def same(self, other: BotIdentity) -> bool:
        return self.key == other.key

    @property
    def order(self) -> tuple[str, str]:
        # The API server writes every creationTimestamp in the same UTC, second-precision
        # form, so the strings sort as the times do.
        return (self.created, self.name)

    def describe(self) -> str:
        return f"{self.name}/{self.uid}"


def active_bot(me: Mapping[str, Any], others: Sequence[Mapping[str, Any]]) -> BotIdentity:
    """The namespace's active bot among ``others`` (the listed bots) and ``me``."""
    candidates: dict[str, BotIdentity] = {}
    for bot in (*others, me):  # ``me`` too: a list may lag behind the watch that woke us
        identity = BotIdentity.of(bot)
        candidates.setdefault(identity.key, identity)
    return min(candidates.values(), key=lambda bot: bot.order)


def standby_message(active: BotIdentity, namespace: str) -> str:
    return (
        f"TradingBot {active.name} drives the pipeline of namespace {namespace} (the oldest "
        f"bot). This bot publishes no control events and runs no screener until it is the "
        f"oldest TradingBot left."
    )

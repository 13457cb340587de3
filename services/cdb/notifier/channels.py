"""Where messages go: one :class:`Channel` per configured destination.

The channels themselves are :mod:`cdb.notifier.apprise_channels` (URLs: Telegram,
Discord, Slack, ntfy, e-mail, JSON webhooks, ...) and :mod:`cdb.notifier.webpush`; this
module holds what they share: the message, the failure and :func:`scrub`, which keeps
every part of a secret URL out of what is reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Channel", "DeliveryError", "Message", "scrub"]


@dataclass(frozen=True)
class Message:
    """One send: a notification or a group of them, with an id stable across retries."""

    message_id: str
    title: str
    body: str
    severity: str
    kind: str
    # WebPush only (one notification's, never a group's): actions and their data
    actions: tuple[dict[str, str], ...] = ()
    data: dict[str, Any] = field(default_factory=dict)


class DeliveryError(Exception):
    """The channel did not take the message (it is retried)."""


class Channel(Protocol):
    name: str

    async def send(self, message: Message) -> None:
        """Deliver or raise :class:`DeliveryError`."""


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every sizeable piece of every secret URL replaced by ``<hidden>``."""
    pieces: set[str] = set()
    for secret in secrets:
        pieces.add(secret)
        pieces.update(part for part in re.split(r"[/:@?&=#,+]", secret) if len(part) >= 6)
    for piece in sorted(pieces, key=len, reverse=True):
        text = text.replace(piece, "<hidden>")
    return text

"""Where messages go: one :class:`Channel` per configured destination.

Channels by URL (Telegram, Discord, Slack, ntfy, e-mail, JSON webhooks, ...) are sent
through apprise, one well-kept library, never code of our own. A URL carries its token,
so it is a secret: a channel is named by its scheme and position (``json-1``,
``tgram-2``), and what apprise reports is scrubbed of every part of the URL before it
reaches a log line, ``last_error`` or ``/status``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import apprise

__all__ = [
    "AppriseChannel",
    "Channel",
    "DeliveryError",
    "Message",
    "apprise_channels",
    "scrub",
]

# apprise logs through the root logger by default; what it says reaches us per call
# (scrubbed) instead, so a URL fragment can never land in the service's log.
logging.getLogger("apprise").propagate = False

NOTIFY_TYPES = {
    "info": apprise.NotifyType.INFO,
    "warning": apprise.NotifyType.WARNING,
    "critical": apprise.NotifyType.FAILURE,
}
HEADER_SCHEMES = {"json", "jsons", "xml", "xmls", "form", "forms"}


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


class AppriseChannel:
    """One apprise URL. JSON/XML/form webhooks also get the message id as the
    ``X-Cdb-Message-Id`` header and a ``cdb_message_id`` field, so a receiver can drop a
    copy sent again after a crash between its answer and our record of it."""

    def __init__(self, url: str, index: int, timeout_s: float) -> None:
        self.url = url
        self.scheme = urlsplit(url).scheme.lower() or "url"
        self.name = f"{self.scheme}-{index}"
        self.timeout_s = timeout_s
        if not apprise.Apprise().add(url):
            raise ValueError(
                f"NOTIFY_URLS entry {index} ({self.scheme}://...) is not a URL apprise knows"
            )

    def _url_for(self, message: Message) -> str:
        if self.scheme not in HEADER_SCHEMES:
            return self.url
        parts = urlsplit(self.url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        query += [
            ("+X-Cdb-Message-Id", message.message_id),
            (":cdb_message_id", message.message_id),
        ]
        query += [(":cdb_kind", message.kind), (":cdb_severity", message.severity)]
        return urlunsplit(parts._replace(query=urlencode(query)))

    async def send(self, message: Message) -> None:
        sender = apprise.Apprise()
        sender.add(self._url_for(message))
        result = await sender.async_notify(
            body=message.body,
            title=message.title,
            notify_type=NOTIFY_TYPES.get(message.severity, apprise.NotifyType.INFO),
            timeout=self.timeout_s,
        )
        if not result:
            said = [entry.message for entry in result.logs() if entry.level in ("WARNING", "ERROR")]
            reason = scrub("; ".join(said)[-500:] or "apprise reported a failure", [self.url])
            raise DeliveryError(f"{self.name}: {reason}")


def apprise_channels(urls: list[str], timeout_s: float) -> list[AppriseChannel]:
    return [AppriseChannel(url, index, timeout_s) for index, url in enumerate(urls, start=1)]

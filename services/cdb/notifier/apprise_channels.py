"""Channels by URL (Telegram, Discord, Slack, ntfy, e-mail, JSON webhooks, ...), sent
through apprise, one well-kept library, never code of our own. A URL carries its token,
so it is a secret: a channel is named by its scheme and position (``json-1``,
``tgram-2``), and what apprise reports is scrubbed of every part of the URL before it
reaches a log line, ``last_error`` or ``/status``.

The notifier imports this module (and with it apprise and requests) only when
``NOTIFY_URLS`` names a channel.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import apprise

from cdb.notifier.channels import DeliveryError, Message, scrub

__all__ = ["AppriseChannel", "apprise_channels"]

# apprise logs through the root logger by default; what it says reaches us per call
# (scrubbed) instead, so a URL fragment can never land in the service's log.
logging.getLogger("apprise").propagate = False

NOTIFY_TYPES = {
    "info": apprise.NotifyType.INFO,
    "warning": apprise.NotifyType.WARNING,
    "critical": apprise.NotifyType.FAILURE,
}
HEADER_SCHEMES = {"json", "jsons", "xml", "xmls", "form", "forms"}


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

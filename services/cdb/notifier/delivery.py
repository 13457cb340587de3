"""Sending what is due: one loop per channel, grouping, rate limit, retries, quiet hours.

Per round and channel: the due deliveries are grouped by ``group_key``; a group of at
least ``group_min`` goes as one message ("40x Screener stale"), the rest one by one.
Each message takes a token from the channel's bucket (``rate_per_min``); without one the
round ends and what is left waits (and groups better next round). A failed send is
retried with jittered exponential backoff; after ``max_attempts`` it is marked
``failed``, logged and counted — never dropped silently.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from cdb.core.bus import is_transient, sleep_unless
from cdb.core.db import Database
from cdb.core.events import deterministic_id
from cdb.notifier import store
from cdb.notifier.channels import Channel, DeliveryError, Message
from cdb.notifier.messages import Notification, grouped
from cdb.notifier.settings import NotifierSettings, QuietHours

__all__ = ["Deliverer", "DeliveryMetrics", "TokenBucket", "in_quiet_hours", "release_time"]

log = logging.getLogger("cdb.notifier")


def in_quiet_hours(at: datetime, quiet: QuietHours | None) -> bool:
    if quiet is None:
        return False
    start, end = quiet
    now = at.astimezone(UTC).time()
    if start < end:
        return start <= now < end
    return now >= start or now < end  # across midnight


def quiet_end(at: datetime, quiet: QuietHours) -> datetime:
    """The first moment after ``at`` when the quiet hours are over."""
    end: clock = quiet[1]
    candidate = at.astimezone(UTC).replace(
        hour=end.hour, minute=end.minute, second=0, microsecond=0
    )
    return candidate if candidate > at else candidate + timedelta(days=1)


def release_time(
    at: datetime, severity: str, quiet: QuietHours | None, wait_s: float = 0.0
) -> datetime:
    """When a notification may go: after ``wait_s``; non-critical ones not in quiet hours."""
    ready = at + timedelta(seconds=wait_s)
    if severity != "critical" and quiet is not None and in_quiet_hours(ready, quiet):
        return quiet_end(ready, quiet)
    return ready


@dataclass
class TokenBucket:
    """``rate_per_min`` messages a minute, at most that many in a burst."""

    rate_per_min: float
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(default=-1.0)
    updated: float = 0.0

    def take(self) -> bool:
        now = self.clock()
        capacity = max(1.0, self.rate_per_min)
        if self.tokens < 0:
            self.tokens, self.updated = capacity, now
        self.tokens = min(capacity, self.tokens + (now - self.updated) * self.rate_per_min / 60)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class DeliveryMetrics:
    def __init__(self, registry: CollectorRegistry, channels: list[str]) -> None:
        self.sent = Counter(
            "notifier_messages_sent_total", "Messages a channel accepted", ["channel"],
            registry=registry,
        )  # fmt: skip
        self.notifications_sent = Counter(
            "notifier_notifications_delivered_total",
            "Notifications delivered (a grouped message delivers several)",
            ["channel"],
            registry=registry,
        )
        self.retries = Counter(
            "notifier_send_failures_total",
            "Sends a channel did not accept (each is retried until the last attempt)",
            ["channel"],
            registry=registry,
        )
        self.failed = Counter(
            "notifier_deliveries_failed_total",
            "Notifications given up on after the last attempt (recorded as failed)",
            ["channel"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "notifier_rate_limited_total",
            "Rounds a channel's rate limit held messages back",
            ["channel"],
            registry=registry,
        )
        for channel in channels:  # every series exists from the start, at 0
            for counter in (
                self.sent, self.notifications_sent, self.retries, self.failed, self.rate_limited,
            ):  # fmt: skip
                counter.labels(channel)


class Deliverer:
    """Sends the due deliveries of every channel until stopped."""

    def __init__(
        self,
        settings: NotifierSettings,
        db: Database,
        channels: list[Channel],
        metrics: DeliveryMetrics,
        stop: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.db = db
        self.channels = channels
        self.metrics = metrics
        self.stop = stop
        self.buckets = {c.name: TokenBucket(settings.notify_rate_per_min) for c in channels}
        self.wake = asyncio.Event()

    async def run(self) -> None:
        await asyncio.gather(*(self._loop(channel) for channel in self.channels))

    async def _loop(self, channel: Channel) -> None:
        while not self.stop.is_set():
            try:
                await self.round(channel)
            except Exception as error:
                if not is_transient(error):
                    raise
                log.warning(
                    "postgres unavailable, delivery waits",
                    extra={"channel": channel.name, "error": str(error)[:300]},
                )
            await sleep_unless(self.stop, self.settings.notify_poll_s)

    async def round(self, channel: Channel) -> int:
        """One pass over what is due for ``channel``; returns the messages sent."""
        async with self.db.connection() as conn:
            due = await store.due(conn, channel.name, datetime.now(UTC))
        groups: dict[str, list[store.Due]] = {}
        for item in due:
            groups.setdefault(item.notification.group_key, []).append(item)
        batches: list[list[store.Due]] = []
        for items in groups.values():
            if len(items) >= self.settings.notify_group_min:
                batches.append(items)
            else:
                batches.extend([item] for item in items)
        batches.sort(key=lambda batch: _rank(batch[0].notification))
        sent = 0
        for batch in batches:
            if self.stop.is_set():
                break
            if not self.buckets[channel.name].take():
                self.metrics.rate_limited.labels(channel.name).inc()
                break
            if await self._send(channel, [item.notification.key for item in batch]):
                sent += 1
        return sent

    async def _send(self, channel: Channel, keys: list[str]) -> bool:
        async with self.db.connection() as conn, conn.transaction():
            held = await store.lock_pending(conn, channel.name, keys)
            if not held:
                return False  # sent meanwhile by a peer
            held_keys = [item.notification.key for item in held]
            notifications = [item.notification for item in held]
            title, body = grouped(notifications)
            severity = max((n.severity for n in notifications), key=_severity_rank)
            message = Message(
                message_id=deterministic_id("msg", channel.name, *held_keys),
                title=title,
                body=body,
                severity=severity,
                kind=notifications[0].kind,
                **_push_extras(notifications),
            )
            try:
                await asyncio.wait_for(
                    channel.send(message), timeout=self.settings.notify_send_timeout_s
                )
            except (DeliveryError, TimeoutError, OSError) as error:
                reason = (
                    str(error)
                    if isinstance(error, DeliveryError)
                    else f"{channel.name}: timed out or unreachable"
                )
                self.metrics.retries.labels(channel.name).inc()
                attempts = max(item.attempts for item in held) + 1
                if attempts >= self.settings.notify_max_attempts:
                    await store.mark_failed(conn, channel.name, held_keys, reason)
                    self.metrics.failed.labels(channel.name).inc(len(held_keys))
                    log.error(
                        "notification given up",
                        extra={"channel": channel.name, "keys": held_keys, "attempts": attempts,
                               "error": reason},
                    )  # fmt: skip
                    return False
                delay = min(
                    self.settings.notify_retry_cap_s,
                    self.settings.notify_retry_base_s * 2 ** (attempts - 1),
                ) * (0.75 + random.random() / 2)
                next_at = release_time(
                    datetime.now(UTC), severity, self.settings.quiet_hours(), delay
                )
                await store.mark_retry(conn, channel.name, held_keys, reason, next_at)
                log.warning(
                    "send failed, will retry",
                    extra={"channel": channel.name, "attempt": attempts,
                           "retry_in_s": round(delay, 2), "error": reason},
                )  # fmt: skip
                return False
            await store.mark_sent(conn, channel.name, held_keys, message.message_id)
        self.metrics.sent.labels(channel.name).inc()
        self.metrics.notifications_sent.labels(channel.name).inc(len(held_keys))
        log.info(
            "notification sent",
            extra={"channel": channel.name, "message_id": message.message_id,
                   "notifications": len(held_keys), "title": title},
        )  # fmt: skip
        return True


def _push_extras(notifications: list[Notification]) -> dict[str, Any]:
    """A single notification's WebPush actions and data; a group has none."""
    if len(notifications) != 1:
        return {}
    only = notifications[0]
    return {"actions": tuple(a.model_dump() for a in only.actions), "data": dict(only.data)}


def _severity_rank(severity: str) -> int:
    return {"info": 0, "warning": 1, "critical": 2}.get(severity, 1)


def _rank(notification: Notification) -> int:
    """Critical first, so a rate limit holds back the least important."""
    return -_severity_rank(notification.severity)

"""notifier: what matters, as messages that reach the owner (port 8006).

Causes in: ``alerts`` (circuit breaker trips and resets), ``order_results`` (stop-loss
closes, fills per ``NOTIFY_FILLS``, orders left ``unknown``), ``control`` (TradingBot
changes), ``approvals`` (orders held for the owner, with WebPush actions),
``cdb:dead_letter``, Alertmanager's webhook (``POST /alertmanager``: services
down, stale feeds, every alert rule, firing and resolved) and a daily summary.

Each cause is stored once under its key with a pending delivery per channel, in one
transaction, before its entry is acknowledged (or Alertmanager gets its 200); the
:class:`~cdb.notifier.delivery.Deliverer` sends from there. So a redelivery or a restart
never sends a cause twice, and a crash never loses one.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from cdb.core.bus import Consumer, is_transient, sleep_unless
from cdb.core.dead_letters import DeadLetterReader
from cdb.core.events import Alert, ApprovalRequest, Control, OrderResult, Stream
from cdb.core.http import APIRouter, Depends, HTTPException, admin_credential
from cdb.core.service import Kernel, Service, public_config
from cdb.notifier import store
from cdb.notifier.channels import Channel
from cdb.notifier.delivery import Deliverer, DeliveryMetrics, release_time
from cdb.notifier.messages import (
    AlertmanagerPayload,
    DeadLetter,
    Notification,
    daily_summary,
    from_alert,
    from_alertmanager,
    from_approval_request,
    from_control,
    from_dead_letter,
    from_order_result,
)
from cdb.notifier.settings import NotifierSettings
from cdb.notifier.webpush import (
    Subscription,
    WebPushChannel,
    application_server_key,
    delete_subscription,
    load_vapid,
    save_subscription,
)

log = logging.getLogger("cdb.notifier")

DEAD_LETTER_GROUP = "notifier"


class Notifier(Service[NotifierSettings]):
    name = "notifier"
    watches_input = False  # a quiet day is no failure of the notifier

    def __init__(self, settings: NotifierSettings, kernel: Kernel) -> None:
        super().__init__(settings, kernel)
        self.dead_letters = DeadLetterReader(
            kernel.bus, DEAD_LETTER_GROUP, settings.consumer_name, settings.bus_block_ms
        )
        self.channels: list[Channel] = []
        urls = settings.apprise_urls()
        if urls:  # apprise (with requests) is loaded for a configured channel only
            from cdb.notifier.apprise_channels import apprise_channels

            self.channels.extend(apprise_channels(urls, settings.notify_send_timeout_s))
        self.vapid = load_vapid(settings)
        if self.vapid is not None:
            self.channels.append(WebPushChannel(settings, kernel.database, self.vapid))
        self.delivery_metrics = DeliveryMetrics(
            kernel.metrics.registry, [channel.name for channel in self.channels]
        )
        self.snapshot: dict[str, Any] = {"deliveries": {}, "recent": []}

    # -- causes in --------------------------------------------------------------------
    def consumers(self) -> Sequence[Consumer[Any]]:
        # A new group starts at the stream's end: a first start never replays history.
        return [
            self.consumer(Stream.ALERTS, Alert, self.on_alert, start="$"),
            self.consumer(Stream.ORDER_RESULTS, OrderResult, self.on_order_result, start="$"),
            self.consumer(Stream.CONTROL, Control, self.on_control, start="$"),
            self.consumer(Stream.APPROVALS, ApprovalRequest, self.on_approval_request, start="$"),
        ]

    async def on_alert(self, alert: Alert) -> None:
        await self.record(from_alert(alert))

    async def on_order_result(self, result: OrderResult) -> None:
        notification = from_order_result(result, self.settings.notify_fills)
        if notification is not None:
            await self.record(notification)

    async def on_control(self, control: Control) -> None:
        await self.record(from_control(control))

    async def on_approval_request(self, request: ApprovalRequest) -> None:
        """A held order: announced at once (no group wait, not held back by quiet hours),
        unless it expired before it got here (the notifier was down)."""
        if request.expires_at <= time.time():
            log.info(
                "approval request expired before it was announced",
                extra={"order_id": request.order.order_id},
            )
            return
        await self.record(from_approval_request(request), at_once=True)

    async def record(self, notification: Notification, *, at_once: bool = False) -> bool:
        """Store it with a delivery per channel; False if its cause was recorded before."""
        return await self.record_all([notification], at_once=at_once) == 1

    async def record_all(self, notifications: list[Notification], *, at_once: bool = False) -> int:
        """Store them in one transaction, due together (so they group); returns how many
        were new."""
        now = datetime.now(UTC)
        quiet = self.settings.quiet_hours()
        wait = 0.0 if at_once else self.settings.notify_group_wait_s
        names = [channel.name for channel in self.channels]
        created = []
        async with self.kernel.database.connection() as conn, conn.transaction():
            for notification in notifications:
                severity = "critical" if at_once else notification.severity
                not_before = release_time(now, severity, quiet, wait)
                if await store.record(conn, notification, names, not_before):
                    created.append(notification)
        for notification in created:
            log.info(
                "notification recorded",
                extra={"key": notification.key, "kind": notification.kind,
                       "severity": notification.severity},
            )  # fmt: skip
        return len(created)

    # -- background work ----------------------------------------------------------------
    async def start(self) -> None:
        await self.dead_letters.ensure_group()

    def tasks(self) -> Sequence[Callable[[], Coroutine[Any, Any, None]]]:
        return [self.deliver, self.watch_dead_letters, self.summarise_daily, self.refresh_status]

    async def deliver(self) -> None:
        if not self.channels:  # recorded and shown in /status, sent nowhere
            log.warning("no channel configured: set NOTIFY_URLS or a VAPID key")
            await self.kernel.stop.wait()
            return
        deliverer = Deliverer(
            self.settings, self.kernel.database, self.channels, self.delivery_metrics,
            self.kernel.stop,
        )  # fmt: skip
        await deliverer.run()

    async def watch_dead_letters(self) -> None:
        """``cdb:dead_letter`` entries are raw bus fields, not events: the kernel reads them."""
        while not self.kernel.stop.is_set():
            try:
                for letter in await self.dead_letters.batch():
                    await self.record(from_dead_letter(DeadLetter(
                        entry_id=letter.letter_id, stream=letter.stream or "?",
                        group=letter.group or "?", reason=letter.reason,
                    )))  # fmt: skip
                    await self.dead_letters.ack(letter)
            except Exception as error:
                if not is_transient(error):
                    raise
                await sleep_unless(self.kernel.stop, 1.0)

    async def summarise_daily(self) -> None:
        hour = self.settings.notify_daily_summary_hour
        if hour < 0:  # none wanted; a task that returns would stop the service
            await self.kernel.stop.wait()
        while not self.kernel.stop.is_set():
            now = datetime.now(UTC)
            if now.hour >= hour:
                try:
                    async with self.kernel.database.connection() as conn:
                        figures = await store.day_summary(conn, now)
                    await self.record(daily_summary(**vars(figures)))
                except Exception as error:
                    if not is_transient(error):
                        raise
            await sleep_unless(self.kernel.stop, 60.0)

    async def refresh_status(self) -> None:
        """``/status`` is synchronous; the delivery figures are read here every second."""
        while not self.kernel.stop.is_set():
            try:
                async with self.kernel.database.connection() as conn:
                    self.snapshot = {
                        "deliveries": await store.delivery_counts(conn),
                        "recent": await store.recent(conn),
                        "at": time.time(),
                    }
            except Exception as error:
                if not is_transient(error):
                    raise
            await sleep_unless(self.kernel.stop, 1.0)

    # -- HTTP ---------------------------------------------------------------------------
    def router(self) -> APIRouter:
        router = APIRouter()
        # Every state change (a notification to send, a subscription) takes the admin
        # credential (issue 14's scheme); reading the WebPush key stays open.
        guard = [Depends(admin_credential(self.settings.admin_token.get_secret_value()))]

        @router.post("/alertmanager", dependencies=guard)
        async def alertmanager(payload: AlertmanagerPayload) -> dict[str, int]:
            """Alertmanager's webhook receiver: 200 once every alert is stored."""
            skipped = self.settings.skipped_alerts()
            wanted = [
                notification
                for notification in from_alertmanager(payload)
                if notification.kind.removeprefix("prometheus:") not in skipped
            ]
            try:
                created = await self.record_all(wanted)
            except Exception as error:
                if is_transient(error):  # Alertmanager sends it again
                    raise HTTPException(503, "database unavailable, retry") from error
                raise
            return {"alerts": len(payload.alerts), "new": created}

        @router.post("/notify/test", dependencies=guard)
        async def test() -> dict[str, Any]:
            """A test message to every configured channel, sent at once."""
            key = f"test:{uuid.uuid4().hex}"
            await self.record(
                Notification(
                    key=key,
                    kind="test",
                    severity="info",
                    group_key=key,
                    title="cdb test notification",
                    body="If you read this, the notifier reaches you on this channel.",
                ),
                at_once=True,
            )
            return {"key": key, "channels": [channel.name for channel in self.channels]}

        @router.get("/webpush/key")
        def webpush_key() -> dict[str, str]:
            """What a browser needs to subscribe (``applicationServerKey``)."""
            if self.vapid is None:
                raise HTTPException(404, "WebPush is off: set VAPID_PRIVATE_KEY or VAPID_KEY_DIR")
            return {
                "applicationServerKey": application_server_key(self.vapid),
                "subscribe": "POST /webpush/subscriptions with PushSubscription.toJSON()",
            }

        @router.post("/webpush/subscriptions", status_code=201, dependencies=guard)
        async def subscribe(subscription: Subscription) -> dict[str, bool]:
            if self.vapid is None:
                raise HTTPException(404, "WebPush is off: set VAPID_PRIVATE_KEY or VAPID_KEY_DIR")
            await save_subscription(self.kernel.database, subscription)
            return {"subscribed": True}

        @router.delete("/webpush/subscriptions", dependencies=guard)
        async def unsubscribe(subscription: Subscription) -> dict[str, bool]:
            return {
                "removed": await delete_subscription(self.kernel.database, subscription.endpoint)
            }

        return router

    async def close(self) -> None:
        for channel in self.channels:
            if isinstance(channel, WebPushChannel):
                await channel.aclose()

    def status(self) -> dict[str, Any]:
        return {
            "config": public_config(self.settings),
            "channels": [channel.name for channel in self.channels],
            "webpush": self.vapid is not None,
            **self.snapshot,
        }

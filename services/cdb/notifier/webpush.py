"""WebPush (RFC 8030 delivery, RFC 8291 payload encryption, RFC 8292 VAPID), through
pywebpush and py-vapid.

The VAPID key is a P-256 private key from ``VAPID_PRIVATE_KEY`` (a Kubernetes Secret;
PEM or base64url raw), else the file ``vapid_private.pem`` in ``VAPID_KEY_DIR`` (the
demo's data dir), generated there once if absent. Subscriptions live in PostgreSQL; a
push service answering 404 or 410 means the browser unsubscribed: the row is deleted.
A message carries its message id as the notification ``tag``, so a copy sent again after
a crash replaces the shown notification instead of adding a second one. An approval
request also carries ``actions`` (approve, veto) and ``data`` (order id, the console's
page, expiry), and lives at the push service no longer than until it expires
(docs/NOTIFICATIONS.md has the payload).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid
from pydantic import BaseModel, ConfigDict, Field
from pywebpush import WebPushException, webpush_async

from cdb.core.db import Database
from cdb.notifier.channels import DeliveryError, Message
from cdb.notifier.settings import NotifierSettings

__all__ = ["Subscription", "WebPushChannel", "application_server_key", "load_vapid"]

log = logging.getLogger("cdb.notifier")

KEY_FILE = "vapid_private.pem"
B64URL = r"^[A-Za-z0-9_-]+={0,2}$"


class SubscriptionKeys(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p256dh: str = Field(min_length=80, max_length=100, pattern=B64URL)
    auth: str = Field(min_length=16, max_length=32, pattern=B64URL)


class Subscription(BaseModel):
    """What a browser's ``PushManager.subscribe()`` returns (``PushSubscription.toJSON()``)."""

    model_config = ConfigDict(extra="ignore")

    endpoint: str = Field(min_length=10, max_length=2000, pattern=r"^https?://")
    keys: SubscriptionKeys
    label: str = Field(default="", max_length=100)


def load_vapid(settings: NotifierSettings) -> Vapid | None:
    """The VAPID key from the Secret, else from (or created once in) the key dir; None
    when neither is configured (WebPush is then off)."""
    given = settings.vapid_private_key.get_secret_value().strip()
    if given:
        if "-----BEGIN" in given:
            return Vapid.from_pem(given.encode())
        return Vapid.from_string(given)
    if not settings.vapid_key_dir:
        return None
    path = Path(settings.vapid_key_dir) / KEY_FILE
    if not path.exists():
        vapid = Vapid()
        vapid.generate_keys()
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(vapid.private_pem())
        log.info("VAPID key generated", extra={"path": str(path)})
    return Vapid.from_pem(path.read_bytes())


def application_server_key(vapid: Vapid) -> str:
    """The public key a browser passes to ``PushManager.subscribe`` (base64url, X9.62)."""
    raw = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def save_subscription(db: Database, subscription: Subscription) -> None:
    async with db.connection() as conn:
        await conn.execute(
            "INSERT INTO push_subscriptions (endpoint, p256dh, auth, label)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (endpoint) DO UPDATE"
            " SET p256dh = excluded.p256dh, auth = excluded.auth, label = excluded.label",
            (subscription.endpoint, subscription.keys.p256dh, subscription.keys.auth,
             subscription.label),
        )  # fmt: skip


async def delete_subscription(db: Database, endpoint: str) -> bool:
    async with db.connection() as conn:
        cursor = await conn.execute(
            "DELETE FROM push_subscriptions WHERE endpoint = %s RETURNING endpoint", (endpoint,)
        )
        return await cursor.fetchone() is not None


async def subscriptions(db: Database) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        cursor = await conn.execute(
            "SELECT endpoint, p256dh, auth FROM push_subscriptions ORDER BY created_at"
        )
        rows = await cursor.fetchall()
    return [{"endpoint": e, "keys": {"p256dh": p, "auth": a}} for e, p, a in rows]


class WebPushChannel:
    """Every subscribed browser. With none subscribed a message has nobody to reach and
    counts as delivered; a failure for one browser retries the message (the tag keeps the
    others from showing it twice)."""

    name = "webpush"

    def __init__(self, settings: NotifierSettings, db: Database, vapid: Vapid) -> None:
        self.settings = settings
        self.db = db
        self.vapid = vapid

    async def send(self, message: Message) -> None:
        payload = json.dumps(
            {"title": message.title, "body": message.body, "tag": message.message_id,
             "severity": message.severity, "kind": message.kind,
             "actions": list(message.actions), "data": message.data}
        )  # fmt: skip
        ttl = self.settings.webpush_ttl_s
        expires = message.data.get("expires_at")
        if isinstance(expires, int | float):  # an approval request: worthless once expired
            ttl = max(0, min(ttl, int(expires - time.time())))
        failures = []
        for subscription in await subscriptions(self.db):
            endpoint = subscription["endpoint"]
            try:
                await webpush_async(
                    subscription,
                    data=payload,
                    vapid_private_key=self.vapid,
                    vapid_claims={"sub": self.settings.vapid_subject},
                    ttl=ttl,
                    timeout=self.settings.notify_send_timeout_s,
                    headers={"Urgency": "high" if message.severity == "critical" else "normal"},
                )
            except WebPushException as error:
                if error.status_code in (404, 410):
                    await delete_subscription(self.db, endpoint)
                    log.info(
                        "push subscription expired, removed", extra={"status": error.status_code}
                    )
                    continue
                failures.append(f"push service answered {error.status_code}")
            except (OSError, TimeoutError) as error:
                failures.append(f"push service unreachable: {type(error).__name__}")
        if failures:
            raise DeliveryError(f"webpush: {'; '.join(failures)[:500]}")

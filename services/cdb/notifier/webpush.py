"""WebPush (RFC 8030 delivery, RFC 8291 payload encryption, RFC 8292 VAPID): the payload
encrypted by http-ece, the request signed by py-vapid, sent with httpx.

Each push is a POST of one ``aes128gcm`` record (RFC 8188 header: salt, record size, the
ephemeral public key as key id) encrypted for the subscription's ``p256dh`` key and
``auth`` secret with a fresh P-256 key (RFC 8291 section 3), carrying ``TTL``,
``Urgency`` and ``Authorization: vapid t=<JWT>, k=<public key>`` (RFC 8292: ``aud`` the
push service's origin, ``exp`` 12 h ahead, ``sub`` from ``VAPID_SUBJECT``). A push
service answers 201; 404 and 410 mean the subscription is gone.

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
import binascii
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import http_ece
import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid
from pydantic import BaseModel, ConfigDict, Field

from cdb.core.db import Database
from cdb.notifier.channels import DeliveryError, Message
from cdb.notifier.settings import NotifierSettings

__all__ = [
    "PushRequest",
    "Subscription",
    "WebPushChannel",
    "application_server_key",
    "load_vapid",
    "push_request",
]

log = logging.getLogger("cdb.notifier")

KEY_FILE = "vapid_private.pem"
B64URL = r"^[A-Za-z0-9_-]+={0,2}$"
RECORD_SIZE = 4096  # RFC 8291 section 4: one record; push services take 4096 octets
VAPID_LIFETIME_S = 12 * 3600  # RFC 8292 section 2: exp at most 24 h ahead


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


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class PushRequest:
    """One push message as sent to a push service (RFC 8030 section 5)."""

    endpoint: str
    headers: dict[str, str]
    body: bytes


def push_request(
    subscription: dict[str, Any],
    payload: bytes,
    vapid: Vapid,
    subject: str,
    *,
    ttl: int,
    urgency: str,
) -> PushRequest:
    """The encrypted, signed request for one subscription (``PushSubscription.toJSON()``).
    Raises ValueError for a payload that does not fit one record or keys that are not a
    P-256 point and a 16-octet secret."""
    try:
        receiver_key = _unb64url(subscription["keys"]["p256dh"])
        auth_secret = _unb64url(subscription["keys"]["auth"])
    except binascii.Error as error:
        raise ValueError(f"subscription keys are not base64url: {error}") from None
    if len(receiver_key) != 65 or receiver_key[0] != 4 or len(auth_secret) != 16:
        raise ValueError("subscription keys are not a P-256 point and a 16-octet secret")
    if len(payload) > RECORD_SIZE - 86 - 17:  # header (salt, rs, key id); delimiter, tag
        raise ValueError(f"payload of {len(payload)} octets does not fit one push record")
    body = http_ece.encrypt(
        payload,
        private_key=ec.generate_private_key(ec.SECP256R1()),
        dh=receiver_key,
        auth_secret=auth_secret,
        rs=RECORD_SIZE,
        version="aes128gcm",
    )
    endpoint = subscription["endpoint"]
    parts = urlsplit(endpoint)
    claims = {
        "aud": f"{parts.scheme}://{parts.netloc}",
        "exp": int(time.time()) + VAPID_LIFETIME_S,
        "sub": subject,
    }
    signed: dict[str, str] = vapid.sign(claims)
    headers = {
        "Authorization": signed["Authorization"],
        "Content-Encoding": "aes128gcm",
        "Content-Type": "application/octet-stream",
        "TTL": str(ttl),
        "Urgency": urgency,
    }
    return PushRequest(endpoint=endpoint, headers=headers, body=body)


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
        self.http = httpx.AsyncClient(timeout=settings.notify_send_timeout_s)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def send(self, message: Message) -> None:
        payload = json.dumps(
            {"title": message.title, "body": message.body, "tag": message.message_id,
             "severity": message.severity, "kind": message.kind,
             "actions": list(message.actions), "data": message.data}
        ).encode()  # fmt: skip
        ttl = self.settings.webpush_ttl_s
        expires = message.data.get("expires_at")
        if isinstance(expires, int | float):  # an approval request: worthless once expired
            ttl = max(0, min(ttl, int(expires - time.time())))
        urgency = "high" if message.severity == "critical" else "normal"
        failures = []
        for subscription in await subscriptions(self.db):
            try:
                request = push_request(
                    subscription, payload, self.vapid, self.settings.vapid_subject,
                    ttl=ttl, urgency=urgency,
                )  # fmt: skip
                reply = await self.http.post(
                    request.endpoint, content=request.body, headers=request.headers
                )
            except ValueError as error:
                failures.append(str(error))
                continue
            except (httpx.HTTPError, OSError) as error:
                failures.append(f"push service unreachable: {type(error).__name__}")
                continue
            if reply.status_code in (404, 410):
                await delete_subscription(self.db, request.endpoint)
                log.info("push subscription expired, removed", extra={"status": reply.status_code})
            elif not 200 <= reply.status_code < 300:
                failures.append(f"push service answered {reply.status_code}")
        if failures:
            raise DeliveryError(f"webpush: {'; '.join(failures)[:500]}")

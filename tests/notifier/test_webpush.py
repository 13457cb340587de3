"""WebPush for real: the notifier encrypts (RFC 8291, aes128gcm, with http-ece) and signs
(RFC 8292 VAPID, with py-vapid); a local push endpoint standing in for the browser vendor's
push service checks the JWT with the key the notifier published and decrypts the payload
with the subscription's own private key, as a browser would."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import http_ece
import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from py_vapid import Vapid
from typer.testing import CliRunner

from cdb import cli
from cdb.core.bus import Bus
from cdb.core.events import Alert, ApprovalRequest, Order
from cdb.notifier.webpush import application_server_key, push_request
from tests.support import FAST_BUS, ServiceProcess, as_user, eventually_async, scalar
from tests.support.notify_receiver import Receiver, Request


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Browser:
    """A subscription's keys as a browser holds them."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)

    def subscription(self) -> dict[str, Any]:
        public = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "keys": {"p256dh": b64url(public), "auth": b64url(self.auth)},
        }

    def decrypt(self, request: Request) -> dict[str, Any]:
        assert request.headers["content-encoding"] == "aes128gcm"
        plain = http_ece.decrypt(
            request.body, private_key=self.key, auth_secret=self.auth, version="aes128gcm"
        )
        loaded: dict[str, Any] = json.loads(plain)
        return loaded


def verify_vapid(request: Request, server_key: str, audience: str) -> dict[str, Any]:
    """RFC 8292: ``Authorization: vapid t=<JWT>, k=<key>``, the JWT signed ES256 by ``k``."""
    scheme, _, params = request.headers["authorization"].partition(" ")
    assert scheme == "vapid"
    fields = dict(part.strip().split("=", 1) for part in params.split(","))
    assert fields["k"] == server_key, "signed with the key the notifier publishes"
    header_b64, claims_b64, signature_b64 = fields["t"].split(".")
    assert json.loads(unb64url(header_b64)) == {"typ": "JWT", "alg": "ES256"}
    signature = unb64url(signature_b64)
    assert len(signature) == 64
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(server_key))
    public.verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    claims: dict[str, Any] = json.loads(unb64url(claims_b64))
    assert claims["aud"] == audience
    assert time.time() < claims["exp"] <= time.time() + 24 * 3600  # RFC 8292: at most 24 h
    assert claims["sub"] == "mailto:owner@example.org"
    return claims


@pytest.fixture
def push_service() -> Iterator[Receiver]:
    with Receiver() as server:
        server.answer = lambda request: 410 if request.path.startswith("/push/gone") else 201
        yield server


ADMIN_TOKEN = "test-only-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def env(service_env: dict[str, str], key_dir: Path) -> dict[str, str]:
    return {
        **service_env, **FAST_BUS,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "VAPID_KEY_DIR": str(key_dir),
        "VAPID_SUBJECT": "mailto:owner@example.org",
        "NOTIFY_GROUP_WAIT_S": "0.2",
        "NOTIFY_POLL_S": "0.2",
        "NOTIFY_DAILY_SUMMARY_HOUR": "-1",
    }  # fmt: skip


async def test_a_breaker_trip_reaches_a_subscribed_browser_encrypted_and_signed(
    bus: Bus, service_env: dict[str, str], push_service: Receiver, tmp_path: Path
) -> None:
    key_dir = tmp_path / "data"
    proc = ServiceProcess("cdb.notifier", env(service_env, key_dir), tmp_path).start()
    try:
        proc.wait_healthy(timeout=60)
        key_file = key_dir / "vapid_private.pem"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        server_key = httpx.get(f"{proc.url}/webpush/key").json()["applicationServerKey"]
        browser = Browser(f"{push_service.url}/push/alive")
        gone = Browser(f"{push_service.url}/push/gone")
        for sub in (browser, gone):
            anonymous = httpx.post(f"{proc.url}/webpush/subscriptions", json=sub.subscription())
            assert anonymous.status_code == 401  # registering takes the admin credential
            reply = httpx.post(
                f"{proc.url}/webpush/subscriptions", json=sub.subscription(), headers=AUTH
            )
            assert reply.status_code == 201, reply.text
        bad = httpx.post(
            f"{proc.url}/webpush/subscriptions",
            json={"endpoint": "https://x.example/1", "keys": {"p256dh": "short", "auth": "x"}},
            headers=AUTH,
        )
        assert bad.status_code == 422
        assert proc.status()["channels"] == ["webpush"]
        printed = CliRunner().invoke(cli.app, ["notify", "subscribe", "--url", proc.url])
        assert printed.exit_code == 0 and f'applicationServerKey: "{server_key}"' in printed.output

        await bus.publish(
            Alert(kind="circuit_breaker", severity="critical", message="circuit breaker tripped",
                  source="risk_manager", timestamp=time.time())
        )  # fmt: skip
        await eventually_async(lambda: len(push_service.accepted("/push/alive")) == 1, timeout=30)
        request = push_service.accepted("/push/alive")[0]
        verify_vapid(request, server_key, push_service.url)
        assert request.headers["urgency"] == "high" and int(request.headers["ttl"]) > 0
        payload = browser.decrypt(request)
        assert payload["title"] == "Circuit breaker tripped: trading halted"
        assert payload["severity"] == "critical" and payload["tag"].startswith("msg-")
        assert b"Circuit breaker" not in request.body, "the payload travels encrypted"

        # Another browser's keys cannot read it; another server key cannot have signed it.
        with pytest.raises(Exception):  # noqa: B017 - http_ece raises InvalidTag or ValueError
            Browser(browser.endpoint).decrypt(request)
        other = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )  # fmt: skip
        fields = request.headers["authorization"].replace(server_key, b64url(other))
        forged = Request(request.path, {**request.headers, "authorization": fields}, b"", 0)
        with pytest.raises(InvalidSignature):
            verify_vapid(forged, b64url(other), push_service.url)

        # 410 Gone: the browser unsubscribed; its row is removed, the delivery still counts.
        await eventually_async(
            lambda: scalar(service_env, "SELECT count(*) FROM push_subscriptions") == 1
        )
        assert scalar(service_env, "SELECT endpoint FROM push_subscriptions") == browser.endpoint
        await eventually_async(lambda: proc.status()["deliveries"] == {"webpush": {"sent": 1}})
    finally:
        proc.__exit__()

    # The key was generated once: a restart signs with the same one.
    again = ServiceProcess("cdb.notifier", env(service_env, key_dir), tmp_path).start()
    try:
        again.wait_healthy(timeout=60)
        assert httpx.get(f"{again.url}/webpush/key").json()["applicationServerKey"] == server_key
    finally:
        again.__exit__()


def test_a_vapid_key_from_a_secret_wins_and_webpush_is_off_without_one(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()  # fmt: skip
    expected = b64url(
        key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )
    with ServiceProcess(
        "cdb.notifier", {**env(service_env, tmp_path / "unused"), "VAPID_PRIVATE_KEY": pem},
        tmp_path,
    ) as proc:  # fmt: skip
        proc.wait_healthy(timeout=60)
        assert httpx.get(f"{proc.url}/webpush/key").json()["applicationServerKey"] == expected
        assert not (tmp_path / "unused").exists()
        assert "BEGIN EC PRIVATE KEY" not in json.dumps(proc.status())
    bare = {**service_env, "NOTIFY_DAILY_SUMMARY_HOUR": "-1"}
    with ServiceProcess("cdb.notifier", bare, tmp_path) as proc:
        proc.wait_healthy(timeout=60)
        assert httpx.get(f"{proc.url}/webpush/key").status_code == 404
        assert proc.status()["channels"] == [] and proc.status()["webpush"] is False


async def test_a_held_order_reaches_the_browser_with_approve_and_veto_actions(
    bus: Bus, service_env: dict[str, str], push_service: Receiver, tmp_path: Path
) -> None:
    """The payload a console's service worker reads (docs/NOTIFICATIONS.md): the actions,
    the order id and its page; apprise channels get the text. The notifier reads
    ``cdb:approvals`` as its own Redis user; an expired request is not announced."""
    with Receiver() as hook:
        notifier_env = {
            **as_user(env(service_env, tmp_path / "data"), "notifier"),
            "NOTIFY_URLS": f"json://127.0.0.1:{hook.port}/hook",
            "NOTIFY_QUIET_HOURS": "00:00-23:59",  # a held order is not held back
            "NOTIFY_GROUP_WAIT_S": "30",  # nor made to wait for company
        }
        with ServiceProcess("cdb.notifier", notifier_env, tmp_path) as proc:
            proc.wait_healthy(timeout=60)
            browser = Browser(f"{push_service.url}/push/alive")
            reply = httpx.post(
                f"{proc.url}/webpush/subscriptions", json=browser.subscription(), headers=AUTH
            )
            assert reply.status_code == 201, reply.text
            now = time.time()
            order = Order(
                event_id="ord-held-1", order_id="ord-held-1", signal_id="sig-held-1",
                symbol="BTC_USDT", side="long", quantity=0.01, notional=1000.0, price=100000.0,
                stop_loss=98000.0, timestamp=now,
            )  # fmt: skip
            stale = order.model_copy(update={"order_id": "ord-stale", "event_id": "ord-stale"})
            for held, expires in ((stale, now - 1), (order, now + 60)):
                await bus.publish(
                    ApprovalRequest(
                        event_id=f"approval-request-{held.order_id}", order=held,
                        exposure_after_usdt=1000.0, exposure_after_pct=10.0,
                        equity_usdt=10_000.0, reasons=["BTC_USDT +4.2% in 15 min"],
                        expires_at=expires, timestamp=now,
                    )
                )  # fmt: skip
            await eventually_async(
                lambda: len(push_service.accepted("/push/alive")) == 1, timeout=30
            )
            await eventually_async(lambda: len(hook.accepted("/hook")) == 1, timeout=30)
            request = push_service.accepted("/push/alive")[0]
            assert 0 < int(request.headers["ttl"]) <= 60  # not kept past the expiry
            payload = browser.decrypt(request)
            assert payload["kind"] == "approval_request"
            assert payload["actions"] == [
                {"action": "approve", "title": "Approve"},
                {"action": "veto", "title": "Veto"},
            ]
            assert payload["data"] == {
                "order_id": "ord-held-1",
                "url": "/approvals/ord-held-1",
                "expires_at": pytest.approx(now + 60),
            }
            assert payload["title"] == "Approve long BTC_USDT 1000.00 USDT?"
            text = hook.accepted("/hook")[0].json()
            assert "cdb approve ord-held-1" in text["message"]
            assert "BTC_USDT +4.2% in 15 min" in text["message"]
            time.sleep(1)  # the stale one would have gone by now
            assert len(push_service.accepted("/push/alive")) == 1
            assert scalar(service_env, "SELECT count(*) FROM notifications") == 1


def test_a_push_request_is_one_aes128gcm_record_the_browser_reads() -> None:
    """RFC 8291 section 4: one record whose size covers the payload, the sender's
    ephemeral P-256 key as key id; the browser's keys decrypt it, nothing else does."""
    vapid = Vapid()
    vapid.generate_keys()
    browser = Browser("https://push.example.org/send/abc")
    payload = json.dumps({"title": "x" * 3000}).encode()
    request = push_request(
        browser.subscription(), payload, vapid, "mailto:owner@example.org", ttl=60, urgency="low"
    )
    salt, record_size, id_length = request.body[:16], request.body[16:20], request.body[20]
    assert len(salt) == 16 and int.from_bytes(record_size, "big") == 4096
    assert id_length == 65 and request.body[21] == 4  # an uncompressed P-256 point
    assert len(request.body) == 21 + 65 + len(payload) + 1 + 16  # one record: delimiter, tag
    assert request.headers["TTL"] == "60" and request.headers["Urgency"] == "low"
    assert request.headers["Content-Encoding"] == "aes128gcm"
    server_key = application_server_key(vapid)
    sent = Request("/send/abc", {k.lower(): v for k, v in request.headers.items()},
                   request.body, 201)  # fmt: skip
    verify_vapid(sent, server_key, "https://push.example.org")
    assert json.loads(
        http_ece.decrypt(request.body, private_key=browser.key, auth_secret=browser.auth,
                         version="aes128gcm")
    ) == {"title": "x" * 3000}  # fmt: skip

    with pytest.raises(ValueError, match="does not fit one push record"):
        push_request(browser.subscription(), b"x" * 4000, vapid, "mailto:owner@example.org",
                     ttl=60, urgency="low")  # fmt: skip
    for keys, error in (
        ({"p256dh": b64url(b"\x04" * 10), "auth": b64url(browser.auth)}, "not a P-256 point"),
        ({"p256dh": "x", "auth": b64url(browser.auth)}, "not base64url"),
    ):
        with pytest.raises(ValueError, match=error):
            push_request({**browser.subscription(), "keys": keys}, payload, vapid,
                         "mailto:owner@example.org", ttl=60, urgency="low")  # fmt: skip

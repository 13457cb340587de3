"""``cdb notify test`` and ``cdb notify subscribe``: the notifier's HTTP API, for people."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import typer

__all__ = ["build_app"]

NOTIFIER_URL = typer.Option(
    "http://127.0.0.1:8006", envvar="NOTIFIER_URL", help="Where the notifier answers."
)

TOKEN_FILE = typer.Option(
    Path(".cdb/admin.token"),
    help="The admin credential (ADMIN_TOKEN wins if set): the demo's file, or in Kubernetes "
    "`kubectl -n cdb get secret cdb-admin -o jsonpath='{.data.admin-token}' | base64 -d`.",
)

SNIPPET = """\
// In the page's script (a service worker must be registered and show the pushes):
const registration = await navigator.serviceWorker.ready;
const subscription = await registration.pushManager.subscribe({{
  userVisibleOnly: true,
  applicationServerKey: "{key}",
}});
// Registering takes the admin credential, which never goes into a page: save
// JSON.stringify(subscription.toJSON()) to a file and run
//   cdb notify subscribe --subscription FILE
// In the service worker:
self.addEventListener("push", (event) => {{
  const message = event.data.json();
  event.waitUntil(self.registration.showNotification(message.title,
    {{body: message.body, tag: message.tag}}));   // same tag: a resend replaces, never doubles
}});"""


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(1)


def _credential(token_file: Path) -> dict[str, str]:
    """The Authorization header of the notifier's state-changing endpoints."""
    token = os.environ.get("ADMIN_TOKEN", "")
    if not token and token_file.exists():
        token = token_file.read_text().strip()
    if not token:
        raise _fail(f"no admin credential: set ADMIN_TOKEN or --token-file (no {token_file})")
    return {"Authorization": f"Bearer {token}"}


def _states(url: str, key: str) -> dict[str, Any] | None:
    for item in httpx.get(f"{url}/status", timeout=5).json().get("recent", []):
        if item["key"] == key:
            channels: dict[str, Any] = item["channels"]
            return channels
    return None


def test(
    url: str = NOTIFIER_URL,
    timeout: float = typer.Option(60.0, help="Seconds to wait."),
    token_file: Path = TOKEN_FILE,
) -> None:
    """Send a test message to every configured channel and report each one's outcome."""
    headers = _credential(token_file)
    try:
        reply = httpx.post(f"{url}/notify/test", headers=headers, timeout=10)
        reply.raise_for_status()
    except httpx.HTTPError as error:
        raise _fail(f"notifier not reachable at {url}: {error}") from None
    sent = reply.json()
    if not sent["channels"]:
        raise _fail("no channel configured (NOTIFY_URLS, or a VAPID key for WebPush)")
    deadline = time.monotonic() + timeout
    states: dict[str, Any] = {}
    while time.monotonic() < deadline:
        states = _states(url, sent["key"]) or {}
        if states and all(s["status"] != "pending" for s in states.values()):
            break
        time.sleep(0.5)
    failed = False
    for channel in sent["channels"]:
        state = states.get(channel, {"status": "pending", "attempts": 0, "error": ""})
        failed |= state["status"] != "sent"
        why = f" ({state['error']})" if state["error"] else ""
        typer.echo(f"{channel}: {state['status']} after {state['attempts']} attempt(s){why}")
    if failed:
        raise typer.Exit(1)


def subscribe(
    url: str = NOTIFIER_URL,
    subscription: Path | None = typer.Option(
        None, help="A PushSubscription.toJSON() file to register instead of printing."
    ),
    token_file: Path = TOKEN_FILE,
) -> None:
    """Print what a browser needs to subscribe to WebPush (or register a subscription)."""
    try:
        reply = httpx.get(f"{url}/webpush/key", timeout=5)
    except httpx.HTTPError as error:
        raise _fail(f"notifier not reachable at {url}: {error}") from None
    if reply.status_code == 404:
        raise _fail(reply.json().get("detail", "WebPush is off"))
    key = reply.json()["applicationServerKey"]
    if subscription is not None:
        registered = httpx.post(
            f"{url}/webpush/subscriptions",
            json=json.loads(subscription.read_text()),
            headers=_credential(token_file),
            timeout=10,
        )
        if registered.status_code != 201:
            raise _fail(f"refused: {registered.text}")
        typer.echo("subscribed")
        return
    typer.echo(f"applicationServerKey: {key}")
    typer.echo(f"subscribe endpoint:   POST {url}/webpush/subscriptions\n")
    typer.echo(SNIPPET.format(key=key, url=url))


def build_app() -> typer.Typer:
    app = typer.Typer(help="The notifier: test the channels, subscribe a browser.")
    app.command("test")(test)
    app.command("subscribe")(subscribe)
    return app

"""A local HTTP endpoint standing in for a channel beyond the network boundary (a JSON
webhook, a push service): it records every request and can answer 500 for a while, or
hold a request without answering (to kill the sender mid-send)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.credentials import ADMIN_TOKEN
from tests.support.events import FAST_BUS
from tests.support.processes import free_port


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float = field(default_factory=time.time)

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """``answer(request) -> status`` decides each reply (default 200)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.answer: Callable[[Request], int] = lambda request: 200
        self.hold = threading.Event()  # while set, requests on hold_path wait unanswered
        self.hold_path = ""
        self.held = threading.Event()  # set once a request is being held
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                request = Request(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body, 0
                )
                if receiver.hold.is_set() and self.path.startswith(receiver.hold_path):
                    request.status = -1  # received, never answered
                    with receiver.lock:
                        receiver.requests.append(request)
                    receiver.held.set()
                    while receiver.hold.is_set():
                        time.sleep(0.05)
                    return
                request.status = receiver.answer(request)
                with receiver.lock:
                    receiver.requests.append(request)
                self.send_response(request.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def accepted(self, path: str = "") -> list[Request]:
        with self.lock:
            return [r for r in self.requests if 200 <= r.status < 300 and r.path.startswith(path)]

    def all(self, path: str = "") -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(path)]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.hold.clear()
        self.server.shutdown()
        self.server.server_close()


# The token in the receiver's URL: a secret the notifier must never show.
NOTIFY_SECRET = "tok3n-s3cret-abcdef"


def notifier_env(service_env: dict[str, str], receiver: Receiver, **extra: str) -> dict[str, str]:
    """The notifier's environment: quick timers, its one channel this receiver."""
    return {
        **service_env,
        **FAST_BUS,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "NOTIFY_URLS": f"json://127.0.0.1:{receiver.port}/hook/{NOTIFY_SECRET}",
        "NOTIFY_GROUP_WAIT_S": "0.3",
        "NOTIFY_POLL_S": "0.2",
        "NOTIFY_RETRY_BASE_S": "0.3",
        "NOTIFY_RETRY_CAP_S": "2",
        "NOTIFY_DAILY_SUMMARY_HOUR": "-1",
        **extra,
    }

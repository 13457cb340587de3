"""One WebSocket client of the simulator: its subscriptions and its outgoing queue."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

from starlette.websockets import WebSocket

__all__ = ["Session", "Subscription"]

Subscription = tuple[str, str, str]  # (channel, symbol or "", interval or "")

_ids = itertools.count(1)


@dataclass(eq=False)
class Session:
    """A connected client; frames go through ``queue`` to a writer task (bounded)."""

    websocket: WebSocket
    id: int = field(default_factory=lambda: next(_ids))
    subscriptions: set[Subscription] = field(default_factory=set)
    queue: asyncio.Queue[str | bytes | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=20_000)
    )
    last_ping: float = field(default_factory=time.monotonic)
    closing: bool = False

    def offer(self, frame: str | bytes) -> bool:
        """Queue a frame; ``False`` when the client cannot keep up (it gets dropped)."""
        if self.closing:
            return False
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            return False
        return True

    def symbols(self, channel: str) -> set[str]:
        return {symbol for kind, symbol, _ in self.subscriptions if kind == channel}

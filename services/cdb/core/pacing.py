"""Client-side rate limiting: wait for a slot instead of being throttled by the exchange."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator

__all__ = ["RequestPacer"]


class RequestPacer:
    """At most ``limit`` requests per sliding ``window_s``; callers wait for a free slot.

    MEXC counts a request when it *arrives* and answers a burst over its limit with code
    510 and no Retry-After. The client cannot see arrival, only that it happened before the
    reply: so a request holds its slot while in flight and for ``window_s`` after its reply
    (``async with pacer.request(): ...``). A slow first wave (new connections on a loaded
    machine) therefore never overlaps the next wave in MEXC's window. The window defaults
    to 2.2 s for MEXC's "per 2 s" limits.
    """

    def __init__(self, limit: int, window_s: float = 2.2) -> None:
        self.limit = limit
        self.window_s = window_s
        self._done: deque[float] = deque()  # reply times, oldest first
        self._in_flight = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def request(self) -> AsyncIterator[None]:
        async with self._changed:
            while True:
                now = time.monotonic()
                while self._done and self._done[0] <= now - self.window_s:
                    self._done.popleft()
                if self._in_flight + len(self._done) < self.limit:
                    self._in_flight += 1
                    break
                # a slot frees when the oldest reply leaves the window, or a request ends
                wait = self._done[0] + self.window_s - now if self._done else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), wait)
        try:
            yield
        finally:
            async with self._changed:
                self._in_flight -= 1
                self._done.append(time.monotonic())
                self._changed.notify_all()

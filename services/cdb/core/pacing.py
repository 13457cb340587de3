"""Client-side rate limiting: wait for a slot instead of being throttled by the exchange."""

from __future__ import annotations

import asyncio
import time
from collections import deque

__all__ = ["RequestPacer"]


class RequestPacer:
    """At most ``limit`` requests per sliding ``window_s``; callers wait for a free slot.

    MEXC answers a burst over its limit with code 510 and no Retry-After, so the clients
    pace themselves a little below the documented limit (the window defaults to 2.2 s for
    MEXC's "per 2 s" limits).
    """

    def __init__(self, limit: int, window_s: float = 2.2) -> None:
        self.limit = limit
        self.window_s = window_s
        self._sent: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def slot(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                while self._sent and self._sent[0] <= now - self.window_s:
                    self._sent.popleft()
                if len(self._sent) < self.limit:
                    self._sent.append(now)
                    return
                await asyncio.sleep(self._sent[0] + self.window_s - now)

"""MEXC-style request limits: at most ``limit`` requests per ``window_s`` per client and family."""

from __future__ import annotations

from collections import deque

__all__ = ["SlidingWindow"]


class SlidingWindow:
    """A sliding-window counter per key; ``allow`` records the request when it fits."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._hits: dict[tuple[str, str], deque[float]] = {}

    def allow(self, key: tuple[str, str], limit: int, now: float) -> bool:
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if len(hits) >= limit:
            return False
        hits.append(now)
        return True

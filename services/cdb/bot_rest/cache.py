"""A small TTL cache with one fetch in flight per key (no stampede on expiry)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["TtlCache"]

V = TypeVar("V")


class TtlCache(Generic[V]):
    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, V]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(
        self, key: str, ttl_s: float, fetch: Callable[[], Awaitable[V]]
    ) -> tuple[V, bool]:
        """The cached value and ``True``, or a fresh one and ``False``; errors are not cached."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] > time.monotonic():
                return entry[1], True
            value = await fetch()
            if ttl_s > 0:
                if len(self._entries) >= self.max_entries:
                    self._entries.pop(next(iter(self._entries)))
                self._entries[key] = (time.monotonic() + ttl_s, value)
            return value, False

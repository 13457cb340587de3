"""The one way a test waits for something: ``eventually``.

A check is called until it returns something truthy, which ``eventually`` returns. An
AssertionError, a lookup or parse error, or an I/O error of HTTP, Redis or PostgreSQL
counts as "not yet" (a server still starting, a row not yet written), not as a failure.
After ``timeout`` seconds it fails naming ``what`` and the last result or error, so the
failure says what never happened. Time is never the thing tested: a timeout only bounds
how long a test waits for an outcome that the assertions after it then check.

``eventually`` blocks (for tests whose servers are other processes); ``eventually_async``
is the same poll for async tests that must keep their event loop running while they wait
(an in-process consumer, an async client): its check may return an awaitable.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import psycopg
import redis

T = TypeVar("T")

NOT_YET: tuple[type[BaseException], ...] = (
    AssertionError,
    KeyError,
    ValueError,
    httpx.HTTPError,
    OSError,
    psycopg.Error,
    redis.RedisError,
)


class _Poll:
    """The deadline and the last outcome of one wait."""

    def __init__(self, what: str, timeout: float) -> None:
        self.what = what
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.last: Any = None

    def record(self, result: Any) -> bool:
        self.last = result
        return bool(result)

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def failure(self) -> AssertionError:
        return AssertionError(
            f"timed out after {self.timeout:g} s waiting for {self.what or 'the check'};"
            f" last: {self.last!r}"
        )


def eventually(
    check: Callable[[], T], what: str = "", timeout: float = 60.0, every: float = 0.1
) -> T:
    """Call ``check`` until it returns something truthy and return that (see the module)."""
    poll = _Poll(what, timeout)
    while True:
        try:
            if poll.record(check()):
                return poll.last  # type: ignore[no-any-return]
        except NOT_YET as error:
            poll.last = error
        if poll.expired():
            raise poll.failure()
        time.sleep(every)


async def eventually_async(
    check: Callable[[], T | Awaitable[T]],
    what: str = "",
    timeout: float = 60.0,
    every: float = 0.1,
) -> T:
    """``eventually`` without blocking the event loop; ``check`` may be async."""
    poll = _Poll(what, timeout)
    while True:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if poll.record(result):
                return poll.last  # type: ignore[no-any-return]
        except NOT_YET as error:
            poll.last = error
        if poll.expired():
            raise poll.failure()
        await asyncio.sleep(every)

"""The REST pacer: a slot is held while its request is in flight and for the window after
its reply, because MEXC counts a request when it arrives, which the client only knows
happened before the reply."""

from __future__ import annotations

import asyncio
import contextlib
import time

from cdb.core.pacing import RequestPacer


async def test_a_slot_is_held_in_flight_and_for_the_window_after_the_reply() -> None:
    pacer = RequestPacer(limit=2, window_s=0.3)
    replies = [asyncio.Event(), asyncio.Event()]
    started: dict[str, float] = {}
    replied: dict[str, float] = {}

    async def call(name: str, reply: asyncio.Event | None) -> None:
        async with pacer.request():
            started[name] = time.monotonic()
            if reply is not None:
                await reply.wait()
        replied[name] = time.monotonic()

    slow = [asyncio.create_task(call(f"slow{i}", replies[i])) for i in range(2)]
    await asyncio.sleep(0)
    third = asyncio.create_task(call("third", None))
    # both slots are in flight far longer than the window: the third must not start
    done, _ = await asyncio.wait({third}, timeout=0.6)
    assert not done and "third" not in started
    replies[0].set()
    await asyncio.wait_for(third, 5)
    # it started no earlier than one window after the first reply, never at the send time
    assert started["third"] >= replied["slow0"] + 0.3
    replies[1].set()
    await asyncio.gather(*slow)


async def test_requests_within_the_limit_do_not_wait_and_a_failed_one_frees_its_slot() -> None:
    pacer = RequestPacer(limit=3, window_s=60.0)
    began = time.monotonic()
    for _ in range(2):
        async with pacer.request():
            pass
    try:
        async with pacer.request():
            raise ConnectionError("MEXC unreachable")
    except ConnectionError:
        pass
    assert time.monotonic() - began < 30  # three slots of a 60 s window: none waited
    fourth = asyncio.create_task(pacer.request().__aenter__())
    done, _ = await asyncio.wait({fourth}, timeout=0.3)
    assert not done  # the failed request counted too: MEXC may have seen it
    fourth.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await fourth

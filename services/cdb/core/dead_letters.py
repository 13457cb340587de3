"""What the bus gave up on: read ``cdb:dead_letter`` and put an entry back, once.

Every dead letter keeps the stream, group, consumer, original entry id, event id, reason,
payload and time (see :meth:`cdb.core.bus.Consumer`). A replay validates the payload
against the event model of its stream and appends it to that stream again, atomically
with a mark in ``cdb:dead_letter:replayed`` (event id → new entry id): a second replay of
the same event id does nothing and says so. Consumers that handled the event before skip
it by its id; every money-path effect is keyed by its id in PostgreSQL as well.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from cdb.core.bus import PAYLOAD_FIELD, Bus
from cdb.core.events import STREAMS, Stream

__all__ = [
    "DeadLetter",
    "DeadLetterReader",
    "ReplayError",
    "ReplayOutcome",
    "list_letters",
    "replay",
    "show",
]

REPLAYED_KEY = "cdb:dead_letter:replayed"

# Check, append and mark in one step, so two operators replaying at once publish once.
_REPLAY_SCRIPT = """
local done = redis.call('HGET', KEYS[1], ARGV[1])
if done then return {0, done} end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', ARGV[4], ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], id)
return {1, id}
"""


class ReplayError(Exception):
    """A dead letter that cannot be replayed, with the reason."""


@dataclass(frozen=True)
class DeadLetter:
    letter_id: str
    stream: str
    group: str
    consumer: str
    entry_id: str
    event_id: str
    reason: str
    payload: bytes
    at: float
    replayed_as: str | None = None

    def as_dict(self, *, with_payload: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.letter_id,
            "at": self.at,
            "at_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.at)),
            "stream": self.stream,
            "group": self.group,
            "consumer": self.consumer,
            "entry_id": self.entry_id,
            "event_id": self.event_id,
            "reason": self.reason,
            "replayed_as": self.replayed_as,
        }
        if with_payload:
            try:
                data["payload"] = json.loads(self.payload)
            except ValueError:
                data["payload"] = self.payload.decode(errors="replace")
        return data


@dataclass(frozen=True)
class ReplayOutcome:
    letter: DeadLetter
    published: bool
    entry_id: str


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _event_id(fields: dict[bytes, bytes]) -> str:
    """The event id as recorded, else from the payload (letters written before it was)."""
    recorded = _text(fields.get(b"event_id", b""))
    if recorded:
        return recorded
    try:
        value = json.loads(fields.get(b"payload", b"")).get("event_id", "")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def _letter(letter_id: Any, fields: dict[bytes, bytes], replayed: str | None) -> DeadLetter:
    try:
        at = float(_text(fields.get(b"ts", b"0")))
    except ValueError:
        at = 0.0
    return DeadLetter(
        letter_id=_text(letter_id),
        stream=_text(fields.get(b"stream", b"")),
        group=_text(fields.get(b"group", b"")),
        consumer=_text(fields.get(b"consumer", b"")),
        entry_id=_text(fields.get(b"entry_id", b"")),
        event_id=_event_id(fields),
        reason=_text(fields.get(b"reason", b"")),
        payload=fields.get(b"payload", b""),
        at=at,
        replayed_as=replayed,
    )


async def _replayed(redis: Redis, event_ids: list[str]) -> dict[str, str]:
    ids = [e for e in event_ids if e]
    if not ids:
        return {}
    values: Any = await redis.hmget(REPLAYED_KEY, ids)
    return {e: _text(v) for e, v in zip(ids, values, strict=True) if v is not None}


async def list_letters(redis: Redis, *, stream: str = "", limit: int = 50) -> list[DeadLetter]:
    """The newest ``limit`` dead letters (of ``stream`` if given), oldest first."""
    found: list[tuple[Any, dict[bytes, bytes]]] = []
    cursor = "+"
    while len(found) < limit:
        batch: Any = await redis.xrevrange(Stream.DEAD_LETTER.value, max=cursor, count=500)
        if not batch:
            break
        for letter_id, fields in batch:
            if not stream or _text(fields.get(b"stream", b"")) == stream:
                found.append((letter_id, fields))
        cursor = "(" + _text(batch[-1][0])  # exclusive: older than the last one read
        if len(batch) < 500:
            break
    found = found[:limit]
    replayed = await _replayed(redis, [_event_id(f) for _, f in found])
    letters = [_letter(i, f, replayed.get(_event_id(f))) for i, f in found]
    return list(reversed(letters))


async def show(redis: Redis, letter_id: str) -> DeadLetter:
    entries: Any = await redis.xrange(Stream.DEAD_LETTER.value, min=letter_id, max=letter_id)
    if not entries:
        raise ReplayError(f"no dead letter {letter_id} in {Stream.DEAD_LETTER.value}")
    fields = entries[0][1]
    replayed = await _replayed(redis, [_event_id(fields)])
    return _letter(entries[0][0], fields, replayed.get(_event_id(fields)))


async def replay(redis: Redis, letter_id: str, *, max_len: int = 100_000) -> ReplayOutcome:
    """Put the event of dead letter ``letter_id`` back on its stream, once per event id."""
    letter = await show(redis, letter_id)
    models = {stream.value: model for model, stream in STREAMS.items()}
    model = models.get(letter.stream)
    if model is None:
        raise ReplayError(f"dead letter {letter_id}: unknown stream {letter.stream!r}")
    try:
        event = model.model_validate_json(letter.payload)
    except (ValidationError, ValueError) as error:
        raise ReplayError(
            f"dead letter {letter_id}: its payload is no valid {model.__name__}, so a replay"
            f" would be dead-lettered again ({str(error).splitlines()[0]})"
        ) from None
    reply: Any = await redis.eval(
        _REPLAY_SCRIPT,
        2,
        REPLAYED_KEY,
        letter.stream,
        event.event_id,
        letter.payload,
        str(max_len),
        PAYLOAD_FIELD,
    )
    return ReplayOutcome(letter, published=bool(int(reply[0])), entry_id=_text(reply[1]))


class DeadLetterReader:
    """New dead letters in a consumer group of ``cdb:dead_letter`` (a watcher such as the
    notifier): first what this consumer read and did not acknowledge before a crash, then
    new ones; acknowledge each after its effect. The group starts at the stream's end and
    is made again if the stream vanished."""

    def __init__(self, bus: Bus, group: str, consumer: str, block_ms: int = 1000) -> None:
        self.bus = bus
        self.group = group
        self.consumer = consumer
        self.block_ms = block_ms
        self.cursor = "0"

    async def ensure_group(self) -> None:
        await self.bus.ensure_group(Stream.DEAD_LETTER, self.group, "$")

    async def batch(self, count: int = 50) -> list[DeadLetter]:
        try:
            reply: Any = await self.bus.redis.xreadgroup(
                self.group, self.consumer, {Stream.DEAD_LETTER.value: self.cursor}, count=count,
                block=None if self.cursor == "0" else self.block_ms,
            )  # fmt: skip
        except redis_errors.ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            await self.ensure_group()
            return []
        entries = reply[0][1] if reply else []
        if self.cursor == "0" and not entries:
            self.cursor = ">"
        return [_letter(entry_id, fields or {}, None) for entry_id, fields in entries]

    async def ack(self, letter: DeadLetter) -> None:
        await self.bus.redis.xack(Stream.DEAD_LETTER.value, self.group, letter.letter_id)

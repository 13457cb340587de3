"""MEXC contract WebSocket frames: requests we send, and every server frame parsed to a model.

Pure: text in, model out. Anything that is not a frame we understand raises
:class:`MalformedFrame` (counted and logged by the caller, never a crash); a well-formed
frame on a channel we do not use comes back as :class:`OtherFrame`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "Ack",
    "DealPush",
    "DealRow",
    "ErrorReply",
    "KlinePush",
    "KlineRow",
    "MalformedFrame",
    "OtherFrame",
    "Pong",
    "ServerFrame",
    "TickerPush",
    "TickerRow",
    "TickersPush",
    "exchange_time",
    "parse_frame",
    "ping_request",
    "sub_request",
    "unsub_request",
]


class MalformedFrame(ValueError):
    """A frame that is not valid MEXC JSON: truncated, garbage, wrong types, binary."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class DealRow(_Model):
    """A trade: ``p`` price, ``v`` contracts, ``T`` 1 buy / 2 sell, ``t`` ms, ``i`` id."""

    p: float = Field(gt=0, allow_inf_nan=False)
    v: float = Field(ge=0, allow_inf_nan=False)
    T: int = 0
    O: int = 0  # noqa: E741 (MEXC's field name)
    M: int = 0
    t: int = Field(ge=0)
    i: str | int | None = None

    def sequence(self) -> int:
        """The trade id as a number (tie-break for equal times); 0 when absent."""
        if isinstance(self.i, int):
            return self.i
        return int(self.i) if self.i and self.i.isascii() and self.i.isdecimal() else 0


class TickerRow(_Model):
    symbol: str
    lastPrice: float = Field(gt=0, allow_inf_nan=False)
    volume24: float = 0.0
    amount24: float = 0.0
    riseFallRate: float = 0.0
    timestamp: int = 0
    bid1: float | None = None
    ask1: float | None = None


class KlineRow(_Model):
    """A push.kline bar: ``t`` start in seconds, ``q`` contracts, ``a`` quote turnover."""

    symbol: str | None = None
    interval: str
    t: int = Field(ge=0)
    o: float
    h: float
    l: float  # noqa: E741
    c: float
    q: float = 0.0
    a: float = 0.0
    ro: float | None = None
    rh: float | None = None
    rl: float | None = None
    rc: float | None = None


class Pong(_Model):
    kind: Literal["pong"] = "pong"
    server_ms: int


class Ack(_Model):
    kind: Literal["ack"] = "ack"
    method: str
    ts: int


class ErrorReply(_Model):
    kind: Literal["error"] = "error"
    message: str
    ts: int


class DealPush(_Model):
    kind: Literal["deal"] = "deal"
    symbol: str
    ts: int
    deals: tuple[DealRow, ...]


class TickerPush(_Model):
    kind: Literal["ticker"] = "ticker"
    symbol: str
    ts: int
    ticker: TickerRow


class TickersPush(_Model):
    kind: Literal["tickers"] = "tickers"
    ts: int
    rows: tuple[TickerRow, ...]


class KlinePush(_Model):
    kind: Literal["kline"] = "kline"
    symbol: str
    ts: int
    kline: KlineRow


class OtherFrame(_Model):
    kind: Literal["other"] = "other"
    channel: str
    ts: int | None = None


ServerFrame = Pong | Ack | ErrorReply | DealPush | TickerPush | TickersPush | KlinePush | OtherFrame


def exchange_time(frame: ServerFrame) -> int | None:
    """The exchange time (ms) a frame carries: its ``ts``, or a pong's server time."""
    return frame.server_ms if isinstance(frame, Pong) else frame.ts


# Exchange times in ms from 2015 to 2100: a time in seconds or microseconds, or a
# non-finite number, would move the screener's clock by years (and close a candle for
# every minute in between), so it is a malformed frame, not a time.
MIN_EXCHANGE_MS = 1_420_070_400_000
MAX_EXCHANGE_MS = 4_102_444_800_000


def _exchange_ms(raw: Any, what: str) -> int:
    if isinstance(raw, bool) or raw is None:
        raise MalformedFrame(f"frame without {what}")
    try:
        value = int(raw)  # the docs quote ts as a string, the wire sends an integer
    except (TypeError, ValueError, OverflowError):
        raise MalformedFrame(f"bad {what} {raw!r}") from None
    if not MIN_EXCHANGE_MS <= value <= MAX_EXCHANGE_MS:
        raise MalformedFrame(f"{what} {value} is not a time in ms between 2015 and 2100")
    return value


def _ts(body: dict[str, Any]) -> int:
    return _exchange_ms(body.get("ts"), "ts")


def parse_frame(payload: str | bytes) -> ServerFrame:
    """One server frame → its model; raises :class:`MalformedFrame` with the reason."""
    if isinstance(payload, bytes):
        raise MalformedFrame(f"binary frame ({len(payload)} bytes); MEXC sends text")
    try:
        body = json.loads(payload)
    except json.JSONDecodeError as error:
        raise MalformedFrame(f"not JSON: {error.msg} at {error.pos}") from None
    if not isinstance(body, dict):
        raise MalformedFrame("frame is not a JSON object")
    channel = body.get("channel")
    if not isinstance(channel, str):
        raise MalformedFrame("frame without channel")
    data = body.get("data")
    try:
        if channel == "push.deal":
            rows = data if isinstance(data, list) else [data]  # object before 2025, array since
            return DealPush(
                symbol=_symbol(body, None),
                ts=_ts(body),
                deals=tuple(DealRow.model_validate(row) for row in rows),
            )
        if channel == "push.kline":
            kline = KlineRow.model_validate(data)
            return KlinePush(symbol=_symbol(body, kline.symbol), ts=_ts(body), kline=kline)
        if channel == "push.ticker":
            ticker = TickerRow.model_validate(data)
            return TickerPush(symbol=_symbol(body, ticker.symbol), ts=_ts(body), ticker=ticker)
        if channel == "push.tickers":
            if not isinstance(data, list):
                raise MalformedFrame("push.tickers data is not an array")
            return TickersPush(
                ts=_ts(body), rows=tuple(TickerRow.model_validate(row) for row in data)
            )
        if channel == "pong":
            if isinstance(data, bool) or not isinstance(data, int | str):
                raise MalformedFrame("pong without server time")
            return Pong(server_ms=_exchange_ms(data, "pong server time"))
        if channel == "rs.error":
            return ErrorReply(message=str(data), ts=_ts(body))
        if channel.startswith("rs."):
            return Ack(method=channel.removeprefix("rs."), ts=_ts(body))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MalformedFrame(f"{channel}: {where}: {first['msg']}") from None
    except (TypeError, ValueError, OverflowError) as error:
        raise MalformedFrame(f"{channel}: {error}") from None
    ts = body.get("ts")
    return OtherFrame(channel=channel, ts=ts if isinstance(ts, int) else None)


def _symbol(body: dict[str, Any], fallback: str | None) -> str:
    symbol = body.get("symbol", fallback)
    if not isinstance(symbol, str) or not symbol:
        raise MalformedFrame("push without symbol")
    return symbol


def _request(method: str, param: dict[str, str]) -> str:
    return json.dumps({"method": method, "param": param}, separators=(",", ":"))


def ping_request() -> str:
    return '{"method":"ping"}'


def sub_request(channel: str, symbol: str | None = None, **extra: str) -> str:
    """``sub.deal``/``sub.kline``/… for one contract (MEXC: one contract per frame)."""
    param = {"symbol": symbol, **extra} if symbol else {}
    return _request(f"sub.{channel}", param)


def unsub_request(channel: str, symbol: str | None = None, **extra: str) -> str:
    param = {"symbol": symbol, **extra} if symbol else {}
    return _request(f"unsub.{channel}", param)

"""bot_ws's pure parts: frame parsing, chunking, candles (hypothesis), the window and top-5."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdb.bot_ws.candles import ClosedCandle, SymbolCandles
from cdb.bot_ws.chunks import chunk_symbols, index_from_name, pod_chunks, served_chunks
from cdb.bot_ws.connection import Subscribing
from cdb.bot_ws.frames import (
    Ack,
    DealPush,
    DealRow,
    ErrorReply,
    KlinePush,
    MalformedFrame,
    OtherFrame,
    Pong,
    ServerFrame,
    TickerPush,
    TickersPush,
    parse_frame,
    sub_request,
)
from cdb.bot_ws.screener import ClockBounds, FrameTimeJump, Screener
from cdb.bot_ws.settings import BotWsSettings
from cdb.bot_ws.window import WindowStat, top_movers, window_stat
from cdb.core.config import ConfigError, load_settings

# ----- frames: the documented and captured examples of MEXC_PROTOCOL.md -----------------

DOC_EXAMPLES: list[tuple[str, type]] = [
    ('{"channel":"pong","data":1587453241453}', Pong),  # doc: no ts
    ('{"channel":"pong","data":1758000000000,"ts":1758000000000}', Pong),  # wire: ts
    ('{"channel":"rs.sub.deal","data":"success","ts":"1587442022003"}', Ack),  # doc: string ts
    ('{"channel":"rs.sub.kline","data":"success","ts":1758000000000}', Ack),  # wire: integer
    (
        '{"channel":"rs.error","data":"Contract [NOPE_USDT] not exists","ts":1758000000000}',
        ErrorReply,
    ),
    (
        '{"channel":"push.deal","data":{"M":1,"O":1,"T":1,"p":6866.5,"t":1587442049632,"v":2096},'
        '"symbol":"BTC_USDT","ts":1587442049632}',
        DealPush,
    ),  # 2022: one object
    (
        '{"symbol":"BTC_USDT","data":[{"p":115309.8,"v":55,"T":2,"O":3,"M":2,"t":1758000000123,'
        '"i":"13064218826","cts":"1758000000124"}],"channel":"push.deal","ts":1758000000130}',
        DealPush,
    ),  # 2025+: an array, string id, symbol first
    (
        '{"channel":"push.ticker","data":{"ask1":6866.5,"bid1":6865,"contractId":1,'
        '"fairPrice":6867.4,"fundingRate":0.0008,"high24Price":7223.5,"indexPrice":6861.6,'
        '"lastPrice":6865.5,"lower24Price":6756,"maxBidPrice":7073.42,"minAskPrice":6661.37,'
        '"riseFallRate":-0.0424,"riseFallValue":-304.5,"symbol":"BTC_USDT",'
        '"timestamp":1587442022003,"holdVol":2284742,"volume24":164586129},'
        '"symbol":"BTC_USDT","ts":1587442022003}',
        TickerPush,
    ),
    (
        '{"channel":"push.tickers","data":[{"symbol":"BTC_USDT","lastPrice":6.106243567181E4,'
        '"riseFallRate":0.01,"fairPrice":61060,"indexPrice":61058,"volume24":1.2E7,'
        '"amount24":7.548E+4,"maxBidPrice":67000,"minAskPrice":55000,"lower24Price":60000,'
        '"high24Price":62000,"timestamp":1758000000000}],"ts":1758000000001}',
        TickersPush,
    ),
    (
        '{"channel":"push.kline","data":{"a":233.740269343644737245,"c":6885,"h":6910.5,'
        '"interval":"Min60","l":6885,"o":6894.5,"q":1611754,"symbol":"BTC_USDT",'
        '"t":1587448800},"symbol":"BTC_USDT","ts":1587442022003}',
        KlinePush,
    ),
    (
        '{"symbol":"BTC_USDT","data":{"symbol":"BTC_USDT","interval":"Min1","t":1758000000,'
        '"o":1,"c":2,"h":2,"l":1,"a":30,"q":20,"ro":1.1,"rc":2,"rh":2,"rl":1.1},'
        '"channel":"push.kline","ts":1758000000500}',
        KlinePush,
    ),
    ('{"symbol":"BTC_USDT","data":{},"channel":"push.depth","ts":1}', OtherFrame),
]


@pytest.mark.parametrize(("text", "kind"), DOC_EXAMPLES)
def test_documented_frames_parse(text: str, kind: type) -> None:
    frame = parse_frame(text)
    assert isinstance(frame, kind)
    if isinstance(frame, DealPush):
        assert frame.symbol == "BTC_USDT" and len(frame.deals) == 1 and frame.deals[0].p > 0
    if isinstance(frame, Ack):
        assert frame.ts in (1587442022003, 1758000000000)


def test_deal_values_and_trade_id() -> None:
    frame = parse_frame(DOC_EXAMPLES[6][0])
    assert isinstance(frame, DealPush)
    deal = frame.deals[0]
    assert (deal.p, deal.v, deal.T, deal.t, deal.sequence()) == (
        115309.8,
        55,
        2,
        1758000000123,
        13064218826,
    )


@pytest.mark.parametrize(
    "payload",
    [
        '{"symbol":"BTC_USDT","data":[{"p":1.0,"v":1,"T":1,"O":1,"M":2,"t":17',  # truncated
        "\x00not json{",
        '{"symbol":"BTC_USDT","data":[{"p":"abc","v":null}],"channel":"push.deal","ts":1758000000500}',
        '{"symbol":"BTC_USDT","data":[{"p":-5,"v":1,"t":1}],"channel":"push.deal","ts":1758000000500}',
        '{"data":[{"p":5,"v":1,"t":1}],"channel":"push.deal","ts":1758000000500}',  # no symbol
        '{"data":"success"}',  # no channel
        "[1, 2]",
        '{"channel":"push.tickers","data":{},"ts":1758000000500}',
        '{"channel":"push.deal","symbol":"BTC_USDT","data":[]}',  # no ts
        b"\x1f\x8b\x08\x00binary",
        # times that would move the clock by years, or crash int()
        '{"symbol":"BTC_USDT","data":[],"channel":"push.deal","ts":1e999}',
        '{"symbol":"BTC_USDT","data":[],"channel":"push.deal","ts":1758000000500000}',  # µs
        '{"symbol":"BTC_USDT","data":[],"channel":"push.deal","ts":1758000000}',  # s
        '{"channel":"pong","data":1e999}',
        '{"channel":"pong","data":"Infinity"}',
        '{"channel":"rs.sub.deal","data":"success","ts":-1}',
    ],
)
def test_malformed_frames_raise_a_clear_error(payload: str | bytes) -> None:
    with pytest.raises(MalformedFrame) as caught:
        parse_frame(payload)
    assert str(caught.value)


def test_a_trade_id_of_non_ascii_digits_is_no_sequence() -> None:
    frame = parse_frame(
        '{"symbol":"BTC_USDT","data":[{"p":1.5,"v":1,"T":1,"t":1758000000123,"i":"\u00b2"}],'
        '"channel":"push.deal","ts":1758000000500}'
    )
    assert isinstance(frame, DealPush) and frame.deals[0].sequence() == 0


def test_requests_are_mexc_shaped() -> None:
    assert json.loads(sub_request("deal", "BTC_USDT")) == {
        "method": "sub.deal",
        "param": {"symbol": "BTC_USDT"},
    }
    assert json.loads(sub_request("kline", "BTC_USDT", interval="Min1"))["param"] == {
        "symbol": "BTC_USDT",
        "interval": "Min1",
    }


# ----- chunking and pods --------------------------------------------------------------


def test_450_symbols_at_200_make_three_chunks() -> None:
    symbols = [f"C{i:04d}_USDT" for i in range(450)]
    chunks = chunk_symbols(symbols, 200)
    assert [len(c) for c in chunks] == [200, 200, 50]
    assert [s for c in chunks for s in c] == symbols
    assert pod_chunks(chunks, 1, 2) == [chunks[1]]
    assert pod_chunks(chunks, 0, 2) == [chunks[0], chunks[2]]
    assert [len(pod_chunks(chunks, i, 3)) for i in range(3)] == [1, 1, 1]
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_symbols(symbols, 201)
    with pytest.raises(ValueError, match="chunk index"):
        pod_chunks(chunks, 3, 3)


def test_pods_whose_contract_snapshots_differ_still_split_the_list_alike() -> None:
    """C0001 was delisted between the start-ups of pod 0 and pod 1: pod 0 still serves it,
    pod 1 (which no longer sees it) does not shift its own chunk by one."""
    listed = [f"C{i:04d}_USDT" for i in range(6)]
    before = set(listed)
    after = before - {"C0001_USDT"}
    pod0 = served_chunks(listed, before, 3, 0, 2)
    pod1 = served_chunks(listed, after, 3, 1, 2)
    assert pod0 == [listed[0:3]]
    assert pod1 == [listed[3:6]]  # filtering first gave pod 1 C0004, C0005: C0003 unserved
    assert served_chunks(listed, after, 3, 0, 2) == [["C0000_USDT", "C0002_USDT"]]
    assert served_chunks(listed, {"C0000_USDT"}, 3, 1, 2) == []  # no empty socket


def test_pod_index_from_statefulset_name() -> None:
    assert index_from_name("bot-ws-3") == 3
    assert index_from_name("bot-ws") == 0
    base = {"redis_password": "x"}
    assert load_settings(BotWsSettings, **base, pod_name="bot-ws-2", chunk_count=3).pod_index() == 2
    assert load_settings(BotWsSettings, **base, chunk_index=1, chunk_count=2).pod_index() == 1
    with pytest.raises(ConfigError, match="CHUNK_COUNT"):
        load_settings(BotWsSettings, **base, chunk_index=2, chunk_count=2)
    with pytest.raises(ConfigError, match="CHUNK_SIZE"):
        load_settings(BotWsSettings, **base, chunk_size=201)
    with pytest.raises(ConfigError, match="LOOKBACK_MIN"):
        load_settings(BotWsSettings, **base, lookback_min=0)


# ----- the window and the movers ------------------------------------------------------

T0 = 1_767_225_600


def candle(symbol: str, minute: int, open_: float, close: float, turnover: float) -> ClosedCandle:
    hi, lo = max(open_, close), min(open_, close)
    return ClosedCandle(symbol, T0 + 60 * minute, open_, hi, lo, close, 1.0, turnover)


def test_top5_gainers_and_losers_match_a_hand_computed_window() -> None:
    # lookback 3 minutes ending at minute 5: minutes 3, 4, 5 count; minute 2 does not.
    opens_and_last = {
        "AAA_USDT": (100.0, 110.0),  # +10 %
        "BBB_USDT": (50.0, 51.0),  # +2 %
        "CCC_USDT": (10.0, 10.5),  # +5 %
        "DDD_USDT": (200.0, 206.0),  # +3 %
        "EEE_USDT": (1.0, 1.01),  # +1 %
        "FFF_USDT": (4.0, 4.04),  # +1 % (tie with EEE: alphabetical)
        "GGG_USDT": (80.0, 72.0),  # -10 %
        "HHH_USDT": (20.0, 19.0),  # -5 %
        "III_USDT": (30.0, 30.0),  # 0: neither
    }
    stats = []
    for symbol, (open_, last) in opens_and_last.items():
        closed = [
            candle(symbol, 2, open_ * 3, open_, 999.0),  # outside the window
            candle(symbol, 3, open_, open_, 100.0),
            candle(symbol, 4, open_, last, 200.0),
        ]
        stat = window_stat(symbol, closed, {}, last, T0 + 5 * 60, 3)
        assert stat is not None
        assert stat.volume == 300.0
        stats.append(stat)
    gainers, losers = top_movers(stats, 5)
    assert [s.symbol for s in gainers] == [
        "AAA_USDT",
        "CCC_USDT",
        "DDD_USDT",
        "BBB_USDT",
        "EEE_USDT",
    ]
    assert [round(s.pct_change, 6) for s in gainers] == [10.0, 5.0, 3.0, 2.0, 1.0]
    assert [s.symbol for s in losers] == ["GGG_USDT", "HHH_USDT"]
    assert [round(s.pct_change, 6) for s in losers] == [-10.0, -5.0]


def test_window_counts_the_running_minute_and_ignores_empty_symbols() -> None:
    candles = SymbolCandles("AAA_USDT")
    candles.connected((T0 - 60) * 1000, T0 - 60)
    candles.apply_backfill([candle("AAA_USDT", -1, 9.0, 10.0, 5.0)], T0 - 60)
    candles.trusted_from = T0  # as after a connect in minute -1
    candles.add_deal(10.0, 3.0, T0 * 1000 + 10)
    candles.add_deal(12.0, 1.0, T0 * 1000 + 20)
    stat = window_stat("AAA_USDT", [], candles.open_bars(), 12.0, T0, 15)
    assert stat == WindowStat("AAA_USDT", 12.0, pytest.approx(20.0), 42.0)
    assert window_stat("BBB_USDT", [], {}, None, T0, 15) is None


# ----- candles: properties over minute boundaries and out-of-order deals ---------------

Deal = tuple[int, float, float, int]  # (t_ms, price, contracts, id)
GRACE = 2_000
MINUTES = 4


@st.composite
def deals_and_arrival(draw: Any) -> tuple[list[Deal], list[tuple[int, int]]]:
    count = draw(st.integers(min_value=0, max_value=60))
    times = draw(
        st.lists(
            st.integers(min_value=0, max_value=MINUTES * 60_000 - 1),
            min_size=count,
            max_size=count,
        )
    )
    prices = draw(st.lists(st.integers(1, 5000), min_size=count, max_size=count))
    sizes = draw(st.lists(st.integers(1, 100), min_size=count, max_size=count))
    deals = [
        (T0 * 1000 + t, p / 10, float(v), i + 1)
        for i, (t, p, v) in enumerate(zip(times, prices, sizes, strict=True))
    ]
    # each deal reaches us up to GRACE ms after its trade time, in any order
    delays = draw(st.lists(st.integers(0, GRACE - 1), min_size=count, max_size=count))
    arrival = sorted((deals[k][0] + delays[k], k) for k in range(count))
    return deals, arrival  # (arrival time = the frame's ts, deal index)


def reference(deals: list[Deal], before: float) -> list[ClosedCandle]:
    """Grouped by minute, ordered by trade time then id; empty minutes flat."""
    out = []
    last = before
    for m in range(MINUTES):
        start = (T0 + 60 * m) * 1000
        mine = sorted(
            (d for d in deals if start <= d[0] < start + 60_000), key=lambda d: (d[0], d[3])
        )
        if mine:
            prices = [d[1] for d in mine]
            out.append(
                ClosedCandle(
                    "X_USDT",
                    T0 + 60 * m,
                    prices[0],
                    max(prices),
                    min(prices),
                    prices[-1],
                    sum(d[2] for d in mine),
                    sum(d[2] * 0.5 * d[1] for d in mine),
                )
            )
            last = prices[-1]
        else:
            out.append(
                ClosedCandle("X_USDT", T0 + 60 * m, last, last, last, last, 0.0, 0.0, "flat")
            )
    return out


def connected_builder() -> SymbolCandles:
    """Connected in the minute before T0, that minute backfilled from REST (close 100)."""
    builder = SymbolCandles("X_USDT", contract_size=0.5, grace_ms=GRACE)
    builder.connected((T0 - 30) * 1000, T0 - 60)
    backfilled = builder.apply_backfill(
        [ClosedCandle("X_USDT", T0 - 60, 99.0, 101.0, 98.0, 100.0, 5.0, 250.0, "rest")], T0 - 60
    )
    assert [c.open_time for c in backfilled] == [T0 - 60]
    return builder


def same(got: list[ClosedCandle], want: list[ClosedCandle]) -> None:
    assert [(c.open_time, c.open, c.high, c.low, c.close, c.volume, c.source) for c in got] == [
        (c.open_time, c.open, c.high, c.low, c.close, c.volume, c.source) for c in want
    ]
    for mine, theirs in zip(got, want, strict=True):
        assert mine.turnover == pytest.approx(theirs.turnover)


@settings(max_examples=200, deadline=None)
@given(deals_and_arrival())
def test_candles_from_out_of_order_deals_match_the_sorted_reference(
    case: tuple[list[Deal], list[tuple[int, int]]],
) -> None:
    deals, arrival = case
    builder = connected_builder()
    closed: list[ClosedCandle] = []
    for pushed_at, k in arrival:
        t, price, size, ident = deals[k]
        assert builder.add_deal(price, size, t, ident)  # within the grace: never late
        closed += builder.close_due(pushed_at)  # the exchange clock: this frame's ts
    closed += builder.close_due((T0 + 60 * MINUTES) * 1000 + GRACE)
    same(closed, reference(deals, 100.0))
    assert [c.open_time for c in closed] == [T0 + 60 * m for m in range(MINUTES)]


@settings(max_examples=100, deadline=None)
@given(deals_and_arrival(), st.integers(0, MINUTES - 1))
def test_late_deals_are_refused_and_change_nothing(
    case: tuple[list[Deal], list[tuple[int, int]]], late_minute: int
) -> None:
    deals, _ = case
    builder = connected_builder()
    for t, price, size, ident in sorted(deals):
        builder.add_deal(price, size, t, ident)
    closed = builder.close_due((T0 + 60 * MINUTES) * 1000 + GRACE)
    late_t = (T0 + 60 * late_minute) * 1000 + 5
    assert builder.add_deal(123.0, 7.0, late_t, 10**9) is False
    assert builder.late_deals == 1
    assert builder.close_due((T0 + 60 * (MINUTES + 5)) * 1000) == [
        ClosedCandle("X_USDT", T0 + 60 * (MINUTES + m), c, c, c, c, 0.0, 0.0, "flat")
        for m, c in [(m, closed[-1].close) for m in range(4)]
    ]
    same(closed, reference(deals, 100.0))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 3), st.integers(1, 4), st.integers(0, 59_999))
def test_a_reconnect_takes_the_gap_from_backfill_with_no_minute_missing(
    seen_minutes: int, gap_minutes: int, offset_ms: int
) -> None:
    builder = connected_builder()
    for m in range(seen_minutes):
        builder.add_deal(100.0 + m, 1.0, (T0 + 60 * m) * 1000 + 1, m)
    closed = builder.close_due((T0 + 60 * seen_minutes) * 1000 + GRACE)
    # the socket dies in minute `seen_minutes`, comes back `gap_minutes` later
    back_ms = (T0 + 60 * (seen_minutes + gap_minutes)) * 1000 + offset_ms
    builder.add_deal(555.0, 1.0, (T0 + 60 * seen_minutes) * 1000 + 2, 99)  # a partial minute
    builder.connected(back_ms, T0)
    reconnect_minute = back_ms // 60_000 * 60
    assert builder.add_deal(1.0, 1.0, back_ms, 100) is False  # its minute is backfilled
    builder.add_deal(200.0, 2.0, (reconnect_minute + 60) * 1000 + 1, 101)
    later = (reconnect_minute + 120) * 1000 + GRACE
    assert builder.close_due(later) == []  # waits for the backfill: candles stay in order
    span = builder.backfill_range(later)
    assert span == (T0 + 60 * seen_minutes, reconnect_minute)
    rest = [
        ClosedCandle("X_USDT", t, 7.0, 7.0, 7.0, 7.0, 1.0, 3.5, "rest")
        for t in range(span[0], span[1] + 1, 60)
    ]
    closed += builder.apply_backfill(rest, span[1])
    closed += builder.close_due(later)
    times = [c.open_time for c in closed]
    assert times == list(range(T0, reconnect_minute + 120, 60))
    assert all(c.source == "rest" for c in closed if span[0] <= c.open_time <= span[1])
    assert closed[-1].close == 200.0


def test_a_chunk_goes_live_at_its_last_subscription_reply() -> None:
    """Acks straddle a minute: the minute of the last ack is the newest one a symbol may
    have seen only in part, so it comes from REST, and deals count from the next."""
    subscribing = Subscribing(pending=3)
    first_ack = (T0 + 59) * 1000 + 900  # minute T0
    last_ack = (T0 + 60) * 1000 + 300  # minute T0 + 60: a push round came between
    replies: list[ServerFrame] = [
        Ack(method="sub.deal", ts=first_ack),
        Pong(server_ms=first_ack + 50),  # not a reply to a subscription
        ErrorReply(message="more than 60 seconds no response", ts=first_ack + 60),  # nor this
        ErrorReply(message="Contract [NOPE_USDT] not exists", ts=first_ack + 70),
        Ack(method="sub.deal", ts=last_ack),
    ]
    assert [subscribing.live_at(f) for f in replies] == [None, None, None, None, last_ack]

    screener = Screener({"A_USDT": 1.0, "B_USDT": 1.0}, lookback_min=1, grace_ms=GRACE)
    screener.connected(["A_USDT", "B_USDT"], last_ack)
    # B was subscribed at the last ack: its deals of minute T0 + 60 before it never came
    late_part = DealPush(
        symbol="B_USDT", ts=last_ack + 100, deals=(DealRow(p=2.0, v=1, t=last_ack + 50),)
    )
    screener.on_frame(late_part)
    assert screener.deals_ignored == 1
    assert screener.backfill_range("B_USDT") is None  # not closed yet
    screener.observe_clock((T0 + 120) * 1000 + GRACE)
    assert screener.backfill_range("B_USDT") == (T0, T0 + 60)  # lookback 1: from T0


def test_an_empty_chunk_goes_live_at_its_first_timed_frame() -> None:
    subscribing = Subscribing(pending=0)
    assert subscribing.live_at(OtherFrame(channel="push.personal", ts=None)) is None
    assert subscribing.live_at(Pong(server_ms=T0 * 1000)) == T0 * 1000


# ----- the exchange clock is bounded by ours ------------------------------------------


def bounded_screener() -> Screener:
    return Screener(
        {"A_USDT": 1.0},
        lookback_min=1,
        grace_ms=GRACE,
        bounds=ClockBounds(max_rate=1.5, max_ahead_ms=300_000, max_jump_ms=10_000),
        local_ms=T0 * 1000,
        monotonic_s=1000.0,
    )


def deal_push(ts: int, t: int | None = None, price: float = 2.0) -> DealPush:
    return DealPush(
        symbol="A_USDT", ts=ts, deals=(DealRow(p=price, v=1, t=ts if t is None else t),)
    )


def test_a_frame_three_days_ahead_is_refused_and_moves_nothing() -> None:
    screener = bounded_screener()
    screener.connected(["A_USDT"], T0 * 1000 - 1_000, now_s=1000.0)  # minute T0 is live
    assert screener.on_frame(deal_push(T0 * 1000 + 500), now_s=1000.5) == 1
    future = T0 * 1000 + 3 * 24 * 3600 * 1000
    with pytest.raises(FrameTimeJump, match="beyond what the local clock allows"):
        screener.on_frame(deal_push(future), now_s=1001.0)
    assert screener.watermark_ms == T0 * 1000 + 500 and screener.frames_refused == 1
    assert screener.close_due() == []  # no flat candles up to the future
    assert screener.on_frame(deal_push(T0 * 1000 + 1500), now_s=1001.5) == 1  # still applied


def test_a_jump_past_the_connection_s_recent_frames_is_refused() -> None:
    """Within the local-clock bound (the exchange may run a little ahead of us) but far
    past what the connection showed a moment ago: refused; after real time passes, fine."""
    screener = bounded_screener()
    screener.connected(["A_USDT"], T0 * 1000 - 1_000, now_s=1000.0)
    with pytest.raises(FrameTimeJump, match="past the connection's previous frame"):
        screener.on_frame(deal_push(T0 * 1000 + 120_000), now_s=1000.1)
    # two minutes later by our clock, two minutes later by the exchange's: accepted
    assert screener.on_frame(deal_push(T0 * 1000 + 120_000), now_s=1120.0) == 1


def test_a_deal_stamped_after_its_frame_is_refused() -> None:
    screener = bounded_screener()
    screener.connected(["A_USDT"], T0 * 1000 - 1_000, now_s=1000.0)
    with pytest.raises(FrameTimeJump, match="stamped after its frame"):
        screener.on_frame(deal_push(T0 * 1000 + 100, t=T0 * 1000 + 3_600_000), now_s=1000.1)
    assert screener.candles["A_USDT"].open_bars() == {}


def test_late_deals_count_as_not_applied() -> None:
    """What /health reads: a frame whose deals all come too late applies none."""
    screener = bounded_screener()
    screener.connected(["A_USDT"], T0 * 1000 - 1_000, now_s=1000.0)
    screener.on_frame(deal_push(T0 * 1000 + 60_000 + 5_000, t=T0 * 1000 + 60_500), now_s=1065.0)
    screener.apply_backfill("A_USDT", [], through=T0 - 60)  # REST had nothing before
    screener.observe_clock(T0 * 1000 + 180_000)
    assert [c.open_time for c in screener.close_due()] == [T0 + 60]
    late = deal_push(T0 * 1000 + 180_000, t=T0 * 1000 + 61_000)
    assert screener.on_frame(late, now_s=1180.0) == 0

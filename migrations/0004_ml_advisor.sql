-- ml_advisor: the candle history it trains on, and the side-by-side view of rule signals,
-- shadow ML signals and what the market did 15 minutes later (for the Grafana panel).

-- Closed 1-minute candles from `cdb:candles`, as published by bot_ws (MEXC kline units:
-- volume in contracts, turnover in USDT). A re-published bar (REST backfill) overwrites
-- its earlier version: the key is the bar, not the event.
CREATE TABLE candles (
    symbol          text NOT NULL,
    interval        text NOT NULL DEFAULT 'Min1',
    open_time       timestamptz NOT NULL,
    open            double precision NOT NULL CHECK (open > 0),
    high            double precision NOT NULL CHECK (high > 0),
    low             double precision NOT NULL CHECK (low > 0),
    close           double precision NOT NULL CHECK (close > 0),
    volume          double precision NOT NULL CHECK (volume >= 0),
    turnover        double precision NOT NULL CHECK (turnover >= 0),
    event_id        text NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, interval, open_time),
    CHECK (high >= low)
);
CREATE INDEX candles_open_time ON candles (open_time);

-- Every rule signal and every shadow ML signal with its realised 15-minute outcome: the
-- close of the bar that ends 15 minutes after the signal's bar closed (NULL until that
-- bar is in). `confirmed_by_other` says whether the other source signalled the same
-- symbol and side within 15 minutes.
CREATE VIEW ml_shadow_comparison AS
WITH all_signals AS (
    SELECT 'rule'::text AS source, s.signal_id, s.symbol, s.side, s.confidence,
           s.strategy AS model, NULL::text AS model_version, s.price, s.signal_ts
    FROM signals s
    UNION ALL
    SELECT 'ml'::text, m.signal_id, m.symbol, m.side, m.confidence,
           m.model, m.model_version, m.price, m.signal_ts
    FROM ml_signals m
)
SELECT
    a.source,
    a.signal_id,
    a.symbol,
    a.side,
    a.confidence,
    a.model,
    a.model_version,
    a.price AS entry_price,
    a.signal_ts,
    outcome.close AS exit_price,
    outcome.open_time + interval '1 minute' AS exit_ts,
    CASE
        WHEN outcome.close IS NULL THEN NULL
        WHEN a.side = 'long' THEN (outcome.close / a.price - 1.0) * 100.0
        ELSE (1.0 - outcome.close / a.price) * 100.0
    END AS return_15m_pct,
    CASE
        WHEN outcome.close IS NULL THEN NULL
        WHEN a.side = 'long' THEN outcome.close > a.price
        ELSE outcome.close < a.price
    END AS hit_15m,
    EXISTS (
        SELECT 1 FROM all_signals other
        WHERE other.source <> a.source
          AND other.symbol = a.symbol
          AND other.side = a.side
          AND other.signal_ts BETWEEN a.signal_ts - interval '15 minutes'
                                  AND a.signal_ts + interval '15 minutes'
    ) AS confirmed_by_other
FROM all_signals a
LEFT JOIN LATERAL (
    SELECT c.close, c.open_time
    FROM candles c
    WHERE c.symbol = a.symbol
      AND c.interval = 'Min1'
      AND c.open_time > a.signal_ts + interval '10 minutes'
      AND c.open_time <= a.signal_ts + interval '14 minutes'
    ORDER BY c.open_time DESC
    LIMIT 1
) outcome ON true;

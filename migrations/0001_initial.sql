-- The books of the trading pipeline. Ids are the events' own ids, so every write is
-- idempotent: a redelivered event hits a unique key instead of writing a second row.

CREATE TABLE signals (
    signal_id       text PRIMARY KEY,
    event_id        text NOT NULL,
    symbol          text NOT NULL,
    side            text NOT NULL CHECK (side IN ('long', 'short')),
    confidence      double precision NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    reason          text NOT NULL,
    strategy        text NOT NULL,
    price           double precision NOT NULL,
    pct_change      double precision NOT NULL,
    signal_ts       timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX signals_symbol_ts ON signals (symbol, signal_ts);

CREATE TABLE ml_signals (
    signal_id       text PRIMARY KEY,
    event_id        text NOT NULL,
    symbol          text NOT NULL,
    side            text NOT NULL CHECK (side IN ('long', 'short')),
    model           text NOT NULL,
    model_version   text NOT NULL,
    confidence      double precision NOT NULL,
    price           double precision NOT NULL,
    top_features    jsonb NOT NULL DEFAULT '[]',
    signal_ts       timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ml_signals_symbol_ts ON ml_signals (symbol, signal_ts);

CREATE TABLE orders (
    order_id        text PRIMARY KEY,
    signal_id       text NOT NULL UNIQUE,
    symbol          text NOT NULL,
    side            text NOT NULL CHECK (side IN ('long', 'short')),
    quantity        double precision NOT NULL CHECK (quantity > 0),
    notional        double precision NOT NULL CHECK (notional > 0),
    price           double precision NOT NULL,
    stop_loss       double precision NOT NULL,
    mode            text NOT NULL CHECK (mode IN ('paper', 'live')),
    status          text NOT NULL CHECK (status IN ('pending', 'filled', 'rejected', 'unknown', 'cancelled')),
    external_id     text,
    reason          text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_status ON orders (status);

CREATE TABLE fills (
    fill_id         text PRIMARY KEY,
    order_id        text NOT NULL REFERENCES orders (order_id),
    symbol          text NOT NULL,
    side            text NOT NULL CHECK (side IN ('long', 'short')),
    kind            text NOT NULL CHECK (kind IN ('open', 'close')),
    price           double precision NOT NULL CHECK (price > 0),
    quantity        double precision NOT NULL CHECK (quantity > 0),
    fee             double precision NOT NULL DEFAULT 0,
    realized_pnl    double precision NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, kind)
);

CREATE TABLE positions (
    position_id     text PRIMARY KEY,
    order_id        text NOT NULL UNIQUE REFERENCES orders (order_id),
    symbol          text NOT NULL,
    side            text NOT NULL CHECK (side IN ('long', 'short')),
    quantity        double precision NOT NULL CHECK (quantity > 0),
    entry_price     double precision NOT NULL,
    stop_loss       double precision NOT NULL,
    status          text NOT NULL CHECK (status IN ('open', 'closed')),
    exit_price      double precision,
    realized_pnl    double precision NOT NULL DEFAULT 0,
    opened_at       timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz
);
CREATE INDEX positions_open ON positions (status) WHERE status = 'open';

CREATE TABLE risk_events (
    id              bigserial PRIMARY KEY,
    event_key       text NOT NULL UNIQUE,
    kind            text NOT NULL,
    signal_id       text,
    reason          text NOT NULL,
    details         jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX risk_events_kind ON risk_events (kind, created_at);

CREATE TABLE equity (
    id              bigserial PRIMARY KEY,
    event_key       text NOT NULL UNIQUE,
    equity          double precision NOT NULL,
    realized_pnl    double precision NOT NULL DEFAULT 0,
    exposure        double precision NOT NULL DEFAULT 0,
    reason          text NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE config_audit (
    id              bigserial PRIMARY KEY,
    bot             text NOT NULL,
    generation      bigint NOT NULL,
    config_hash     text NOT NULL,
    field           text NOT NULL,
    old_value       jsonb,
    new_value       jsonb,
    actor           text NOT NULL,
    applied_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (bot, config_hash, field)
);

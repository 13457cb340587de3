-- The trading pipeline's own state, so every service rebuilds from PostgreSQL on start.
-- Every write is keyed by an id derived from the event that caused it (idempotent).

-- Live configuration applied from `control` events, one row per service: a restart
-- keeps what the operator set instead of falling back to the environment's defaults.
CREATE TABLE control_state (
    service         text PRIMARY KEY,
    bot             text NOT NULL,
    generation      bigint NOT NULL,
    config_hash     text NOT NULL,
    settings        jsonb NOT NULL DEFAULT '{}',
    applied_at      timestamptz NOT NULL DEFAULT now()
);

-- risk_manager: one decision per signal; a redelivered signal finds its decision here
-- and republishes the same order instead of deciding again.
CREATE TABLE risk_decisions (
    signal_id       text PRIMARY KEY,
    decision        text NOT NULL CHECK (decision IN ('approved', 'rejected')),
    order_id        text UNIQUE,
    reason          text NOT NULL DEFAULT '',
    order_event     jsonb,
    decided_at      timestamptz NOT NULL DEFAULT now()
);

-- risk_manager's book: exposure is reserved at approval and released or realised by
-- order results. Equity = STARTING_EQUITY + sum(realized_pnl) - sum(fees).
CREATE TABLE risk_positions (
    order_id        text PRIMARY KEY,
    signal_id       text NOT NULL UNIQUE,
    symbol          text NOT NULL,
    side            text NOT NULL CHECK (side IN ('long', 'short')),
    quantity        double precision NOT NULL CHECK (quantity > 0),
    notional        double precision NOT NULL CHECK (notional > 0),
    entry_price     double precision NOT NULL,
    stop_loss       double precision NOT NULL,
    status          text NOT NULL CHECK (status IN ('reserved', 'open', 'closed', 'released', 'unknown')),
    fees            double precision NOT NULL DEFAULT 0,
    realized_pnl    double precision NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX risk_positions_active ON risk_positions (status)
    WHERE status IN ('reserved', 'open', 'unknown');

-- risk_manager: the UTC day's opening equity and its circuit breaker.
CREATE TABLE risk_days (
    day             date PRIMARY KEY,
    opening_equity  double precision NOT NULL,
    breaker_tripped_at timestamptz,
    breaker_reason  text NOT NULL DEFAULT '',
    alert_published boolean NOT NULL DEFAULT false,
    reset_at        timestamptz
);

-- Events written in the same transaction as their effect and published after commit
-- (execution_service's fills and stop-loss closes; risk_manager's breaker alert).
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    service         text NOT NULL,
    event_id        text NOT NULL UNIQUE,
    stream          text NOT NULL,
    payload         text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (service, id) WHERE published_at IS NULL;

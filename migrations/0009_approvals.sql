-- depends: 0008_notifier
-- Manual approval mode (docs/TRADING_PIPELINE.md, "Approval mode"): an order risk_manager
-- approves is held here, its position reserved, until the owner approves it (the same
-- order goes to cdb:orders), vetoes it, or it expires (both release the reservation).
-- A decision is a conditional UPDATE ... WHERE state = 'pending': the first one wins, a
-- second device, a double tap or a replayed request changes nothing. Every decision is
-- also a row in config_audit (field 'approvals.<order_id>', actor = who decided).
-- risk_manager writes this table; the console only reads it.
CREATE TABLE approvals (
    order_id        text PRIMARY KEY,
    signal_id       text NOT NULL UNIQUE,
    symbol          text NOT NULL,
    side            text NOT NULL CHECK (side IN ('long', 'short')),
    order_json      jsonb NOT NULL,
    details         jsonb NOT NULL DEFAULT '{}',
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'approved', 'vetoed', 'expired')),
    requested_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    decided_at      timestamptz,
    decided_by      text,
    reason          text,
    decision_event_id text
);
CREATE INDEX approvals_pending ON approvals (expires_at) WHERE state = 'pending';
CREATE INDEX approvals_requested ON approvals (requested_at);

-- The notifier announces a held order with WebPush actions (approve, veto) and data
-- (order id, the console's page for it); other notifications have none.
ALTER TABLE notifications ADD COLUMN actions jsonb NOT NULL DEFAULT '[]';
ALTER TABLE notifications ADD COLUMN data jsonb NOT NULL DEFAULT '{}';

-- A held order's decision row says 'held' until the owner answers: execution_service
-- executes only orders of an 'approved' row, so a held or vetoed order is refused there
-- too. Approve turns it 'approved'; veto and expiry 'rejected' with the reason.
ALTER TABLE risk_decisions DROP CONSTRAINT risk_decisions_decision_check;
ALTER TABLE risk_decisions ADD CONSTRAINT risk_decisions_decision_check
    CHECK (decision IN ('approved', 'rejected', 'held'));

-- depends: 0009_approvals
-- risk_manager keeps its book in memory (docs/TRADING_PIPELINE.md, "The book in memory").
-- Every transaction under the book lock bumps this one row; a replica whose last seen
-- version is not the one before its own bump knows another replica (or an operator's
-- script that bumps it) wrote the book since, and reloads it from risk_positions/risk_days.
CREATE TABLE risk_book_version (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    version     bigint NOT NULL DEFAULT 0
);
INSERT INTO risk_book_version (id, version) VALUES (true, 0);

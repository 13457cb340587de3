-- Orders still held when rolled back are rejected (nothing executes them afterwards).
UPDATE risk_decisions SET decision = 'rejected', reason = 'held: approval mode rolled back'
    WHERE decision = 'held';
UPDATE risk_positions SET status = 'released', updated_at = now()
    WHERE status = 'reserved' AND order_id IN (SELECT order_id FROM approvals WHERE state = 'pending');
ALTER TABLE risk_decisions DROP CONSTRAINT risk_decisions_decision_check;
ALTER TABLE risk_decisions ADD CONSTRAINT risk_decisions_decision_check
    CHECK (decision IN ('approved', 'rejected'));
DROP TABLE approvals;
ALTER TABLE notifications DROP COLUMN data;
ALTER TABLE notifications DROP COLUMN actions;

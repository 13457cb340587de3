DROP TABLE outbox;
DROP TABLE risk_days;
DROP TABLE risk_positions;
DROP TABLE risk_decisions;
DROP TABLE control_state;

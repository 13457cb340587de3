DROP TABLE config_audit;
DROP TABLE equity;
DROP TABLE risk_events;
DROP TABLE positions;
DROP TABLE fills;
DROP TABLE orders;
DROP TABLE ml_signals;
DROP TABLE signals;

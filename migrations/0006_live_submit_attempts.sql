-- depends: 0005_control_bot_uid
-- Live orders count their submits, committed before each POST: an order never submitted
-- (a crash between its intent and the send) is sent on restart instead of being called
-- unknown, and an order submitted before is looked up first and only then sent again.
ALTER TABLE orders ADD COLUMN submit_attempts integer NOT NULL DEFAULT 0;

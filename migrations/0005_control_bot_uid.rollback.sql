ALTER TABLE control_state DROP COLUMN bot_uid;

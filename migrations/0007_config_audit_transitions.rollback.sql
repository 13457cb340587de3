-- The old key cannot hold a change back to an earlier config: those rows (all but the
-- first of each (bot, config_hash, field)) are deleted so the old constraint fits again.
DROP INDEX config_audit_field_history;
DELETE FROM config_audit a USING config_audit b
    WHERE a.bot = b.bot AND a.config_hash = b.config_hash AND a.field = b.field
    AND a.id > b.id;
ALTER TABLE config_audit DROP COLUMN previous_config_hash;
ALTER TABLE config_audit DROP COLUMN bot_uid;
ALTER TABLE config_audit ADD CONSTRAINT config_audit_bot_config_hash_field_key
    UNIQUE (bot, config_hash, field);

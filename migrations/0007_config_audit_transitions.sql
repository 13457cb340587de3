-- depends: 0006_live_submit_attempts
-- config_audit records transitions, not configs. The old key UNIQUE (bot, config_hash,
-- field), with config_hash the hash of the NEW config, dropped every change back to a
-- config seen before: pause then unpause (back to the first hash), an undo 3.0 -> 4.5 ->
-- 3.0, a bot deleted and created again with the same spec.
--
-- A row now says which bot instance (bot_uid: metadata.uid) went from which config
-- (previous_config_hash; '' when none was in force) to which (config_hash) at which
-- generation. No unique key of a row's own values can be right: one that leaves out
-- anything drops real changes, and even the full transition repeats legitimately at one
-- generation (a universe bot whose contract list flips back and forth between the same
-- two sets on the timer, without a spec edit). So the operator decides, under a per-bot
-- advisory lock (pg_advisory_xact_lock), in the same transaction as the insert: a change
-- is skipped only when the latest row of that field for that bot instance is this very
-- transition (same generation, previous and new config hash). That is exactly a retry of
-- the same reconcile (the audit is written before the ConfigMap, so a retry diffs the same
-- two configs again); any real change starts from the config the latest row ended in and
-- differs from it. The index serves that lookup.
ALTER TABLE config_audit DROP CONSTRAINT config_audit_bot_config_hash_field_key;
ALTER TABLE config_audit ADD COLUMN bot_uid text NOT NULL DEFAULT '';
ALTER TABLE config_audit ADD COLUMN previous_config_hash text NOT NULL DEFAULT '';
CREATE INDEX config_audit_field_history ON config_audit (bot, bot_uid, field, id);

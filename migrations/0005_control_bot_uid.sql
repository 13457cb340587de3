-- depends: 0002_trading_pipeline
-- A TradingBot deleted and created again under the same name starts its generations at 1:
-- the applied live config remembers the bot's metadata.uid so such a bot is not ignored.
ALTER TABLE control_state ADD COLUMN bot_uid text NOT NULL DEFAULT '';

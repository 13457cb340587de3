ALTER TABLE orders DROP COLUMN submit_attempts;

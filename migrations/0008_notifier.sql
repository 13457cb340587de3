-- depends: 0007_config_audit_transitions
-- The notifier's books. A notification is keyed by its cause (an event id, an
-- Alertmanager fingerprint with its status and start, a day), so a redelivered event or a
-- restart finds it there and sends nothing twice. Each configured channel gets one
-- delivery row: pending until sent, retried with backoff, and after the last try
-- 'failed' with the error (never dropped silently).
CREATE TABLE notifications (
    key         text PRIMARY KEY,
    kind        text NOT NULL,
    severity    text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    group_key   text NOT NULL,
    title       text NOT NULL,
    body        text NOT NULL,
    bot         text NOT NULL DEFAULT '',
    symbol      text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE notification_deliveries (
    key             text NOT NULL REFERENCES notifications (key) ON DELETE CASCADE,
    channel         text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text NOT NULL DEFAULT '',
    message_id      text NOT NULL DEFAULT '',
    sent_at         timestamptz,
    PRIMARY KEY (key, channel)
);
CREATE INDEX notification_deliveries_due
    ON notification_deliveries (channel, next_attempt_at) WHERE status = 'pending';

-- Browsers subscribed to WebPush (RFC 8030): the push service endpoint and the
-- subscription's public keys (RFC 8291). A 404 or 410 from the push service deletes it.
CREATE TABLE push_subscriptions (
    endpoint    text PRIMARY KEY,
    p256dh      text NOT NULL,
    auth        text NOT NULL,
    label       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

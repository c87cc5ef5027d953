-- Triggers (issue 13): each firing of a workflow's trigger, once. `key` is the cron
-- slot (its UTC time) or the webhook delivery's idempotency key: engines and deliveries
-- racing for one firing meet on the primary key, and exactly one ticket is made.
CREATE TABLE trigger_firings (
    trigger    TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    ticket_id  INTEGER REFERENCES tickets(id) ON DELETE SET NULL,
    fired_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    PRIMARY KEY (trigger, key)
);

-- Triggers (issue 13); see store/sql/sqlite/tickets/0006_trigger_firings.sql.
CREATE TABLE trigger_firings (
    trigger    text    NOT NULL,
    key        text    NOT NULL,
    ticket_id  bigint  REFERENCES tickets(id) ON DELETE SET NULL,
    fired_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (trigger, key)
);

-- Ticket store, version 1. Public interface: see docs/schema.md.
-- Timestamps are UTC ISO-8601 text with millisecond precision, e.g. 2026-11-24T03:25:52.123Z.

CREATE TABLE tickets (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    title           TEXT    NOT NULL DEFAULT '',
    description     TEXT    NOT NULL DEFAULT '',
    status          TEXT    NOT NULL DEFAULT 'draft'
                    CHECK (status IN ('draft','open','claimed','running','done','failed','cancelled')),
    execution_mode  TEXT    NOT NULL DEFAULT 'single'
                    CHECK (execution_mode IN ('single','workflow')),
    agent_id        TEXT,
    workflow_id     TEXT,
    inputs          TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(inputs)),
    priority        INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    timeout_seconds REAL,
    result          TEXT    CHECK (result IS NULL OR json_valid(result)),
    error           TEXT,
    engine_id       TEXT,
    attempt_id      TEXT,
    lease_expires_at TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    updated_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    claimed_at      TEXT,
    started_at      TEXT,
    completed_at    TEXT,
    CHECK (execution_mode = 'workflow' OR agent_id IS NOT NULL OR status = 'draft'),
    CHECK (execution_mode = 'single' OR workflow_id IS NOT NULL OR status = 'draft')
);

CREATE INDEX tickets_claim_order ON tickets (status, priority DESC, id);

-- Every status change, by any writer (the engine or a plain sqlite3 shell), is recorded
-- in the same transaction by this trigger.
CREATE TABLE ticket_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id   INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
    at          TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    old_status  TEXT,
    new_status  TEXT    NOT NULL,
    engine_id   TEXT,
    attempt_id  TEXT,
    note        TEXT
);

CREATE INDEX ticket_events_ticket ON ticket_events (ticket_id, id);

CREATE TRIGGER tickets_insert_event AFTER INSERT ON tickets
BEGIN
    INSERT INTO ticket_events (ticket_id, old_status, new_status)
    VALUES (NEW.id, NULL, NEW.status);
END;

CREATE TRIGGER tickets_status_event AFTER UPDATE OF status ON tickets
WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO ticket_events (ticket_id, old_status, new_status, engine_id, attempt_id, note)
    VALUES (NEW.id, OLD.status, NEW.status, NEW.engine_id, NEW.attempt_id, NEW.error);
    UPDATE tickets SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE id = NEW.id;
END;

CREATE TABLE engines (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL DEFAULT 'daemon' CHECK (kind IN ('daemon','run-ticket')),
    host          TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    max_vms       INTEGER NOT NULL,
    backend       TEXT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'running'
                  CHECK (state IN ('running','draining','stopped','dead')),
    busy_vms      INTEGER NOT NULL DEFAULT 0,
    started_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    heartbeat_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    stopped_at    TEXT
);

CREATE TABLE workflow_runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id       INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
    attempt         INTEGER NOT NULL,
    attempt_id      TEXT    NOT NULL UNIQUE,
    engine_id       TEXT    REFERENCES engines(id),
    execution_mode  TEXT    NOT NULL CHECK (execution_mode IN ('single','workflow')),
    workflow_name   TEXT,
    workflow_version TEXT,
    status          TEXT    NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running','done','failed','cancelled')),
    inputs          TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(inputs)),
    outputs         TEXT    CHECK (outputs IS NULL OR json_valid(outputs)),
    error           TEXT,
    started_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    completed_at    TEXT,
    duration_ms     INTEGER,
    input_tokens    INTEGER NOT NULL DEFAULT 0,
    output_tokens   INTEGER NOT NULL DEFAULT 0,
    cache_creation_input_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_input_tokens     INTEGER NOT NULL DEFAULT 0,
    cost_usd        REAL    NOT NULL DEFAULT 0
);

CREATE INDEX workflow_runs_ticket ON workflow_runs (ticket_id, id);
CREATE INDEX workflow_runs_workflow ON workflow_runs (workflow_name, id);

CREATE TABLE vms (
    id              TEXT PRIMARY KEY,
    backend         TEXT NOT NULL,
    host            TEXT NOT NULL,
    engine_id       TEXT REFERENCES engines(id),
    owner_pid       INTEGER NOT NULL,
    pid             INTEGER,
    state           TEXT NOT NULL DEFAULT 'booting'
                    CHECK (state IN ('booting','ready','busy','destroying','destroyed','failed')),
    step_execution_id INTEGER,
    workspace       TEXT,
    socket_path     TEXT,
    overlay_path    TEXT,
    memory_mb       INTEGER,
    vcpus           INTEGER,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    ready_at        TEXT,
    destroyed_at    TEXT,
    error           TEXT
);

CREATE INDEX vms_live ON vms (state, host);

CREATE TABLE step_executions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          INTEGER NOT NULL REFERENCES workflow_runs(id) ON DELETE CASCADE,
    step_id         TEXT    NOT NULL,
    agent_name      TEXT    NOT NULL,
    agent_version   TEXT    NOT NULL,
    agent_kind      TEXT    NOT NULL,
    vm_id           TEXT    REFERENCES vms(id),
    status          TEXT    NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued','running','done','failed','cancelled','skipped')),
    inputs          TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(inputs)),
    outputs         TEXT    CHECK (outputs IS NULL OR json_valid(outputs)),
    queued_at       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    started_at      TEXT,
    completed_at    TEXT,
    duration_ms     INTEGER,
    exit_code       INTEGER,
    error           TEXT,
    retry_count     INTEGER NOT NULL DEFAULT 0,
    log_path        TEXT,
    input_tokens    INTEGER NOT NULL DEFAULT 0,
    output_tokens   INTEGER NOT NULL DEFAULT 0,
    cache_creation_input_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_input_tokens     INTEGER NOT NULL DEFAULT 0,
    turns           INTEGER NOT NULL DEFAULT 0,
    stop_reason     TEXT,
    cost_usd        REAL    NOT NULL DEFAULT 0
);

CREATE INDEX step_executions_run ON step_executions (run_id, id);

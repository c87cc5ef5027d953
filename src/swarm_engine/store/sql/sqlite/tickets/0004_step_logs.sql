-- Live step logs (issue 13): each step's log (what artifacts/.../output.log holds: its
-- head as it is printed, then the cut marker and tail at the end) stored in chunks as the
-- step runs, so `logs --follow` and other hosts can read it. Chunk ids order a step's
-- chunks and let a reader resume after the last id it saw.
CREATE TABLE step_logs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    step_execution_id INTEGER NOT NULL REFERENCES step_executions(id) ON DELETE CASCADE,
    data              TEXT    NOT NULL,
    at                TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
);

CREATE INDEX step_logs_step ON step_logs (step_execution_id, id);

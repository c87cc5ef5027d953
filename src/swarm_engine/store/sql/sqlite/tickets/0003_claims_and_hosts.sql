-- Claims stay cheap however long the history grows: open tickets in claim order, and
-- live leases, as partial indexes (finished rows, the bulk of a big table, are in
-- neither). Also in store/sql/postgresql/tickets/0003, which adds the LISTEN/NOTIFY
-- trigger that wakes engines there (SQLite engines watch the file instead).
CREATE INDEX tickets_open ON tickets (priority DESC, id) WHERE status = 'open';
CREATE INDEX tickets_live ON tickets (attempt_id) WHERE status IN ('claimed','running');
CREATE INDEX workflow_runs_running ON workflow_runs (ticket_id) WHERE status = 'running';
CREATE INDEX engines_live ON engines (host) WHERE state IN ('running','draining');

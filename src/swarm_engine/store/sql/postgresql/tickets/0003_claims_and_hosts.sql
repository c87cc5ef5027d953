-- Claims stay cheap however long the history grows, and engines wake on every writer.
-- Open tickets in claim order, and live leases, as partial indexes: finished rows (the
-- bulk of a big table) are in neither. Also in store/sql/sqlite/tickets/0003.
CREATE INDEX tickets_open ON tickets (priority DESC, id) WHERE status = 'open';
CREATE INDEX tickets_live ON tickets (attempt_id) WHERE status IN ('claimed','running');
CREATE INDEX workflow_runs_running ON workflow_runs (ticket_id) WHERE status = 'running';
CREATE INDEX engines_live ON engines (host) WHERE state IN ('running','draining');

-- LISTEN swarm_tickets: a ticket became open (inserted or updated by anyone, psql too).
-- The payload is the ticket id only.
CREATE FUNCTION swarm_ticket_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('swarm_tickets', NEW.id::text);
    RETURN NULL;
END $$;

CREATE TRIGGER tickets_notify_open AFTER INSERT OR UPDATE OF status ON tickets
    FOR EACH ROW WHEN (NEW.status = 'open') EXECUTE FUNCTION swarm_ticket_notify();

-- Sequence repair (SQLite's 0008/0009 for PostgreSQL): another client may wedge an id
-- sequence (`setval` near its maximum, `ALTER SEQUENCE ... INCREMENT/MAXVALUE`). An id at
-- or above 2^62 given to a new row is refused here with SQLSTATE 2200H, as `nextval` at
-- its limit is, so no jump spends the ids; the store (`store/pgsequences.py`) then
-- repairs the sequence and runs the insert again. Rows already there are left alone.
CREATE FUNCTION swarm_id_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id >= 4611686018427387904 THEN
        RAISE EXCEPTION '%.id at or above 2^62 is refused (swarm-engine repairs its id sequence)',
            TG_TABLE_NAME USING ERRCODE = '2200H';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER tickets_id_guard BEFORE INSERT ON tickets
    FOR EACH ROW EXECUTE FUNCTION swarm_id_guard();
CREATE TRIGGER ticket_events_id_guard BEFORE INSERT ON ticket_events
    FOR EACH ROW EXECUTE FUNCTION swarm_id_guard();
CREATE TRIGGER workflow_runs_id_guard BEFORE INSERT ON workflow_runs
    FOR EACH ROW EXECUTE FUNCTION swarm_id_guard();
CREATE TRIGGER step_executions_id_guard BEFORE INSERT ON step_executions
    FOR EACH ROW EXECUTE FUNCTION swarm_id_guard();
CREATE TRIGGER step_logs_id_guard BEFORE INSERT ON step_logs
    FOR EACH ROW EXECUTE FUNCTION swarm_id_guard();

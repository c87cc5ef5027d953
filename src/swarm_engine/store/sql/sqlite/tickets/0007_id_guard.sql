-- Id guard (h-119 report, 2): an AUTOINCREMENT table whose id reached 2^63-1 refuses
-- every later insert (SQLITE_FULL), and SQLite keeps that maximum in sqlite_sequence even
-- after the row is gone. Every status change inserts a ticket_events row, every claim a
-- workflow_runs row: one row another client writes with such an id would stop every
-- ticket. So an id above 2^62 (far past anything the engine assigns) is refused where it
-- is written, and a sequence already past it is lowered to the table's largest id.
CREATE TRIGGER tickets_id_guard BEFORE INSERT ON tickets
WHEN NEW.id > 4611686018427387904
BEGIN SELECT RAISE(ABORT, 'tickets.id above 2^62 is refused (it would spend the id sequence)'); END;

CREATE TRIGGER tickets_id_guard_update BEFORE UPDATE OF id ON tickets
WHEN NEW.id > 4611686018427387904
BEGIN SELECT RAISE(ABORT, 'tickets.id above 2^62 is refused (it would spend the id sequence)'); END;

CREATE TRIGGER ticket_events_id_guard BEFORE INSERT ON ticket_events
WHEN NEW.id > 4611686018427387904
BEGIN SELECT RAISE(ABORT, 'ticket_events.id above 2^62 is refused (it would spend the id sequence)'); END;

CREATE TRIGGER ticket_events_id_guard_update BEFORE UPDATE OF id ON ticket_events
WHEN NEW.id > 4611686018427387904
BEGIN SELECT RAISE(ABORT, 'ticket_events.id above 2^62 is refused (it would spend the id sequence)'); END;

CREATE TRIGGER workflow_runs_id_guard BEFORE INSERT ON workflow_runs
WHEN NEW.id > 4611686018427387904
BEGIN SELECT RAISE(ABORT, 'workflow_runs.id above 2^62 is refused (it would spend the id sequence)'); END;

CREATE TRIGGER workflow_runs_id_guard_update BEFORE UPDATE OF id ON workflow_runs
WHEN NEW.id > 4611686018427387904
BEGIN SELECT RAISE(ABORT, 'workflow_runs.id above 2^62 is refused (it would spend the id sequence)'); END;

CREATE TRIGGER step_executions_id_guard BEFORE INSERT ON step_executions
WHEN NEW.id > 4611686018427387904
BEGIN SELECT RAISE(ABORT, 'step_executions.id above 2^62 is refused (it would spend the id sequence)'); END;

CREATE TRIGGER step_executions_id_guard_update BEFORE UPDATE OF id ON step_executions
WHEN NEW.id > 4611686018427387904
BEGIN SELECT RAISE(ABORT, 'step_executions.id above 2^62 is refused (it would spend the id sequence)'); END;

CREATE TRIGGER step_logs_id_guard BEFORE INSERT ON step_logs
WHEN NEW.id > 4611686018427387904
BEGIN SELECT RAISE(ABORT, 'step_logs.id above 2^62 is refused (it would spend the id sequence)'); END;

CREATE TRIGGER step_logs_id_guard_update BEFORE UPDATE OF id ON step_logs
WHEN NEW.id > 4611686018427387904
BEGIN SELECT RAISE(ABORT, 'step_logs.id above 2^62 is refused (it would spend the id sequence)'); END;

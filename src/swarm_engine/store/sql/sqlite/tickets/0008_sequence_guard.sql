-- Sequence guard (h-123 report, 2): 0007's BEFORE INSERT guards saw NEW.id = -1 for an id
-- left to AUTOINCREMENT, so an id the store itself was given was never checked: a client
-- that raised `sqlite_sequence.seq` (to 2^62 + 5, or to 2^63 - 1) made the engine write
-- ids above 2^62, or spend the sequence with a real row. Now:
-- * `<table>_id_guard` runs AFTER INSERT, where NEW.id is the id written, explicit or
--   assigned: no row above 2^62 is ever written.
-- * `<table>_sequence_guard` refuses an insert BEFORE an id is assigned while the table's
--   sequence is at or above 2^62 (before SQLite would refuse it as "database or disk is
--   full" once the sequence holds 2^63 - 1). The store (`store/sqlite.py`) then lowers the
--   sequence to the table's largest id, in the same transaction, and runs the insert again.

DROP TRIGGER IF EXISTS tickets_id_guard;

CREATE TRIGGER tickets_id_guard AFTER INSERT ON tickets
WHEN NEW.id > 4611686018427387904
BEGIN SELECT RAISE(ABORT, 'tickets.id above 2^62 is refused (it would spend the id sequence)'); END;

CREATE TRIGGER tickets_sequence_guard BEFORE INSERT ON tickets
WHEN (SELECT seq FROM sqlite_sequence WHERE name = 'tickets') >= 4611686018427387904
BEGIN SELECT RAISE(ABORT, 'tickets.id sequence at or above 2^62 is refused (swarm-engine lowers it to the largest id)'); END;

DROP TRIGGER IF EXISTS ticket_events_id_guard;

CREATE TRIGGER ticket_events_id_guard AFTER INSERT ON ticket_events
WHEN NEW.id > 4611686018427387904
BEGIN SELECT RAISE(ABORT, 'ticket_events.id above 2^62 is refused (it would spend the id sequence)'); END;

CREATE TRIGGER ticket_events_sequence_guard BEFORE INSERT ON ticket_events
WHEN (SELECT seq FROM sqlite_sequence WHERE name = 'ticket_events') >= 4611686018427387904
BEGIN SELECT RAISE(ABORT, 'ticket_events.id sequence at or above 2^62 is refused (swarm-engine lowers it to the largest id)'); END;

DROP TRIGGER IF EXISTS workflow_runs_id_guard;

CREATE TRIGGER workflow_runs_id_guard AFTER INSERT ON workflow_runs
WHEN NEW.id > 4611686018427387904
BEGIN SELECT RAISE(ABORT, 'workflow_runs.id above 2^62 is refused (it would spend the id sequence)'); END;

CREATE TRIGGER workflow_runs_sequence_guard BEFORE INSERT ON workflow_runs
WHEN (SELECT seq FROM sqlite_sequence WHERE name = 'workflow_runs') >= 4611686018427387904
BEGIN SELECT RAISE(ABORT, 'workflow_runs.id sequence at or above 2^62 is refused (swarm-engine lowers it to the largest id)'); END;

DROP TRIGGER IF EXISTS step_executions_id_guard;

CREATE TRIGGER step_executions_id_guard AFTER INSERT ON step_executions
WHEN NEW.id > 4611686018427387904
BEGIN SELECT RAISE(ABORT, 'step_executions.id above 2^62 is refused (it would spend the id sequence)'); END;

CREATE TRIGGER step_executions_sequence_guard BEFORE INSERT ON step_executions
WHEN (SELECT seq FROM sqlite_sequence WHERE name = 'step_executions') >= 4611686018427387904
BEGIN SELECT RAISE(ABORT, 'step_executions.id sequence at or above 2^62 is refused (swarm-engine lowers it to the largest id)'); END;

DROP TRIGGER IF EXISTS step_logs_id_guard;

CREATE TRIGGER step_logs_id_guard AFTER INSERT ON step_logs
WHEN NEW.id > 4611686018427387904
BEGIN SELECT RAISE(ABORT, 'step_logs.id above 2^62 is refused (it would spend the id sequence)'); END;

CREATE TRIGGER step_logs_sequence_guard BEFORE INSERT ON step_logs
WHEN (SELECT seq FROM sqlite_sequence WHERE name = 'step_logs') >= 4611686018427387904
BEGIN SELECT RAISE(ABORT, 'step_logs.id sequence at or above 2^62 is refused (swarm-engine lowers it to the largest id)'); END;

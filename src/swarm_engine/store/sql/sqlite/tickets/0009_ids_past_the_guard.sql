-- Ids at 2^62 (h-130 report, 2): 0008 lowered a sequence at or above 2^62 and refused ids
-- above it, so a sequence another client set to 2^62 - 1 let the store write id 2^62; the
-- sequence then stood at that row's id, could not be lowered below it, and every later
-- insert into the table was refused (for the engine too). Moving the line by one only
-- moves the wedge. So what is refused is a jump, not a size:
-- * `<table>_sequence_guard` refuses an insert while the sequence is at or above 2^62 AND
--   above the table's largest id (raised past every row): the store lowers it to that id
--   and runs the insert again (`store/sqlite.py`). A sequence that follows a real row is
--   left alone, however high.
-- * `<table>_id_guard` (AFTER INSERT) refuses an id above 2^62 unless it is the table's
--   largest id plus one (the id AUTOINCREMENT gives after such a row): counting on by one
--   from there cannot spend the 2^62 ids left before 9223372036854775807.
-- * `<table>_id_guard_update` (0007) is kept: an UPDATE to an id above 2^62 is refused.

DROP TRIGGER IF EXISTS tickets_id_guard;

CREATE TRIGGER tickets_id_guard AFTER INSERT ON tickets
WHEN NEW.id > 4611686018427387904
 AND NEW.id <> coalesce((SELECT max(id) FROM tickets WHERE id < NEW.id), 0) + 1
BEGIN SELECT RAISE(ABORT, 'tickets.id above 2^62 is refused (it would spend the id sequence)'); END;

DROP TRIGGER IF EXISTS tickets_sequence_guard;

CREATE TRIGGER tickets_sequence_guard BEFORE INSERT ON tickets
WHEN (SELECT seq FROM sqlite_sequence WHERE name = 'tickets') >= 4611686018427387904
 AND (SELECT seq FROM sqlite_sequence WHERE name = 'tickets')
     > (SELECT coalesce(max(id), 0) FROM tickets)
BEGIN SELECT RAISE(ABORT, 'tickets.id sequence at or above 2^62 is refused (swarm-engine lowers it to the largest id)'); END;

DROP TRIGGER IF EXISTS ticket_events_id_guard;

CREATE TRIGGER ticket_events_id_guard AFTER INSERT ON ticket_events
WHEN NEW.id > 4611686018427387904
 AND NEW.id <> coalesce((SELECT max(id) FROM ticket_events WHERE id < NEW.id), 0) + 1
BEGIN SELECT RAISE(ABORT, 'ticket_events.id above 2^62 is refused (it would spend the id sequence)'); END;

DROP TRIGGER IF EXISTS ticket_events_sequence_guard;

CREATE TRIGGER ticket_events_sequence_guard BEFORE INSERT ON ticket_events
WHEN (SELECT seq FROM sqlite_sequence WHERE name = 'ticket_events') >= 4611686018427387904
 AND (SELECT seq FROM sqlite_sequence WHERE name = 'ticket_events')
     > (SELECT coalesce(max(id), 0) FROM ticket_events)
BEGIN SELECT RAISE(ABORT, 'ticket_events.id sequence at or above 2^62 is refused (swarm-engine lowers it to the largest id)'); END;

DROP TRIGGER IF EXISTS workflow_runs_id_guard;

CREATE TRIGGER workflow_runs_id_guard AFTER INSERT ON workflow_runs
WHEN NEW.id > 4611686018427387904
 AND NEW.id <> coalesce((SELECT max(id) FROM workflow_runs WHERE id < NEW.id), 0) + 1
BEGIN SELECT RAISE(ABORT, 'workflow_runs.id above 2^62 is refused (it would spend the id sequence)'); END;

DROP TRIGGER IF EXISTS workflow_runs_sequence_guard;

CREATE TRIGGER workflow_runs_sequence_guard BEFORE INSERT ON workflow_runs
WHEN (SELECT seq FROM sqlite_sequence WHERE name = 'workflow_runs') >= 4611686018427387904
 AND (SELECT seq FROM sqlite_sequence WHERE name = 'workflow_runs')
     > (SELECT coalesce(max(id), 0) FROM workflow_runs)
BEGIN SELECT RAISE(ABORT, 'workflow_runs.id sequence at or above 2^62 is refused (swarm-engine lowers it to the largest id)'); END;

DROP TRIGGER IF EXISTS step_executions_id_guard;

CREATE TRIGGER step_executions_id_guard AFTER INSERT ON step_executions
WHEN NEW.id > 4611686018427387904
 AND NEW.id <> coalesce((SELECT max(id) FROM step_executions WHERE id < NEW.id), 0) + 1
BEGIN SELECT RAISE(ABORT, 'step_executions.id above 2^62 is refused (it would spend the id sequence)'); END;

DROP TRIGGER IF EXISTS step_executions_sequence_guard;

CREATE TRIGGER step_executions_sequence_guard BEFORE INSERT ON step_executions
WHEN (SELECT seq FROM sqlite_sequence WHERE name = 'step_executions') >= 4611686018427387904
 AND (SELECT seq FROM sqlite_sequence WHERE name = 'step_executions')
     > (SELECT coalesce(max(id), 0) FROM step_executions)
BEGIN SELECT RAISE(ABORT, 'step_executions.id sequence at or above 2^62 is refused (swarm-engine lowers it to the largest id)'); END;

DROP TRIGGER IF EXISTS step_logs_id_guard;

CREATE TRIGGER step_logs_id_guard AFTER INSERT ON step_logs
WHEN NEW.id > 4611686018427387904
 AND NEW.id <> coalesce((SELECT max(id) FROM step_logs WHERE id < NEW.id), 0) + 1
BEGIN SELECT RAISE(ABORT, 'step_logs.id above 2^62 is refused (it would spend the id sequence)'); END;

DROP TRIGGER IF EXISTS step_logs_sequence_guard;

CREATE TRIGGER step_logs_sequence_guard BEFORE INSERT ON step_logs
WHEN (SELECT seq FROM sqlite_sequence WHERE name = 'step_logs') >= 4611686018427387904
 AND (SELECT seq FROM sqlite_sequence WHERE name = 'step_logs')
     > (SELECT coalesce(max(id), 0) FROM step_logs)
BEGIN SELECT RAISE(ABORT, 'step_logs.id sequence at or above 2^62 is refused (swarm-engine lowers it to the largest id)'); END;

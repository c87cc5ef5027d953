-- Live step logs, SQLite.

-- name: append
-- Fenced: only while the step's run still holds its ticket.
INSERT INTO step_logs (step_execution_id, data)
SELECT :step_execution_id, :data
 WHERE EXISTS (SELECT 1 FROM step_executions s JOIN workflow_runs r ON r.id = s.run_id
                JOIN tickets t ON t.id = r.ticket_id
               WHERE s.id = :step_execution_id AND t.attempt_id = r.attempt_id)
RETURNING id

-- name: after
-- Chunks of these steps from chunk :first on, oldest first: their ids only. SQLite loads
-- a value whole to read any of it by SQL (its length, a substr), and any client may have
-- written a chunk of any size, so LogStore reads `data` by incremental blob I/O, piece by
-- piece (Database.open_value). The columns are those of PostgreSQL's `after`, which does
-- read short chunks here.
SELECT id, step_execution_id, NULL AS bytes, NULL AS data, NULL AS part FROM step_logs
 WHERE step_execution_id IN (SELECT value FROM json_each(:step_ids)) AND id >= :first
 ORDER BY id LIMIT :limit

-- name: after_run
-- `after` of a run's steps (only :step_id's attempts unless it is NULL), however many it
-- has: the steps are not listed by the caller.
SELECT id, step_execution_id, NULL AS bytes, NULL AS data, NULL AS part FROM step_logs
 WHERE step_execution_id IN (SELECT id FROM step_executions
                              WHERE run_id = :run_id
                                AND (CAST(:step_id AS TEXT) IS NULL
                                     OR step_id = CAST(:step_id AS TEXT)))
   AND id >= :first
 ORDER BY id LIMIT :limit

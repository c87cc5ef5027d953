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
SELECT id, step_execution_id, data FROM step_logs
 WHERE step_execution_id IN (SELECT value FROM json_each(:step_ids)) AND id > :after
 ORDER BY id LIMIT :limit

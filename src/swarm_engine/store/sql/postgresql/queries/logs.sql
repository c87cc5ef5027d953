-- Live step logs, PostgreSQL.

-- name: append
-- Fenced: only while the step's run still holds its ticket.
INSERT INTO step_logs (step_execution_id, data)
SELECT :step_execution_id, CAST(:data AS text)
 WHERE EXISTS (SELECT 1 FROM step_executions s JOIN workflow_runs r ON r.id = s.run_id
                JOIN tickets t ON t.id = r.ticket_id
               WHERE s.id = :step_execution_id AND t.attempt_id = r.attempt_id)
RETURNING id

-- name: after
-- Chunks of these steps from chunk :first on, oldest first, at most :limit of them, and
-- each only while the chunks before it hold less than :budget bytes (octet_length: it
-- reads no more than a value's header). A chunk of at most :piece bytes comes whole, as
-- text (`data`, `bytes` its size). A longer one, and chunk :resume (NULL: none) when it is :first
-- (:skip bytes of it read already), comes as bytes of its UTF-8 from byte :skip (`part`:
-- what the budget leaves, at least :piece bytes, cut anywhere; `bytes`: the size of its
-- UTF-8; the value is converted once, on the server), and counts as the whole budget: no
-- chunk comes after it. So what this returns is bounded whatever the rows hold.
SELECT c.id, c.step_execution_id, coalesce(octet_length(u.utf8), c.bytes) AS bytes,
       CASE WHEN NOT c.sliced THEN c.data END AS data,
       substring(u.utf8
                 FROM CAST((CASE WHEN c.id IS NOT DISTINCT FROM CAST(:resume AS bigint) THEN :skip ELSE 0 END) + 1 AS integer)
                 FOR CAST(greatest(:budget - c.before, :piece) AS integer)) AS part
  FROM (SELECT id, step_execution_id, data, bytes, sliced,
               coalesce(sum(CASE WHEN sliced THEN :budget ELSE bytes END)
                            OVER (ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                        0) AS before
          FROM (SELECT id, step_execution_id, data, octet_length(data) AS bytes,
                       octet_length(data) > :piece OR id IS NOT DISTINCT FROM CAST(:resume AS bigint) AS sliced
                  FROM step_logs
                 WHERE step_execution_id = ANY(:step_ids) AND id >= :first
                 ORDER BY id LIMIT :limit) AS listed) AS c
  LEFT JOIN LATERAL (SELECT convert_to(c.data, 'UTF8') AS utf8 WHERE c.sliced OFFSET 0) AS u
         ON true
 WHERE c.before < :budget
 ORDER BY c.id

-- name: after_run
-- `after` of a run's steps (only :step_id's attempts unless it is NULL), however many it
-- has: the steps are not listed by the caller.
SELECT c.id, c.step_execution_id, coalesce(octet_length(u.utf8), c.bytes) AS bytes,
       CASE WHEN NOT c.sliced THEN c.data END AS data,
       substring(u.utf8
                 FROM CAST((CASE WHEN c.id IS NOT DISTINCT FROM CAST(:resume AS bigint) THEN :skip ELSE 0 END) + 1 AS integer)
                 FOR CAST(greatest(:budget - c.before, :piece) AS integer)) AS part
  FROM (SELECT id, step_execution_id, data, bytes, sliced,
               coalesce(sum(CASE WHEN sliced THEN :budget ELSE bytes END)
                            OVER (ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                        0) AS before
          FROM (SELECT id, step_execution_id, data, octet_length(data) AS bytes,
                       octet_length(data) > :piece OR id IS NOT DISTINCT FROM CAST(:resume AS bigint) AS sliced
                  FROM step_logs
                 WHERE step_execution_id IN (SELECT id FROM step_executions
                                             WHERE run_id = :run_id
                                               AND (CAST(:step_id AS text) IS NULL
                                                    OR step_id = CAST(:step_id AS text)))
                   AND id >= :first
                 ORDER BY id LIMIT :limit) AS listed) AS c
  LEFT JOIN LATERAL (SELECT convert_to(c.data, 'UTF8') AS utf8 WHERE c.sliced OFFSET 0) AS u
         ON true
 WHERE c.before < :budget
 ORDER BY c.id

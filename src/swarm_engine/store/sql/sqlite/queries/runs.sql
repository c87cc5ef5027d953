-- Execution records, SQLite. Writes for a run are fenced: they apply only while the
-- run's attempt still holds its ticket (tickets.attempt_id = workflow_runs.attempt_id).

-- name: run_columns
-- A run row as every read of one returns it ({{run_columns}}): each column, but `inputs`
-- and `outputs` only when they hold at most 8 MiB of JSON (8388608 bytes:
-- MAX_RECORD_JSON_BYTES in records.py; else NULL), and `error` over 64 KiB
-- (MAX_ERROR_BYTES) only as its first 200 characters, each with its size in `<name>_bytes`:
-- no read hands over (and no reader parses) a larger value any client wrote. :values_cap
-- lowers that cap for `inputs` and `outputs` (-1: none read; a view reads them for the rows
-- it shows by `run_values` / `step_values`, within a budget of bytes); :errors false leaves
-- `error` out likewise (NULL, its size still given; read by the same `run_values`). Its names
-- (`attempt_id`, `engine_id`, `execution_mode`, `workflow_name`, `workflow_version`,
-- `status`) only when they hold at most 1 KiB (MAX_NAME_BYTES), else NULL with their
-- size in `<name>_bytes`: never cut, as names are looked up and acted on.
r.id, r.ticket_id, r.attempt,
CASE WHEN length(CAST(r.attempt_id AS BLOB)) <= 1024 THEN r.attempt_id END AS attempt_id,
length(CAST(r.attempt_id AS BLOB)) AS attempt_id_bytes,
CASE WHEN length(CAST(r.engine_id AS BLOB)) <= 1024 THEN r.engine_id END AS engine_id,
length(CAST(r.engine_id AS BLOB)) AS engine_id_bytes,
CASE WHEN length(CAST(r.execution_mode AS BLOB)) <= 1024 THEN r.execution_mode END AS execution_mode,
length(CAST(r.execution_mode AS BLOB)) AS execution_mode_bytes,
CASE WHEN length(CAST(r.workflow_name AS BLOB)) <= 1024 THEN r.workflow_name END AS workflow_name,
length(CAST(r.workflow_name AS BLOB)) AS workflow_name_bytes,
CASE WHEN length(CAST(r.workflow_version AS BLOB)) <= 1024 THEN r.workflow_version END AS workflow_version,
length(CAST(r.workflow_version AS BLOB)) AS workflow_version_bytes,
CASE WHEN length(CAST(r.status AS BLOB)) <= 1024 THEN r.status END AS status,
length(CAST(r.status AS BLOB)) AS status_bytes,
CASE WHEN length(CAST(r.inputs AS BLOB)) <= min(8388608, :values_cap) THEN r.inputs END AS inputs,
length(CAST(r.inputs AS BLOB)) AS inputs_bytes,
CASE WHEN length(CAST(r.outputs AS BLOB)) <= min(8388608, :values_cap) THEN r.outputs END AS outputs,
length(CAST(r.outputs AS BLOB)) AS outputs_bytes,
CASE WHEN NOT :errors THEN NULL WHEN length(CAST(r.error AS BLOB)) <= 65536 THEN r.error
     ELSE substr(r.error, 1, 200) END AS error,
length(CAST(r.error AS BLOB)) AS error_bytes,
r.started_at, r.completed_at, r.duration_ms, r.input_tokens, r.output_tokens,
r.cache_creation_input_tokens, r.cache_read_input_tokens, r.cost_usd

-- name: step_columns
-- A step row as every read of one returns it ({{step_columns}}): as {{run_columns}},
-- `inputs` and `outputs` up to 8 MiB of JSON, `error` and `stop_reason` up to 64 KiB of
-- text (else their first 200 characters), with their sizes in `<name>_bytes`; its names
-- (`step_id`, `agent_name`, `agent_version`, `agent_kind`, `vm_id`, `status`) up to
-- 1 KiB and `log_path` up to 4 KiB (MAX_PATH_BYTES), else NULL (never cut).
s.id, s.run_id,
CASE WHEN length(CAST(s.step_id AS BLOB)) <= 1024 THEN s.step_id END AS step_id,
length(CAST(s.step_id AS BLOB)) AS step_id_bytes,
CASE WHEN length(CAST(s.agent_name AS BLOB)) <= 1024 THEN s.agent_name END AS agent_name,
length(CAST(s.agent_name AS BLOB)) AS agent_name_bytes,
CASE WHEN length(CAST(s.agent_version AS BLOB)) <= 1024 THEN s.agent_version END AS agent_version,
length(CAST(s.agent_version AS BLOB)) AS agent_version_bytes,
CASE WHEN length(CAST(s.agent_kind AS BLOB)) <= 1024 THEN s.agent_kind END AS agent_kind,
length(CAST(s.agent_kind AS BLOB)) AS agent_kind_bytes,
CASE WHEN length(CAST(s.vm_id AS BLOB)) <= 1024 THEN s.vm_id END AS vm_id,
length(CAST(s.vm_id AS BLOB)) AS vm_id_bytes,
CASE WHEN length(CAST(s.status AS BLOB)) <= 1024 THEN s.status END AS status,
length(CAST(s.status AS BLOB)) AS status_bytes,
CASE WHEN length(CAST(s.inputs AS BLOB)) <= min(8388608, :values_cap) THEN s.inputs END AS inputs,
length(CAST(s.inputs AS BLOB)) AS inputs_bytes,
CASE WHEN length(CAST(s.outputs AS BLOB)) <= min(8388608, :values_cap) THEN s.outputs END AS outputs,
length(CAST(s.outputs AS BLOB)) AS outputs_bytes,
s.queued_at, s.started_at, s.completed_at, s.duration_ms, s.exit_code,
CASE WHEN NOT :errors THEN NULL WHEN length(CAST(s.error AS BLOB)) <= 65536 THEN s.error
     ELSE substr(s.error, 1, 200) END AS error,
length(CAST(s.error AS BLOB)) AS error_bytes,
s.retry_count,
CASE WHEN length(CAST(s.log_path AS BLOB)) <= 4096 THEN s.log_path END AS log_path,
length(CAST(s.log_path AS BLOB)) AS log_path_bytes,
s.input_tokens, s.output_tokens,
s.cache_creation_input_tokens, s.cache_read_input_tokens, s.turns,
CASE WHEN length(CAST(s.stop_reason AS BLOB)) <= 65536 THEN s.stop_reason
     ELSE substr(s.stop_reason, 1, 200) END AS stop_reason,
length(CAST(s.stop_reason AS BLOB)) AS stop_reason_bytes,
s.cost_usd

-- name: step_vm_columns
-- What a step's VM was and what isolated it (issue 9), read with the step: a VM's
-- `backend` or `isolation` over 1 KiB (MAX_NAME_BYTES) is NULL here (the VM's own row
-- names the defect: vm_columns in vms.sql).
CASE WHEN length(CAST(v.backend AS BLOB)) <= 1024 THEN v.backend END AS vm_backend,
CASE WHEN length(CAST(v.isolation AS BLOB)) <= 1024 THEN v.isolation END AS vm_isolation

-- name: run_values
-- The `inputs`, `outputs` and `error` of these runs (ids :ids), newest first, while their
-- running total of bytes stays within :budget (and the newest one's whatever its size when
-- :always): a view's values, bounded in all (service/runs.py). `shown` says whether the
-- row's values were read; `total` is the running total up to that row; `inputs_size`,
-- `outputs_size` and `error_size` are their sizes (NULL: none) whether read or not. Values over
-- 8 MiB count as 0 and are never read (their row's defect says so); an error over 64 KiB
-- counts as (and is read as) its first 200 characters, as {{run_columns}} reads it.
WITH sized AS (
  SELECT r.id,
         sum(CASE WHEN length(CAST(r.inputs AS BLOB)) <= 8388608 THEN length(CAST(r.inputs AS BLOB)) ELSE 0 END + CASE WHEN length(CAST(r.outputs AS BLOB)) <= 8388608 THEN length(CAST(r.outputs AS BLOB)) ELSE 0 END
             + CASE WHEN r.error IS NULL THEN 0 WHEN length(CAST(r.error AS BLOB)) <= 65536 THEN length(CAST(r.error AS BLOB)) ELSE length(CAST(substr(r.error, 1, 200) AS BLOB)) END)
           OVER (ORDER BY r.id DESC ROWS UNBOUNDED PRECEDING) AS total,
         row_number() OVER (ORDER BY r.id DESC) AS nth
    FROM workflow_runs r WHERE r.id IN (SELECT value FROM json_each(:ids))
)
SELECT r.id, z.total AS total, CASE WHEN (z.total <= :budget OR (z.nth = 1 AND :always)) THEN 1 ELSE 0 END AS shown,
       CASE WHEN (z.total <= :budget OR (z.nth = 1 AND :always)) AND length(CAST(r.inputs AS BLOB)) <= 8388608 THEN r.inputs END AS inputs,
       length(CAST(r.inputs AS BLOB)) AS inputs_bytes,
       CASE WHEN (z.total <= :budget OR (z.nth = 1 AND :always)) AND length(CAST(r.outputs AS BLOB)) <= 8388608 THEN r.outputs END AS outputs,
       length(CAST(r.outputs AS BLOB)) AS outputs_bytes,
       CASE WHEN (z.total <= :budget OR (z.nth = 1 AND :always)) AND length(CAST(r.error AS BLOB)) <= 65536 THEN r.error
            WHEN (z.total <= :budget OR (z.nth = 1 AND :always)) THEN substr(r.error, 1, 200) END AS error,
       length(CAST(r.error AS BLOB)) AS error_bytes,
       length(CAST(r.inputs AS BLOB)) AS inputs_size, length(CAST(r.outputs AS BLOB)) AS outputs_size, length(CAST(r.error AS BLOB)) AS error_size
  FROM sized z JOIN workflow_runs r ON r.id = z.id
 ORDER BY r.id DESC

-- name: step_values
-- The `inputs`, `outputs` and `error` of these steps (ids :ids, of run :run_id), newest first, while their
-- running total of bytes stays within :budget (and the newest one's whatever its size when
-- :always): a view's values, bounded in all (service/runs.py). `shown` says whether the
-- row's values were read; `total` is the running total up to that row; `inputs_size`,
-- `outputs_size` and `error_size` are their sizes (NULL: none) whether read or not. Values over
-- 8 MiB count as 0 and are never read (their row's defect says so); an error over 64 KiB
-- counts as (and is read as) its first 200 characters, as {{run_columns}} reads it.
WITH sized AS (
  SELECT s.id,
         sum(CASE WHEN length(CAST(s.inputs AS BLOB)) <= 8388608 THEN length(CAST(s.inputs AS BLOB)) ELSE 0 END + CASE WHEN length(CAST(s.outputs AS BLOB)) <= 8388608 THEN length(CAST(s.outputs AS BLOB)) ELSE 0 END
             + CASE WHEN s.error IS NULL THEN 0 WHEN length(CAST(s.error AS BLOB)) <= 65536 THEN length(CAST(s.error AS BLOB)) ELSE length(CAST(substr(s.error, 1, 200) AS BLOB)) END)
           OVER (ORDER BY s.id DESC ROWS UNBOUNDED PRECEDING) AS total,
         row_number() OVER (ORDER BY s.id DESC) AS nth
    FROM step_executions s WHERE s.id IN (SELECT value FROM json_each(:ids)) AND s.run_id = :run_id
)
SELECT s.id, z.total AS total, CASE WHEN (z.total <= :budget OR (z.nth = 1 AND :always)) THEN 1 ELSE 0 END AS shown,
       CASE WHEN (z.total <= :budget OR (z.nth = 1 AND :always)) AND length(CAST(s.inputs AS BLOB)) <= 8388608 THEN s.inputs END AS inputs,
       length(CAST(s.inputs AS BLOB)) AS inputs_bytes,
       CASE WHEN (z.total <= :budget OR (z.nth = 1 AND :always)) AND length(CAST(s.outputs AS BLOB)) <= 8388608 THEN s.outputs END AS outputs,
       length(CAST(s.outputs AS BLOB)) AS outputs_bytes,
       CASE WHEN (z.total <= :budget OR (z.nth = 1 AND :always)) AND length(CAST(s.error AS BLOB)) <= 65536 THEN s.error
            WHEN (z.total <= :budget OR (z.nth = 1 AND :always)) THEN substr(s.error, 1, 200) END AS error,
       length(CAST(s.error AS BLOB)) AS error_bytes,
       length(CAST(s.inputs AS BLOB)) AS inputs_size, length(CAST(s.outputs AS BLOB)) AS outputs_size, length(CAST(s.error AS BLOB)) AS error_size
  FROM sized z JOIN step_executions s ON s.id = z.id
 ORDER BY s.id DESC

-- name: start_run
INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, engine_id, execution_mode,
                           workflow_name, workflow_version, inputs)
VALUES (:ticket_id, :attempt, :attempt_id, :engine_id, :mode,
        :workflow_name, :workflow_version, :inputs)
RETURNING id

-- name: add_step
INSERT INTO step_executions (run_id, step_id, agent_name, agent_version, agent_kind, inputs,
                             retry_count, status, error, completed_at)
SELECT :run_id, :step_id, :agent_name, :agent_version, :agent_kind, :inputs,
       :retry_count, :status, :error,
       CASE WHEN :status = 'queued' THEN NULL ELSE strftime('%Y-%m-%dT%H:%M:%fZ','now') END
 WHERE EXISTS (SELECT 1 FROM workflow_runs r JOIN tickets t ON t.id = r.ticket_id
                WHERE r.id = :run_id AND t.attempt_id = r.attempt_id)
RETURNING id

-- name: step_started
UPDATE step_executions SET status = 'running', vm_id = :vm_id,
       started_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
 WHERE id = :id AND status = 'queued'
   AND EXISTS (SELECT 1 FROM workflow_runs r JOIN tickets t ON t.id = r.ticket_id
                WHERE r.id = step_executions.run_id AND t.attempt_id = r.attempt_id)

-- name: step_finished
UPDATE step_executions SET status = :status, outputs = :outputs, exit_code = :exit_code,
       error = :error, completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'),
       duration_ms = CASE WHEN started_at IS NULL THEN NULL
           ELSE CAST(round((julianday(strftime('%Y-%m-%dT%H:%M:%fZ','now')) - julianday(started_at, 'auto'))
                           * 86400000) AS INTEGER) END,
       input_tokens = :input_tokens, output_tokens = :output_tokens,
       cache_creation_input_tokens = :cache_creation_input_tokens,
       cache_read_input_tokens = :cache_read_input_tokens, turns = :turns,
       stop_reason = :stop_reason, cost_usd = :cost_usd, log_path = coalesce(:log_path, log_path)
 WHERE id = :id AND status IN ('queued','running')
   AND EXISTS (SELECT 1 FROM workflow_runs r JOIN tickets t ON t.id = r.ticket_id
                WHERE r.id = step_executions.run_id AND t.attempt_id = r.attempt_id)

-- name: held_status
SELECT t.status FROM tickets t JOIN workflow_runs r ON r.ticket_id = t.id
 WHERE r.id = :run_id AND t.attempt_id = r.attempt_id

-- name: close_run
-- A run's usage is the sum of its steps' plausible values (records.py: a step's token count
-- of each kind an integer 0 .. 2**40, MAX_STEP_TOKENS; its cost a number 0 .. 1e6 USD,
-- MAX_STEP_COST_USD): a step row holding anything else (2**63-1, 1e308, -5, text) is left
-- out (its own read names the defect). total() is a float sum, which never overflows;
-- token sums stop at 2**53-1 (MAX_TOTAL_TOKENS, exact in every JSON reader).
UPDATE workflow_runs SET status = :status, outputs = :outputs, error = :error,
       completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'),
       duration_ms = CAST(round((julianday(strftime('%Y-%m-%dT%H:%M:%fZ','now')) - julianday(started_at, 'auto'))
                                * 86400000) AS INTEGER),
       input_tokens = s.i, output_tokens = s.o, cache_creation_input_tokens = s.cc,
       cache_read_input_tokens = s.cr, cost_usd = s.c
  FROM (SELECT
               CAST(min(total(CASE WHEN typeof(input_tokens) = 'integer' AND input_tokens BETWEEN 0 AND 1099511627776 THEN input_tokens END), 9007199254740991.0) AS INTEGER) i,
               CAST(min(total(CASE WHEN typeof(output_tokens) = 'integer' AND output_tokens BETWEEN 0 AND 1099511627776 THEN output_tokens END), 9007199254740991.0) AS INTEGER) o,
               CAST(min(total(CASE WHEN typeof(cache_creation_input_tokens) = 'integer' AND cache_creation_input_tokens BETWEEN 0 AND 1099511627776 THEN cache_creation_input_tokens END), 9007199254740991.0) AS INTEGER) cc,
               CAST(min(total(CASE WHEN typeof(cache_read_input_tokens) = 'integer' AND cache_read_input_tokens BETWEEN 0 AND 1099511627776 THEN cache_read_input_tokens END), 9007199254740991.0) AS INTEGER) cr,
               total(CASE WHEN typeof(cost_usd) IN ('integer','real') AND cost_usd BETWEEN 0 AND 1000000.0 THEN cost_usd END) c
          FROM step_executions WHERE run_id = :run_id) s
 WHERE workflow_runs.id = :run_id

-- name: cancel_open_steps
-- With the run's end: a step still running is stopped (`cancelled`), one still queued
-- never started (`skipped`, :not_run: `not run: WHY`, as the steps that never had a row:
-- add_skipped_step).
UPDATE step_executions
   SET status = CASE WHEN status = 'queued' THEN 'skipped' ELSE 'cancelled' END,
       error = coalesce(error, CASE WHEN status = 'queued' THEN :not_run ELSE 'cancelled' END),
       completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
 WHERE run_id = :run_id AND status IN ('queued','running')

-- name: abandon_steps
-- A step still queued never started: `skipped`, as in cancel_open_steps.
UPDATE step_executions
   SET status = CASE WHEN status = 'queued' THEN 'skipped' ELSE 'failed' END,
       error = coalesce(error, CASE WHEN status = 'queued' THEN :not_run ELSE :error END),
       completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
 WHERE run_id = :run_id AND status IN ('queued','running')

-- name: add_skipped_step
-- A step of the run that never had a row, recorded with the run's end by the engine that
-- ran it (its own run: not fenced, as abandon_run and cancel_run are not). Not when a row
-- of it is there: a write of its first row that a cancel cut short may have taken (the
-- engine's writes run in order, so it ended before this one).
INSERT INTO step_executions (run_id, step_id, agent_name, agent_version, agent_kind, inputs,
                             retry_count, status, error, completed_at)
SELECT :run_id, :step_id, :agent_name,
       :agent_version, :agent_kind, '{}', 0, 'skipped', :error, strftime('%Y-%m-%dT%H:%M:%fZ','now')
 WHERE NOT EXISTS (SELECT 1 FROM step_executions WHERE run_id = :run_id AND step_id = :step_id)

-- name: abandon_run
UPDATE workflow_runs SET status = 'failed', error = coalesce(error, :error),
       completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'),
       duration_ms = CAST(round((julianday(strftime('%Y-%m-%dT%H:%M:%fZ','now')) - julianday(started_at, 'auto'))
                                * 86400000) AS INTEGER)
 WHERE id = :run_id AND status = 'running'

-- name: cancel_run
-- A run its own engine stopped for a cancel after the ticket was reopened (the attempt
-- no longer holds it): closed as cancelled. Not fenced: only that run's own row.
UPDATE workflow_runs SET status = 'cancelled', error = coalesce(error, :error),
       completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'),
       duration_ms = CAST(round((julianday(strftime('%Y-%m-%dT%H:%M:%fZ','now')) - julianday(started_at, 'auto'))
                                * 86400000) AS INTEGER)
 WHERE id = :run_id AND status = 'running'

-- name: get_run
SELECT {{run_columns}} FROM workflow_runs r WHERE r.id = :run_id

-- name: runs_for_ticket
-- The newest :limit runs of a ticket up to id :through, newest first (a ticket may have any
-- number of runs: one response shows a window of them).
SELECT {{run_columns}} FROM workflow_runs r WHERE r.ticket_id = :ticket_id AND r.id <= :through
 ORDER BY r.id DESC LIMIT :limit

-- name: count_runs_for_ticket
SELECT count(*) FROM workflow_runs WHERE ticket_id = :ticket_id

-- name: runs_for_workflow
SELECT {{run_columns}} FROM workflow_runs r WHERE r.workflow_name = :name ORDER BY r.id DESC LIMIT :limit

-- name: recent_runs
-- unisolated_steps (issue 9): steps of the run whose VM had no isolation
SELECT {{run_columns}}, (SELECT count(*) FROM step_executions s JOIN vms v ON v.id = s.vm_id
              WHERE s.run_id = r.id AND v.isolation = 'none') AS unisolated_steps
  FROM workflow_runs r ORDER BY r.id DESC LIMIT :limit

-- name: usage_totals
-- Every run's plausible usage summed, as close_run sums a run's steps: a run whose token
-- count or cost is out of a step's bounds (a run uses no more than 2**40 tokens of a kind,
-- or 1e6 USD, either: records.py) is left out of every total, counted in `implausible_runs`
-- (a defect of the totals; the run's own read names its value). Token sums stop at 2**53-1.
SELECT
       CAST(min(total(CASE WHEN typeof(input_tokens) = 'integer' AND input_tokens BETWEEN 0 AND 1099511627776 THEN input_tokens END), 9007199254740991.0) AS INTEGER) input_tokens,
       CAST(min(total(CASE WHEN typeof(output_tokens) = 'integer' AND output_tokens BETWEEN 0 AND 1099511627776 THEN output_tokens END), 9007199254740991.0) AS INTEGER) output_tokens,
       CAST(min(total(CASE WHEN typeof(cache_creation_input_tokens) = 'integer' AND cache_creation_input_tokens BETWEEN 0 AND 1099511627776 THEN cache_creation_input_tokens END), 9007199254740991.0) AS INTEGER) cache_creation_input_tokens,
       CAST(min(total(CASE WHEN typeof(cache_read_input_tokens) = 'integer' AND cache_read_input_tokens BETWEEN 0 AND 1099511627776 THEN cache_read_input_tokens END), 9007199254740991.0) AS INTEGER) cache_read_input_tokens,
       total(CASE WHEN typeof(cost_usd) IN ('integer','real') AND cost_usd BETWEEN 0 AND 1000000.0 THEN cost_usd END) cost_usd,
       count(CASE WHEN NOT (input_tokens IS NULL OR typeof(input_tokens) = 'integer' AND input_tokens BETWEEN 0 AND 1099511627776) OR NOT (output_tokens IS NULL OR typeof(output_tokens) = 'integer' AND output_tokens BETWEEN 0 AND 1099511627776) OR NOT (cache_creation_input_tokens IS NULL OR typeof(cache_creation_input_tokens) = 'integer' AND cache_creation_input_tokens BETWEEN 0 AND 1099511627776) OR NOT (cache_read_input_tokens IS NULL OR typeof(cache_read_input_tokens) = 'integer' AND cache_read_input_tokens BETWEEN 0 AND 1099511627776) OR NOT (cost_usd IS NULL OR typeof(cost_usd) IN ('integer','real') AND cost_usd BETWEEN 0 AND 1000000.0) THEN 1 END) implausible_runs
  FROM workflow_runs

-- name: steps
-- vm_backend, vm_isolation (issue 9): what the step's VM was and what isolated it
SELECT {{step_columns}}, {{step_vm_columns}}
  FROM step_executions s LEFT JOIN vms v ON v.id = s.vm_id
 WHERE s.run_id = :run_id ORDER BY s.id

-- name: last_steps
-- A run's newest :limit steps up to id :through, newest first (a run may have any number
-- of steps: a view shows a window of them, and pages on to the older ones)
SELECT {{step_columns}}, {{step_vm_columns}}
  FROM step_executions s LEFT JOIN vms v ON v.id = s.vm_id
 WHERE s.run_id = :run_id AND s.id <= :through ORDER BY s.id DESC LIMIT :limit

-- name: steps_from
-- A run's next :limit steps from id :first on, oldest first (read page by page:
-- `logs` never holds all of a run's steps)
SELECT {{step_columns}}, {{step_vm_columns}}
  FROM step_executions s LEFT JOIN vms v ON v.id = s.vm_id
 WHERE s.run_id = :run_id AND s.id >= :first ORDER BY s.id LIMIT :limit

-- name: step_attempts_from
-- `steps_from` of one step id's attempts only
SELECT {{step_columns}}, {{step_vm_columns}}
  FROM step_executions s LEFT JOIN vms v ON v.id = s.vm_id
 WHERE s.run_id = :run_id AND s.step_id = :step_id AND s.id >= :first ORDER BY s.id
 LIMIT :limit

-- name: steps_by_ids
-- These steps of a run (the ones a batch of log chunks belongs to), oldest first
SELECT {{step_columns}}, {{step_vm_columns}}
  FROM step_executions s LEFT JOIN vms v ON v.id = s.vm_id
 WHERE s.run_id = :run_id AND s.id IN (SELECT value FROM json_each(:ids)) ORDER BY s.id

-- name: first_step_ids
-- The step ids of a run's first :limit steps (to name some in a message); one over
-- 1 KiB (MAX_NAME_BYTES) as NULL, as {{step_columns}}
SELECT CASE WHEN length(CAST(step_id AS BLOB)) <= 1024 THEN step_id END AS step_id
  FROM step_executions WHERE run_id = :run_id ORDER BY id LIMIT :limit

-- name: count_steps
SELECT count(*) FROM step_executions WHERE run_id = :run_id

-- name: step_usage_columns
-- A step's usage as metrics reads it ({{step_usage_columns}}: `steps_after` and
-- `steps_with_ids` read the same columns). Names over 1 KiB (MAX_NAME_BYTES) as NULL,
-- as {{step_columns}}; a usage value out of its bounds (records.py: tokens 0 .. 2**40,
-- cost 0 .. 1e6 USD, duration 0 .. 366 days) as NULL, counted nowhere (the step's own
-- read names the defect); `usage_values`: how many of those six values the row holds
-- at all, so the caller can count the ones left out.
id,
CASE WHEN length(CAST(status AS BLOB)) <= 1024 THEN status END AS status,
CASE WHEN length(CAST(agent_name AS BLOB)) <= 1024 THEN agent_name END AS agent_name,
CASE WHEN length(CAST(agent_version AS BLOB)) <= 1024 THEN agent_version END AS agent_version,
CASE WHEN length(CAST(agent_kind AS BLOB)) <= 1024 THEN agent_kind END AS agent_kind,
queued_at,
CASE WHEN typeof(duration_ms) = 'integer' AND duration_ms BETWEEN 0 AND 31622400000 THEN duration_ms END AS duration_ms,
CASE WHEN typeof(input_tokens) = 'integer' AND input_tokens BETWEEN 0 AND 1099511627776 THEN input_tokens END AS input_tokens,
CASE WHEN typeof(output_tokens) = 'integer' AND output_tokens BETWEEN 0 AND 1099511627776 THEN output_tokens END AS output_tokens,
CASE WHEN typeof(cache_creation_input_tokens) = 'integer' AND cache_creation_input_tokens BETWEEN 0 AND 1099511627776 THEN cache_creation_input_tokens END AS cache_creation_input_tokens,
CASE WHEN typeof(cache_read_input_tokens) = 'integer' AND cache_read_input_tokens BETWEEN 0 AND 1099511627776 THEN cache_read_input_tokens END AS cache_read_input_tokens,
CASE WHEN typeof(cost_usd) IN ('integer','real') AND cost_usd BETWEEN 0 AND 1000000.0 THEN cost_usd END AS cost_usd,
(duration_ms IS NOT NULL) + (input_tokens IS NOT NULL) + (output_tokens IS NOT NULL) + (cache_creation_input_tokens IS NOT NULL) + (cache_read_input_tokens IS NOT NULL) + (cost_usd IS NOT NULL) AS usage_values

-- name: steps_after
-- Step executions from id :first on, oldest first, with their usage (metrics).
SELECT {{step_usage_columns}}
  FROM step_executions WHERE id >= :first ORDER BY id LIMIT :limit

-- name: steps_with_ids
-- These step executions (ids :ids), as `steps_after` reads them: metrics picks up the
-- steps it passed while they were unfinished.
SELECT {{step_usage_columns}}
  FROM step_executions WHERE id IN (SELECT value FROM json_each(:ids))

-- name: abandon_attempt_steps
UPDATE step_executions SET status = CASE WHEN status = 'queued' THEN 'skipped' ELSE 'failed' END,
       error = coalesce(error, CASE WHEN status = 'queued' THEN :not_run ELSE :error END),
       completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
 WHERE status IN ('queued','running')
   AND run_id IN (SELECT id FROM workflow_runs WHERE attempt_id = :attempt_id AND status = 'running')

-- name: abandon_attempt_runs
UPDATE workflow_runs SET status = 'failed', error = coalesce(error, :error),
       completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'),
       duration_ms = CAST(round((julianday(strftime('%Y-%m-%dT%H:%M:%fZ','now')) - julianday(started_at, 'auto'))
                                * 86400000) AS INTEGER)
 WHERE attempt_id = :attempt_id AND status = 'running'

-- name: end_unrecorded_steps
-- The attempt's run ended and the store refused both its end and the ticket's failure:
-- its run is closed with an error beginning `ended unrecorded: `, the mark that keeps the
-- reclaim from re-queuing the ticket (see any_expired in tickets.sql). Only its own rows.
UPDATE step_executions SET status = CASE WHEN status = 'queued' THEN 'skipped' ELSE 'failed' END,
       error = coalesce(error, CASE WHEN status = 'queued' THEN :not_run ELSE :error END),
       completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
 WHERE status IN ('queued','running')
   AND run_id IN (SELECT id FROM workflow_runs WHERE attempt_id = :attempt_id AND status = 'running')

-- name: end_unrecorded_run
UPDATE workflow_runs SET status = 'failed', error = :error,
       completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'),
       duration_ms = CAST(round((julianday(strftime('%Y-%m-%dT%H:%M:%fZ','now')) - julianday(started_at, 'auto'))
                                * 86400000) AS INTEGER)
 WHERE attempt_id = :attempt_id AND status = 'running'

-- name: end_unrecorded_insert
-- The same mark for an attempt that has no run (its start was what the store refused):
-- a run row of its own, closed at once.
INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, engine_id, execution_mode, inputs,
                           status, error, started_at, completed_at, duration_ms)
SELECT :ticket_id, :attempt, :attempt_id, :engine_id, :mode, :inputs,
       'failed', :error, strftime('%Y-%m-%dT%H:%M:%fZ','now'), strftime('%Y-%m-%dT%H:%M:%fZ','now'), 0
 WHERE NOT EXISTS (SELECT 1 FROM workflow_runs WHERE attempt_id = :attempt_id)
RETURNING id

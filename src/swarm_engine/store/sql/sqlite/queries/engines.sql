-- The engines table, SQLite.

-- name: engine_columns
-- An engine row as every read of one returns it ({{engine_columns}}): `id`, `kind`,
-- `host`, `backend` and `state` only when they hold at most 1 KiB (MAX_NAME_BYTES in
-- records.py; else NULL, with its size in `<name>_bytes`). Such a row is shown with its
-- defects and never acted on by its id: the queries that name engines to change
-- (`gone`, `find_running`, `forget_silent`, `stopped_with_runs`) leave it out.
CASE WHEN length(CAST(e.id AS BLOB)) <= 1024 THEN e.id END AS id,
length(CAST(e.id AS BLOB)) AS id_bytes,
CASE WHEN length(CAST(e.kind AS BLOB)) <= 1024 THEN e.kind END AS kind,
length(CAST(e.kind AS BLOB)) AS kind_bytes,
CASE WHEN length(CAST(e.host AS BLOB)) <= 1024 THEN e.host END AS host,
length(CAST(e.host AS BLOB)) AS host_bytes,
e.pid, e.max_vms,
CASE WHEN length(CAST(e.backend AS BLOB)) <= 1024 THEN e.backend END AS backend,
length(CAST(e.backend AS BLOB)) AS backend_bytes,
CASE WHEN length(CAST(e.state AS BLOB)) <= 1024 THEN e.state END AS state,
length(CAST(e.state AS BLOB)) AS state_bytes,
e.busy_vms, e.started_at, e.heartbeat_at, e.stopped_at

-- name: register
INSERT INTO engines (id, kind, host, pid, max_vms, backend)
VALUES (:id, :kind, :host, :pid, :max_vms, :backend)

-- name: restore
-- The engine's own row, put back (same id) after another writer deleted it; nothing when
-- it is there.
INSERT INTO engines (id, kind, host, pid, max_vms, backend)
VALUES (:id, :kind, :host, :pid, :max_vms, :backend)
ON CONFLICT (id) DO NOTHING

-- name: heartbeat
UPDATE engines SET heartbeat_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'), busy_vms = :busy_vms,
       state = coalesce(:state, state)
 WHERE id = :id

-- name: lock_wait
-- (PostgreSQL: the rest of the transaction waits at most 1.5 s for a row lock. SQLite has
-- no row locks: its write transaction waits for the whole database, by busy_timeout.)
SELECT 1

-- name: stopped
UPDATE engines SET state = :state, stopped_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'), busy_vms = 0
 WHERE id = :id

-- name: running
-- busy_now: the VMs each engine holds now (from the vms table), not as of its heartbeat
SELECT {{engine_columns}},
       (SELECT count(*) FROM vms v WHERE v.engine_id = e.id
           AND v.state IN ('booting','ready','busy')) AS busy_now
  FROM engines e WHERE e.state IN ('running','draining') ORDER BY e.started_at

-- name: gone
SELECT id FROM engines WHERE state IN ('stopped','dead') AND length(CAST(id AS BLOB)) <= 1024

-- name: get
SELECT {{engine_columns}} FROM engines e WHERE e.id = :id

-- name: find_running
SELECT id FROM engines WHERE pid = :pid AND host = :host AND state = 'running'
   AND length(CAST(id AS BLOB)) <= 1024

-- name: silent
-- Running engines of any host whose last heartbeat is older than :seconds, or that no
-- engine wrote: unreadable ('zzz'), the text 'now' (which julianday reads as the time of
-- reading, so it would never age) or an instant more than an hour ahead.
SELECT {{engine_columns}} FROM engines e WHERE e.state IN ('running','draining')
   AND (coalesce(julianday(heartbeat_at, 'auto') < julianday('now', printf('%+.3f seconds', -:seconds)), 1)
        OR lower(substr(heartbeat_at, 1, 3)) = 'now'
        OR julianday(heartbeat_at, 'auto') > julianday('now', '+1 hour'))

-- name: hosts
-- One row per host that has a live engine or a live VM. `slots` is a float sum clamped to
-- 64 bits (max_vms is any writer's: 2**63-1 twice, or 1e400, must not fail the query); a
-- negative max_vms (no engine writes one) adds nothing, and `negative_max_vms` counts them;
-- nor does one over 1024 (the most an engine runs: `max_vms` in config.py; inf, 2**63-1),
-- counted by `huge_max_vms`.
-- A host over 1 KiB (MAX_NAME_BYTES) is NULL, with its size in `host_bytes`.
SELECT CASE WHEN length(CAST(h.host AS BLOB)) <= 1024 THEN h.host END AS host,
       length(CAST(h.host AS BLOB)) AS host_bytes,
       count(kind) AS engines,
       CAST(coalesce(max(min(total(CASE WHEN CAST(max_vms AS REAL) < 0
                                          OR CAST(max_vms AS REAL) > 1024 THEN 0 ELSE max_vms END),
                              9223372036854775807.0), -9223372036854775808.0), 0) AS INTEGER) AS slots,
       count(CASE WHEN CAST(max_vms AS REAL) < 0 THEN 1 END) AS negative_max_vms,
       count(CASE WHEN CAST(max_vms AS REAL) > 1024 THEN 1 END) AS huge_max_vms,
       (SELECT count(*) FROM vms v WHERE v.host = h.host
           AND v.state IN ('booting','ready','busy','destroying')) AS vms
  FROM (SELECT host, kind, max_vms FROM engines WHERE state IN ('running','draining')
        UNION ALL
        SELECT DISTINCT host, NULL, 0 FROM vms WHERE state IN ('booting','ready','busy','destroying')) h
 GROUP BY h.host ORDER BY h.host

-- name: forget_silent
-- Engines of any host silent for longer than :seconds and holding no live ticket any
-- more (their leases ran out and were reclaimed first) are recorded as dead (:only: that
-- one engine, NULL: all).
UPDATE engines SET state = 'dead', stopped_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'), busy_vms = 0
 WHERE state IN ('running','draining')
   AND (coalesce(julianday(heartbeat_at, 'auto') < julianday('now', printf('%+.3f seconds', -:seconds)), 1)
        OR lower(substr(heartbeat_at, 1, 3)) = 'now'
        OR julianday(heartbeat_at, 'auto') > julianday('now', '+1 hour'))
   AND NOT EXISTS (SELECT 1 FROM tickets t WHERE t.engine_id = engines.id
                     AND t.status IN ('claimed','running'))
   AND (:only IS NULL OR id = :only) AND length(CAST(id AS BLOB)) <= 1024
RETURNING id, CASE WHEN length(CAST(host AS BLOB)) <= 1024 THEN host END AS host

-- name: stopped_with_runs
-- Engines recorded stopped or dead (or any state but running / draining) that still have
-- runs `running`, silent for longer than :seconds (an engine whose state another writer
-- changed while it runs goes on heartbeating): their runs are closed as a dead engine's.
SELECT DISTINCT e.id, CASE WHEN length(CAST(e.host AS BLOB)) <= 1024 THEN e.host END AS host, e.pid
  FROM workflow_runs r JOIN engines e ON e.id = r.engine_id
 WHERE r.status = 'running' AND e.state NOT IN ('running','draining') AND length(CAST(e.id AS BLOB)) <= 1024
   AND (coalesce(julianday(e.heartbeat_at, 'auto') < julianday('now', printf('%+.3f seconds', -:seconds)), 1)
        OR lower(substr(e.heartbeat_at, 1, 3)) = 'now'
        OR julianday(e.heartbeat_at, 'auto') > julianday('now', '+1 hour'))
   AND (:ticket IS NULL OR r.ticket_id = :ticket)

-- name: runs_without_engine
-- Engines named by a run still `running` that have no row (another writer deleted it with
-- foreign keys off), with the host and engine pid of every VM of those runs' steps.
-- (a host over 1 KiB is NULL, with its size: a VM of an unknown host)
SELECT DISTINCT r.engine_id, CASE WHEN length(CAST(v.host AS BLOB)) <= 1024 THEN v.host END AS host,
       v.owner_pid, length(CAST(v.host AS BLOB)) AS host_bytes
  FROM workflow_runs r
  LEFT JOIN step_executions s ON s.run_id = r.id
  LEFT JOIN vms v ON v.id = s.vm_id
 WHERE r.status = 'running' AND r.engine_id IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM engines e WHERE e.id = r.engine_id)
   AND length(CAST(r.engine_id AS BLOB)) <= 1024
 LIMIT 10000

-- name: running_vm_ids
-- The VM ids of the steps of these engines' runs still `running` (ids over 1 KiB left out:
-- no VM of ours has one): what a closer on this host looks for among the host's processes
-- before it closes those runs (engine/orphans.py).
SELECT DISTINCT s.vm_id FROM workflow_runs r JOIN step_executions s ON s.run_id = r.id
 WHERE r.status = 'running' AND r.engine_id IN (SELECT value FROM json_each(:ids)) AND s.vm_id IS NOT NULL AND length(CAST(s.vm_id AS BLOB)) <= 1024
 LIMIT 10000

-- name: close_dead_steps
-- Engines just recorded dead (forget_silent) held no live ticket, but may have left runs
-- `running` of tickets they lost (cancelled and reopened while they ran): closed failed,
-- with their unfinished steps. Only those engines' own rows.
-- A run whose ticket its attempt holds again is not one of them (`{{left_runs}}`: on
-- PostgreSQL an engine may claim between the check and this statement; here the write
-- transaction excludes that, and the fragment changes nothing).
UPDATE step_executions SET status = CASE WHEN status = 'queued' THEN 'skipped' ELSE 'failed' END,
       error = coalesce(error, CASE WHEN status = 'queued' THEN :not_run ELSE :error END),
       completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
 WHERE status IN ('queued','running')
   AND run_id IN (SELECT r.id FROM workflow_runs r WHERE r.status = 'running'
                   AND r.engine_id IN (SELECT value FROM json_each(:ids)) AND {{left_runs}})

-- name: close_dead_runs
-- (Not the runs whose ticket their attempt holds again: see close_dead_steps.)
UPDATE workflow_runs AS r SET status = 'failed', error = coalesce(error, :error),
       completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
 WHERE r.status = 'running' AND r.engine_id IN (SELECT value FROM json_each(:ids))
   AND {{left_runs}}

-- name: left_runs
-- (A fragment.) Run `r` is not its ticket's live attempt.
NOT EXISTS (SELECT 1 FROM tickets t WHERE t.attempt_id = r.attempt_id
              AND t.status IN ('claimed','running'))

-- name: close_unowned_runs
-- Runs `running` that no engine can close (`engine_id` NULL: no engine's run, a row
-- another writer made) and whose ticket their attempt does not hold (`{{left_runs}}`):
-- closed failed, at most 1000 a call (their steps: close_unowned_steps, with the ids
-- returned). A run of any engine (`engine_id` set) is never one of them.
UPDATE workflow_runs AS r SET status = 'failed', error = coalesce(error, :error),
       completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
 WHERE r.id IN (SELECT r.id FROM workflow_runs r WHERE r.status = 'running'
                   AND r.engine_id IS NULL AND {{left_runs}} LIMIT 1000)
RETURNING id

-- name: close_unowned_steps
-- The unfinished steps of the runs close_unowned_runs just closed (:ids).
UPDATE step_executions SET status = CASE WHEN status = 'queued' THEN 'skipped' ELSE 'failed' END,
       error = coalesce(error, CASE WHEN status = 'queued' THEN :not_run ELSE :error END),
       completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
 WHERE status IN ('queued','running') AND run_id IN (SELECT value FROM json_each(:ids))

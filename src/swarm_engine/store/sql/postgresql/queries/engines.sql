-- The engines table, PostgreSQL.

-- name: engine_columns
-- An engine row as every read of one returns it ({{engine_columns}}): `id`, `kind`,
-- `host`, `backend` and `state` only when they hold at most 1 KiB (MAX_NAME_BYTES in
-- records.py; else NULL, with its size in `<name>_bytes`). Such a row is shown with its
-- defects and never acted on by its id: the queries that name engines to change
-- (`gone`, `find_running`, `forget_silent`, `stopped_with_runs`) leave it out.
CASE WHEN octet_length(e.id) <= 1024 THEN e.id END AS id,
octet_length(e.id) AS id_bytes,
CASE WHEN octet_length(e.kind) <= 1024 THEN e.kind END AS kind,
octet_length(e.kind) AS kind_bytes,
CASE WHEN octet_length(e.host) <= 1024 THEN e.host END AS host,
octet_length(e.host) AS host_bytes,
e.pid, e.max_vms,
CASE WHEN octet_length(e.backend) <= 1024 THEN e.backend END AS backend,
octet_length(e.backend) AS backend_bytes,
CASE WHEN octet_length(e.state) <= 1024 THEN e.state END AS state,
octet_length(e.state) AS state_bytes,
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
-- A row another client holds locked (a `psql` session's `SELECT ... FOR UPDATE`) is
-- passed over, not waited for: the stamp waits for the next round, and the engine's
-- lease renewals, on the same store thread, are not held up by it (engines.py tells a
-- row passed over from a row gone).
UPDATE engines SET heartbeat_at = now(), busy_vms = :busy_vms,
       state = coalesce(:state, state)
 WHERE id = :id
   AND id IN (SELECT id FROM engines WHERE id = :id FOR NO KEY UPDATE SKIP LOCKED)

-- name: lock_wait
-- The rest of this transaction waits at most 1.5 s for a row lock another client holds
-- (then it is busy, and tried again next round): for the transactions of the engine's
-- lease-critical path (its lease renewal, the reclaim, the closes of dead engines' runs),
-- which run on its one store thread, where a longer wait held up its lease renewals
-- until its leases ran out. (Longer than the server's deadlock check, 1 s by default: a
-- deadlocked transaction is still rolled back and run again at once, store/rerun.py.)
SELECT set_config('lock_timeout', '1500ms', true)

-- name: stopped
UPDATE engines SET state = :state, stopped_at = now(), busy_vms = 0
 WHERE id = :id

-- name: running
-- busy_now: the VMs each engine holds now (from the vms table), not as of its heartbeat
SELECT {{engine_columns}},
       (SELECT count(*) FROM vms v WHERE v.engine_id = e.id
           AND v.state IN ('booting','ready','busy')) AS busy_now
  FROM engines e WHERE e.state IN ('running','draining') ORDER BY e.started_at

-- name: gone
SELECT id FROM engines WHERE state IN ('stopped','dead') AND octet_length(id) <= 1024

-- name: get
SELECT {{engine_columns}} FROM engines e WHERE e.id = :id

-- name: find_running
SELECT id FROM engines WHERE pid = :pid AND host = :host AND state = 'running'
   AND octet_length(id) <= 1024

-- name: silent
-- Running engines of any host whose last heartbeat is older than :seconds, or more than
-- an hour ahead ('infinity', written by hand: no engine wrote it, and it would never age).
SELECT {{engine_columns}} FROM engines e WHERE e.state IN ('running','draining')
   AND (e.heartbeat_at < now() - make_interval(secs => :seconds)
        OR e.heartbeat_at > now() + interval '1 hour')

-- name: hosts
-- One row per host that has a live engine or a live VM. `slots`: the numeric sum clamped
-- to bigint (two engines of 2**63-1 must not fail the query); a negative max_vms (no
-- engine writes one) adds nothing, and `negative_max_vms` counts them; nor does one over
-- 1024 (the most an engine runs: `max_vms` in config.py; 2**63-1), counted by `huge_max_vms`.
-- A host over 1 KiB (MAX_NAME_BYTES) is NULL, with its size in `host_bytes`.
SELECT CASE WHEN octet_length(h.host) <= 1024 THEN h.host END AS host,
       octet_length(h.host) AS host_bytes,
       count(kind) AS engines,
       CAST(GREATEST(LEAST(coalesce(sum(CASE WHEN max_vms < 0 OR max_vms > 1024 THEN 0
                                             ELSE max_vms END), 0),
                           9223372036854775807), -9223372036854775808) AS bigint) AS slots,
       count(CASE WHEN max_vms < 0 THEN 1 END) AS negative_max_vms,
       count(CASE WHEN max_vms > 1024 THEN 1 END) AS huge_max_vms,
       (SELECT count(*) FROM vms v WHERE v.host = h.host
           AND v.state IN ('booting','ready','busy','destroying')) AS vms
  FROM (SELECT host, kind, max_vms FROM engines WHERE state IN ('running','draining')
        UNION ALL
        SELECT DISTINCT host, NULL, 0 FROM vms WHERE state IN ('booting','ready','busy','destroying')) h
 GROUP BY h.host ORDER BY h.host

-- name: forget_silent
-- Engines of any host silent for longer than :seconds and holding no live ticket any
-- more (their leases ran out and were reclaimed first) are recorded as dead (:only: that
-- one engine, NULL: all). A row another client holds locked is passed over this round.
UPDATE engines SET state = 'dead', stopped_at = now(), busy_vms = 0
 WHERE state IN ('running','draining')
   AND (heartbeat_at < now() - make_interval(secs => :seconds)
        OR heartbeat_at > now() + interval '1 hour')
   AND NOT EXISTS (SELECT 1 FROM tickets t WHERE t.engine_id = engines.id
                     AND t.status IN ('claimed','running'))
   AND (CAST(:only AS TEXT) IS NULL OR id = CAST(:only AS TEXT)) AND octet_length(id) <= 1024
   AND id IN (SELECT id FROM engines WHERE state IN ('running','draining')
                 AND (heartbeat_at < now() - make_interval(secs => :seconds)
                      OR heartbeat_at > now() + interval '1 hour')
                 FOR NO KEY UPDATE SKIP LOCKED)
RETURNING id, CASE WHEN octet_length(host) <= 1024 THEN host END AS host

-- name: stopped_with_runs
-- Engines recorded stopped or dead (or any state but running / draining) that still have
-- runs `running`, silent for longer than :seconds (an engine whose state another writer
-- changed while it runs goes on heartbeating): their runs are closed as a dead engine's.
SELECT DISTINCT e.id, CASE WHEN octet_length(e.host) <= 1024 THEN e.host END AS host, e.pid
  FROM workflow_runs r JOIN engines e ON e.id = r.engine_id
 WHERE r.status = 'running' AND e.state NOT IN ('running','draining') AND octet_length(e.id) <= 1024
   AND (e.heartbeat_at IS NULL
        OR e.heartbeat_at < now() - make_interval(secs => :seconds)
        OR e.heartbeat_at > now() + interval '1 hour')
   AND (CAST(:ticket AS BIGINT) IS NULL OR r.ticket_id = CAST(:ticket AS BIGINT))

-- name: runs_without_engine
-- (See the SQLite query: here the foreign key keeps a run's engine row, so this finds
-- nothing unless a writer turned the constraint off.)
-- (a host over 1 KiB is NULL, with its size: a VM of an unknown host)
SELECT DISTINCT r.engine_id, CASE WHEN octet_length(v.host) <= 1024 THEN v.host END AS host,
       v.owner_pid, octet_length(v.host) AS host_bytes
  FROM workflow_runs r
  LEFT JOIN step_executions s ON s.run_id = r.id
  LEFT JOIN vms v ON v.id = s.vm_id
 WHERE r.status = 'running' AND r.engine_id IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM engines e WHERE e.id = r.engine_id)
   AND octet_length(r.engine_id) <= 1024
 LIMIT 10000

-- name: running_vm_ids
-- The VM ids of the steps of these engines' runs still `running` (ids over 1 KiB left out:
-- no VM of ours has one): what a closer on this host looks for among the host's processes
-- before it closes those runs (engine/orphans.py).
SELECT DISTINCT s.vm_id FROM workflow_runs r JOIN step_executions s ON s.run_id = r.id
 WHERE r.status = 'running' AND r.engine_id = ANY(:ids) AND s.vm_id IS NOT NULL AND octet_length(s.vm_id) <= 1024
 LIMIT 10000

-- name: close_dead_steps
-- Engines just recorded dead (forget_silent) held no live ticket, but may have left runs
-- `running` of tickets they lost (cancelled and reopened while they ran): closed failed,
-- with their unfinished steps. Only those engines' own rows.
-- A run whose ticket its attempt holds again is not one of them: the check that the
-- engine held no live ticket was an earlier statement (READ COMMITTED), and an engine
-- that woke up in between may have claimed and started it since (`{{left_runs}}`).
UPDATE step_executions SET status = CASE WHEN status = 'queued' THEN 'skipped' ELSE 'failed' END,
       error = coalesce(error, CASE WHEN status = 'queued' THEN :not_run ELSE :error END),
       completed_at = now()
 WHERE status IN ('queued','running')
   AND run_id IN (SELECT r.id FROM workflow_runs r WHERE r.status = 'running'
                   AND r.engine_id = ANY(:ids) AND {{left_runs}})

-- name: close_dead_runs
-- (Not the runs whose ticket their attempt holds again: see close_dead_steps.)
UPDATE workflow_runs r SET status = 'failed', error = coalesce(error, :error),
       completed_at = now()
 WHERE r.status = 'running' AND r.engine_id = ANY(:ids) AND {{left_runs}}

-- name: left_runs
-- (A fragment.) Run `r` is not its ticket's live attempt.
NOT EXISTS (SELECT 1 FROM tickets t WHERE t.attempt_id = r.attempt_id
              AND t.status IN ('claimed','running'))

-- name: close_unowned_runs
-- Runs `running` that no engine can close (`engine_id` NULL: no engine's run, a row
-- another writer made) and whose ticket their attempt does not hold (`{{left_runs}}`; a
-- claim made meanwhile gives the ticket a new attempt id, never this run's): closed
-- failed, at most 1000 a call, each row locked and checked again (`FOR UPDATE`: a run
-- another writer changed meanwhile is left out). Their steps: close_unowned_steps.
UPDATE workflow_runs r SET status = 'failed', error = coalesce(error, :error),
       completed_at = now()
 WHERE r.id IN (SELECT r.id FROM workflow_runs r WHERE r.status = 'running'
                   AND r.engine_id IS NULL AND {{left_runs}} LIMIT 1000 FOR UPDATE SKIP LOCKED)
   AND r.status = 'running' AND r.engine_id IS NULL
RETURNING id

-- name: close_unowned_steps
-- The unfinished steps of the runs close_unowned_runs just closed (:ids).
UPDATE step_executions SET status = CASE WHEN status = 'queued' THEN 'skipped' ELSE 'failed' END,
       error = coalesce(error, CASE WHEN status = 'queued' THEN :not_run ELSE :error END),
       completed_at = now()
 WHERE status IN ('queued','running') AND run_id = ANY(:ids)

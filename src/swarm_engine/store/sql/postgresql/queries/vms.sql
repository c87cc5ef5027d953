-- The vms table, PostgreSQL.

-- name: record_boot
INSERT INTO vms (id, backend, host, engine_id, owner_pid, memory_mb, vcpus)
VALUES (:id, :backend, :host, :engine_id, :owner_pid, :memory_mb, :vcpus)

-- name: record_ready
UPDATE vms SET state = 'ready', ready_at = now(), pid = :pid,
       workspace = :workspace, socket_path = :socket_path, overlay_path = :overlay_path,
       isolation = :isolation
 WHERE id = :id

-- name: record_ready_busy
-- The VM is up and at once busy with a step (one statement for both changes)
UPDATE vms SET state = 'busy', ready_at = now(), pid = :pid,
       workspace = :workspace, socket_path = :socket_path, overlay_path = :overlay_path,
       isolation = :isolation, step_execution_id = :step_execution_id
 WHERE id = :id

-- name: record_busy
UPDATE vms SET state = 'busy', step_execution_id = :step_execution_id WHERE id = :id

-- name: record_destroyed
-- :at, when given, is when the VM was destroyed (its record may be written later)
UPDATE vms SET state = CASE WHEN CAST(:error AS text) IS NULL THEN 'destroyed' ELSE 'failed' END,
       destroyed_at = coalesce(CAST(:at AS timestamptz), now()), error = coalesce(:error, error)
 WHERE id = :id

-- name: live
SELECT * FROM vms WHERE state IN ('booting','ready','busy','destroying')
   AND (CAST(:host AS text) IS NULL OR host = :host)
 ORDER BY created_at

-- name: get
SELECT * FROM vms WHERE id = :id

-- name: live_counts
-- Live VMs per host and state (through the vms_live index: finished VMs are not read).
SELECT host, state, count(*) AS n FROM vms
 WHERE state IN ('booting','ready','busy','destroying')
 GROUP BY host, state ORDER BY host, state

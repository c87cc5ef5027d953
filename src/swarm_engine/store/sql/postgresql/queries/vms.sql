-- The vms table, PostgreSQL.

-- name: vm_columns
-- A VM row as every read of one returns it ({{vm_columns}}): its names (`id`, `backend`,
-- `host`, `engine_id`, `state`, `isolation`) only when they hold at most 1 KiB
-- (MAX_NAME_BYTES in records.py) and its paths (`workspace`, `socket_path`,
-- `overlay_path`) only up to 4 KiB (MAX_PATH_BYTES), else NULL: never cut, so nothing
-- connects to or deletes a path it did not read whole; `error` over 64 KiB
-- (MAX_ERROR_BYTES) as its first 200 characters. Each with its size in `<name>_bytes`.
CASE WHEN octet_length(v.id) <= 1024 THEN v.id END AS id,
octet_length(v.id) AS id_bytes,
CASE WHEN octet_length(v.backend) <= 1024 THEN v.backend END AS backend,
octet_length(v.backend) AS backend_bytes,
CASE WHEN octet_length(v.host) <= 1024 THEN v.host END AS host,
octet_length(v.host) AS host_bytes,
CASE WHEN octet_length(v.engine_id) <= 1024 THEN v.engine_id END AS engine_id,
octet_length(v.engine_id) AS engine_id_bytes,
v.owner_pid, v.pid,
CASE WHEN octet_length(v.state) <= 1024 THEN v.state END AS state,
octet_length(v.state) AS state_bytes,
v.step_execution_id,
CASE WHEN octet_length(v.workspace) <= 4096 THEN v.workspace END AS workspace,
octet_length(v.workspace) AS workspace_bytes,
CASE WHEN octet_length(v.socket_path) <= 4096 THEN v.socket_path END AS socket_path,
octet_length(v.socket_path) AS socket_path_bytes,
CASE WHEN octet_length(v.overlay_path) <= 4096 THEN v.overlay_path END AS overlay_path,
octet_length(v.overlay_path) AS overlay_path_bytes,
v.memory_mb, v.vcpus, v.created_at, v.ready_at, v.destroyed_at,
CASE WHEN octet_length(v.error) <= 65536 THEN v.error
     ELSE left(v.error, 200) END AS error,
octet_length(v.error) AS error_bytes,
CASE WHEN octet_length(v.isolation) <= 1024 THEN v.isolation END AS isolation,
octet_length(v.isolation) AS isolation_bytes


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
SELECT {{vm_columns}} FROM vms v WHERE v.state IN ('booting','ready','busy','destroying')
   AND (CAST(:host AS text) IS NULL OR v.host = :host)
 ORDER BY v.created_at

-- name: get
SELECT {{vm_columns}} FROM vms v WHERE v.id = :id

-- name: live_counts
-- Live VMs per host and state (through the vms_live index: finished VMs are not read).
-- (a host over 1 KiB as NULL, with its size: as {{vm_columns}})
SELECT CASE WHEN octet_length(v.host) <= 1024 THEN v.host END AS host,
octet_length(v.host) AS host_bytes, v.state, count(*) AS n FROM vms v
 WHERE v.state IN ('booting','ready','busy','destroying')
 GROUP BY v.host, v.state ORDER BY v.host, v.state

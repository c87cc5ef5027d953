-- The vms table, SQLite.

-- name: vm_columns
-- A VM row as every read of one returns it ({{vm_columns}}): its names (`id`, `backend`,
-- `host`, `engine_id`, `state`, `isolation`) only when they hold at most 1 KiB
-- (MAX_NAME_BYTES in records.py) and its paths (`workspace`, `socket_path`,
-- `overlay_path`) only up to 4 KiB (MAX_PATH_BYTES), else NULL: never cut, so nothing
-- connects to or deletes a path it did not read whole; `error` over 64 KiB
-- (MAX_ERROR_BYTES) as its first 200 characters. Each with its size in `<name>_bytes`.
CASE WHEN length(CAST(v.id AS BLOB)) <= 1024 THEN v.id END AS id,
length(CAST(v.id AS BLOB)) AS id_bytes,
CASE WHEN length(CAST(v.backend AS BLOB)) <= 1024 THEN v.backend END AS backend,
length(CAST(v.backend AS BLOB)) AS backend_bytes,
CASE WHEN length(CAST(v.host AS BLOB)) <= 1024 THEN v.host END AS host,
length(CAST(v.host AS BLOB)) AS host_bytes,
CASE WHEN length(CAST(v.engine_id AS BLOB)) <= 1024 THEN v.engine_id END AS engine_id,
length(CAST(v.engine_id AS BLOB)) AS engine_id_bytes,
v.owner_pid, v.pid,
CASE WHEN length(CAST(v.state AS BLOB)) <= 1024 THEN v.state END AS state,
length(CAST(v.state AS BLOB)) AS state_bytes,
v.step_execution_id,
CASE WHEN length(CAST(v.workspace AS BLOB)) <= 4096 THEN v.workspace END AS workspace,
length(CAST(v.workspace AS BLOB)) AS workspace_bytes,
CASE WHEN length(CAST(v.socket_path AS BLOB)) <= 4096 THEN v.socket_path END AS socket_path,
length(CAST(v.socket_path AS BLOB)) AS socket_path_bytes,
CASE WHEN length(CAST(v.overlay_path AS BLOB)) <= 4096 THEN v.overlay_path END AS overlay_path,
length(CAST(v.overlay_path AS BLOB)) AS overlay_path_bytes,
v.memory_mb, v.vcpus, v.created_at, v.ready_at, v.destroyed_at,
CASE WHEN length(CAST(v.error AS BLOB)) <= 65536 THEN v.error
     ELSE substr(v.error, 1, 200) END AS error,
length(CAST(v.error AS BLOB)) AS error_bytes,
CASE WHEN length(CAST(v.isolation AS BLOB)) <= 1024 THEN v.isolation END AS isolation,
length(CAST(v.isolation AS BLOB)) AS isolation_bytes

-- name: record_boot
INSERT INTO vms (id, backend, host, engine_id, owner_pid, memory_mb, vcpus)
VALUES (:id, :backend, :host, :engine_id, :owner_pid, :memory_mb, :vcpus)

-- name: record_ready
UPDATE vms SET state = 'ready', ready_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'), pid = :pid,
       workspace = :workspace, socket_path = :socket_path, overlay_path = :overlay_path,
       isolation = :isolation
 WHERE id = :id

-- name: record_ready_busy
-- The VM is up and at once busy with a step (one statement for both changes)
UPDATE vms SET state = 'busy', ready_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'), pid = :pid,
       workspace = :workspace, socket_path = :socket_path, overlay_path = :overlay_path,
       isolation = :isolation, step_execution_id = :step_execution_id
 WHERE id = :id

-- name: record_busy
UPDATE vms SET state = 'busy', step_execution_id = :step_execution_id WHERE id = :id

-- name: record_destroyed
-- :at, when given, is when the VM was destroyed (its record may be written later)
UPDATE vms SET state = CASE WHEN :error IS NULL THEN 'destroyed' ELSE 'failed' END,
       destroyed_at = coalesce(:at, strftime('%Y-%m-%dT%H:%M:%fZ','now')),
       error = coalesce(:error, error)
 WHERE id = :id

-- name: live
SELECT {{vm_columns}} FROM vms v WHERE v.state IN ('booting','ready','busy','destroying')
   AND (:host IS NULL OR v.host = :host)
 ORDER BY v.created_at

-- name: get
SELECT {{vm_columns}} FROM vms v WHERE v.id = :id

-- name: live_counts
-- Live VMs per host and state (through the vms_live index: finished VMs are not read).
-- (a host over 1 KiB as NULL, with its size: as {{vm_columns}})
SELECT CASE WHEN length(CAST(v.host AS BLOB)) <= 1024 THEN v.host END AS host,
length(CAST(v.host AS BLOB)) AS host_bytes, v.state, count(*) AS n FROM vms v
 WHERE v.state IN ('booting','ready','busy','destroying')
 GROUP BY v.host, v.state ORDER BY v.host, v.state

-- The registry's definitions: agents and workflows, PostgreSQL.

-- name: agent_columns
-- An agent row as every read of one returns it ({{agent_columns}}): `name`, `version` and
-- `kind` only when they hold at most 1 KiB (MAX_NAME_BYTES in records.py; else NULL),
-- `description` over 1 MiB (MAX_DESCRIPTION_BYTES) only as its first 200 characters, and
-- `spec` only when it holds at most 8 MiB of JSON (MAX_SPEC_BYTES; else NULL), each with
-- its size in `<name>_bytes`: no read hands over (and no reader parses) a larger value
-- any client wrote.
CASE WHEN octet_length(name) <= 1024 THEN name END AS name,
octet_length(name) AS name_bytes,
CASE WHEN octet_length(version) <= 1024 THEN version END AS version,
octet_length(version) AS version_bytes,
CASE WHEN octet_length(kind) <= 1024 THEN kind END AS kind,
octet_length(kind) AS kind_bytes,
CASE WHEN octet_length(description) <= 1048576 THEN description
     ELSE left(description, 200) END AS description,
octet_length(description) AS description_bytes,
CASE WHEN octet_length(spec::text) <= 8388608 THEN spec END AS spec,
octet_length(spec::text) AS spec_bytes,
builtin, created_at

-- name: workflow_columns
-- A workflow row as every read of one returns it ({{workflow_columns}}): as
-- {{agent_columns}} (a workflow has no `kind` nor `builtin`).
CASE WHEN octet_length(name) <= 1024 THEN name END AS name,
octet_length(name) AS name_bytes,
CASE WHEN octet_length(version) <= 1024 THEN version END AS version,
octet_length(version) AS version_bytes,
CASE WHEN octet_length(description) <= 1048576 THEN description
     ELSE left(description, 200) END AS description,
octet_length(description) AS description_bytes,
CASE WHEN octet_length(spec::text) <= 8388608 THEN spec END AS spec,
octet_length(spec::text) AS spec_bytes,
created_at

-- name: builtin_agents
-- (a name or version over 1 KiB is no built-in's: left out)
SELECT name, version FROM agents WHERE builtin <> 0
   AND octet_length(name) <= 1024 AND octet_length(version) <= 1024

-- name: seed_agent
INSERT INTO agents (name, version, kind, description, spec, builtin)
VALUES (:name, :version, :kind, :description, CAST(:spec AS jsonb), 1)
ON CONFLICT (name, version) DO NOTHING

-- name: put_agent
INSERT INTO agents (name, version, kind, description, spec)
VALUES (:name, :version, :kind, :description, CAST(:spec AS jsonb))
ON CONFLICT (name, version) DO UPDATE SET kind = excluded.kind,
       description = excluded.description, spec = excluded.spec, builtin = 0,
       created_at = now()

-- name: agent
SELECT {{agent_columns}} FROM agents WHERE agents.name = :name AND agents.version = :version

-- name: agent_versions
-- A version over 1 KiB (MAX_NAME_BYTES) is NULL (never a valid one), with its size.
SELECT CASE WHEN octet_length(version) <= 1024 THEN version END AS version,
       octet_length(version) AS version_bytes FROM agents WHERE name = :name

-- name: agents
SELECT {{agent_columns}} FROM agents ORDER BY agents.name, agents.created_at

-- name: lock_workflows
-- Taken first in the transaction that registers workflows (`DefinitionStore.registering`):
-- the check that no other workflow owns a trigger name and the insert are one step.
-- A transaction-scoped advisory lock ("SWM" 3): registrations of workflows one at a
-- time across every client, until the holder commits or rolls back.
SELECT pg_advisory_xact_lock(1398230275)

-- name: workflows_seen
-- What changes when a workflow row is added, deleted or registered again (its created_at
-- is set anew): the engine's cron task compares it before firing (engine/cron.py).
SELECT count(*) AS rows, max(created_at) AS newest FROM workflows

-- name: workflow_exists
SELECT 1 FROM workflows WHERE name = :name AND version = :version

-- name: put_workflow
INSERT INTO workflows (name, version, description, spec)
VALUES (:name, :version, :description, CAST(:spec AS jsonb))
ON CONFLICT (name, version) DO UPDATE SET description = excluded.description,
       spec = excluded.spec, created_at = now()

-- name: workflow
SELECT {{workflow_columns}} FROM workflows WHERE workflows.name = :name AND workflows.version = :version

-- name: workflow_versions
SELECT CASE WHEN octet_length(version) <= 1024 THEN version END AS version,
       octet_length(version) AS version_bytes FROM workflows WHERE name = :name

-- name: workflows
SELECT {{workflow_columns}} FROM workflows ORDER BY workflows.name, workflows.created_at

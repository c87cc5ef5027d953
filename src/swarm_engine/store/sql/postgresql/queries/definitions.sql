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

-- name: lock_workflows
-- Taken first in the transaction that registers workflows (`DefinitionStore.registering`):
-- the check that no other workflow owns a trigger name and the insert are one step.
-- A transaction-scoped advisory lock ("SWM" 3): registrations of workflows one at a
-- time across every client, until the holder commits or rolls back.
SELECT pg_advisory_xact_lock(1398230275)

-- name: workflows_seen
-- What changes when a client commits a change to the registry: the rows' count, newest
-- created_at and the sum of their `xmin` (the transaction that last wrote each: a row
-- edited in place too), of workflows and of agents (a workflow's checks read agents).
-- Only row headers and created_at are read (a spec is TOASTed apart). The engine's cron
-- task reads the registry again only when it changed (engine/cron.py).
SELECT (SELECT count(*) FROM workflows) AS rows,
       (SELECT max(created_at) FROM workflows) AS newest,
       (SELECT sum(xmin::text::bigint) FROM workflows) AS version,
       (SELECT count(*) FROM agents) AS agents,
       (SELECT sum(xmin::text::bigint) FROM agents) AS agents_version

-- name: workflow_keys
-- The keys of at most :limit workflows rows after (:after_name, :after_version) (NULL:
-- from the first; UTF-8 bytes, a row's `key_name` and `key_version`, as workflows_page),
-- in that order, of those whose name and version are text of at most 1 KiB; nothing else
-- of a row is read (the cron task's scan: registry/schedules.py).
SELECT name, version, convert_to(name, 'UTF8') AS key_name,
       convert_to(version, 'UTF8') AS key_version
  FROM workflows
 WHERE {{key_after}}
 ORDER BY name, version LIMIT :limit

-- name: workflow_quiet
-- Whether one workflow row (by `key_name` and `key_version` as workflow_keys gave them)
-- declares no triggers, for the cron task, its spec not handed over: `quiet` 1 when its
-- spec (of at most 8 MiB) has no `triggers` or an empty array, or when its `seen` (its
-- `xmin`: the transaction that last wrote it) is :seen, what a row found quiet before had
-- (the JSON is not looked at again); else 0 (the caller reads the row). `spec_bytes`: its
-- size as stored (compressed: not detoasted to be measured). (`seen` is also the mark of
-- a row then read and decoded: `DefinitionStore.read_mark`.)
SELECT pg_column_size(spec) AS spec_bytes, xmin::text AS seen,
       CASE WHEN xmin::text = CAST(:seen AS text) THEN 1
            WHEN octet_length(spec::text) > 8388608 THEN 0
            WHEN spec -> 'triggers' IS NULL OR spec -> 'triggers' = '[]'::jsonb THEN 1
            ELSE 0 END AS quiet
  FROM workflows
 WHERE name = CAST(:name AS text) AND version = CAST(:version AS text)

-- name: workflow_head
-- What tells the cron task whether one workflow row declaring triggers (by `key_name` and
-- `key_version`) is the one it read before, its spec not handed over: `mark`, its `xmin`
-- (the transaction that last wrote it: any write of the row, in place too, gives it a new
-- one; `DefinitionStore.workflow_mark`), `spec_bytes` (as stored, not detoasted), and its
-- `created_at` (as `workflow` reads it: taken afresh each time); `row_id` is SQLite's
-- (NULL here).
SELECT pg_column_size(spec) AS spec_bytes, xmin::text AS mark, NULL::bigint AS row_id,
       created_at
  FROM workflows
 WHERE name = CAST(:name AS text) AND version = CAST(:version AS text)

-- name: workflow_exists
SELECT 1 FROM workflows WHERE name = :name AND version = :version

-- name: put_workflow
INSERT INTO workflows (name, version, description, spec)
VALUES (:name, :version, :description, CAST(:spec AS jsonb))
ON CONFLICT (name, version) DO UPDATE SET description = excluded.description,
       spec = excluded.spec, created_at = now()

-- name: workflow
SELECT {{workflow_columns}} FROM workflows WHERE workflows.name = :name AND workflows.version = :version

-- name: agents_named
-- The agents named in :names (a list) whose version is text of at most 1 KiB: `name`,
-- `version`, and `kind` (NULL over 1 KiB); what a list of workflows reads once a page to
-- say which step names an agent that cannot run (registry/runnable.py).
SELECT name, version, CASE WHEN octet_length(kind) <= 1024 THEN kind END AS kind
  FROM agents
 WHERE name = ANY(:names) AND octet_length(version) <= 1024

-- name: workflow_versions
SELECT CASE WHEN octet_length(version) <= 1024 THEN version END AS version,
       octet_length(version) AS version_bytes FROM workflows WHERE name = :name

-- name: workflows
SELECT {{workflow_columns}} FROM workflows ORDER BY workflows.name, workflows.created_at

-- name: agents_page
-- A page of agents for a list, by (name, version) after (:after_name, :after_version)
-- (NULL: from the first; UTF-8 bytes, `key_name` and `key_version` of a row, so that any
-- text a row holds is passed on exactly), at most :limit rows; only rows whose name and
-- version are text of at most 1 KiB (MAX_NAME_BYTES: the ones a reference can name; `agents_unread` lists the
-- others). Each row's `spec` (up to 8 MiB) and `description` (up to 1 MiB) are measured
-- here, before any is read: `total` is the running total of their bytes in page order,
-- and they are read only when :specs and the row's `total` is within :budget, or it is
-- the page's first (`nth` 1); else `spec` is NULL and `description` its first 200
-- characters (a list's page ends at the first row not read whole: service/registry.py).
-- :specs false reads no spec (a summary: a workflow's `steps` counted here instead).
WITH keys AS (
  SELECT name AS key_name, version AS key_version,
         CASE WHEN octet_length(spec::text) <= 8388608 THEN octet_length(spec::text) ELSE 0 END
         + CASE WHEN octet_length(description) <= 1048576 THEN octet_length(description) ELSE 200 END AS size
    FROM agents
   WHERE {{key_after}}
   ORDER BY name, version LIMIT :limit
), sized AS (
  SELECT key_name, key_version,
         sum(size) OVER (ORDER BY key_name, key_version ROWS UNBOUNDED PRECEDING) AS total,
         row_number() OVER (ORDER BY key_name, key_version) AS nth
    FROM keys
)
SELECT d.name, octet_length(d.name) AS name_bytes, d.version, octet_length(d.version) AS version_bytes,
       CASE WHEN octet_length(d.kind) <= 1024 THEN d.kind END AS kind,
       octet_length(d.kind) AS kind_bytes, d.builtin,
       CASE WHEN :specs AND (z.total <= :budget OR z.nth = 1) AND octet_length(d.description) <= 1048576
            THEN d.description ELSE left(d.description, 200) END AS description,
       octet_length(d.description) AS description_bytes,
       CASE WHEN :specs AND (z.total <= :budget OR z.nth = 1) AND octet_length(d.spec::text) <= 8388608
            THEN d.spec END AS spec,
       octet_length(d.spec::text) AS spec_bytes,
       d.created_at, z.total, z.nth,
       convert_to(d.name, 'UTF8') AS key_name, convert_to(d.version, 'UTF8') AS key_version
  FROM sized z JOIN agents d ON d.name = z.key_name AND d.version = z.key_version
 ORDER BY z.nth

-- name: agents_unread
-- The agents rows whose name or version is not text of at most 1 KiB (not read: no reference
-- can name them; each listed with its sizes and the defect line), from the :offset-th, at
-- most :limit; nothing else of them is read.
SELECT CASE WHEN octet_length(d.name) <= 1024 THEN d.name END AS name, octet_length(d.name) AS name_bytes,
       CASE WHEN octet_length(d.version) <= 1024 THEN d.version END AS version,
       octet_length(d.version) AS version_bytes,
       CASE WHEN octet_length(d.kind) <= 1024 THEN d.kind END AS kind,
       octet_length(d.kind) AS kind_bytes, d.builtin,
       left(d.description, 200) AS description,
       octet_length(d.description) AS description_bytes,
       NULL AS spec, octet_length(d.spec::text) AS spec_bytes, d.created_at
  FROM agents d
 WHERE octet_length(d.name) > 1024 OR octet_length(d.version) > 1024
 ORDER BY d.name, d.version LIMIT :limit OFFSET :offset

-- name: workflows_page
-- A page of workflows for a list, by (name, version) after (:after_name, :after_version)
-- (NULL: from the first; UTF-8 bytes, `key_name` and `key_version` of a row, so that any
-- text a row holds is passed on exactly), at most :limit rows; only rows whose name and
-- version are text of at most 1 KiB (MAX_NAME_BYTES: the ones a reference can name; `workflows_unread` lists the
-- others). Each row's `spec` (up to 8 MiB) and `description` (up to 1 MiB) are measured
-- here, before any is read: `total` is the running total of their bytes in page order,
-- and they are read only when :specs and the row's `total` is within :budget, or it is
-- the page's first (`nth` 1); else `spec` is NULL and `description` its first 200
-- characters (a list's page ends at the first row not read whole: service/registry.py).
-- :specs false reads no spec (a summary: a workflow's `steps` counted here instead).
-- `step_agents`: a JSON array of the first 64 different `agent` values of its first 1000
-- steps, in step order, each text of at most 128 bytes (a longer one, or none: null); NULL
-- when the spec holds no array of steps (registry/runnable.py says why a row cannot run).
WITH keys AS (
  SELECT name AS key_name, version AS key_version,
         CASE WHEN octet_length(spec::text) <= 8388608 THEN octet_length(spec::text) ELSE 0 END
         + CASE WHEN octet_length(description) <= 1048576 THEN octet_length(description) ELSE 200 END AS size
    FROM workflows
   WHERE {{key_after}}
   ORDER BY name, version LIMIT :limit
), sized AS (
  SELECT key_name, key_version,
         sum(size) OVER (ORDER BY key_name, key_version ROWS UNBOUNDED PRECEDING) AS total,
         row_number() OVER (ORDER BY key_name, key_version) AS nth
    FROM keys
)
SELECT d.name, octet_length(d.name) AS name_bytes, d.version, octet_length(d.version) AS version_bytes,
       CASE WHEN :specs AND (z.total <= :budget OR z.nth = 1) AND octet_length(d.description) <= 1048576
            THEN d.description ELSE left(d.description, 200) END AS description,
       octet_length(d.description) AS description_bytes,
       CASE WHEN :specs AND (z.total <= :budget OR z.nth = 1) AND octet_length(d.spec::text) <= 8388608
            THEN d.spec END AS spec,
       octet_length(d.spec::text) AS spec_bytes,
       CASE WHEN NOT :specs AND octet_length(d.spec::text) <= 8388608
          AND jsonb_typeof(d.spec -> 'steps') = 'array' THEN jsonb_array_length(d.spec -> 'steps') END AS steps,
       CASE WHEN octet_length(d.spec::text) <= 8388608 AND jsonb_typeof(d.spec -> 'steps') = 'array'
          THEN (SELECT coalesce(jsonb_agg(g.a ORDER BY g.first), '[]'::jsonb) FROM (
                  SELECT CASE WHEN jsonb_typeof(s.value -> 'agent') = 'string'
                               AND octet_length(s.value ->> 'agent') <= 128
                              THEN s.value ->> 'agent' END AS a, min(s.n) AS first
                    FROM jsonb_array_elements(d.spec -> 'steps') WITH ORDINALITY AS s(value, n)
                   WHERE s.n <= 1000 GROUP BY 1 ORDER BY 2 LIMIT 64) AS g) END AS step_agents,
       d.created_at, z.total, z.nth,
       convert_to(d.name, 'UTF8') AS key_name, convert_to(d.version, 'UTF8') AS key_version
  FROM sized z JOIN workflows d ON d.name = z.key_name AND d.version = z.key_version
 ORDER BY z.nth

-- name: workflows_unread
-- The workflows rows whose name or version is not text of at most 1 KiB (not read: no reference
-- can name them; each listed with its sizes and the defect line), from the :offset-th, at
-- most :limit; nothing else of them is read.
SELECT CASE WHEN octet_length(d.name) <= 1024 THEN d.name END AS name, octet_length(d.name) AS name_bytes,
       CASE WHEN octet_length(d.version) <= 1024 THEN d.version END AS version,
       octet_length(d.version) AS version_bytes,
       left(d.description, 200) AS description,
       octet_length(d.description) AS description_bytes,
       NULL AS spec, octet_length(d.spec::text) AS spec_bytes, d.created_at
  FROM workflows d
 WHERE octet_length(d.name) > 1024 OR octet_length(d.version) > 1024
 ORDER BY d.name, d.version LIMIT :limit OFFSET :offset

-- name: key_after
-- (A fragment.) A row whose name and version are text of at most 1 KiB (MAX_NAME_BYTES),
-- past (:after_name, :after_version) in the pages' order (NULL: from the first).
octet_length(name) <= 1024 AND octet_length(version) <= 1024
   AND (CAST(:after_name AS text) IS NULL
        OR (name, version) > (CAST(:after_name AS text), CAST(:after_version AS text)))

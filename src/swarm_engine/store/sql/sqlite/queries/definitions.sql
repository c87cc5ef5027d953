-- The registry's definitions: agents and workflows, SQLite.

-- name: agent_columns
-- An agent row as every read of one returns it ({{agent_columns}}): `name`, `version` and
-- `kind` only when they hold at most 1 KiB (MAX_NAME_BYTES in records.py; else NULL),
-- `description` over 1 MiB (MAX_DESCRIPTION_BYTES) only as its first 200 characters, and
-- `spec` only when it holds at most 8 MiB of JSON (MAX_SPEC_BYTES; else NULL), each with
-- its size in `<name>_bytes`: no read hands over (and no reader parses) a larger value
-- any client wrote.
CASE WHEN length(CAST(name AS BLOB)) <= 1024 THEN name END AS name,
length(CAST(name AS BLOB)) AS name_bytes,
CASE WHEN length(CAST(version AS BLOB)) <= 1024 THEN version END AS version,
length(CAST(version AS BLOB)) AS version_bytes,
CASE WHEN length(CAST(kind AS BLOB)) <= 1024 THEN kind END AS kind,
length(CAST(kind AS BLOB)) AS kind_bytes,
CASE WHEN length(CAST(description AS BLOB)) <= 1048576 THEN description
     ELSE substr(description, 1, 200) END AS description,
length(CAST(description AS BLOB)) AS description_bytes,
CASE WHEN length(CAST(spec AS BLOB)) <= 8388608 THEN spec END AS spec,
length(CAST(spec AS BLOB)) AS spec_bytes,
builtin, created_at

-- name: workflow_columns
-- A workflow row as every read of one returns it ({{workflow_columns}}): as
-- {{agent_columns}} (a workflow has no `kind` nor `builtin`).
CASE WHEN length(CAST(name AS BLOB)) <= 1024 THEN name END AS name,
length(CAST(name AS BLOB)) AS name_bytes,
CASE WHEN length(CAST(version AS BLOB)) <= 1024 THEN version END AS version,
length(CAST(version AS BLOB)) AS version_bytes,
CASE WHEN length(CAST(description AS BLOB)) <= 1048576 THEN description
     ELSE substr(description, 1, 200) END AS description,
length(CAST(description AS BLOB)) AS description_bytes,
CASE WHEN length(CAST(spec AS BLOB)) <= 8388608 THEN spec END AS spec,
length(CAST(spec AS BLOB)) AS spec_bytes,
created_at

-- name: builtin_agents
-- (a name or version over 1 KiB is no built-in's: left out)
SELECT name, version FROM agents WHERE builtin <> 0
   AND length(CAST(name AS BLOB)) <= 1024 AND length(CAST(version AS BLOB)) <= 1024

-- name: seed_agent
INSERT INTO agents (name, version, kind, description, spec, builtin)
VALUES (:name, :version, :kind, :description, :spec, 1)
ON CONFLICT (name, version) DO NOTHING

-- name: put_agent
INSERT INTO agents (name, version, kind, description, spec)
VALUES (:name, :version, :kind, :description, :spec)
ON CONFLICT (name, version) DO UPDATE SET kind = excluded.kind,
       description = excluded.description, spec = excluded.spec, builtin = 0,
       created_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')

-- name: agent
SELECT {{agent_columns}} FROM agents WHERE agents.name = :name AND agents.version = :version

-- name: agent_versions
-- A version over 1 KiB (MAX_NAME_BYTES) is NULL (never a valid one), with its size.
SELECT CASE WHEN length(CAST(version AS BLOB)) <= 1024 THEN version END AS version,
       length(CAST(version AS BLOB)) AS version_bytes FROM agents WHERE name = :name

-- name: lock_workflows
-- Taken first in the transaction that registers workflows (`DefinitionStore.registering`):
-- the check that no other workflow owns a trigger name and the insert are one step.
-- BEGIN IMMEDIATE (the transaction) already holds SQLite's one write lock: every
-- registration waits for the one before it to commit. Nothing more to take.
SELECT 1

-- name: workflows_seen
-- What changes when another client commits a change to the registry (SQLite's
-- `data_version`, of this connection: any write to this file by another connection, a
-- row edited in place too); `DefinitionStore.workflows_seen` adds this connection's own
-- writes. The engine's cron task reads the registry again only when it changed
-- (engine/cron.py); no row is read here.
SELECT data_version AS version FROM pragma_data_version

-- name: workflow_keys
-- The keys of at most :limit workflows rows after (:after_name, :after_version) (NULL:
-- from the first; UTF-8 bytes, a row's `key_name` and `key_version`, as workflows_page),
-- in that order, of those whose name and version are text of at most 1 KiB; nothing else
-- of a row is read (the cron task's scan: registry/schedules.py).
SELECT name, version, CAST(name AS BLOB) AS key_name, CAST(version AS BLOB) AS key_version
  FROM workflows
 WHERE {{key_after}}
 ORDER BY name, version LIMIT :limit

-- name: workflow_quiet
-- Whether one workflow row (by `key_name` and `key_version` as workflow_keys gave them)
-- declares no triggers, for the cron task, its spec not handed over: `quiet` 1 when its
-- spec (of at most 8 MiB) cannot hold a `triggers` key, its text holding neither
-- `"triggers"` nor an escaped lower-case letter (`\u0061` to `\u007a`: a key may be spelt
-- so; a scan of the text, no JSON parse: SQLite has no cheap mark of a row's change, and
-- an edit in place may keep its size and created_at), or when it is valid JSON with no
-- `triggers` or an empty array; else 0 (the caller reads the row: a malformed one too,
-- whose decode says why; so is one with such an escape, as SQLite's JSON paths match a
-- key as it is written, and one whose text holds `"triggers"` twice, as they read the
-- first of a key given twice). `spec_bytes`: its size; `seen` (its size
-- and created_at) is only told back. (Each subquery is a co-routine, its columns computed
-- once: a spec is loaded once to be measured, and once more to be checked.)
SELECT n AS spec_bytes, printf('%d:%s:%s', n, t, c) AS seen,
       CASE WHEN n > 8388608 THEN 0
            ELSE (SELECT CASE WHEN instr(spec, '"triggers"') = 0 AND instr(spec, '\u006') = 0
                                   AND instr(spec, '\u007') = 0 THEN 1
                              WHEN instr(spec, '\u006') > 0 OR instr(spec, '\u007') > 0 THEN 0
                              WHEN instr(substr(spec, instr(spec, '"triggers"') + 10), '"triggers"') > 0
                              THEN 0  -- (written twice: SQLite's paths read the first)
                              WHEN NOT json_valid(spec) THEN 0
                              WHEN json_type(spec, '$.triggers') IS NULL THEN 1
                              WHEN json_type(spec, '$.triggers') = 'array'
                               AND json_array_length(spec, '$.triggers') = 0 THEN 1
                              ELSE 0 END
                    FROM (SELECT spec FROM workflows WHERE rowid = r.id LIMIT 1) WHERE 1)
       END AS quiet
  FROM (SELECT rowid AS id, length(CAST(spec AS BLOB)) AS n, typeof(created_at) AS t,
               substr(created_at, 1, 100) AS c
          FROM workflows
         WHERE name = CAST(:name AS TEXT) AND version = CAST(:version AS TEXT) LIMIT 1) AS r
 WHERE 1

-- name: workflow_head
-- What tells the cron task whether one workflow row declaring triggers (by `key_name` and
-- `key_version`) is the one it read before, its spec not handed over: `spec_bytes`, its
-- rowid as `row_id` when its spec is text of at most 8 MiB (else NULL:
-- `DefinitionStore.workflow_mark` reads that text in pieces and digests it, as SQLite
-- keeps no mark of a row's change; an edit in place may keep its size and created_at),
-- and its `created_at` (as `workflow` reads it: taken afresh each time); `mark` is
-- PostgreSQL's (NULL here). (The subquery is a co-routine: the spec measured once.)
SELECT n AS spec_bytes, NULL AS mark, CASE WHEN st = 'text' AND n <= 8388608 THEN id END AS row_id,
       created_at
  FROM (SELECT rowid AS id, length(CAST(spec AS BLOB)) AS n, typeof(spec) AS st, created_at
          FROM workflows
         WHERE name = CAST(:name AS TEXT) AND version = CAST(:version AS TEXT) LIMIT 1)
 WHERE 1

-- name: workflow_exists
SELECT 1 FROM workflows WHERE name = :name AND version = :version

-- name: put_workflow
INSERT INTO workflows (name, version, description, spec)
VALUES (:name, :version, :description, :spec)
ON CONFLICT (name, version) DO UPDATE SET description = excluded.description,
       spec = excluded.spec, created_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')

-- name: workflow
SELECT {{workflow_columns}} FROM workflows WHERE workflows.name = :name AND workflows.version = :version

-- name: agents_named
-- The agents named in :names (a list) whose version is text of at most 1 KiB: `name`,
-- `version`, and `kind` (NULL over 1 KiB); what a list of workflows reads once a page to
-- say which step names an agent that cannot run (registry/runnable.py).
SELECT name, version, CASE WHEN length(CAST(kind AS BLOB)) <= 1024 THEN kind END AS kind
  FROM agents
 WHERE name IN (SELECT value FROM json_each(:names))
   AND typeof(version) = 'text' AND length(CAST(version AS BLOB)) <= 1024

-- name: workflow_versions
SELECT CASE WHEN length(CAST(version AS BLOB)) <= 1024 THEN version END AS version,
       length(CAST(version AS BLOB)) AS version_bytes FROM workflows WHERE name = :name

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
         CASE WHEN length(CAST(spec AS BLOB)) <= 8388608 THEN length(CAST(spec AS BLOB)) ELSE 0 END
         + CASE WHEN length(CAST(description AS BLOB)) <= 1048576 THEN length(CAST(description AS BLOB)) ELSE 200 END AS size
    FROM agents
   WHERE {{key_after}}
   ORDER BY name, version LIMIT :limit
), sized AS (
  SELECT key_name, key_version,
         sum(size) OVER (ORDER BY key_name, key_version ROWS UNBOUNDED PRECEDING) AS total,
         row_number() OVER (ORDER BY key_name, key_version) AS nth
    FROM keys
)
SELECT d.name, length(CAST(d.name AS BLOB)) AS name_bytes, d.version, length(CAST(d.version AS BLOB)) AS version_bytes,
       CASE WHEN length(CAST(d.kind AS BLOB)) <= 1024 THEN d.kind END AS kind,
       length(CAST(d.kind AS BLOB)) AS kind_bytes, d.builtin,
       CASE WHEN :specs AND (z.total <= :budget OR z.nth = 1) AND length(CAST(d.description AS BLOB)) <= 1048576
            THEN d.description ELSE substr(d.description, 1, 200) END AS description,
       length(CAST(d.description AS BLOB)) AS description_bytes,
       CASE WHEN :specs AND (z.total <= :budget OR z.nth = 1) AND length(CAST(d.spec AS BLOB)) <= 8388608
            THEN d.spec END AS spec,
       length(CAST(d.spec AS BLOB)) AS spec_bytes,
       d.created_at, z.total, z.nth,
       CAST(d.name AS BLOB) AS key_name, CAST(d.version AS BLOB) AS key_version
  FROM sized z JOIN agents d ON d.name = z.key_name AND d.version = z.key_version
 ORDER BY z.nth

-- name: agents_unread
-- The agents rows whose name or version is not text of at most 1 KiB (not read: no reference
-- can name them; each listed with its sizes and the defect line), from the :offset-th, at
-- most :limit; nothing else of them is read.
SELECT CASE WHEN length(CAST(d.name AS BLOB)) <= 1024 THEN d.name END AS name, length(CAST(d.name AS BLOB)) AS name_bytes,
       CASE WHEN length(CAST(d.version AS BLOB)) <= 1024 THEN d.version END AS version,
       length(CAST(d.version AS BLOB)) AS version_bytes,
       CASE WHEN length(CAST(d.kind AS BLOB)) <= 1024 THEN d.kind END AS kind,
       length(CAST(d.kind AS BLOB)) AS kind_bytes, d.builtin,
       substr(d.description, 1, 200) AS description,
       length(CAST(d.description AS BLOB)) AS description_bytes,
       NULL AS spec, length(CAST(d.spec AS BLOB)) AS spec_bytes, d.created_at
  FROM agents d
 WHERE NOT (typeof(d.name) = 'text' AND typeof(d.version) = 'text'
            AND length(CAST(d.name AS BLOB)) <= 1024 AND length(CAST(d.version AS BLOB)) <= 1024)
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
         CASE WHEN length(CAST(spec AS BLOB)) <= 8388608 THEN length(CAST(spec AS BLOB)) ELSE 0 END
         + CASE WHEN length(CAST(description AS BLOB)) <= 1048576 THEN length(CAST(description AS BLOB)) ELSE 200 END AS size
    FROM workflows
   WHERE {{key_after}}
   ORDER BY name, version LIMIT :limit
), sized AS (
  SELECT key_name, key_version,
         sum(size) OVER (ORDER BY key_name, key_version ROWS UNBOUNDED PRECEDING) AS total,
         row_number() OVER (ORDER BY key_name, key_version) AS nth
    FROM keys
)
SELECT d.name, length(CAST(d.name AS BLOB)) AS name_bytes, d.version, length(CAST(d.version AS BLOB)) AS version_bytes,
       CASE WHEN :specs AND (z.total <= :budget OR z.nth = 1) AND length(CAST(d.description AS BLOB)) <= 1048576
            THEN d.description ELSE substr(d.description, 1, 200) END AS description,
       length(CAST(d.description AS BLOB)) AS description_bytes,
       CASE WHEN :specs AND (z.total <= :budget OR z.nth = 1) AND length(CAST(d.spec AS BLOB)) <= 8388608
            THEN d.spec END AS spec,
       length(CAST(d.spec AS BLOB)) AS spec_bytes,
       CASE WHEN NOT :specs AND length(CAST(d.spec AS BLOB)) <= 8388608 AND json_valid(d.spec)
          AND json_type(d.spec, '$.steps') = 'array' THEN json_array_length(d.spec, '$.steps') END AS steps,
       CASE WHEN length(CAST(d.spec AS BLOB)) <= 8388608 AND json_valid(d.spec)
          AND json_type(d.spec, '$.steps') = 'array'
          THEN (SELECT json_group_array(a) FROM (
                  SELECT CASE WHEN s.type <> 'object' THEN NULL
                              WHEN json_type(s.value, '$.agent') = 'text'
                               AND length(CAST(json_extract(s.value, '$.agent') AS BLOB)) <= 128
                              THEN json_extract(s.value, '$.agent') END AS a, min(s.key) AS first
                    FROM json_each(d.spec, '$.steps') s WHERE s.key < 1000
                   GROUP BY a ORDER BY first LIMIT 64)) END AS step_agents,
       d.created_at, z.total, z.nth,
       CAST(d.name AS BLOB) AS key_name, CAST(d.version AS BLOB) AS key_version
  FROM sized z JOIN workflows d ON d.name = z.key_name AND d.version = z.key_version
 ORDER BY z.nth

-- name: workflows_unread
-- The workflows rows whose name or version is not text of at most 1 KiB (not read: no reference
-- can name them; each listed with its sizes and the defect line), from the :offset-th, at
-- most :limit; nothing else of them is read.
SELECT CASE WHEN length(CAST(d.name AS BLOB)) <= 1024 THEN d.name END AS name, length(CAST(d.name AS BLOB)) AS name_bytes,
       CASE WHEN length(CAST(d.version AS BLOB)) <= 1024 THEN d.version END AS version,
       length(CAST(d.version AS BLOB)) AS version_bytes,
       substr(d.description, 1, 200) AS description,
       length(CAST(d.description AS BLOB)) AS description_bytes,
       NULL AS spec, length(CAST(d.spec AS BLOB)) AS spec_bytes, d.created_at
  FROM workflows d
 WHERE NOT (typeof(d.name) = 'text' AND typeof(d.version) = 'text'
            AND length(CAST(d.name AS BLOB)) <= 1024 AND length(CAST(d.version AS BLOB)) <= 1024)
 ORDER BY d.name, d.version LIMIT :limit OFFSET :offset

-- name: key_after
-- (A fragment.) A row whose name and version are text of at most 1 KiB (MAX_NAME_BYTES),
-- past (:after_name, :after_version) in the pages' order (NULL: from the first).
typeof(name) = 'text' AND typeof(version) = 'text'
   AND length(CAST(name AS BLOB)) <= 1024 AND length(CAST(version AS BLOB)) <= 1024
   AND (:after_name IS NULL
        OR (name, version) > (CAST(:after_name AS TEXT), CAST(:after_version AS TEXT)))

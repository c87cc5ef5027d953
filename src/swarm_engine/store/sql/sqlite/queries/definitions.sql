-- The registry's definitions: agents and workflows, SQLite.

-- name: builtin_agents
SELECT name, version FROM agents WHERE builtin <> 0

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
SELECT * FROM agents WHERE name = :name AND version = :version

-- name: agent_versions
SELECT version FROM agents WHERE name = :name

-- name: agents
SELECT * FROM agents ORDER BY name, created_at

-- name: workflow_exists
SELECT 1 FROM workflows WHERE name = :name AND version = :version

-- name: put_workflow
INSERT INTO workflows (name, version, description, spec)
VALUES (:name, :version, :description, :spec)
ON CONFLICT (name, version) DO UPDATE SET description = excluded.description,
       spec = excluded.spec, created_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')

-- name: workflow
SELECT * FROM workflows WHERE name = :name AND version = :version

-- name: workflow_versions
SELECT version FROM workflows WHERE name = :name

-- name: workflows
SELECT * FROM workflows ORDER BY name, created_at

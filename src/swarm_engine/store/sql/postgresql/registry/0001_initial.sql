-- Registry, version 1, PostgreSQL: agent and workflow definitions, versioned. Same
-- tables and columns as store/sql/sqlite/registry/0001_initial.sql.

CREATE TABLE agents (
    name        text NOT NULL,
    version     text NOT NULL,
    kind        text NOT NULL,
    description text NOT NULL DEFAULT '',
    spec        jsonb NOT NULL,
    builtin     integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

CREATE TABLE workflows (
    name        text NOT NULL,
    version     text NOT NULL,
    description text NOT NULL DEFAULT '',
    spec        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

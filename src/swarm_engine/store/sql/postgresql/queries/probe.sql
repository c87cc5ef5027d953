-- Cheap reads an engine makes before it claims, PostgreSQL.

-- name: any_open
SELECT 1 FROM tickets WHERE status = 'open' LIMIT 1

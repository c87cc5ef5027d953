-- Cheap reads an engine makes before it claims, SQLite.

-- name: any_open
SELECT 1 FROM tickets WHERE status = 'open' LIMIT 1

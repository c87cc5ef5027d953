-- Trigger firings, SQLite.

-- name: claim_firing
INSERT INTO trigger_firings (trigger, key) VALUES (:trigger, :key)
ON CONFLICT (trigger, key) DO NOTHING
RETURNING trigger

-- name: set_ticket
UPDATE trigger_firings SET ticket_id = :ticket_id WHERE trigger = :trigger AND key = :key

-- name: firing
SELECT trigger, key, ticket_id, fired_at FROM trigger_firings
 WHERE trigger = :trigger AND key = :key

-- name: recent
SELECT trigger, key, ticket_id, fired_at FROM trigger_firings
 WHERE trigger = :trigger ORDER BY fired_at DESC LIMIT :limit

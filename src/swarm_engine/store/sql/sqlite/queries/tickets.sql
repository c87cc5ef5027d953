-- Ticket statements, SQLite. Timestamps are written as UTC ISO-8601 text with
-- milliseconds: strftime('%Y-%m-%dT%H:%M:%fZ','now'). Leases are read as instants
-- (julianday(..., 'auto') takes every form SQLite accepts). A ticket with a run still
-- `running` is never claimed, whatever its engine's row says (see still_running in tickets.py);
-- a heartbeat counts only as an instant an engine wrote: the text 'now' (read as the time
-- of reading, so forever fresh) or one more than an hour ahead is stale.

-- name: ticket_columns
-- A ticket row as every read of one returns it ({{ticket_columns}}): each column, but
-- `inputs` and `result` only when they hold at most 8 MiB of JSON (8388608 bytes:
-- MAX_INPUTS_BYTES and MAX_RESULT_BYTES in records.py; else NULL), with their sizes in
-- `inputs_bytes` and `result_bytes`: no read of a ticket hands over (and no reader
-- parses) a larger value any client wrote. Likewise `title` and `description` over
-- 64 KiB and 1 MiB (MAX_TITLE_BYTES, MAX_DESCRIPTION_BYTES): only their first 200
-- characters, with their sizes in `title_bytes` and `description_bytes`; `error` over
-- 64 KiB (MAX_ERROR_BYTES) likewise, with `error_bytes`. Its names (`agent_id`,
-- `workflow_id`, `engine_id`, `attempt_id`) only up to 1 KiB (MAX_NAME_BYTES), else NULL
-- (never cut: names are looked up and acted on), with their sizes in `<name>_bytes`.
-- (SQLite loads a value to measure it, in its own memory, freed at the next row;
-- `length` of text counts characters, hence the CAST.)
tickets.id,
CASE WHEN length(CAST(tickets.title AS BLOB)) <= 65536 THEN tickets.title
     ELSE substr(tickets.title, 1, 200) END AS title,
length(CAST(tickets.title AS BLOB)) AS title_bytes,
CASE WHEN length(CAST(tickets.description AS BLOB)) <= 1048576 THEN tickets.description
     ELSE substr(tickets.description, 1, 200) END AS description,
length(CAST(tickets.description AS BLOB)) AS description_bytes,
tickets.status, tickets.execution_mode,
CASE WHEN length(CAST(tickets.agent_id AS BLOB)) <= 1024 THEN tickets.agent_id END AS agent_id,
length(CAST(tickets.agent_id AS BLOB)) AS agent_id_bytes,
CASE WHEN length(CAST(tickets.workflow_id AS BLOB)) <= 1024 THEN tickets.workflow_id END AS workflow_id,
length(CAST(tickets.workflow_id AS BLOB)) AS workflow_id_bytes,
CASE WHEN length(CAST(tickets.inputs AS BLOB)) <= 8388608 THEN tickets.inputs END AS inputs,
length(CAST(tickets.inputs AS BLOB)) AS inputs_bytes,
tickets.priority, tickets.attempts, tickets.max_attempts, tickets.timeout_seconds,
CASE WHEN length(CAST(tickets.result AS BLOB)) <= 8388608 THEN tickets.result END AS result,
length(CAST(tickets.result AS BLOB)) AS result_bytes,
CASE WHEN length(CAST(tickets.error AS BLOB)) <= 65536 THEN tickets.error
     ELSE substr(tickets.error, 1, 200) END AS error,
length(CAST(tickets.error AS BLOB)) AS error_bytes,
CASE WHEN length(CAST(tickets.engine_id AS BLOB)) <= 1024 THEN tickets.engine_id END AS engine_id,
length(CAST(tickets.engine_id AS BLOB)) AS engine_id_bytes,
CASE WHEN length(CAST(tickets.attempt_id AS BLOB)) <= 1024 THEN tickets.attempt_id END AS attempt_id,
length(CAST(tickets.attempt_id AS BLOB)) AS attempt_id_bytes,
tickets.lease_expires_at,
tickets.cancel_requested, tickets.created_at, tickets.updated_at, tickets.claimed_at,
tickets.started_at, tickets.completed_at

-- name: event_columns
-- A status event as every read of one returns it ({{event_columns}}): its `note` (a copy
-- of the ticket's error) only up to 4 KiB (MAX_NOTE_BYTES), else its first 200
-- characters, with its size in `note_bytes`; its names (`old_status`, `new_status`,
-- `engine_id`, `attempt_id`) only up to 1 KiB (MAX_NAME_BYTES), else NULL (never cut),
-- with their sizes in `<name>_bytes`.
e.id, e.ticket_id, e.at,
CASE WHEN length(CAST(e.old_status AS BLOB)) <= 1024 THEN e.old_status END AS old_status,
length(CAST(e.old_status AS BLOB)) AS old_status_bytes,
CASE WHEN length(CAST(e.new_status AS BLOB)) <= 1024 THEN e.new_status END AS new_status,
length(CAST(e.new_status AS BLOB)) AS new_status_bytes,
CASE WHEN length(CAST(e.engine_id AS BLOB)) <= 1024 THEN e.engine_id END AS engine_id,
length(CAST(e.engine_id AS BLOB)) AS engine_id_bytes,
CASE WHEN length(CAST(e.attempt_id AS BLOB)) <= 1024 THEN e.attempt_id END AS attempt_id,
length(CAST(e.attempt_id AS BLOB)) AS attempt_id_bytes,
CASE WHEN length(CAST(e.note AS BLOB)) <= 4096 THEN e.note
     ELSE substr(e.note, 1, 200) END AS note,
length(CAST(e.note AS BLOB)) AS note_bytes

-- name: get
SELECT {{ticket_columns}} FROM tickets WHERE id = :id

-- name: list
SELECT {{ticket_columns}} FROM tickets ORDER BY id DESC LIMIT :limit

-- name: list_status
-- By the claim-order index (status, ...): no scan of other statuses' rows.
SELECT {{ticket_columns}} FROM tickets WHERE status = :status ORDER BY id DESC LIMIT :limit

-- name: counts
SELECT status, count(*) AS n FROM tickets GROUP BY status

-- name: events
-- The newest :limit status events of a ticket up to id :through, newest first.
SELECT {{event_columns}} FROM ticket_events e WHERE e.ticket_id = :id AND e.id <= :through ORDER BY e.id DESC LIMIT :limit

-- name: count_events
SELECT count(*) FROM ticket_events WHERE ticket_id = :id

-- name: any_unfinished
-- A live ticket whose attempt's run ended unrecorded (see any_expired) is over; so is
-- an open one in :skip or a live one in :frozen (the engine asking can do nothing more
-- with it: tickets.py `skipped`, `frozen`).
SELECT 1 FROM tickets
 WHERE status IN ('open','claimed','running')
   AND NOT (status = 'open' AND id IN (SELECT value FROM json_each(:skip)))
   AND NOT (status <> 'open' AND id IN (SELECT value FROM json_each(:frozen)))
   AND (status = 'open' OR NOT EXISTS (
          SELECT 1 FROM workflow_runs u WHERE u.attempt_id = tickets.attempt_id
             AND u.status <> 'running' AND u.error LIKE 'ended unrecorded: %'))
 LIMIT 1

-- name: create
INSERT INTO tickets (title, description, status, execution_mode, agent_id, workflow_id,
                     inputs, priority, max_attempts, timeout_seconds)
VALUES (:title, :description, :status, :mode, :agent_id, :workflow_id,
        :inputs, :priority, :max_attempts, :timeout_seconds)
RETURNING id

-- name: open
UPDATE tickets SET status = 'open' WHERE id = :id AND status IN ('draft','open') RETURNING {{ticket_columns}}

-- name: cancel
UPDATE tickets SET status = 'cancelled', error = 'cancelled by user',
       completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'), lease_expires_at = NULL
 WHERE id = :id AND status NOT IN ('done','failed','cancelled')
RETURNING {{ticket_columns}}

-- name: reopen
UPDATE tickets SET status = 'open', error = NULL, result = NULL, attempts = 0,
       engine_id = NULL, attempt_id = NULL, lease_expires_at = NULL,
       claimed_at = NULL, started_at = NULL, completed_at = NULL
 WHERE id = :id AND status IN ('done','failed','cancelled')
RETURNING {{ticket_columns}}

-- name: close_open_steps
UPDATE step_executions SET status = CASE WHEN status = 'queued' THEN 'skipped' ELSE :status END,
       error = coalesce(error, CASE WHEN status = 'queued' THEN :not_run ELSE :error END),
       completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
 WHERE status IN ('queued','running')
   AND run_id IN (SELECT id FROM workflow_runs WHERE ticket_id = :id AND status = 'running')

-- name: close_open_runs
UPDATE workflow_runs SET status = :status, error = coalesce(error, :error),
       completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
 WHERE ticket_id = :id AND status = 'running'

-- name: let_go_open_runs
-- A run still `running` after close_open_runs (the store dropped that close without an
-- error): no longer held by the engine that ran it, so that the claim guard does not wait
-- for that engine (tickets.py close_open_runs).
UPDATE workflow_runs SET engine_id = NULL, error = coalesce(error, :error)
 WHERE ticket_id = :id AND status = 'running'

-- name: counted
-- Whether a claim counts the attempt it makes (`attempts + 1`): only when the row's
-- attempts are a count below its max_attempts, itself a count the engine reads (at most
-- 2^62, as store/rows.py reads counters). Another client's row may hold anything
-- there (a REAL, text, the largest 64-bit integer, whose `+ 1` turns into a REAL): the claim
-- then leaves it as written and sets `error` to errortext.UNCOUNTED, by which the engine fails the
-- ticket unrun with its attempts as written (session.plan, refuse_claimed).
typeof(attempts) IN ('integer','real') AND attempts = CAST(attempts AS INTEGER)
    AND typeof(max_attempts) IN ('integer','real')
    AND max_attempts = CAST(max_attempts AS INTEGER) AND max_attempts <= 4611686018427387904
    AND attempts >= 0 AND attempts < max_attempts

-- name: claim
UPDATE tickets SET status = 'claimed', engine_id = :engine_id, attempt_id = :attempt_id,
       attempts = CASE WHEN {{counted}} THEN attempts + 1 ELSE attempts END,
       claimed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'),
       started_at = NULL, completed_at = NULL, result = NULL,
       error = CASE WHEN {{counted}} THEN NULL ELSE :uncounted END,
       lease_expires_at = strftime('%Y-%m-%dT%H:%M:%fZ','now', printf('%+.3f seconds', :lease_ttl))
 WHERE id = :id AND status IN (SELECT value FROM json_each(:statuses))
   AND NOT EXISTS (SELECT 1 FROM workflow_runs r
                    WHERE r.ticket_id = tickets.id AND r.status = 'running'
                      AND r.engine_id IS NOT NULL)
RETURNING {{ticket_columns}}

-- name: next_open
SELECT id FROM tickets t
 WHERE status = 'open' AND id NOT IN (SELECT value FROM json_each(:skip))
   AND NOT EXISTS (SELECT 1 FROM workflow_runs r
                    WHERE r.ticket_id = t.id AND r.status = 'running'
                      AND r.engine_id IS NOT NULL)
 ORDER BY priority DESC, id LIMIT :limit

-- name: running_run_engine
-- The engine holding ticket :id's newest run still `running` (what keeps it from a claim;
-- an id over 1 KiB, MAX_NAME_BYTES, as NULL: as {{run_columns}}).
SELECT CASE WHEN length(CAST(engine_id AS BLOB)) <= 1024 THEN engine_id END AS engine_id FROM workflow_runs
 WHERE ticket_id = :id AND status = 'running' AND engine_id IS NOT NULL
 ORDER BY id DESC LIMIT 1

-- name: claimable
-- Whether ticket :id is open and no run of it is `running` (what next_open and the
-- claim guard ask), whatever a claim of it just returned.
SELECT 1 FROM tickets t
 WHERE id = :id AND status = 'open'
   AND NOT EXISTS (SELECT 1 FROM workflow_runs r
                    WHERE r.ticket_id = t.id AND r.status = 'running'
                      AND r.engine_id IS NOT NULL)

-- name: claim_next
-- Up to :limit open tickets, best first (priority, then age), in one statement.
UPDATE tickets SET status = 'claimed', engine_id = :engine_id,
       attempt_id = :attempt_prefix || '-' || id,
       attempts = CASE WHEN {{counted}} THEN attempts + 1 ELSE attempts END,
       claimed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'),
       started_at = NULL, completed_at = NULL, result = NULL,
       error = CASE WHEN {{counted}} THEN NULL ELSE :uncounted END,
       lease_expires_at = strftime('%Y-%m-%dT%H:%M:%fZ','now', printf('%+.3f seconds', :lease_ttl))
 WHERE id IN (SELECT id FROM tickets t
               WHERE status = 'open' AND id NOT IN (SELECT value FROM json_each(:skip))
                 AND NOT EXISTS (SELECT 1 FROM workflow_runs r
                                  WHERE r.ticket_id = t.id AND r.status = 'running'
                                    AND r.engine_id IS NOT NULL)
               ORDER BY priority DESC, id LIMIT :limit)
   AND +status = 'open'  -- `+`: look rows up by id, never scan every open ticket
RETURNING {{ticket_columns}}

-- name: reject
UPDATE tickets SET status = 'failed', error = :error,
       completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'), lease_expires_at = NULL
 WHERE id = :id AND status = 'open'

-- name: mark_running
UPDATE tickets SET status = 'running', started_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
 WHERE id = :id AND attempt_id = :attempt_id AND status = 'claimed'

-- name: finish
UPDATE tickets SET status = :status, result = :result, error = :error,
       completed_at = CASE WHEN :status = 'open' THEN NULL
                           ELSE strftime('%Y-%m-%dT%H:%M:%fZ','now') END,
       lease_expires_at = NULL
 WHERE id = :id AND attempt_id = :attempt_id AND status IN ('claimed','running')

-- name: fail_attempt
UPDATE tickets SET status = 'failed', error = :error,
       completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'), lease_expires_at = NULL
 WHERE id = :id AND attempt_id = :attempt_id AND status IN ('claimed','running')

-- name: refuse_claimed
-- A claimed ticket that was open with its attempts already used up, or no count at all (a
-- row written so by hand): failed with :error, never run, its attempts as its writer
-- stored them (the claim did not count one: `counted`).
UPDATE tickets SET status = 'failed', error = :error,
       completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'), lease_expires_at = NULL
 WHERE id = :id AND attempt_id = :attempt_id AND status = 'claimed'

-- name: release
-- A claimed ticket whose run could not start for a reason of its engine's own (its row in
-- engines gone for good): back in the queue for another engine, the attempt not counted.
UPDATE tickets SET status = 'open', attempts = max(attempts - 1, 0), engine_id = NULL,
       attempt_id = NULL, lease_expires_at = NULL, claimed_at = NULL
 WHERE id = :id AND attempt_id = :attempt_id AND status = 'claimed'

-- name: renew_leases
-- engine_id written again too: the attempt is this engine's (its fencing token says so),
-- whatever another client wrote there since the claim (the reclaim names the engine and
-- finds the attempt's VMs by it).
UPDATE tickets
   SET lease_expires_at = strftime('%Y-%m-%dT%H:%M:%fZ','now', printf('%+.3f seconds', :lease_ttl)),
       engine_id = :engine_id
 WHERE attempt_id IN (SELECT value FROM json_each(:attempt_ids))
   AND status IN ('claimed','running')
RETURNING attempt_id

-- name: held
SELECT attempt_id FROM tickets
 WHERE attempt_id IN (SELECT value FROM json_each(:attempt_ids)) AND status IN ('claimed','running')

-- name: still_held
SELECT 1 FROM tickets WHERE id = :id AND attempt_id = :attempt_id AND status IN ('claimed','running')

-- name: any_expired
-- Not a ticket whose attempt's run was closed `ended unrecorded: ...` (its engine ran it to
-- an end the store refused to record, and refused to fail the ticket too): it stays as it
-- is, live, and is never re-queued (runs.sql end_unrecorded_run; docs/engine.md).
-- A live row with no readable lease (NULL, a blob, 'zzz': written by hand) has no holder
-- that could renew it, so it counts as expired too; so does a lease further ahead than the
-- longest lease_ttl there is (7 days) and an hour of clock skew: no engine wrote it; and
-- the text 'now' (any case, as julianday reads it), which julianday reads as the time of
-- reading: a lease renewed by text, forever, that no engine wrote either.
SELECT 1 FROM tickets
 WHERE status IN ('claimed','running')
   AND (typeof(lease_expires_at) NOT IN ('text','integer','real')
        OR lower(substr(lease_expires_at, 1, 3)) = 'now'
        OR julianday(lease_expires_at, 'auto') IS NULL
        OR julianday(lease_expires_at, 'auto') < julianday('now')
        OR julianday(lease_expires_at, 'auto') > julianday('now', '+7 days', '+1 hour'))
   AND NOT EXISTS (SELECT 1 FROM workflow_runs u WHERE u.attempt_id = tickets.attempt_id
                     AND u.status <> 'running' AND u.error LIKE 'ended unrecorded: %')
 LIMIT 1

-- name: expired_ids
SELECT id FROM tickets
 WHERE status IN ('claimed','running')
   AND (typeof(lease_expires_at) NOT IN ('text','integer','real')
        OR lower(substr(lease_expires_at, 1, 3)) = 'now'
        OR julianday(lease_expires_at, 'auto') IS NULL
        OR julianday(lease_expires_at, 'auto') < julianday('now')
        OR julianday(lease_expires_at, 'auto') > julianday('now', '+7 days', '+1 hour'))
   AND NOT EXISTS (SELECT 1 FROM workflow_runs u WHERE u.attempt_id = tickets.attempt_id
                     AND u.status <> 'running' AND u.error LIKE 'ended unrecorded: %')
 ORDER BY id

-- name: expired_vms
-- Live VMs busy with a step of an expired attempt (see expired_ids), booted by the engine
-- that holds the ticket (:only NULL: every expired ticket; else that one), by ticket:
-- what the reclaimer stops on its own host before the ticket can run again.
-- (names over 1 KiB and paths over 4 KiB as NULL, with their sizes: as vm_columns in
-- vms.sql; a VM whose id is not read is no VM of a backend: nothing of it is stopped)
SELECT
       CASE WHEN length(CAST(v.id AS BLOB)) <= 1024 THEN v.id END AS id, length(CAST(v.id AS BLOB)) AS id_bytes,
       CASE WHEN length(CAST(v.backend AS BLOB)) <= 1024 THEN v.backend END AS backend, length(CAST(v.backend AS BLOB)) AS backend_bytes,
       CASE WHEN length(CAST(v.host AS BLOB)) <= 1024 THEN v.host END AS host, length(CAST(v.host AS BLOB)) AS host_bytes,
       CASE WHEN length(CAST(v.engine_id AS BLOB)) <= 1024 THEN v.engine_id END AS engine_id, length(CAST(v.engine_id AS BLOB)) AS engine_id_bytes,
       v.owner_pid, v.pid,
       CASE WHEN length(CAST(v.workspace AS BLOB)) <= 4096 THEN v.workspace END AS workspace, length(CAST(v.workspace AS BLOB)) AS workspace_bytes,
       CASE WHEN length(CAST(v.socket_path AS BLOB)) <= 4096 THEN v.socket_path END AS socket_path, length(CAST(v.socket_path AS BLOB)) AS socket_path_bytes,
       CASE WHEN length(CAST(v.overlay_path AS BLOB)) <= 4096 THEN v.overlay_path END AS overlay_path, length(CAST(v.overlay_path AS BLOB)) AS overlay_path_bytes,
       t.id AS ticket_id
  FROM tickets t
  JOIN workflow_runs r ON r.ticket_id = t.id AND r.attempt_id = t.attempt_id
  JOIN step_executions s ON s.run_id = r.id
  JOIN vms v ON v.id = s.vm_id AND v.step_execution_id = s.id AND v.engine_id = t.engine_id
 WHERE t.status IN ('claimed','running')
   AND (typeof(t.lease_expires_at) NOT IN ('text','integer','real')
        OR lower(substr(t.lease_expires_at, 1, 3)) = 'now'
        OR julianday(t.lease_expires_at, 'auto') IS NULL
        OR julianday(t.lease_expires_at, 'auto') < julianday('now')
        OR julianday(t.lease_expires_at, 'auto') > julianday('now', '+7 days', '+1 hour'))
   AND (:only IS NULL OR t.id = :only)
   AND v.state IN ('booting','ready','busy','destroying')
   AND NOT EXISTS (SELECT 1 FROM workflow_runs u WHERE u.attempt_id = t.attempt_id
                     AND u.status <> 'running' AND u.error LIKE 'ended unrecorded: %')
 ORDER BY t.id, v.id
 LIMIT :limit

-- name: reclaim_expired
-- :only NULL: every expired ticket; else that one (when the store refused the batch).
-- :skip: tickets left as they are this round (see the PostgreSQL file).
UPDATE tickets SET
       status = CASE WHEN attempts < max_attempts THEN 'open' ELSE 'failed' END,
       error = CASE WHEN attempts < max_attempts THEN NULL
                    ELSE 'lease expired after '
                         || CASE WHEN typeof(attempts) = 'integer' THEN attempts ELSE '?' END
                         || ' attempt(s); engine '
                         || coalesce(engine_id,'?') || ' did not renew it in time' END,
       completed_at = CASE WHEN attempts < max_attempts THEN NULL
                           ELSE strftime('%Y-%m-%dT%H:%M:%fZ','now') END,
       lease_expires_at = NULL, attempt_id = NULL
 WHERE status IN ('claimed','running')
   AND (typeof(lease_expires_at) NOT IN ('text','integer','real')
        OR lower(substr(lease_expires_at, 1, 3)) = 'now'
        OR julianday(lease_expires_at, 'auto') IS NULL
        OR julianday(lease_expires_at, 'auto') < julianday('now')
        OR julianday(lease_expires_at, 'auto') > julianday('now', '+7 days', '+1 hour'))
   AND (:only IS NULL OR id = :only)
   AND id NOT IN (SELECT value FROM json_each(:skip))
   AND NOT EXISTS (SELECT 1 FROM workflow_runs u WHERE u.attempt_id = tickets.attempt_id
                     AND u.status <> 'running' AND u.error LIKE 'ended unrecorded: %')
RETURNING id, status

-- name: expired_run_rows
-- The runs still `running` of the expired tickets, each with its ticket (see the
-- PostgreSQL file: there a run row may be locked by another client; here the reclaim's
-- write transaction holds the whole database, and `lock_expired_run_rows` is the same read).
SELECT r.id, r.ticket_id FROM workflow_runs r
 WHERE r.status = 'running'
   AND r.ticket_id IN ({{expired_ticket_ids}})

-- name: lock_expired_run_rows
-- (SQLite has no row locks: every row `expired_run_rows` reads is the reclaim's to write.)
SELECT r.id, r.ticket_id FROM workflow_runs r
 WHERE r.status = 'running'
   AND r.ticket_id IN ({{expired_ticket_ids}})

-- name: expired_step_rows
SELECT s.id, r.ticket_id FROM step_executions s JOIN workflow_runs r ON r.id = s.run_id
 WHERE s.status IN ('queued','running') AND r.status = 'running'
   AND r.ticket_id IN ({{expired_ticket_ids}})

-- name: lock_expired_step_rows
-- (As `lock_expired_run_rows`: the same read.)
SELECT s.id, r.ticket_id FROM step_executions s JOIN workflow_runs r ON r.id = s.run_id
 WHERE s.status IN ('queued','running') AND r.status = 'running'
   AND r.ticket_id IN ({{expired_ticket_ids}})

-- name: expired_ticket_ids
-- (A fragment.) The ids of the expired tickets the reclaim takes (:only NULL: all;
-- else that one), as `expired_run_rows`, `lock_expired_run_rows`, `expired_step_rows`
-- and `lock_expired_step_rows` read them.
SELECT id FROM tickets WHERE status IN ('claimed','running')
  AND (typeof(lease_expires_at) NOT IN ('text','integer','real')
       OR lower(substr(lease_expires_at, 1, 3)) = 'now'
       OR julianday(lease_expires_at, 'auto') IS NULL
       OR julianday(lease_expires_at, 'auto') < julianday('now')
       OR julianday(lease_expires_at, 'auto') > julianday('now', '+7 days', '+1 hour'))
  AND (:only IS NULL OR id = :only)
  AND NOT EXISTS (SELECT 1 FROM workflow_runs u
                   WHERE u.attempt_id = tickets.attempt_id
                     AND u.status <> 'running'
                     AND u.error LIKE 'ended unrecorded: %')

-- name: reclaim_lock
-- One reclaimer at a time: on SQLite the write transaction (BEGIN IMMEDIATE) already is.
SELECT 1

-- name: page
-- One page of tickets, newest first, up to id :through (inclusive: the keyset cursor less
-- one, or the largest id there is for the first page, which is listed too): the primary
-- key walked backwards from :through, so
-- a page costs about :limit rows however large the table (more when a filter is rare).
-- :agent / :workflow match `name` and every `name@version`.
SELECT {{ticket_columns}} FROM tickets
 WHERE id <= :through
   AND (:agent IS NULL OR agent_id = :agent OR substr(agent_id, 1, length(:agent) + 1) = :agent || '@')
   AND (:workflow IS NULL OR workflow_id = :workflow
        OR substr(workflow_id, 1, length(:workflow) + 1) = :workflow || '@')
 ORDER BY id DESC LIMIT :limit

-- name: page_status
-- The same page of one status's tickets, by the (status, id) index: only that status's
-- rows are read, in order (tickets.py merges the pages of several statuses).
SELECT {{ticket_columns}} FROM tickets
 WHERE status = :status AND id <= :through
   AND (:agent IS NULL OR agent_id = :agent OR substr(agent_id, 1, length(:agent) + 1) = :agent || '@')
   AND (:workflow IS NULL OR workflow_id = :workflow
        OR substr(workflow_id, 1, length(:workflow) + 1) = :workflow || '@')
 ORDER BY id DESC LIMIT :limit

-- name: cancel_many
UPDATE tickets SET status = 'cancelled', error = 'cancelled by user',
       completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'), lease_expires_at = NULL
 WHERE id IN (SELECT value FROM json_each(:ids)) AND status NOT IN ('done','failed','cancelled')
RETURNING id

-- name: reopen_many
UPDATE tickets SET status = 'open', error = NULL, result = NULL, attempts = 0,
       engine_id = NULL, attempt_id = NULL, lease_expires_at = NULL,
       claimed_at = NULL, started_at = NULL, completed_at = NULL
 WHERE id IN (SELECT value FROM json_each(:ids)) AND status IN ('done','failed','cancelled')
RETURNING id

-- name: events_after
-- Claims from the queue, and a live ticket going back to open or to failed (what the
-- lease reclaimer does), with an event id from :first on, oldest first (the events table
-- only grows: a reader resumes after the last id it saw). For a claim, `opened_at` is
-- when the ticket last became open (its time in the queue ends at `at`). Only the first
-- 200 characters of `note` (its reader looks at how it begins; any client may write one of
-- any size).
SELECT e.id, e.ticket_id, e.at, e.old_status, e.new_status,
       CASE WHEN length(CAST(e.attempt_id AS BLOB)) <= 1024 THEN e.attempt_id END AS attempt_id,
       length(CAST(e.attempt_id AS BLOB)) AS attempt_id_bytes,
       substr(e.note, 1, 200) AS note,
       CASE WHEN e.new_status = 'claimed' THEN
           (SELECT o.at FROM ticket_events o WHERE o.ticket_id = e.ticket_id AND o.id < e.id
               AND o.new_status = 'open' ORDER BY o.id DESC LIMIT 1) END AS opened_at
  FROM ticket_events e
 WHERE e.id >= :first
   AND ((e.old_status = 'open' AND e.new_status = 'claimed')
        OR (e.old_status IN ('claimed','running') AND e.new_status IN ('open','failed')))
 ORDER BY e.id LIMIT :limit

-- name: last_event_id
SELECT coalesce(max(id), 0) FROM ticket_events

-- name: statuses_of
SELECT id, status FROM tickets WHERE id IN (SELECT value FROM json_each(:ids))

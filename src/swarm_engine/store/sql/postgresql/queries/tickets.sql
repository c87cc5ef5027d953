-- Ticket statements, PostgreSQL. Timestamps are timestamptz (now(): the transaction's
-- start). A ticket with a run still `running` is never claimed (whatever its engine's row says)
-- (tickets.py); a heartbeat more than an hour ahead ('infinity', written by hand) is stale:
-- no engine wrote it, and it would never age. (A client's text 'now' is an instant here:
-- timestamptz reads it when it is written, so it ages as any other.) Claims take rows FOR UPDATE SKIP LOCKED: engines on other hosts claiming
-- at the same moment skip each other's rows instead of waiting.

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
tickets.id,
CASE WHEN octet_length(tickets.title) <= 65536 THEN tickets.title
     ELSE left(tickets.title, 200) END AS title,
octet_length(tickets.title) AS title_bytes,
CASE WHEN octet_length(tickets.description) <= 1048576 THEN tickets.description
     ELSE left(tickets.description, 200) END AS description,
octet_length(tickets.description) AS description_bytes,
tickets.status, tickets.execution_mode,
CASE WHEN octet_length(tickets.agent_id) <= 1024 THEN tickets.agent_id END AS agent_id,
octet_length(tickets.agent_id) AS agent_id_bytes,
CASE WHEN octet_length(tickets.workflow_id) <= 1024 THEN tickets.workflow_id END AS workflow_id,
octet_length(tickets.workflow_id) AS workflow_id_bytes,
CASE WHEN octet_length(tickets.inputs::text) <= 8388608 THEN tickets.inputs END AS inputs,
octet_length(tickets.inputs::text) AS inputs_bytes,
tickets.priority, tickets.attempts, tickets.max_attempts, tickets.timeout_seconds,
CASE WHEN octet_length(tickets.result::text) <= 8388608 THEN tickets.result END AS result,
octet_length(tickets.result::text) AS result_bytes,
CASE WHEN octet_length(tickets.error) <= 65536 THEN tickets.error
     ELSE left(tickets.error, 200) END AS error,
octet_length(tickets.error) AS error_bytes,
CASE WHEN octet_length(tickets.engine_id) <= 1024 THEN tickets.engine_id END AS engine_id,
octet_length(tickets.engine_id) AS engine_id_bytes,
CASE WHEN octet_length(tickets.attempt_id) <= 1024 THEN tickets.attempt_id END AS attempt_id,
octet_length(tickets.attempt_id) AS attempt_id_bytes,
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
CASE WHEN octet_length(e.old_status) <= 1024 THEN e.old_status END AS old_status,
octet_length(e.old_status) AS old_status_bytes,
CASE WHEN octet_length(e.new_status) <= 1024 THEN e.new_status END AS new_status,
octet_length(e.new_status) AS new_status_bytes,
CASE WHEN octet_length(e.engine_id) <= 1024 THEN e.engine_id END AS engine_id,
octet_length(e.engine_id) AS engine_id_bytes,
CASE WHEN octet_length(e.attempt_id) <= 1024 THEN e.attempt_id END AS attempt_id,
octet_length(e.attempt_id) AS attempt_id_bytes,
CASE WHEN octet_length(e.note) <= 4096 THEN e.note
     ELSE left(e.note, 200) END AS note,
octet_length(e.note) AS note_bytes

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
   AND NOT (status = 'open' AND id = ANY(CAST(:skip AS bigint[])))
   AND NOT (status <> 'open' AND id = ANY(CAST(:frozen AS bigint[])))
   AND (status = 'open' OR NOT EXISTS (
          SELECT 1 FROM workflow_runs u WHERE u.attempt_id = tickets.attempt_id
             AND u.status <> 'running' AND u.error LIKE 'ended unrecorded: %'))
 LIMIT 1

-- name: create
INSERT INTO tickets (title, description, status, execution_mode, agent_id, workflow_id,
                     inputs, priority, max_attempts, timeout_seconds)
VALUES (:title, :description, :status, :mode, :agent_id, :workflow_id,
        CAST(:inputs AS jsonb), :priority, :max_attempts, :timeout_seconds)
RETURNING id

-- name: open
UPDATE tickets SET status = 'open' WHERE id = :id AND status IN ('draft','open') RETURNING {{ticket_columns}}

-- name: cancel
UPDATE tickets SET status = 'cancelled', error = 'cancelled by user',
       completed_at = now(), lease_expires_at = NULL
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
       completed_at = now()
 WHERE status IN ('queued','running')
   AND run_id IN (SELECT id FROM workflow_runs WHERE ticket_id = :id AND status = 'running')

-- name: close_open_runs
UPDATE workflow_runs SET status = :status, error = coalesce(error, :error),
       completed_at = now()
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
-- there (the largest 64-bit integer, whose `+ 1` overflows and fails the claim): the claim
-- then leaves it as written and sets `error` to errortext.UNCOUNTED, by which the engine fails the
-- ticket unrun with its attempts as written (session.plan, refuse_claimed).
attempts >= 0 AND attempts < max_attempts AND max_attempts <= 4611686018427387904

-- name: claim
UPDATE tickets SET status = 'claimed', engine_id = :engine_id, attempt_id = :attempt_id,
       attempts = CASE WHEN {{counted}} THEN attempts + 1 ELSE attempts END,
       claimed_at = now(),
       started_at = NULL, completed_at = NULL, result = NULL,
       error = CASE WHEN {{counted}} THEN NULL ELSE :uncounted END,
       lease_expires_at = now() + make_interval(secs => :lease_ttl)
 WHERE id = :id AND status = ANY(:statuses)
   AND NOT EXISTS (SELECT 1 FROM workflow_runs r
                    WHERE r.ticket_id = tickets.id AND r.status = 'running'
                      AND r.engine_id IS NOT NULL)
RETURNING {{ticket_columns}}

-- name: next_open
SELECT id FROM tickets t
 WHERE status = 'open' AND id <> ALL(CAST(:skip AS bigint[]))
   AND NOT EXISTS (SELECT 1 FROM workflow_runs r
                    WHERE r.ticket_id = t.id AND r.status = 'running'
                      AND r.engine_id IS NOT NULL)
 ORDER BY priority DESC, id LIMIT :limit

-- name: running_run_engine
-- The engine holding ticket :id's newest run still `running` (what keeps it from a claim;
-- an id over 1 KiB, MAX_NAME_BYTES, as NULL: as {{run_columns}}).
SELECT CASE WHEN octet_length(engine_id) <= 1024 THEN engine_id END AS engine_id FROM workflow_runs
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
WITH ready AS (
    SELECT id FROM tickets t
     WHERE status = 'open' AND id <> ALL(CAST(:skip AS bigint[]))
       AND NOT EXISTS (SELECT 1 FROM workflow_runs r
                        WHERE r.ticket_id = t.id AND r.status = 'running'
                          AND r.engine_id IS NOT NULL)
     ORDER BY priority DESC, id
     LIMIT :limit
     FOR UPDATE SKIP LOCKED
)
UPDATE tickets SET status = 'claimed', engine_id = :engine_id,
       attempt_id = CAST(:attempt_prefix AS text) || '-' || tickets.id,
       attempts = CASE WHEN {{counted}} THEN attempts + 1 ELSE attempts END,
       claimed_at = now(),
       started_at = NULL, completed_at = NULL, result = NULL,
       error = CASE WHEN {{counted}} THEN NULL ELSE :uncounted END,
       lease_expires_at = now() + make_interval(secs => :lease_ttl)
  FROM ready
 WHERE tickets.id = ready.id
RETURNING {{ticket_columns}}

-- name: reject
UPDATE tickets SET status = 'failed', error = :error,
       completed_at = now(), lease_expires_at = NULL
 WHERE id = :id AND status = 'open'

-- name: mark_running
UPDATE tickets SET status = 'running', started_at = now()
 WHERE id = :id AND attempt_id = :attempt_id AND status = 'claimed'

-- name: finish
UPDATE tickets SET status = :status, result = CAST(:result AS jsonb), error = :error,
       completed_at = CASE WHEN :status = 'open' THEN NULL
                           ELSE now() END,
       lease_expires_at = NULL
 WHERE id = :id AND attempt_id = :attempt_id AND status IN ('claimed','running')

-- name: fail_attempt
UPDATE tickets SET status = 'failed', error = :error,
       completed_at = now(), lease_expires_at = NULL
 WHERE id = :id AND attempt_id = :attempt_id AND status IN ('claimed','running')

-- name: refuse_claimed
-- A claimed ticket that was open with its attempts already used up, or no count at all (a
-- row written so by hand): failed with :error, never run, its attempts as its writer
-- stored them (the claim did not count one: `counted`).
UPDATE tickets SET status = 'failed', error = :error,
       completed_at = now(), lease_expires_at = NULL
 WHERE id = :id AND attempt_id = :attempt_id AND status = 'claimed'

-- name: release
-- A claimed ticket whose run could not start for a reason of its engine's own (its row in
-- engines gone for good): back in the queue for another engine, the attempt not counted.
UPDATE tickets SET status = 'open', attempts = GREATEST(attempts - 1, 0), engine_id = NULL,
       attempt_id = NULL, lease_expires_at = NULL, claimed_at = NULL
 WHERE id = :id AND attempt_id = :attempt_id AND status = 'claimed'

-- name: renew_leases
-- A row another client holds locked (a frozen engine's or a client's open transaction)
-- is skipped, not waited for: its lease alone is not renewed this round, and the others'
-- are (a wait for it held every lease of this engine up to lock_timeout). Whether it is
-- still held is the keeper's plain read (`held`), which no lock blocks.
-- engine_id is written again too (see the SQLite file).
UPDATE tickets
   SET lease_expires_at = now() + make_interval(secs => :lease_ttl), engine_id = :engine_id
 WHERE id IN (SELECT id FROM tickets WHERE attempt_id = ANY(:attempt_ids)
                 AND status IN ('claimed','running') FOR UPDATE SKIP LOCKED)
   AND attempt_id = ANY(:attempt_ids)
   AND status IN ('claimed','running')
RETURNING attempt_id

-- name: held
SELECT attempt_id FROM tickets
 WHERE attempt_id = ANY(:attempt_ids) AND status IN ('claimed','running')

-- name: still_held
SELECT 1 FROM tickets WHERE id = :id AND attempt_id = :attempt_id AND status IN ('claimed','running')

-- name: any_expired
-- Not a ticket whose attempt's run was closed `ended unrecorded: ...` (its engine ran it to
-- an end the store refused to record, and refused to fail the ticket too): it stays as it
-- is, live, and is never re-queued (runs.sql end_unrecorded_run; docs/engine.md).
-- A live row with no lease (NULL: written by hand) has no holder that could renew it,
-- so it counts as expired too.
SELECT 1 FROM tickets
 WHERE status IN ('claimed','running')
   AND (lease_expires_at IS NULL OR lease_expires_at < now()
        OR lease_expires_at > now() + interval '7 days 1 hour')
   AND NOT EXISTS (SELECT 1 FROM workflow_runs u WHERE u.attempt_id = tickets.attempt_id
                     AND u.status <> 'running' AND u.error LIKE 'ended unrecorded: %')
 LIMIT 1

-- name: expired_ids
SELECT id FROM tickets
 WHERE status IN ('claimed','running')
   AND (lease_expires_at IS NULL OR lease_expires_at < now()
        OR lease_expires_at > now() + interval '7 days 1 hour')
   AND NOT EXISTS (SELECT 1 FROM workflow_runs u WHERE u.attempt_id = tickets.attempt_id
                     AND u.status <> 'running' AND u.error LIKE 'ended unrecorded: %')
 ORDER BY id

-- name: expired_vms
-- Live VMs busy with a step of an expired attempt (see the SQLite file).
-- (names over 1 KiB and paths over 4 KiB as NULL, with their sizes: as vm_columns in
-- vms.sql; a VM whose id is not read is no VM of a backend: nothing of it is stopped)
SELECT
       CASE WHEN octet_length(v.id) <= 1024 THEN v.id END AS id, octet_length(v.id) AS id_bytes,
       CASE WHEN octet_length(v.backend) <= 1024 THEN v.backend END AS backend, octet_length(v.backend) AS backend_bytes,
       CASE WHEN octet_length(v.host) <= 1024 THEN v.host END AS host, octet_length(v.host) AS host_bytes,
       CASE WHEN octet_length(v.engine_id) <= 1024 THEN v.engine_id END AS engine_id, octet_length(v.engine_id) AS engine_id_bytes,
       v.owner_pid, v.pid,
       CASE WHEN octet_length(v.workspace) <= 4096 THEN v.workspace END AS workspace, octet_length(v.workspace) AS workspace_bytes,
       CASE WHEN octet_length(v.socket_path) <= 4096 THEN v.socket_path END AS socket_path, octet_length(v.socket_path) AS socket_path_bytes,
       CASE WHEN octet_length(v.overlay_path) <= 4096 THEN v.overlay_path END AS overlay_path, octet_length(v.overlay_path) AS overlay_path_bytes,
       t.id AS ticket_id
  FROM tickets t
  JOIN workflow_runs r ON r.ticket_id = t.id AND r.attempt_id = t.attempt_id
  JOIN step_executions s ON s.run_id = r.id
  JOIN vms v ON v.id = s.vm_id AND v.step_execution_id = s.id AND v.engine_id = t.engine_id
 WHERE t.status IN ('claimed','running')
   AND (t.lease_expires_at IS NULL OR t.lease_expires_at < now()
        OR t.lease_expires_at > now() + interval '7 days 1 hour')
   AND (CAST(:only AS BIGINT) IS NULL OR t.id = CAST(:only AS BIGINT))
   AND v.state IN ('booting','ready','busy','destroying')
   AND NOT EXISTS (SELECT 1 FROM workflow_runs u WHERE u.attempt_id = t.attempt_id
                     AND u.status <> 'running' AND u.error LIKE 'ended unrecorded: %')
 ORDER BY t.id, v.id
 LIMIT :limit

-- name: reclaim_expired
-- :only NULL: every expired ticket; else that one (when the store refused the batch).
-- :skip: tickets left as they are this round (a VM not stopped, a row of a run locked
-- elsewhere: `expired_run_rows`).
-- A row another client holds locked (a frozen engine inside its renewal) is skipped this
-- round, not waited for: the wait held this engine's store thread, and so its own lease
-- renewals, up to lock_timeout.
UPDATE tickets SET
       status = CASE WHEN attempts < max_attempts THEN 'open' ELSE 'failed' END,
       error = CASE WHEN attempts < max_attempts THEN NULL
                    ELSE 'lease expired after ' || attempts || ' attempt(s); engine '
                         || coalesce(engine_id,'?') || ' did not renew it in time' END,
       completed_at = CASE WHEN attempts < max_attempts THEN NULL
                           ELSE now() END,
       lease_expires_at = NULL, attempt_id = NULL
 WHERE status IN ('claimed','running')
   AND (lease_expires_at IS NULL OR lease_expires_at < now()
        OR lease_expires_at > now() + interval '7 days 1 hour')
   AND (CAST(:only AS BIGINT) IS NULL OR id = CAST(:only AS BIGINT))
   AND NOT EXISTS (SELECT 1 FROM workflow_runs u WHERE u.attempt_id = tickets.attempt_id
                     AND u.status <> 'running' AND u.error LIKE 'ended unrecorded: %')
   AND NOT (id = ANY(:skip))
   AND id IN (SELECT id FROM tickets WHERE status IN ('claimed','running')
                 AND (lease_expires_at IS NULL OR lease_expires_at < now()
                      OR lease_expires_at > now() + interval '7 days 1 hour')
                 AND (CAST(:only AS BIGINT) IS NULL OR id = CAST(:only AS BIGINT))
                 FOR UPDATE SKIP LOCKED)
RETURNING id, status

-- name: expired_run_rows
-- The runs still `running` of the expired tickets (:only NULL: all; else that one's),
-- each with its ticket: what the reclaim closes. A plain read, no lock taken: compared
-- with what `lock_expired_run_rows` could lock, it names the tickets one of whose run rows
-- another client holds locked (a frozen engine inside a write of its run, a `psql`
-- session's `SELECT ... FOR UPDATE`), which the reclaim leaves to a later round instead of
-- waiting for the lock on the engine's store thread.
SELECT r.id, r.ticket_id FROM workflow_runs r
 WHERE r.status = 'running'
   AND r.ticket_id IN ({{expired_ticket_ids}})

-- name: lock_expired_run_rows
-- (In the reclaim's transaction.) The rows of `expired_run_rows` locked for the reclaim's
-- close, passing over those another client holds locked.
SELECT r.id, r.ticket_id FROM workflow_runs r
 WHERE r.status = 'running'
   AND r.ticket_id IN ({{expired_ticket_ids}})
   FOR UPDATE SKIP LOCKED

-- name: expired_step_rows
-- The unfinished steps of those runs, each with its ticket (as `expired_run_rows`).
SELECT s.id, r.ticket_id FROM step_executions s JOIN workflow_runs r ON r.id = s.run_id
 WHERE s.status IN ('queued','running') AND r.status = 'running'
   AND r.ticket_id IN ({{expired_ticket_ids}})

-- name: lock_expired_step_rows
-- (In the reclaim's transaction.) The rows of `expired_step_rows` locked, passing over
-- those another client holds locked.
SELECT s.id, r.ticket_id FROM step_executions s JOIN workflow_runs r ON r.id = s.run_id
 WHERE s.status IN ('queued','running') AND r.status = 'running'
   AND r.ticket_id IN ({{expired_ticket_ids}})
   FOR UPDATE OF s SKIP LOCKED

-- name: expired_ticket_ids
-- (A fragment.) The ids of the expired tickets the reclaim takes (:only NULL: all;
-- else that one), as `expired_run_rows`, `lock_expired_run_rows`, `expired_step_rows`
-- and `lock_expired_step_rows` read them.
SELECT id FROM tickets WHERE status IN ('claimed','running')
  AND (lease_expires_at IS NULL OR lease_expires_at < now()
       OR lease_expires_at > now() + interval '7 days 1 hour')
  AND (CAST(:only AS BIGINT) IS NULL OR id = CAST(:only AS BIGINT))
  AND NOT EXISTS (SELECT 1 FROM workflow_runs u
                   WHERE u.attempt_id = tickets.attempt_id
                     AND u.status <> 'running'
                     AND u.error LIKE 'ended unrecorded: %')

-- name: reclaim_lock
-- One reclaimer at a time across every host: a transaction-scoped advisory lock; an
-- engine that does not get it skips this round. The reclaim's transaction waits for a
-- row lock at most 1.5 s (then it is busy, and tried again next round): it runs on the
-- engine's store thread, where a longer wait (on a row a frozen engine holds locked)
-- held up the engine's own lease renewals until its leases ran out. (Longer than the
-- server's deadlock check, 1 s by default: a deadlocked reclaim is still rolled back and
-- run again at once, store/rerun.py.)
SELECT pg_try_advisory_xact_lock(1398230274), set_config('lock_timeout', '1500ms', true)

-- name: page
-- One page of tickets, newest first, up to id :through (see the SQLite file).
SELECT {{ticket_columns}} FROM tickets
 WHERE id <= :through
   AND (CAST(:agent AS text) IS NULL OR agent_id = :agent
        OR substr(agent_id, 1, length(CAST(:agent AS text)) + 1) = CAST(:agent AS text) || '@')
   AND (CAST(:workflow AS text) IS NULL OR workflow_id = :workflow
        OR substr(workflow_id, 1, length(CAST(:workflow AS text)) + 1) = CAST(:workflow AS text) || '@')
 ORDER BY id DESC LIMIT :limit

-- name: page_status
-- The same page of one status's tickets, by the (status, id) index (see the SQLite file).
SELECT {{ticket_columns}} FROM tickets
 WHERE status = :status AND id <= :through
   AND (CAST(:agent AS text) IS NULL OR agent_id = :agent
        OR substr(agent_id, 1, length(CAST(:agent AS text)) + 1) = CAST(:agent AS text) || '@')
   AND (CAST(:workflow AS text) IS NULL OR workflow_id = :workflow
        OR substr(workflow_id, 1, length(CAST(:workflow AS text)) + 1) = CAST(:workflow AS text) || '@')
 ORDER BY id DESC LIMIT :limit

-- name: cancel_many
UPDATE tickets SET status = 'cancelled', error = 'cancelled by user',
       completed_at = now(), lease_expires_at = NULL
 WHERE id = ANY(:ids) AND status NOT IN ('done','failed','cancelled')
RETURNING id

-- name: reopen_many
UPDATE tickets SET status = 'open', error = NULL, result = NULL, attempts = 0,
       engine_id = NULL, attempt_id = NULL, lease_expires_at = NULL,
       claimed_at = NULL, started_at = NULL, completed_at = NULL
 WHERE id = ANY(:ids) AND status IN ('done','failed','cancelled')
RETURNING id

-- name: events_after
-- Claims, and live tickets going back to open or failed, from :first on (see the SQLite file;
-- only the first 200 characters of `note`), up to the id the table's sequence last handed
-- out (0 when it never did; no bound when this user may not read it): a row another
-- client wrote with an id ahead of it comes after the ids the sequence hands out before
-- it passes that row (repaired: store/pgsequences.py), so a reader that resumes after
-- the last id it saw would skip those. Never past 2^62 - 2^32 (pgsequences.CEILING): ids
-- from there on are a client's (a sequence a client set there is lowered below them).
SELECT e.id, e.ticket_id, e.at, e.old_status, e.new_status,
       CASE WHEN octet_length(e.attempt_id) <= 1024 THEN e.attempt_id END AS attempt_id,
       octet_length(e.attempt_id) AS attempt_id_bytes,
       left(e.note, 200) AS note,
       CASE WHEN e.new_status = 'claimed' THEN
           (SELECT o.at FROM ticket_events o WHERE o.ticket_id = e.ticket_id AND o.id < e.id
               AND o.new_status = 'open' ORDER BY o.id DESC LIMIT 1) END AS opened_at
  FROM ticket_events e
 WHERE e.id >= :first
   AND e.id <= (SELECT CASE WHEN has_sequence_privilege(h.seq, 'SELECT,USAGE')
                        THEN least(coalesce(pg_sequence_last_value(h.seq), 0), 4611686014132420607)
                        ELSE 4611686014132420607 END
                   FROM (SELECT pg_get_serial_sequence('ticket_events', 'id')::regclass AS seq) h)
   AND ((e.old_status = 'open' AND e.new_status = 'claimed')
        OR (e.old_status IN ('claimed','running') AND e.new_status IN ('open','failed')))
 ORDER BY e.id LIMIT :limit

-- name: last_event_id
SELECT coalesce(max(id), 0) FROM ticket_events

-- name: statuses_of
SELECT id, status FROM tickets WHERE id = ANY(:ids)

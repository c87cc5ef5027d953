"""PostgreSQL: an id sequence another client wedged is repaired where the store meets it.

The ticket store's ids are identity columns (`tickets`, `ticket_events`,
`workflow_runs`, `step_executions`, `step_logs`). Another client may wedge one:
`setval(seq, 9223372036854775807)` (every `nextval` then fails, SQLSTATE 2200H) or
`ALTER SEQUENCE ... MAXVALUE`/`INCREMENT`/`MINVALUE`/`CYCLE`/`AS integer`, or insert a
row with an explicit id ahead of it (`INSERT INTO tickets (id, ...) VALUES (2, ...)`:
the next `nextval` hands out that id again, and the insert fails with a unique violation
of `tickets_pkey`, SQLSTATE 23505, whoever's ticket it was for). The store
(`PostgresDatabase.run`) then repairs it and runs the statement once more; a running
engine looks every heartbeat interval too (one read when none is wedged). A sequence is
wedged when

- its parameters are not the identity's own (`AS bigint INCREMENT BY 1 MINVALUE 1
  MAXVALUE 9223372036854775807 NO CYCLE`): they are put back, since the store owns
  these sequences and no other value is of use to it (a raised INCREMENT spends ids, a
  lowered MAXVALUE ends them, CYCLE hands out ids in use); or
- its last value is at or above `CEILING` (2^62 - 2^32): it is lowered (`setval`) to
  `top`, the table's largest id below `CEILING` with `ROOM` (2^32) free ids above it (0
  when none). A new row's id at or above 2^62 is refused (0010_sequence_repair.sql, with
  `nextval`'s own SQLSTATE 2200H), so a sequence set just below the maximum never writes
  a row there; or
- its last value is below `top` (a client's row ahead of it; a sequence never called
  counts as 0), or the id it hands out next is in use: it is set to `top`, so the next
  ids are free. A unique violation of another constraint (`workflow_runs'
  `attempt_id`, a registry table's key) is not this and stays an error.

Setting it to `top`, not to the largest id, keeps a client's row from wedging a table:
one at 2^62 - 1 (which the guard lets in) would make the next id 2^62, refused, for
every later write. Ids from `CEILING` up are a client's: the engine's sequence is never
left there, and `/metrics`' walk stops below it (queries `events_after`, `steps_after`).

The repair holds `SHARE ROW EXCLUSIVE` on the table (so no insert runs meanwhile and the
largest id is final), in the caller's transaction or a short one of its own. A user that
may not repair it (`ALTER SEQUENCE` needs the sequence's owner, `setval` its UPDATE
privilege) gets `StoreIntegrityError`: one line naming the sequence and the statement
its owner can run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg.errors

from swarm_engine.errors import StoreIntegrityError

log = logging.getLogger(__name__)

ID_TABLES = ("tickets", "ticket_events", "workflow_runs", "step_executions", "step_logs")
GUARD = 2**62
ROOM = 2**32
"""Free ids a sequence is given above the id it is set to (a repair)."""
CEILING = GUARD - ROOM
"""The engine's ids stay below it: ids from here to GUARD are a client's alone (see the
module doc)."""
MAX_ID = 2**63 - 1
OWN = "AS bigint INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 NO CYCLE"
"""An identity column's own sequence parameters (bigint), put back when changed."""

_ROOMY = (  # the largest id below CEILING with ROOM free ids above it (0 when none)
    "(WITH RECURSIVE walk(u, t) AS ("
    " SELECT {ceiling}::bigint,"
    " coalesce((SELECT max(id) FROM {t} WHERE id > 0 AND id < {ceiling}), 0)"
    " UNION ALL SELECT j.lo, coalesce((SELECT max(id) FROM {t} WHERE id > 0 AND id < j.lo), 0)"
    " FROM walk w CROSS JOIN LATERAL (SELECT (SELECT min(id) FROM {t}"
    " WHERE id > greatest(w.t - {room}, 0) AND id <= w.t) AS lo) j"
    " WHERE w.t > 0 AND w.u - w.t <= {room})"
    " SELECT t FROM walk WHERE t = 0 OR u - t > {room} LIMIT 1)"
)
"""Jumps down from `CEILING`: `t` is the largest id below `u`; when the gap from `t` up to
`u` is `ROOM` or less, no id from `lo` (the least id within `ROOM` below `t`) up to `t`
has room either (the next id above each is within `ROOM`), so the search goes on below
`lo`. Each step is a few index lookups, and a run of a client's rows closer together than
`ROOM` is one step however many rows it holds (a walk of every row read all of a run of
a million rows on each heartbeat: 0.55 s)."""

_TABLES = " UNION ALL ".join(
    f"SELECT '{t}' AS name, q.seq, {_ROOMY.format(t=t, ceiling=CEILING, room=ROOM)} AS top,"
    f" CASE WHEN q.last < {MAX_ID} THEN EXISTS (SELECT 1 FROM {t} WHERE id = q.last + 1)"
    " ELSE false END AS next_taken"
    f" FROM (SELECT h.seq, CASE WHEN has_sequence_privilege(h.seq::regclass, 'SELECT,USAGE')"
    " THEN coalesce(pg_sequence_last_value(h.seq::regclass), 0) END AS last"
    f" FROM (SELECT pg_get_serial_sequence('{t}', 'id') AS seq) h) q"
    for t in ID_TABLES
)
STATE = (
    f"WITH t AS ({_TABLES})"
    " SELECT t.name, p.seqrelid::regclass::text AS seq, t.top, p.seqtypid::regtype::text"
    " AS type, p.seqincrement AS increment, p.seqmin AS min, p.seqmax AS max,"
    " p.seqcycle AS cycle, t.next_taken, CASE WHEN has_sequence_privilege(p.seqrelid, 'SELECT,USAGE')"
    " THEN pg_sequence_last_value(p.seqrelid) END AS last,"
    " has_sequence_privilege(p.seqrelid, 'SELECT,USAGE') AS readable"
    " FROM t JOIN pg_sequence p ON p.seqrelid = t.seq::regclass"
    " WHERE t.name = ANY(%(tables)s)"
)
"""Each id table's sequence, its parameters, its last value, whether the id after it is
in use (`next_taken`) and the id a repair sets it to (`top`, see `Sequence.top`);
`last` is NULL when the sequence was never called or this user may not read it
(`readable`)."""


@dataclass(frozen=True, slots=True)
class Sequence:
    table: str
    name: str
    top: int
    """The largest id below `CEILING` with `ROOM` free ids above it (0 when none): the
    id a repair sets the sequence to. Rows of an engine's own are below it or in its
    room; a client's row at or above `CEILING` (up to 2^62 - 1, which the guard lets
    in) or in a run of rows too close to it never moves the sequence there."""
    next_taken: bool
    """The id the sequence hands out next is in use (a client's row)."""
    changed: bool
    """Its parameters are not the identity's own."""
    last: int | None
    readable: bool = True
    """This user may read its last value (else `last` is None and nothing is told)."""

    @property
    def raised(self) -> bool:
        """At or above `CEILING` (set there by a client, or walked there through a
        client's rows): lowered to `top`, whose room lies below it."""
        return self.last is not None and self.last >= CEILING

    @property
    def behind(self) -> bool:
        """A row another client wrote (with its own id) is ahead of it: raised to `top`
        when that is above it, else (its next id in use, no room above) lowered to
        `top`. Never called (`last` None) counts as 0."""
        if not self.readable:
            return False
        return (self.last or 0) < self.top or self.next_taken

    @property
    def wedged(self) -> bool:
        return self.changed or self.raised or self.behind


def read(conn: psycopg.Connection[Any], tables: tuple[str, ...] = ID_TABLES) -> list[Sequence]:
    """The id tables' sequences (one read)."""
    rows = conn.execute(STATE, {"tables": list(tables)}).fetchall()
    return [
        Sequence(
            table=str(r[0]),
            name=str(r[1]),
            top=int(r[2]),
            next_taken=bool(r[8]),
            changed=(r[3], r[4], r[5], r[6], r[7]) != ("bigint", 1, 1, MAX_ID, False),
            last=None if r[9] is None else int(r[9]),
            readable=bool(r[10]),
        )
        for r in rows
    ]


def repair(
    conn: psycopg.Connection[Any], where: str, tables: tuple[str, ...] = ID_TABLES
) -> list[str]:
    """Repair every wedged id sequence of `tables`, in `conn`'s transaction (or one of its
    own when it is in none); the tables repaired, each with one warning line. Raises
    `StoreIntegrityError` when one cannot be repaired (no privilege)."""
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        with conn.transaction():
            return _repair(conn, where, tables)
    return _repair(conn, where, tables)


def failed_tables(exc: BaseException) -> tuple[str, ...]:
    """The id table whose sequence a `nextval` at its limit names in `exc` (SQLSTATE
    2200H: `reached maximum value of sequence "tickets_id_seq"`), as a 1-tuple; every id
    table when it names none of ours. Inside a caller's transaction only that one is
    repaired: each repair locks its table until the commit, and a transaction that
    locked every id table while another engine's held a write on one and waited for
    another deadlocked (seen as `deadlock detected` from `ticket create`)."""
    diag = getattr(exc, "diag", None)
    text = str(getattr(diag, "message_primary", None) or exc)
    named = [t for t in ID_TABLES if f'"{t}_id_seq"' in text]
    return (named[0],) if len(named) == 1 else ID_TABLES


def collided_table(exc: BaseException) -> str | None:
    """The id table whose primary key a unique violation (SQLSTATE 23505) names in `exc`
    (`duplicate key value violates unique constraint "tickets_pkey"`: its sequence may be
    behind a row another client wrote), None for any other constraint's."""
    if not isinstance(exc, psycopg.errors.UniqueViolation):
        return None
    diag = getattr(exc, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    table = getattr(diag, "table_name", None)
    for t in ID_TABLES:
        if constraint == f"{t}_pkey" and table in (t, None):
            return t
    return None


def _repair(conn: psycopg.Connection[Any], where: str, tables: tuple[str, ...]) -> list[str]:
    done: list[tuple[str, str]] = []  # (table, what was done)
    for seq in read(conn, tables):
        if not seq.wedged:
            continue
        table = ID_TABLES[ID_TABLES.index(seq.table)]  # a name of ours, not the row's text
        try:
            conn.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
            (now,) = read(conn, (table,))  # the largest id, final under the lock
            if not now.wedged:  # another engine repaired it meanwhile
                continue
            if now.changed:
                conn.execute(f"ALTER SEQUENCE {now.name} {OWN}")
            conn.execute(  # to the id with room above it: raised or lowered
                "SELECT setval(%(seq)s::regclass, %(v)s, %(called)s)",
                {"seq": now.name, "v": max(now.top, 1), "called": now.top > 0},
            )
        except psycopg.errors.InsufficientPrivilege as exc:
            how = (
                f"is behind ids another client wrote (last value {seq.last}, free from {seq.top + 1})"
                if seq.behind and not seq.changed
                else f"was changed by another client (last value {seq.last})"
            )
            raise StoreIntegrityError(
                f"{where}: the id sequence {seq.name} of table {table!r} {how}"
                f" and this user may not repair it"
                f" ({_first(exc)}): as its owner run ALTER SEQUENCE {seq.name} {OWN};"
                f" SELECT setval('{seq.name}', {max(seq.top, 1)}, {str(seq.top > 0).lower()})"
            ) from exc
        put_back = f", parameters put back to {OWN}" if now.changed else ""
        ahead = ", past the ids another client wrote" if now.behind else ""
        done.append((table, f"{now.name} of {table} from {now.last} to {now.top}{put_back}{ahead}"))
    if done:  # one line however many
        log.warning(
            "repaired the id sequence %s (another client changed %s)",
            "; ".join(what for _, what in done), "it" if len(done) == 1 else "them",
            extra={"tables": [t for t, _ in done]},
        )  # fmt: skip
    return [t for t, _ in done]


def _first(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    text = getattr(diag, "message_primary", None) or str(exc)
    return " ".join(str(text).split())

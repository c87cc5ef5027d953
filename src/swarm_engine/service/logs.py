"""A ticket's step logs, read from the store (`step_logs`): chunk by chunk (`chunks`, what
`swarm-engine logs` prints), bounded as one text (`step_log`, `log_text`: the API's download, sent as it is read),
or followed as written.

`LogFollower` is the one stream that `swarm-engine logs --follow` prints and the API
serves as server-sent events: chunks of the latest run's steps (a retry's run too, unless
a run is pinned), in id order, ending once the ticket has ended and every chunk is out.
It holds only where it is; each `poll` takes the store to read with, so a caller may poll
from any thread and sleep however it likes (the CLI sleeps, the API awaits).
"""

from __future__ import annotations

import codecs
import itertools
import os
import shlex
import stat
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from swarm_engine.errors import NotFoundError
from swarm_engine.records import SHOWN_CHARS, cut_message, shown
from swarm_engine.service.runs import SHOWN_STEPS, numbered
from swarm_engine.service.values import check_text
from swarm_engine.store.logs import BATCH_BYTES, PIECE_BYTES
from swarm_engine.store.tickets import BEFORE_ALL as BEFORE_ALL
from swarm_engine.store.tickets import MIN_ID
from swarm_engine.vm.output import SLACK, continuation_bytes, unfinished_char

if TYPE_CHECKING:
    from swarm_engine.store import Store
    from swarm_engine.store.rows import Ticket

ENDED = ("done", "failed", "cancelled", "draft")
"""A ticket in one of these has no run going and none coming by itself."""
BATCH = 500


def pick_run(
    store: Store, ticket_id: int, run_id: int | None = None
) -> tuple[Ticket, dict[str, Any] | None]:
    """The ticket and its latest run (or run `run_id`); None when it has not run yet.
    `NotFoundError` for a missing ticket or a run that is not the ticket's."""
    ticket = store.tickets.get(ticket_id)
    if run_id is None:  # (a ticket may have any number of runs: read the newest only)
        runs = store.runs.runs_for_ticket(ticket_id, limit=1, values=False)
        return ticket, (runs[-1] if runs else None)
    try:
        run = store.runs.get_run(run_id)
    except NotFoundError:
        run = None
    if run is None or run.get("ticket_id") != ticket_id:
        raise NotFoundError(f"ticket {ticket_id} has no run {run_id}")
    return ticket, run


STEP_BATCH = 100
"""Steps read from the store at a time by `steps_of`: a run may have any number."""


def steps_of(
    store: Store, run: dict[str, Any], step_id: str | None = None, batch: int = STEP_BATCH
) -> Iterator[dict[str, Any]]:
    """A run's steps (only `step_id`'s attempts when given), oldest first, numbered, read
    `batch` at a time: memory holds one batch, however many steps the run has.
    `NotFoundError` (before the first step) when the run has no such step."""
    yield from _steps(lend(store), run, step_id, batch)


MiB = 1024 * 1024
LOG_KEEP_BYTES = 8 * MiB
"""Of a step's stored log, `step_log` keeps the first and the last this many bytes (UTF-8):
a log up to twice that is whole (the engine stores at most `max_log_bytes`, 10 MiB by
default, of each step)."""
MAX_TEXT_BYTES = 64 * MiB
"""`as_text` leaves out the logs of the steps that come after this many bytes of logs."""
MAX_STEPS_LEFT_OUT = 1000
"""Steps `as_text` names one by one (a header and a line) once their logs are left out;
one line stands for the steps after them (a run may have any number)."""
CHUNK_BATCH = 100
"""Chunks read from the store at a time by `chunks` (the engine stores up to ~32 KiB in
one, at most 256 KiB); a call also stops at `store.logs.BATCH_BYTES`."""


def chunks(store: Store, step_execution_id: int, batch: int = CHUNK_BATCH) -> Iterator[str]:
    """One step's stored log, piece by piece in order (none when nothing is stored): each
    chunk whole, a chunk longer than `store.logs.PIECE_BYTES` (only another client writes
    one) in pieces of at most that. Read `batch` chunks and at most about
    `store.logs.BATCH_BYTES` at a time, so memory holds one batch, whatever the rows hold."""
    after, start = BEFORE_ALL, 0  # ids of 0 and below are any client's: read them too
    while pieces := store.logs.after([step_execution_id], after, batch, start=start):
        for piece in pieces:
            yield piece.data
        after, start = pieces[-1].resume


def how_to_get_all(ticket_id: int, run_id: int, step_id: Any) -> str:
    """Where a step's whole stored log is: the CLI command and the API's stream (the step
    id, any writer's text, quoted for a shell and for a URL; None, a step id the store did
    not read: the whole run's)."""
    if step_id is None:
        return (
            f"swarm-engine logs {ticket_id} --run {run_id}"
            f", or GET /v1/tickets/{ticket_id}/logs/stream?run={run_id}"
        )
    query = urlencode({"run": run_id, "step": str(step_id)})
    return (
        f"swarm-engine logs {ticket_id} --run {run_id} --step {shlex.quote(str(step_id))}"
        f", or GET /v1/tickets/{ticket_id}/logs/stream?{query}"
    )


MAX_FILE_BYTES = 64 * 1024 * 1024
"""The most of a step's log file that is read (one kept before logs were stored)."""
MAX_ARTIFACTS_LISTED = 1000


Borrow = Callable[[], AbstractContextManager["Store"]]
"""A store for one read: a server borrows one from its pool for each (the reads of one
download run in any of its worker threads); `lend(store)` lends the one a caller has."""


def lend(store: Store) -> Borrow:
    return lambda: nullcontext(store)


def _steps(
    borrow: Borrow, run: dict[str, Any], step_id: str | None, batch: int = STEP_BATCH
) -> Iterator[dict[str, Any]]:
    run_id = int(run["id"])
    if step_id is not None:
        check_text(step_id, "step")
    after = BEFORE_ALL  # from its first step, whatever its id (0 or below too)
    while True:
        with borrow() as store:
            page = numbered(
                store.runs.steps_from(run_id, after, batch, step_id=step_id, values=False)
            )
        if not page:
            break
        yield from page
        after = int(page[-1]["id"])
    if step_id is not None and after == BEFORE_ALL:
        with borrow() as store:
            some = dict.fromkeys(str(i) for i in store.runs.first_step_ids(run_id, 200))
        known = cut_message(", ".join(sorted(some)), SHOWN_CHARS)
        has = f"its steps: {known}" if some else "it has no steps"  # (its plan failed, say)
        raise NotFoundError(f"run {run['id']} has no step {shown(step_id)} ({has})")


def _pieces(borrow: Borrow, step_execution_id: int, budget: int, piece: int) -> Iterator[bytes]:
    """One step's stored log as UTF-8, piece by piece (`chunks`), each batch read with a
    store of its own."""
    after, start = BEFORE_ALL, 0
    while True:
        with borrow() as store:
            got = store.logs.after(
                [step_execution_id], after, CHUNK_BATCH, start=start, budget=budget,
                piece=piece,
            )  # fmt: skip
        if not got:
            return
        for each in got:
            yield each.data.encode("utf-8", "replace")
        after, start = got[-1].resume


def step_log(
    borrow: Borrow, step_execution_id: int, keep: int = LOG_KEEP_BYTES, get_all: str = "", *,
    budget: int = BATCH_BYTES, piece: int = PIECE_BYTES,
) -> Iterator[str]:  # fmt: skip
    """One step's stored log, in pieces (none when nothing is stored): whole when it is
    at most 2 x `keep` bytes of UTF-8 (+32), else its first and last `keep` bytes with one
    line between them, `[... N bytes of this log left out here; all of it: GET_ALL ...]`
    (N in bytes; `get_all` says where the whole log is), each cut moved back or on to a
    character's edge. Read twice, a batch of `budget` bytes at a time: once to measure
    it, once to send it (no further than was measured: a log that grows meanwhile is
    cut where it was measured), so memory holds one batch, whatever the log's size."""
    total = sum(len(data) for data in _pieces(borrow, step_execution_id, budget, piece))
    at = 0
    if total <= 2 * keep + SLACK:
        for data in _pieces(borrow, step_execution_id, budget, piece):
            if at >= total:
                return
            yield data[: total - at].decode("utf-8", "replace")
            at += len(data)
        return
    where = f"; all of it: {get_all}" if get_all else ""
    tail_at, head = total - keep, 0
    for data in _pieces(borrow, step_execution_id, budget, piece):
        end = at + len(data)
        if at < keep:
            part = data[: keep - at]
            if end >= keep:
                part = part[: len(part) - unfinished_char(part)]
            head += len(part)
            yield part.decode("utf-8", "replace")
        if at <= tail_at < end:
            part = data[tail_at - at :]
            skip = continuation_bytes(part)
            left_out = total - head - (keep - skip)
            yield f"\n[... {left_out} bytes of this log left out here{where} ...]\n"
            yield part[skip:].decode("utf-8", "replace")
        elif at > tail_at:
            yield data[: total - at].decode("utf-8", "replace")
        at = end
        if at >= total:
            return


def no_steps(run: dict[str, Any], status: object) -> str:
    """What is said of a run that has no step (its plan failed before any, or it has not
    made one yet): `run N has no steps (failed)`, `status` as the reader shows it; its
    error follows, as each reader shows errors."""
    return f"run {run['id']} has no steps ({status})"


def log_text(
    borrow: Borrow, ticket_id: int, run_id: int | None = None, step_id: str | None = None,
    artifacts: Path | None = None, *, keep: int = LOG_KEEP_BYTES, most: int = MAX_TEXT_BYTES,
    budget: int = BATCH_BYTES, piece: int = PIECE_BYTES,
) -> tuple[dict[str, Any], Iterator[str]]:  # fmt: skip
    """The log of a ticket's latest run (or run `run_id`; only `step_id` when given) as
    text in pieces, to be sent as they come: each step's log under a header line, its
    error after it. A step's log is `step_log`'s (its first and last `keep` bytes when
    longer, with a line saying how much was left out and how to get all of it); once
    the steps' logs hold `most` bytes, the logs of the steps after are left out, each
    with such a line (headers and errors stay, for `MAX_STEPS_LEFT_OUT` steps, then one
    line for the rest): the text holds at most about `most` + 2 x `keep` bytes. A run
    without steps (its plan failed) is one line, `no_steps`' with its error
    (`run 3 has no steps (failed): error: ...`). Steps are
    read a batch at a time, logs `budget` bytes at a time: memory holds one batch. A step
    whose log was not stored (a run recorded before logs were) is read from its log file
    when that lies under `artifacts` (at most `MAX_FILE_BYTES`). Returns (run, pieces);
    `NotFoundError` (here, before any piece) when the ticket has not run, or its run has
    no such step."""
    with borrow() as store:
        ticket, run = pick_run(store, ticket_id, run_id)
    if run is None:
        raise NotFoundError(f"ticket {ticket_id} has not run yet (it is {ticket.status})")
    steps = _steps(borrow, run, step_id)
    first = next(steps, None)
    found = run
    if first is None:  # (its plan failed before any step, say): one line, with its error
        error = f": error: {run['error']}" if run.get("error") else ""
        return found, iter((f"{no_steps(run, run.get('status'))}{error}\n",))

    def pieces() -> Iterator[str]:
        size = left_out = 0
        for step in itertools.chain([first], steps):
            if size >= most:
                left_out += 1
            if left_out > MAX_STEPS_LEFT_OUT:
                rest = f"swarm-engine logs {ticket_id} --run {found['id']}"
                yield (
                    f"[... the steps after these are left out too: the logs above hold"
                    f" {size} bytes, over this text's cap of {most}; all of them: {rest}"
                    f", or GET /v1/tickets/{ticket_id}/logs/stream?run={found['id']} ...]\n"
                )
                return
            yield (
                f"=== run {found['id']} · step {step['step_id']} · attempt {step['attempt']}"
                f" · {step['status']} ===\n"
            )
            get_all = how_to_get_all(ticket_id, int(found["id"]), step["step_id"])
            last = ""
            if size >= most:
                last = (
                    f"[... this step's log is left out: the logs above hold {size} bytes,"
                    f" over this text's cap of {most}; all of it: {get_all} ...]"
                )
                yield last
            else:
                for text in step_log(
                    borrow, int(step["id"]), keep, get_all, budget=budget, piece=piece
                ):
                    if text:
                        size += len(text.encode("utf-8", "replace"))
                        last = text
                        yield text
                if not last:
                    for text in log_file_pieces(step.get("log_path"), artifacts, piece):
                        size += len(text.encode("utf-8", "replace"))
                        last = text
                        yield text
            if last and not last.endswith("\n"):
                yield "\n"
            if step.get("error"):
                yield f"error: {step['error']}\n"

    return found, pieces()


def as_text(
    store: Store,
    ticket_id: int,
    run_id: int | None = None,
    step_id: str | None = None,
    artifacts: Path | None = None,
    *,
    keep: int = LOG_KEEP_BYTES,
    most: int = MAX_TEXT_BYTES,
) -> tuple[dict[str, Any], str]:
    """`log_text` as one text: (run, text)."""
    run, pieces = log_text(lend(store), ticket_id, run_id, step_id, artifacts, keep=keep, most=most)
    return run, "".join(pieces)


def log_file(path: Any, artifacts: Path | None) -> Path | None:
    """A step's log file, by its real path, when `path` (a stored value: any writer may
    have put anything there) names a regular file under `artifacts`; else None. The one
    rule by which both `swarm-engine logs` and the API read a step's log file."""
    if artifacts is None or not isinstance(path, str) or not path or "\x00" in path:
        return None
    try:
        file = Path(os.path.realpath(path))
        if not file.is_relative_to(os.path.realpath(artifacts)):
            return None
        return file if stat.S_ISREG(file.lstat().st_mode) else None
    except (OSError, ValueError):
        return None


def read_log_file(path: Any, artifacts: Path | None) -> str:
    """The text of a step's log file (`log_file`'s rule), at most `MAX_FILE_BYTES` of it,
    opened without following a symlink or blocking and checked to be a regular file once
    open; '' for anything else."""
    return "".join(log_file_pieces(path, artifacts))


def log_file_pieces(path: Any, artifacts: Path | None, piece: int = PIECE_BYTES) -> Iterator[str]:
    """`read_log_file`'s text, read and decoded `piece` bytes at a time (none for a file
    it would not read)."""
    file = log_file(path, artifacts)
    if file is None:
        return
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with os.fdopen(fd, "rb") as f:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return
            left = MAX_FILE_BYTES
            while left > 0 and (data := f.read(min(piece, left))):
                left -= len(data)
                if text := decoder.decode(data):
                    yield text
        except OSError:
            return
    if text := decoder.decode(b"", final=True):
        yield text


def step_artifacts(path: Any, artifacts: Path | None) -> tuple[list[Path], bool]:
    """The other files in the folder of a step's log file (`log_file`'s rule: none for a
    path outside `artifacts`), sorted, at most `MAX_ARTIFACTS_LISTED`; and whether there
    were more."""
    file = log_file(path, artifacts)
    if file is None:
        return [], False
    found: list[Path] = []
    try:
        with os.scandir(file.parent) as entries:
            for entry in entries:
                if entry.name == file.name:
                    continue
                if len(found) == MAX_ARTIFACTS_LISTED:
                    return sorted(found), True
                found.append(Path(entry.path))
    except OSError:
        pass
    return sorted(found), False


@dataclass(frozen=True)
class Chunk:
    """One piece of a step's log: the stored chunk's `id` (increasing), the `run` and
    `step` records it belongs to, and its text. `end`: 0 when the piece ends its chunk
    (resume after `id`), else the byte of the chunk where the next piece starts (a chunk
    longer than `store.logs.PIECE_BYTES` comes in pieces)."""

    id: int
    run: dict[str, Any]
    step: dict[str, Any]
    data: str
    end: int = 0

    @property
    def position(self) -> str:
        """Where a reader is after this piece, as `LogFollower` takes it back
        (`parse_position`): `ID` after a whole chunk, `ID:END` inside one."""
        return f"{self.id}:{self.end}" if self.end else str(self.id)


def parse_position(text: str, most: int) -> tuple[int, int] | None:
    """A `Chunk.position` (`ID` or `ID:END`, decimal, each at most `most`; `ID` may be
    negative, down to -2^63: any client may write such a chunk) as (`after`, `start`);
    None for anything else, `ID:0` too: no piece ends there (`position` says `ID` after a
    whole chunk), and taken as `ID` it skipped the chunk a client asked for from its
    start."""
    head, sep, tail = text.partition(":")
    parts = [head.removeprefix("-"), tail] if sep else [head.removeprefix("-")]
    if not all(p.isascii() and p.isdigit() and len(p) <= 20 for p in parts):
        return None
    after, start = int(head), int(tail) if sep else 0
    if sep and start == 0:
        return None
    return (after, start) if MIN_ID <= after <= most and start <= most else None


@dataclass
class LogFollower:
    """Where a reader of a ticket's live log is. `after`: the last chunk id already seen
    (`BEFORE_ALL`: from the start, chunks of id 0 and below too); `start`: 0, or how far into chunk `after` (bytes) it was read.
    After a `poll`, `finished` says the stream is over; then `ticket` is how it ended,
    `steps` the last run's newest `SHOWN_STEPS` steps (with their errors; only `step_id`'s
    attempts when given, its first `SHOWN_STEPS`), `steps_total` how many steps the run
    has, and `never_ran` whether there was no run to show at all. A run may have any
    number of steps: a poll reads only the steps its chunks belong to."""

    ticket_id: int
    run_id: int | None = None
    step_id: str | None = None
    after: int = BEFORE_ALL
    start: int = 0
    strict: bool = False
    """Raise `NotFoundError` for a pinned run that is not the ticket's (else: never_ran)."""
    budget: int = BATCH_BYTES
    """A `poll` reads about this many bytes of log at most (`store.logs.LogStore.after`)."""
    piece: int = PIECE_BYTES
    """A chunk longer than this comes in pieces of at most this many bytes."""
    finished: bool = False
    never_ran: bool = False
    ticket: Ticket | None = None
    run: dict[str, Any] | None = None
    """Once `finished` (and not `never_ran`): the run the stream ended on, with its error."""
    steps: dict[int, dict[str, Any]] = field(default_factory=dict)
    steps_total: int = 0

    def poll(self, store: Store) -> list[Chunk]:
        """One look: the chunks written since the last, in order (empty when none; sleep a
        little before the next look). `NotFoundError` for a ticket, run or step that does
        not exist."""
        if self.finished:
            return []
        try:
            ticket, run = pick_run(store, self.ticket_id, self.run_id)
        except NotFoundError:
            if self.strict or self.run_id is None:
                raise
            ticket, run = store.tickets.get(self.ticket_id), None
        self.ticket = ticket
        ended = ticket.status in ENDED
        if run is None:
            if ended or self.run_id is not None:
                self.finished = self.never_ran = True
            return []
        run_id = int(run["id"])
        if self.step_id is not None:  # NotFoundError when the run has no such step
            next(steps_of(store, run, self.step_id, batch=1), None)
        where = (run_id, self.step_id)
        batch = store.logs.after(
            (), self.after, BATCH, start=self.start, run=where, budget=self.budget,
            piece=self.piece,
        )  # fmt: skip
        if not batch and ended and run["status"] != "running":
            # everything is stored before a run closes: one last look, then done
            batch = store.logs.after(
                (), self.after, BATCH, start=self.start, run=where, budget=self.budget,
                piece=self.piece,
            )  # fmt: skip
            if not batch:
                self.finished = True
                self._last_steps(store, run)
                return []
        steps = {
            int(s["id"]): s
            for s in numbered(
                store.runs.steps_by_ids(run_id, {p.step_execution_id for p in batch}, values=False)
            )
        }
        chunks = [
            Chunk(p.id, run, steps.get(p.step_execution_id, {"id": p.step_execution_id}),
                  p.data, p.resume[1])
            for p in batch
        ]  # fmt: skip
        if batch:
            self.after, self.start = batch[-1].resume
        return chunks

    def _last_steps(self, store: Store, run: dict[str, Any]) -> None:
        self.run = run
        run_id = int(run["id"])
        if self.step_id is None:
            shown = store.runs.last_steps(run_id, SHOWN_STEPS, values=False)
        else:
            shown = store.runs.steps_from(
                run_id, 0, SHOWN_STEPS, step_id=self.step_id, values=False
            )
        self.steps = {int(s["id"]): s for s in numbered(shown)}
        self.steps_total = store.runs.count_steps(run_id)

"""A ticket's step logs: as a (bounded) download, or live as server-sent events.

The download (`service.logs.log_text`) is sent as it is read from the store, about
`DOWNLOAD_BATCH_BYTES` at a time, each read in a worker thread with a store borrowed for
it; at most `deps.MAX_LOG_DOWNLOADS` go at once (one more is a 503 with `Retry-After`),
and like a stream, one whose client stalls is dropped, as is one whose store fails
midway (its client must not take a cut text for the whole log).

The stream is `service.logs.LogFollower`, the one `swarm-engine logs --follow` prints:
each chunk is an event whose id is the chunk's id (`step_logs.id`, increasing), so a
client that reconnects with `Last-Event-ID` (browsers' EventSource does it by itself)
goes on after the last chunk it got. A chunk longer than `store.logs.PIECE_BYTES` (only
another client writes one) comes as several events, all but its last with id `ID:END`
(END: the byte of the chunk where the next one starts), so a reconnect goes on there. It
ends with an `end` event once the ticket has ended and every chunk is out. Each look at
the store runs in a worker thread; an idle stream looks less and less often (every
`POLL_SECONDS`, up to every `IDLE_POLL_SECONDS`), and at most `deps.MAX_LOG_STREAMS`
streams are open at once (one more is a 503 with `Retry-After`). When the server stops
(`Server.stopping`), a stream ends its response at its next look, without an `end` event;
a stream whose client stopped reading, and a download, still going
`server.LOG_DRAIN_SECONDS` after the stop (`Server.stop_by`) are dropped, so that uvicorn
never cancels one; so is one whose look at the store waits then for a lock another client
holds (`Server.past_stop`: the look gives up, for its thread cannot be cancelled).

A stream's memory is bounded whatever the client does: it reads at most about
`STREAM_BATCH_BYTES` of log per look (in pieces of at most `STREAM_PIECE_BYTES`), and looks
again only once the last look's events were handed to the connection, which takes one
only when its buffer has drained (uvicorn's flow control). A client that stops reading
is disconnected once one event has waited `stream_stall_timeout` seconds (a setting,
default 30), which frees its slot.

A response whose client hung up ends at its next event: a look can hand hundreds of
events to the connection in one go (small chunks), and once a write to the gone client
fails, asyncio takes every further one as a write to a lost connection (a warning line
each from the fifth) until the server tells the app, at the event loop's next turn. So
each event is sent only while the connection is not closing (`deps.ABORT_EXTENSION`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from swarm_engine.api import errors
from swarm_engine.api.deps import ABORT_EXTENSION, ServerDep, Slots
from swarm_engine.api.deps import Server as ServerState
from swarm_engine.api.numbers import ASCII_WHOLE
from swarm_engine.errors import SwarmError, UsageError
from swarm_engine.service.logs import BEFORE_ALL, Chunk, LogFollower, log_text, parse_position
from swarm_engine.service.values import MAX_ID, MIN_INT

router = APIRouter(prefix="/v1/tickets", tags=["logs"])
TicketPath = Annotated[
    int, Path(ge=MIN_INT, le=MAX_ID, description="A ticket id (any 64-bit integer)."), ASCII_WHOLE
]
RunQuery = Annotated[
    int | None,
    Query(ge=MIN_INT, le=MAX_ID, description="Run N (default: the latest)."),
    ASCII_WHOLE,
]
StepQuery = Annotated[str | None, Query(max_length=64, description="Only this step (its id).")]
POLL_SECONDS = 0.1
"""How often a stream looks for new chunks while they come."""
IDLE_POLL_SECONDS = 1.0
"""While none come, each wait is half as long again as the last, up to this."""
STREAMS_RETRY_AFTER = "5"
"""`Retry-After` (seconds) of the 503 for a stream over `deps.MAX_LOG_STREAMS`."""
KEEPALIVE_SECONDS = 15.0
"""A comment line after this long without an event keeps proxies from closing the stream."""
KiB = 1024
STREAM_BATCH_BYTES = 128 * KiB
"""A stream's look at the store reads about this many bytes of log at most (the CLI's
`--follow` reads up to `store.logs.BATCH_BYTES`): what one stream holds at a time."""
DOWNLOAD_BATCH_BYTES = 128 * KiB
"""A download reads about this many bytes of log from the store at a time (then sends
them before it reads more): what one download holds at a time."""
STREAM_PIECE_BYTES = 64 * KiB
"""A stored chunk longer than this (the engine writes 32 KiB ones, rarely up to 256 KiB)
comes as several events (ids `ID:END`): one event holds at most this many bytes of log."""
PROBE_BYTES = 4
"""A look for where a character starts (`_char_start`) reads a piece of this many bytes."""
REPLACEMENT = "\ufffd"
log = logging.getLogger(__name__)


@router.get(
    "/{ticket_id}/logs",
    summary="Download a ticket's log",
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "The log, as a text file (bounded: `service.logs.log_text`).",
        },
        503: {"description": "as many downloads as the server sends at once are going"},
    },
)
async def download(
    ticket_id: TicketPath, server: ServerDep, run: RunQuery = None, step: StepQuery = None
) -> Response:
    """The log of the ticket's latest run (or `run`), every step (or `step`) under a
    header line, as a text file, bounded (`log_text`: a step's first and last 8 MiB, 64
    MiB of logs in all, with a line saying what was left out and where all of it is),
    sent as it is read from the store (`DOWNLOAD_BATCH_BYTES` at a time). 404 when the
    ticket has not run yet; 503 (`Retry-After`) while `MAX_LOG_DOWNLOADS` are going."""
    if not server.downloads.take():
        message = f"{server.downloads.limit} log downloads are going, as many as this server sends"
        return errors.body(503, "too_many_downloads", message,
                           headers={"Retry-After": STREAMS_RETRY_AFTER})  # fmt: skip

    def start() -> tuple[dict[str, Any], Iterator[str]]:
        return log_text(
            server.stores.borrow, ticket_id, run, step, server.settings.artifacts_dir,
            budget=DOWNLOAD_BATCH_BYTES, piece=STREAM_PIECE_BYTES,
        )  # fmt: skip

    try:
        found, pieces = await anyio.to_thread.run_sync(start)  # a missing ticket: 404 here
    except BaseException:
        server.downloads.give_back()
        raise
    name = f"ticket-{ticket_id}-run-{found['id']}.log"
    return _SlotStream(
        server,
        server.downloads,
        pieces,  # (a plain iterator: starlette takes each piece in a worker thread)
        media_type="text/plain",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get(
    "/{ticket_id}/logs/stream",
    summary="Follow a ticket's log (server-sent events)",
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "`log` events (id: the chunk id; data: JSON with `text`), then"
            " one `end` event.",
        },
        503: {"description": "as many streams as the server serves are open"},
    },
)
async def stream(
    ticket_id: TicketPath,
    server: ServerDep,
    run: RunQuery = None,
    step: StepQuery = None,
    after: Annotated[
        int | None,
        Query(ge=MIN_INT, le=MAX_ID, description="Start after this chunk id (default: the first)."),
        ASCII_WHOLE,
    ] = None,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> Response:
    """The log of the ticket's latest run (a retry's run too, unless `run` is given) as
    it is written, as server-sent events; ends when the ticket ends. Resumes after the
    event named by `Last-Event-ID` (or after chunk `after`). 503 (`Retry-After`) while
    `MAX_LOG_STREAMS` streams are open."""
    position = (BEFORE_ALL if after is None else after, 0)
    if last_event_id is not None and last_event_id.strip():
        text = last_event_id.strip()
        found = parse_position(text, MAX_ID)
        if found is None:
            raise UsageError(f"Last-Event-ID {text[:32]!r} is not an event id of this stream")
        position = found
    if not server.streams.take():
        message = f"{server.streams.limit} log streams are open, as many as this server serves"
        return errors.body(503, "too_many_streams", message,
                           headers={"Retry-After": STREAMS_RETRY_AFTER})  # fmt: skip
    try:
        if position[1]:  # `ID:END`: END moved back to its character's start (a client's own)
            position = await _char_start(server, ticket_id, run, step, position)
        follower = LogFollower(
            ticket_id, run, step, after=position[0], start=position[1], strict=True,
            budget=STREAM_BATCH_BYTES, piece=STREAM_PIECE_BYTES,
        )  # fmt: skip
        first = await _poll(server, follower)  # a missing ticket, run or step is a 404 here
    except BaseException:
        server.streams.give_back()
        raise
    return _SlotStream(
        server,
        server.streams,
        _events(server, follower, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class _Stalled(Exception):
    """The client took no event for `stream_stall_timeout` seconds."""


class _Stopped(Exception):
    """The server stops, and the response did not end by `Server.stop_by`."""


class _Gone(Exception):
    """The client hung up: its connection is closing (a write to it failed), though the
    server has not told the app yet."""


class _SlotStream(StreamingResponse):
    """A streamed response that gives its slot (of `slots`) back once it is over, however
    it ends (the stream's end, the client gone, the server stopping, the client
    stalled)."""

    def __init__(self, server: ServerState, slots: Slots, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server = server
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stall = self.server.settings.stream_stall_timeout
        gone = _extension(scope).get("gone")

        async def send_in_time(message: Message) -> None:
            server = self.server
            if server.stopping and anyio.current_time() >= server.stop_by:
                raise _Stopped  # (a send that would not wait is no checkpoint)
            if callable(gone) and gone():  # (nor is a send to a lost connection: no
                raise _Gone  # turn of the loop between two of a look's events)
            try:
                with anyio.fail_after(stall) as deadline:
                    deadline.deadline = min(deadline.deadline, server.stop_by)
                    server.sends.add(deadline)  # (`Server.stop` brings it forward)
                    try:
                        await send(message)  # waits while the connection's buffer is full
                    finally:
                        server.sends.discard(deadline)
            except TimeoutError:
                raise _Stopped if server.stopping else _Stalled from None

        try:
            await super().__call__(scope, receive, send_in_time)
        except _Stopped:  # dropped: a download cut short must not look whole, and a
            await _drop(scope, receive)  # stream's client reconnects (`Last-Event-ID`)
        except _Gone:  # ended: the server sees the client gone at the loop's next turn
            await _disconnected(receive)
        except _Stalled:
            what = "download" if self.slots is self.server.downloads else "stream"
            if what == "stream":
                self.server.stalled_streams += 1  # (the metric counts live streams)
            log.warning("a log %s's client took nothing for %ss: disconnected", what, stall)
            await _drop(scope, receive)
        except SwarmError as exc:  # a download's store failed midway (a stream says so
            # in an event): dropped, so the client does not take a cut text for the whole
            if self.server.past_stop():  # its read gave up on a lock: the server stops
                await _drop(scope, receive)
                return
            why = " ".join(str(exc).split())
            log.warning("a log download failed midway, its connection dropped: %s", why)
            await _drop(scope, receive)
        finally:
            self.slots.give_back()


async def _drop(scope: Scope, receive: Receive) -> None:
    """Close the connection at once, its unsent bytes dropped (a plain close would wait
    for the stalled client to take them), when the server can (`api.protocol`); then wait
    (briefly) for it to be gone, so the server does not take the unfinished response for a
    bug."""
    abort = _extension(scope).get("abort")
    if not callable(abort):
        return
    abort()
    await _disconnected(receive)


def _extension(scope: Scope) -> dict[str, Any]:
    """The server's `deps.ABORT_EXTENSION` of this request (empty: not this server)."""
    found: dict[str, Any] = scope.get("extensions", {}).get(ABORT_EXTENSION, {})
    return found


async def _disconnected(receive: Receive) -> None:
    """Wait (briefly) for the server to tell that the connection is gone, so that it
    does not take the unfinished response for a bug."""
    with anyio.move_on_after(1):
        while (await receive())["type"] != "http.disconnect":
            pass


async def _poll(server: ServerState, follower: LogFollower) -> list[Chunk]:
    def look() -> list[Chunk]:
        with server.stores.borrow() as store:
            return follower.poll(store)

    return await anyio.to_thread.run_sync(look)


async def _char_start(
    server: ServerState,
    ticket_id: int,
    run: int | None,
    step: str | None,
    position: tuple[int, int],
) -> tuple[int, int]:
    """`position` (chunk `after`, byte `start` > 0 of it) with `start` moved back to the
    first byte of the character it falls inside; as it is when it starts a character (every
    `ID:END` this server sends does), or when the bytes there are not UTF-8 (they read as
    U+FFFD from any byte), or the chunk is not the stream's. The bytes are not at hand
    here, only their text (`store.logs`): a look of one small piece at `start`, then at
    each of the 3 bytes before it until one starts a character (its text does not begin
    with U+FFFD, which every byte inside a character reads as); that character takes
    `start` in when it is longer than the bytes stepped back. A character at byte 0 is
    read from there as (`after` - 1, 0): the chunks after the one before it."""
    after, start = position

    def look() -> tuple[int, int]:
        with server.stores.borrow() as store:
            for back in range(min(3, start) + 1):
                at = start - back
                probe = LogFollower(
                    ticket_id, run, step, after=after if at else after - 1, start=at,
                    strict=True, budget=PROBE_BYTES, piece=PROBE_BYTES,
                )  # fmt: skip
                got = probe.poll(store)
                if not got or got[0].id != after or not got[0].data:
                    return position  # not this stream's chunk, or past its end
                first = got[0].data[0]
                if first == REPLACEMENT:
                    continue  # inside a character, or a byte that is not UTF-8
                if back == 0 or len(first.encode()) <= back:
                    return position  # a character starts at `start`, or ends before it
                return (after, at) if at else (after - 1, 0)
        return position

    return await anyio.to_thread.run_sync(look)


async def _events(
    server: ServerState, follower: LogFollower, first: list[Chunk]
) -> AsyncIterator[str]:
    yield "retry: 1000\n\n"
    batch, quiet, wait = first, 0.0, POLL_SECONDS
    while True:
        for chunk in batch:
            yield _event("log", _chunk(chunk), chunk.position)
        if follower.finished:
            yield _event("end", _end(follower))
            return
        if batch:
            quiet, wait = 0.0, POLL_SECONDS
        else:
            await anyio.sleep(wait)
            quiet += wait
            wait = min(IDLE_POLL_SECONDS, wait * 1.5)  # idle: look less and less often
            if quiet >= KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                quiet = 0.0
        if server.stopping:  # the server stops: the response ends (its client reconnects)
            return
        try:
            batch = await _poll(server, follower)
        except Exception as exc:  # the ticket was deleted, the store went away, ...
            if server.stopping:  # (a look that gave up on a lock: `Server.past_stop`)
                return
            yield _event("error", {"message": " ".join(str(exc).split())})
            return


def _event(kind: str, data: dict[str, Any], event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _chunk(chunk: Chunk) -> dict[str, Any]:
    return {
        "run_id": chunk.run.get("id"),
        "step_execution_id": chunk.step.get("id"),
        "step_id": chunk.step.get("step_id"),
        "attempt": chunk.step.get("attempt"),
        "text": chunk.data,
    }


def _end(follower: LogFollower) -> dict[str, Any]:
    ticket = follower.ticket
    return {
        "ticket_id": follower.ticket_id,
        "status": ticket.status if ticket is not None else None,
        "error": ticket.error if ticket is not None else None,
        "never_ran": follower.never_ran,
        "steps": [
            {"step_id": s.get("step_id"), "attempt": s.get("attempt"),
             "status": s.get("status"), "error": s.get("error")}
            for s in follower.steps.values()
        ],
        "steps_total": follower.steps_total,
    }  # fmt: skip

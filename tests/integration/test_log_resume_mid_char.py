"""The live log stream resumed from a `Last-Event-ID: ID:END` whose END falls inside a
multi-byte UTF-8 character goes on from that character's first byte: the client gets the
whole character, never U+FFFD for its tail bytes (`api/logs.py` `_char_start`). An END
that starts a character (every one the server sends), or that sits in bytes that are not
UTF-8, is taken as it is. On SQLite and PostgreSQL, a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from tests.conftest import Target
from tests.integration.test_stored_log_rows import SETUP, NotUtf8, Value, write
from tests.support.api import Api, sse_events, start_api
from tests.support.cli import swarm_inproc

MIXED = "a\u20acb\U0001f600c\n"
"""Bytes: `a` 0, `€` 1-3, `b` 4, `😀` 5-8, `c` 9, newline 10."""
LEADING = "\u20acx\n"
"""A character at byte 0: `€` 0-2."""
STORED_FFFD = "x\ufffdy\n"
"""A U+FFFD the writer stored (bytes 1-3), read as it is."""
NEXT = "next chunk\n"
BIG = "\u20ac" * 30_000
"""90,000 bytes: two events of the stream (`STREAM_PIECE_BYTES`), the first `ID:END`."""


@dataclass
class Served:
    api: Api
    ids: dict[str, int]
    """The chunk id of each row, by name."""
    dialect: str


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    home = tmp_path_factory.mktemp(f"midchar-{request.param}") / "home"
    if request.param == "sqlite":
        target = Target("sqlite", home / "tickets.db", {})
    else:
        url = request.getfixturevalue("postgres").create_database()
        target = Target("postgresql", url, {"SWARM_DATABASE_URL": url})
    assert swarm_inproc(home, "status", "--init", **target.env).returncode == 0
    rows: list[tuple[str, Value]] = [("mixed", MIXED), ("leading", LEADING),
                                     ("fffd", STORED_FFFD)]  # fmt: skip
    if request.param == "sqlite":  # (PostgreSQL's text holds UTF-8 only)
        rows.append(("stray", NotUtf8(b"ab\x80\x80cd\n")))
    write(target, SETUP, [(1, value) for _, value in rows] + [(1, NEXT), (2, BIG)])
    api = start_api(home, **target.env)
    try:
        events = resumed(api, None)
        ids = dict(zip([name for name, _ in rows], [int(e[0]) for e in events], strict=False))
        yield Served(api, ids, request.param)
    finally:
        api.stop()


def resumed(api: Api, last_event_id: str | None, step: str = "s1") -> list[tuple[str, str]]:
    """The (id, text) of each `log` event of ticket 100's `step` after `last_event_id`."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    path = f"/v1/tickets/100/logs/stream?step={step}"
    with api.get(path, stream=True, headers=headers, timeout=60) as got:
        assert got.status_code == 200, got.text
        events = [e for e in sse_events(got) if e["event"] == "log"]
    return [(e["id"], json.loads(e["data"])["text"]) for e in events]


@pytest.mark.parametrize(
    ("row", "end", "text"),
    [
        ("mixed", 1, "\u20acb\U0001f600c\n"),  # `€` starts here: as it is
        ("mixed", 2, "\u20acb\U0001f600c\n"),  # inside `€`: back to byte 1
        ("mixed", 3, "\u20acb\U0001f600c\n"),
        ("mixed", 4, "b\U0001f600c\n"),
        ("mixed", 6, "\U0001f600c\n"),  # inside `😀` (bytes 5-8)
        ("mixed", 7, "\U0001f600c\n"),
        ("mixed", 8, "\U0001f600c\n"),
        ("mixed", 9, "c\n"),
        ("leading", 1, LEADING),  # inside the chunk's first character: the whole chunk
        ("leading", 2, LEADING),
        ("leading", 3, "x\n"),
        ("fffd", 1, "\ufffdy\n"),  # a stored U+FFFD that starts at END: as it is
        ("stray", 2, "\ufffd\ufffdcd\n"),  # bytes that are not UTF-8: taken as they are
        ("stray", 3, "\ufffdcd\n"),
    ],
)
def test_a_resume_inside_a_character_gets_the_whole_character(
    served: Served, row: str, end: int, text: str
) -> None:
    if row not in served.ids:
        pytest.skip(f"no {row!r} row on {served.dialect} (its text column holds UTF-8 only)")
    chunk = served.ids[row]
    events = resumed(served.api, f"{chunk}:{end}")
    assert events[0] == (str(chunk), text), events[:2]
    assert events[-1][1] == NEXT  # and on to the chunks after it, each once
    assert len(events) == len(served.ids) + 1 - list(served.ids).index(row)


def test_the_servers_own_ids_inside_a_chunk_resume_exactly(served: Served) -> None:
    """A chunk of `€` longer than an event: the first event's `ID:END` ends between
    characters, so a resume there gives exactly the rest; one byte before it is inside
    the character before: that character comes again, whole."""
    events = resumed(served.api, None, "s2")
    assert "".join(t for _, t in events) == BIG and len(events) == 2
    chunk, _, end = events[0][0].partition(":")
    assert int(end) == len(events[0][1].encode())
    assert resumed(served.api, events[0][0], "s2") == events[1:]
    again = resumed(served.api, f"{chunk}:{int(end) - 1}", "s2")
    assert again == [(chunk, "\u20ac" + events[1][1])]

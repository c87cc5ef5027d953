"""The dashboard's bulk cancel (`POST /ui/tickets/cancel`, a form of `id` fields) reads
each id as every route reads one (`api/numbers.py`): ASCII digits of a 64-bit integer,
anything else a 422 naming that id in one line, and then nothing is cancelled. An id
that was not ASCII digits (`1_0`, `%201`, an Arabic-Indic digit) was dropped, and the
other ids cancelled ("no ticket checked" when none was left). A real server on a SQLite
store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from tests.support.api import Api, start_api
from tests.support.cli import swarm_inproc

MAX = 2**63 - 1
MIN = -(2**63)
TICKETS = (1, 3, 10, 100)
"""Drafts an outside writer stores: what a value misread would name (`1_0`: 10, `٣`: 3,
`1e2`: 100, `' 1'`: 1)."""
BAD = [" 1", "1 ", "+1", "1_0", "\u0663", "\uff11", "1e2", "1.0", "0x10", "1\n", "\t1", "",
       "- 1", "--1", "1-", "true", str(MAX + 1), str(MIN - 1), "9" * 5000]  # fmt: skip
FORM = {"Content-Type": "application/x-www-form-urlencoded", "HX-Request": "true"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    home = tmp_path_factory.mktemp("bulk") / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    with sqlite3.connect(home / "tickets.db") as conn:  # an outside writer
        conn.executemany(
            "INSERT INTO tickets (id, title, status, agent_id) VALUES (?, ?, 'draft', 'echo')",
            [(i, f"ticket {i}") for i in TICKETS],
        )
    conn.close()
    server = start_api(home)
    yield server
    server.stop()


def cancel(api: Api, *ids: str) -> tuple[int, str, str]:
    """Post the form as a browser encodes it: the status, the error message (if any),
    the body."""
    form = "&".join(f"id={quote(i, safe='')}" for i in ids)
    got = api.post("/ui/tickets/cancel", data=form, headers=FORM, timeout=60)
    assert got.status_code < 500, (ids, got.status_code, got.text[:300])
    message = got.json()["message"] if got.status_code == 422 else ""
    return got.status_code, message, got.text


def statuses(api: Api) -> dict[int, str]:
    return {t: api.get(f"/v1/tickets/{t}").json()["status"] for t in TICKETS}


def test_a_bad_id_is_a_422_naming_it_and_nothing_is_cancelled(api: Api) -> None:
    before = statuses(api)
    for bad in BAD:
        for ids in ((bad,), ("1", bad), (bad, "3"), ("1", "100", bad)):
            status, message, body = cancel(api, *ids)
            assert status == 422, (ids, body[:300])
            assert message.startswith("form.id: "), (ids, message)
            assert repr(bad[:30])[:-1] in message, (ids, message)  # the bad one, named
            assert "\n" not in message and len(message) < 300, message
        assert statuses(api) == before, bad  # all or nothing


def test_the_form_as_the_page_sends_it_still_cancels(api: Api) -> None:
    status, _, body = cancel(api)
    assert status == 200 and "no ticket checked" in body, body
    status, _, body = cancel(api, "01", "3", "-5", str(MAX), str(MIN))  # (01: ticket 1)
    assert status == 200 and "cancelled 2" in body, body
    assert statuses(api) == {1: "cancelled", 3: "cancelled", 10: "draft", 100: "draft"}
    # leading zeros past int()'s 4300-digit limit (a 500 with a traceback, before)
    status, _, body = cancel(api, "0" * 5000 + "10", "-" + "0" * 5000 + "1")
    assert status == 200 and "cancelled 1" in body, body
    assert statuses(api)[10] == "cancelled"

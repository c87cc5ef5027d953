"""The line a foreground engine prints for each finished ticket (`cli.daemon`)."""

from __future__ import annotations

import pytest

from swarm_engine.cli.daemon import _FinishedPrinter
from swarm_engine.engine.events import Event
from swarm_engine.store.rows import Ticket


def test_a_failed_tickets_error_lines_are_joined_not_escaped(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A multi-line error (a row another client wrote; an agent's message) showed its
    newlines as `\\x0a`: its lines are joined with ` / `, as `ticket show` joins them."""
    error = "step 'main' failed: File size limit exceeded\n\n\x1b[2Jswarm-engine: the limit\n"
    monkeypatch.setenv("COLUMNS", "200")
    ticket = Ticket(id=7, title="t", status="failed", attempt_id="a", error=error)
    _FinishedPrinter()(
        Event(
            "run_finished", 7, data={"ticket": ticket, "run": {"attempt_id": "a", "duration_ms": 5}}
        )
    )
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and "\\x0a" not in line, line
    assert "exceeded / \\x1b[2Jswarm-engine: the limit" in line, line  # controls still shown

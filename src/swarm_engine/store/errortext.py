"""The one bound on error text the engine stores: every write passes through here.

`tickets.error`, `workflow_runs.error`, `step_executions.error` and `vms.error` (and so
each status event's `note`, which a trigger copies from the ticket's error) are written by
statements whose parameter is named `error`; both connectors (`store/sqlite.py`,
`store/postgres.py`) pass that parameter through `bounded_error` before binding it, so no
caller can store more, whatever its message quotes (a 500,000-character agent name from a
hand-written registry row, a reference to an output key of any length). What is stored is
one line of at most `MAX_ERROR_CHARS` characters: whitespace runs become one space, and a
longer line keeps its start and its end around ` … (N more characters) … ` (the start says
what failed, the end is often a command's last output line). A NUL character (which
PostgreSQL refuses in text) is written `\\x00`, and text that is not valid Unicode (a lone
surrogate from a row's JSON) gets U+FFFD in its place: the write never fails over the text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_ERROR_CHARS = 500
"""The most characters of error text the engine stores (docs/schema.md: one line)."""
ERROR_PARAMS = frozenset({"error", "not_run"})
"""The statement parameters that are error text (every statement that writes an error
column names its value `:error`, or `:not_run` for the steps of a run that never
started, beside the run's own `:error`)."""
NOT_STARTED = "the run ended before it started"
UNCOUNTED = "claimed without counting an attempt: its attempts are no count below max_attempts"
"""The `error` a claim gives a ticket whose `attempts` it did not count (bound as
`:uncounted`: a row whose attempts are negative, at or past its `max_attempts`, or no
integer the store can add 1 to): the engine that claimed it fails it unrun
(`engine.session`), its attempts as written."""
"""Why a step never started, when its run's end gives no reason of its own."""


def not_run(why: str | None) -> str:
    """The error of a step that never started, recorded `skipped`: `not run: WHY` (bound
    as `:not_run`, so bounded as every error text is)."""
    return f"not run: {why or NOT_STARTED}"


_HEAD_SHARE = 0.7
"""The part of a cut line's room given to its start (the rest to its end)."""


def bounded_error(text: str) -> str:
    """`text` as an error column stores it: one line, at most `MAX_ERROR_CHARS` characters
    (see the module doc). Of a text over `4 * MAX_ERROR_CHARS` characters only the first
    and last `2 * MAX_ERROR_CHARS` are looked at (its middle is left out whatever it holds)."""
    edge = 2 * MAX_ERROR_CHARS
    if len(text) > 2 * edge:
        head, tail = _one_line(text[:edge]), _one_line(text[-edge:])
        total = len(head) + (len(text) - 2 * edge) + len(tail)
    else:
        head = tail = _one_line(text)
        if len(head) <= MAX_ERROR_CHARS:
            return _encodable(head)
        total = len(head)
    room = MAX_ERROR_CHARS - 40
    for _ in range(3):  # the marker's length depends on the number it shows: settle it
        keep_head = int(room * _HEAD_SHARE)
        keep_tail = room - keep_head
        marker = f" … ({total - keep_head - keep_tail:,} more characters) … "
        room = MAX_ERROR_CHARS - len(marker)
    kept = head[:keep_head].rstrip() + marker + tail[len(tail) - keep_tail :].lstrip()
    return _encodable(kept[:MAX_ERROR_CHARS])


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line.replace("\x00", "\\x00") if "\x00" in line else line


def _encodable(line: str) -> str:
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return line.encode("utf-8", "replace").decode("utf-8")
    return line


def bounded_params(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """`params` with each error text (`ERROR_PARAMS`, when a string) bounded; the same
    mapping when it holds none."""
    if not any(isinstance(params.get(name), str) for name in ERROR_PARAMS):
        return params
    return {
        k: bounded_error(v) if k in ERROR_PARAMS and isinstance(v, str) else v
        for k, v in params.items()
    }

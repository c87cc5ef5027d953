"""The bounds of row ids, and where a reader that pages through rows by id starts.

Ids are any 64-bit integer: the store numbers from 1, but any client may write 0 or a
negative id, and every reader shows those too.
"""

from __future__ import annotations

MAX_ID = 2**63 - 1
MIN_ID = -(2**63)
BEFORE_ALL = MIN_ID - 1
"""A reader's position before every row. Ids are any 64-bit integer (any client may write
0 or -5 into `ticket_events`, `workflow_runs`, `step_executions` or `step_logs`), so a
reader that started "after 0" never showed those. No SQL integer holds it: readers pass
the first id they want (`first_after`)."""


def first_after(after: int) -> int | None:
    """The first id a reader at `after` (the last id it saw, or `BEFORE_ALL`) wants, as a
    SQL integer; None when no id can come after it (`after` is `MAX_ID`, or above)."""
    if after >= MAX_ID:
        return None
    return max(after, BEFORE_ALL) + 1

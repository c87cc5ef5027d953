"""A step's `output.log` and its live copy keep what the command printed: a line written
in several pieces stays one line (a character cut between two pieces too), and every
stderr line is marked `[stderr] `."""

from __future__ import annotations

from pathlib import Path

from tests.acceptance.conftest import write_agent
from tests.support.cli import query, swarm_inproc

SCRIPT = r"""
printf 'progress: '
sleep 0.2
printf '50%%... '
sleep 0.2
printf 'done\n'
printf 'e1\ne2\n' >&2
sleep 0.2
printf 'caf\303'
sleep 0.2
printf '\251\n'
printf 'last words, no newline'
"""


def test_a_line_printed_in_pieces_stays_one_line(home: Path, tmp_path: Path) -> None:
    write_agent(tmp_path / "say", "name: say\nkind: shell\ncommand: sh run.sh\n",
                {"run.sh": SCRIPT})  # fmt: skip
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "say")).returncode == 0
    made = swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", "say")
    assert made.returncode == 0, made.stderr
    done = swarm_inproc(home, "run-ticket", "1", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    db = home / "tickets.db"
    (step,) = query(db, "SELECT id, log_path FROM step_executions")
    expected = "progress: 50%... done\n[stderr] e1\n[stderr] e2\ncafé\nlast words, no newline\n"
    assert Path(step["log_path"]).read_text() == expected
    live = query(db, "SELECT data FROM step_logs WHERE step_execution_id = ? ORDER BY id",
                 step["id"])  # fmt: skip
    assert "".join(row["data"] for row in live) == expected

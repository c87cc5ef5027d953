"""The tester's race (probe/reregister_race.sh), smaller: `agent register --force` of one
agent, alternating two packages, while an engine runs that agent's tickets. Every ticket
ends `done` with the package of one registration (`XXX` or `YYY`), never a mix and never
`cannot read the package of agent racer@1.0.0: [Errno 2] No such file or directory`; or,
when the package's files changed between the run's plan and the moment the run held its
copy (`engine/packages.py`), fails with the one line that says so (the files of another
registration are not run for the one the step was planned with)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.acceptance.conftest import engine_ready, write_agent
from tests.support.cli import insert_open_tickets, query, start_engine, swarm, wait_until

ROUNDS = 8  # registrations of each package
PER_ROUND = 2  # tickets created after each registration
FILE_BYTES = 300_000
COMMAND = "head -c 1 a.txt; head -c 1 b.txt; head -c 1 c.txt"


def _package(folder: Path, letter: str) -> Path:
    write_agent(folder, f"name: racer\nkind: shell\ntimeout_seconds: 60\ncommand: {COMMAND!r}\n")
    for name in ("a.txt", "b.txt", "c.txt"):
        (folder / name).write_bytes(letter.encode() * FILE_BYTES)
    return folder


def test_tickets_run_one_whole_package_while_it_is_re_registered(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    packages = [_package(tmp_path / letter, letter) for letter in "XY"]
    swarm(home, "agent", "register", str(packages[0]), check=True)
    engines.append(start_engine(home, "--max-vms", "4", "--poll-interval", "0.2"))
    engine_ready(home, engines[0])
    db = home / "tickets.db"
    for i in range(2 * ROUNDS):
        swarm(home, "agent", "register", "--force", str(packages[i % 2]), check=True)
        insert_open_tickets(db, [(f"race{i}", "racer", json.dumps({}))] * PER_ROUND)

    def ended() -> list[dict[str, object]]:
        rows = query(db, "SELECT status, result, error FROM tickets WHERE agent_id = 'racer'")
        return rows if all(r["status"] in ("done", "failed") for r in rows) else []

    rows = wait_until(ended, 240, "the racer tickets to end")
    assert len(rows) == 2 * ROUNDS * PER_ROUND
    for row in rows:  # a step planned with one registration whose files changed before
        if row["status"] == "failed":  # it read them fails, saying so: never a mix
            assert "differ from the ones this step was planned with: either" in str(row["error"]), (
                row
            )
            continue
        assert json.loads(str(row["result"]))["stdout"] in ("XXX", "YYY"), row["result"]
    assert sum(r["status"] == "done" for r in rows) >= len(rows) // 2, rows

"""An engine run inside a process that goes on (`start --foreground` in a test's own
process) puts back the child watcher it found: Python 3.11's pidfd watcher it installs is
bound to the engine's loop, and left behind, the process's next asyncio subprocess in a
new loop failed (`asyncio.get_child_watcher() is not activated`: Playwright's browser in
the dashboard test, after another test's in-process engine on the same worker)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.cli import swarm_inproc


async def _run_true() -> int:
    proc = await asyncio.create_subprocess_exec("true")
    return await proc.wait()


def test_an_in_process_engine_leaves_subprocesses_working(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = swarm_inproc(home, "start", "--foreground", "--until-idle")
    assert done.returncode == 0, done.stdout + done.stderr
    loop = asyncio.new_event_loop()  # as Playwright's sync API: a loop never made current
    try:
        assert loop.run_until_complete(_run_true()) == 0
    finally:
        loop.close()

"""The marks a `swarm-engine start` leaves in `<home>/run/` (`engine-PID.pid`, `.ready`,
`.stopping`), removed by `cleanup` once their engine is gone: an engine killed with
`kill -9` removes none of its own, and they stayed for ever.

An engine is gone when its pid is not alive, or is alive but runs another program (a pid
reused since): `proctree.is_engine`. A pid that runs any `swarm-engine start` keeps its
files (this home's engine or not: never a running engine's). `.ended` files are `stop`'s
to read and are pruned by the engine itself (`engine_end.prune`)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from swarm_engine.vm.proctree import is_engine

ENGINE_FILE = re.compile(r"engine-([1-9][0-9]{0,9})\.(pid|ready|stopping)")
"""Only the names an engine writes (`cli/daemon.py`, `cli/stop.py`)."""
MAX_ENTRIES = 100_000
"""The most entries of the run folder one `cleanup` looks at (a folder of any size takes
bounded time; a later `cleanup` goes on)."""


def remove_gone_engine_files(run_dir: Path) -> list[str]:
    """Remove the engine files of `run_dir` whose engine is gone; returns their names,
    sorted. A file that cannot be removed, or that is no regular file, is left alone."""
    removed: list[str] = []
    alive: dict[int, bool] = {}
    try:
        entries = os.scandir(run_dir)
    except OSError:
        return removed
    with entries:
        for seen, entry in enumerate(entries):
            if seen >= MAX_ENTRIES:
                break
            found = ENGINE_FILE.fullmatch(entry.name)
            if found is None:
                continue
            pid = int(found.group(1))
            if pid not in alive:
                alive[pid] = is_engine(pid)
            if alive[pid]:
                continue
            try:
                if not stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode):
                    continue
                os.unlink(entry.path)
            except OSError:
                continue
            removed.append(entry.name)
    return sorted(removed)

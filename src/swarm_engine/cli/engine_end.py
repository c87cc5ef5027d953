"""How an engine ended, left for `stop`: its exit code and last line, in a small file of
its run folder (`<home>/run/engine-PID.ended`), written as the engine exits.

`stop` is not the engine's parent (a daemonized engine is `start`'s child, a foreground
one the shell's), so it cannot wait for its exit status: it waits for the process to be
gone, then reads this file and relays the line and the code (an engine that could not
record its stop exits 6, and so does `stop`). No file (a `kill -9`, an engine of another
home) is said as such: `stop` does not know how that engine ended.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from swarm_engine.errors import SwarmError

MAX_BYTES = 8192
"""The most of the file `read_end` reads (the line is one line, an `error:` line bounded
by the engine's own error texts)."""
EXIT_INTERRUPTED = 130
KEPT_SECONDS = 600.0
"""How long an end is kept (`prune`): every `stop` waiting for its engine reads it."""


def end_path(run_dir: Path, pid: int) -> Path:
    return run_dir / f"engine-{pid}.ended"


@contextlib.contextmanager
def recorded_end(run_dir: Path) -> Iterator[Callable[[str], None]]:
    """Around a foreground engine's run: records how it ended in `end_path` (the line
    given to the callable it yields and exit 0, or the error's line and its exit code).
    A file an earlier process of this pid left is removed first."""
    from swarm_engine.cli.main import one_line  # (the line the CLI prints for an error)

    path = end_path(run_dir, os.getpid())
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
    prune(run_dir)
    said: list[str] = []
    try:
        yield said.append
    except SwarmError as exc:
        _write(path, exc.exit_code, f"error: {one_line(str(exc))}")
        raise
    except KeyboardInterrupt:
        _write(path, EXIT_INTERRUPTED, "error: interrupted")
        raise
    except BaseException as exc:
        _write(path, 1, f"error: the engine ended with {type(exc).__name__} (see its output)")
        raise
    _write(path, 0, said[-1] if said else "engine stopped")


def prune(run_dir: Path) -> None:
    """Remove the ends once they are `KEPT_SECONDS` old (read by every `stop` that waited
    for their engine, or by none: an engine stopped by a signal, Ctrl-C), so the folder
    stays bounded."""
    now = time.time()
    with contextlib.suppress(OSError):
        for left in run_dir.glob("engine-*.ended*"):
            with contextlib.suppress(OSError):
                if now - left.stat().st_mtime > KEPT_SECONDS:
                    left.unlink()


def _write(path: Path, code: int, line: str) -> None:
    """Written whole or not at all (a temporary file renamed over it)."""
    part = path.with_name(path.name + ".part")
    try:
        part.write_text(f"{code}\n{line}\n", encoding="utf-8")
        part.replace(path)
    except OSError:  # (a full disk, a run folder gone): `stop` says it does not know
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)


def read_end(path: Path, began: float | None) -> tuple[int, str] | None:
    """(exit code, last line) of the engine whose end `path` holds, or None when there is
    none, it cannot be read, or it was written before the engine started at `began`
    (another process of a reused pid: a second of slack for coarse file times)."""
    try:
        if began is not None and path.stat().st_mtime < began - 1.0:
            return None
        with path.open("rb") as file:
            text = file.read(MAX_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return None
    code, _, rest = text.partition("\n")
    try:
        return int(code), rest.splitlines()[0] if rest.strip() else ""
    except ValueError:
        return None

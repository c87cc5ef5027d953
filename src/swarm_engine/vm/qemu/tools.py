"""Running the image build's tools (apt-get, debootstrap, tar, make, ...), with progress.

Not part of an image's recipe (`image.RECIPE_FILES`): how a build reports itself does
not change what it builds, so rewording a message or an estimate here does not make
every built image stale.

Estimates are for the smallest host we support (2 cores, an ordinary mirror); a faster
host beats them. Measured on 2 cores: cloud kernel download and unpack under 30 s;
debootstrap 40 s to 2.3 min; the tiny kernel's `make vmlinux` 4 to 10 min.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from swarm_engine.errors import VMError

Progress = Callable[[str], None]

ESTIMATES = {
    "cloud": "1 to 4 minutes on 2 cores",
    "tiny": "5 to 15 minutes on 2 cores (compiling the kernel is most of it)",
}
"""A whole build from nothing, per kernel kind (steps already done are skipped)."""

DEBOOTSTRAP_LINES = 530
"""`I: Retrieving/Validating/Extracting/Unpacking/Configuring` lines of a bookworm
minbase + python3 debootstrap (about 110 packages, each named in up to 5 such lines)."""
KBUILD_LINES = 1415
"""Kbuild lines (`  CC      init/main.o`, `  AR ...`, ...) of the tiny kernel's `make vmlinux`."""


def elapsed(seconds: float) -> str:
    """`45 s`, `3m 05s`."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"


@dataclass(frozen=True)
class Watch:
    """Progress of one long tool, reported every `every` seconds while it runs: the share
    of its `expected` output lines matching `pattern` seen so far (capped at 99%), or,
    without a pattern, only the time it has taken."""

    label: str
    progress: Progress
    pattern: str | None = None
    expected: int = 0
    every: float = 10.0

    def report(self, matched: int, seconds: float) -> None:
        if self.pattern is not None and self.expected > 0:
            percent = min(99, matched * 100 // self.expected)
            self.progress(f"{self.label}: {percent}% after {elapsed(seconds)}")
        else:
            self.progress(f"{self.label}: still running after {elapsed(seconds)}")


def run_tool(
    argv: list[str], *, cwd: Path | None = None, log: Path | None = None, watch: Watch | None = None
) -> str:
    """Run a build tool; returns its stdout (with `watch`: stdout and stderr, interleaved).
    Raises VMError with the last lines of its output when it fails."""
    if watch is None:
        try:
            done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise VMError(f"cannot run {argv[0]}: {exc.strerror}") from exc
        code, out, err = done.returncode, done.stdout, done.stderr
    else:
        code, out = _watched(argv, cwd, watch)
        err = ""
    if log is not None:
        with log.open("a") as fh:
            fh.write(f"$ {' '.join(argv)}\n{out}{err}\n")
    if code != 0:
        tail = "\n".join((err or out).strip().splitlines()[-5:])
        raise VMError(f"{' '.join(argv[:3])} failed ({code}):\n{tail}")
    return out


def _watched(argv: list[str], cwd: Path | None, watch: Watch) -> tuple[int, str]:
    try:
        proc = subprocess.Popen(
            argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, errors="replace",
        )  # fmt: skip
    except OSError as exc:
        raise VMError(f"cannot run {argv[0]}: {exc.strerror}") from exc
    assert proc.stdout is not None
    stream = proc.stdout
    pattern = re.compile(watch.pattern) if watch.pattern else None
    lines: list[str] = []
    matched = [0]

    def read() -> None:
        for line in stream:
            lines.append(line)
            if pattern is not None and pattern.match(line):
                matched[0] += 1

    reader = threading.Thread(target=read, name=f"watch-{argv[0]}", daemon=True)
    reader.start()
    started = time.monotonic()
    try:
        while True:
            try:
                proc.wait(timeout=watch.every)
                break
            except subprocess.TimeoutExpired:
                watch.report(matched[0], time.monotonic() - started)
    except BaseException:  # Ctrl-C, or a progress callback that failed: no tool left behind
        proc.kill()
        proc.wait()
        raise
    reader.join()
    stream.close()
    return proc.returncode, "".join(lines)

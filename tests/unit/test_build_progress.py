"""The image build's long tools report progress while they run (a percentage when their
usual output is known, the time so far otherwise), and fail with their last lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarm_engine.errors import VMError
from swarm_engine.vm.qemu.tools import Watch, elapsed, run_tool

# Prints two of four expected lines, then waits until `release` exists (the test makes it
# from the progress callback, once a report has been seen): no timing assumptions.
SCRIPT = """
echo "  CC      init/main.o"
echo "  AR      lib/built-in.a"
while [ ! -e release ]; do sleep 0.01; done
echo "  CC      init/version.o"
echo "  LD      vmlinux"
"""


def test_a_watched_tool_reports_its_share_of_the_expected_lines(tmp_path: Path) -> None:
    reports: list[str] = []

    def progress(message: str) -> None:
        reports.append(message)
        if "50%" in message:
            (tmp_path / "release").touch()

    watch = Watch("compiling", progress, r"  [A-Z]+ ", expected=4, every=0.02)
    log = tmp_path / "build.log"
    out = run_tool(["sh", "-c", SCRIPT], cwd=tmp_path, log=log, watch=watch)
    assert out.count("\n") == 4 and out.endswith("  LD      vmlinux\n")
    percents = [int(r.split(": ")[1].split("%")[0]) for r in reports]
    assert all(r.startswith("compiling: ") and " after " in r for r in reports)
    assert 50 in percents and percents == sorted(percents) and max(percents) <= 99
    assert log.read_text().startswith("$ sh -c ")


def test_without_a_pattern_it_reports_the_time_so_far(tmp_path: Path) -> None:
    reports: list[str] = []

    def progress(message: str) -> None:
        reports.append(message)
        (tmp_path / "release").touch()

    run_tool(["sh", "-c", SCRIPT], cwd=tmp_path, watch=Watch("unpacking", progress, every=0.02))
    assert reports[0].startswith("unpacking: still running after ")


def test_a_failing_watched_tool_names_its_last_lines(tmp_path: Path) -> None:
    watch = Watch("x", lambda _m: None, every=5)
    with pytest.raises(VMError, match=r"sh -c .* failed \(3\):\nok\nbad thing$"):
        run_tool(["sh", "-c", "echo ok; echo bad thing >&2; exit 3"], watch=watch)


def test_elapsed_reads_like_a_person_says_it() -> None:
    assert [elapsed(s) for s in (4.2, 59.4, 185, 641)] == ["4 s", "59 s", "3m 05s", "10m 41s"]

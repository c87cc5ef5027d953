"""How a process sandbox command's end is told (`vm/ending.py`): its exit code, and the one
note its stderr ends with when a limit stopped it, the same on both paths of `exec`."""

from __future__ import annotations

import signal

from swarm_engine.vm.ending import DiskLimits, Ended, ending

LIMITS = DiskLimits(disk_mb=8, max_files=10)


def test_a_write_stopped_by_sigxfsz_names_the_file_size_limit() -> None:
    for returncode in (153, -signal.SIGXFSZ):  # as a shell reports it, or the signal itself
        code, note = ending(Ended(returncode), LIMITS)
        assert code == 153
        assert note.startswith(b"\nswarm-engine: exit code 153 means a file reached the size")
        assert b"limit of 8 MiB per file (disk_mb)" in note and note.count(b"\n") == 2
        assert b"unless the command chose that exit code itself" in note


def test_other_ends_get_no_file_size_note() -> None:
    assert ending(Ended(0), LIMITS) == (0, b"")
    assert ending(Ended(1), LIMITS) == (1, b"")
    assert ending(Ended(-signal.SIGKILL), LIMITS) == (137, b"")
    assert ending(Ended(153, timed_out=True), LIMITS) == (124, b"")  # the timeout's code


def test_a_workspace_over_its_limits_comes_first() -> None:
    """A file stopped at `disk_mb` can also take the workspace over its total: one note,
    the workspace's, and the code it fails with (137)."""
    code, note = ending(Ended(153, ended_over_disk=True), LIMITS)
    assert code == 137
    assert note == (
        b"\nswarm-engine: the workspace went over its disk limit of 8 MiB or 10 files;"
        b" found as the command ended; it fails with exit code 137\n"
    )
    code, note = ending(Ended(-signal.SIGKILL, killed_over_disk=True), LIMITS)
    assert code == 137 and note.endswith(b"; the command was killed\n")
    # the count that found it over ended as the command exited by itself, just before the
    # kill: it fails all the same (a step was `done` with its workspace over its limits)
    code, note = ending(Ended(0, killed_over_disk=True), LIMITS)
    assert code == 137 and note.endswith(b"; the command was killed\n")
    assert ending(Ended(-signal.SIGKILL, timed_out=True, killed_over_disk=True), LIMITS)[0] == 124
    uncountable = DiskLimits(8, 10, uncountable="a/locked: Permission denied")
    code, note = ending(Ended(0, ended_over_disk=True), uncountable)
    assert code == 137 and b"cannot be listed (a/locked: Permission denied)" in note


def test_a_failed_command_that_found_no_space_in_a_capped_workspace_is_told_the_limits() -> None:
    capped = DiskLimits(disk_mb=8, max_files=10, tmp_mb=4, capped=True)
    code, note = ending(Ended(1, no_space=True), capped)
    assert code == 1 and note == (
        b"\nswarm-engine: a write found no space left: the workspace holds at most 8 MiB"
        b" (disk_mb) and 10 files (max_files); /tmp and /dev/shm 4 MiB each (tmp_mb)\n"
    )
    unisolated = DiskLimits(disk_mb=8, max_files=10, capped=True)
    assert ending(Ended(1, no_space=True), unisolated)[1].endswith(b"10 files (max_files)\n")
    assert ending(Ended(0, no_space=True), capped) == (0, b"")  # it succeeded all the same
    assert ending(Ended(1, no_space=True), LIMITS) == (1, b"")  # measured: the host's disk
    assert ending(Ended(1, no_space=True, ended_over_disk=True), capped)[1].startswith(
        b"\nswarm-engine: the workspace went over"
    )


def test_an_oom_kill_in_its_vm_fails_the_command_naming_memory_mb() -> None:
    """Whatever its own code (a shell that went on after its child was killed exits 0),
    and before any disk note; a timeout's kill that came first keeps its code. Without a
    memory cgroup (`memory_mb` None: `memory_cap = "rlimit"`) nothing is said."""
    limits = DiskLimits(disk_mb=8, max_files=10, tmp_mb=4, memory_mb=64)
    for returncode in (0, -signal.SIGKILL, 1):
        code, note = ending(Ended(returncode, out_of_memory=True, ended_over_disk=True), limits)
        assert code == 137, returncode
        assert note == (
            b"\nswarm-engine: the step ran out of memory: its processes reached the agent's"
            b" memory_mb = 64 MiB (+ 2 x tmp_mb = 8 MiB for /tmp and /dev/shm), and the"
            b" kernel killed one; it fails with exit code 137 (raise memory_mb, or use less)\n"
        )
    code, note = ending(Ended(-signal.SIGKILL, timed_out=True, out_of_memory=True), limits)
    assert code == 124 and b"ran out of memory" in note
    unisolated = DiskLimits(disk_mb=8, max_files=10, memory_mb=64)
    assert b"tmp_mb" not in ending(Ended(0, out_of_memory=True), unisolated)[1]
    assert ending(Ended(0, out_of_memory=True), LIMITS) == (0, b"")

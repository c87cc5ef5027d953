"""A host short of file descriptors is a delay, not a failure (vm/shortage.py).

The real process backend runs in a child Python under a low `ulimit -n` (RLIMIT_NOFILE)
whose every free descriptor but a few is held open, so that starting a command fails
with EMFILE at each point where it needs descriptors (the sandbox's memory files, the
worker's wake pipe and selector, the command's pipes). The command waits; once the wait is
logged (its one line), another thread frees the held descriptors and the command runs to
its end, with no descriptor left behind. When the shortage never passes, the command
fails at its own timeout with one line naming the shortage and how long it waited; a
cancel ends the wait at once.

Run without and with bubblewrap, on the worker-thread path (output not streamed) and the
event-loop path (output streamed to a callback).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from swarm_engine.vm.process import bwrap_works

CHILD = r"""
import asyncio, errno, json, logging, os, resource, sys, tempfile, threading
from pathlib import Path
from swarm_engine.errors import VMError
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.process import ProcessBackend, ProcessConfig

isolation, path, mode = sys.argv[1], sys.argv[2], sys.argv[3]
frees = [int(n) for n in sys.argv[4].split(",")]
records: list[str] = []
waiting = threading.Event()
held: list[int] = []


class Watch(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        records.append(f"{record.levelname} {record.getMessage()}")
        if record.levelno >= logging.WARNING:
            waiting.set()


shortage_log = logging.getLogger("swarm_engine.vm.shortage")
shortage_log.addHandler(Watch())
shortage_log.setLevel(logging.INFO)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) - 1  # less the one listdir holds


def hold_all_but(free: int) -> None:
    while True:
        try:
            held.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
        except OSError as exc:
            assert exc.errno == errno.EMFILE, exc
            break
    for _ in range(free):
        os.close(held.pop())


def free_all() -> None:
    while held:
        os.close(held.pop())


def free_once_waiting() -> None:
    waiting.wait()  # the command says it waits: only now is the shortage ended
    free_all()


async def main() -> None:
    backend = ProcessBackend(Path(tempfile.mkdtemp()), ProcessConfig(isolation=isolation))
    await backend.start()
    vm = await backend.boot("vm-short", VMSpec(timeout_seconds=60))
    on_output = (lambda stream, chunk: None) if path == "streamed" else None
    await vm.exec(["true"], on_output=on_output)  # its worker thread and caches exist
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_fds() + 64, hard))
    results = []
    for free in frees:
        records.clear()
        waiting.clear()
        before = open_fds()
        hold_all_but(free)
        out: dict[str, object] = {"free": free}
        try:
            if mode == "release" and path == "file":  # a step's inputs in, its outputs out
                threading.Thread(target=free_once_waiting, daemon=True).start()
                await vm.put_file("in.txt", b"ran\n")
                out.update(exit_code=0, stdout=(await vm.get_file("in.txt")).decode())
            elif mode == "release":
                threading.Thread(target=free_once_waiting, daemon=True).start()
                done = await vm.exec(["echo", "ran"], timeout=60, on_output=on_output)
                out.update(exit_code=done.exit_code, stdout=done.stdout.decode())
            elif mode == "never":
                try:
                    await vm.exec(["echo", "ran"], timeout=1, on_output=on_output)
                    out["error"] = None
                except VMError as exc:
                    out["error"] = str(exc)
            else:  # cancel, once it waits
                task = asyncio.create_task(vm.exec(["echo", "ran"], timeout=60, on_output=on_output))
                while not waiting.is_set() and not task.done():
                    await asyncio.sleep(0)  # sleep-ok: a yield; the wait is logged on this loop
                task.cancel()
                await asyncio.wait([task], timeout=30)  # its own timeout is 60 s
                out.update(cancelled=task.cancelled())
        finally:
            free_all()
        out["records"] = list(records)
        out["leaked"] = open_fds() - before
        results.append(out)
    await vm.destroy()
    await backend.close()
    print(json.dumps(results))


asyncio.run(main())
"""


def run_child(isolation: str, path: str, mode: str, frees: list[int]) -> list[dict[str, object]]:
    if isolation == "bwrap" and not bwrap_works():
        pytest.skip("bubblewrap does not work on this host")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, isolation, path, mode, ",".join(map(str, frees))],
        capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results: list[dict[str, object]] = json.loads(done.stdout)
    return results


VARIANTS = [
    pytest.param(isolation, path, id=f"{isolation}-{path}")
    for isolation in ("none", "bwrap")
    for path in ("thread", "streamed")
]
WAITING = re.compile(
    r"^WARNING cannot start command in vm-short yet: no file descriptors free \(EMFILE\); "
    r"trying again for up to \d+(\.\d)?s$"
)


@pytest.mark.parametrize(("isolation", "path"), VARIANTS)
def test_a_command_short_of_fds_waits_and_then_runs(isolation: str, path: str) -> None:
    """With 0 to 15 descriptors free (each count fails the start at another point), the
    command waits, logs it once, and runs once descriptors are freed; none leaks."""
    results = run_child(isolation, path, "release", list(range(16)))
    for one in results:
        assert one["exit_code"] == 0 and one["stdout"] == "ran\n", one
        assert one["leaked"] == 0, one
        records = one["records"]
        assert isinstance(records, list)
        if records:  # a start short of descriptors: waited, said once, then passed
            assert len(records) == 2, one
            assert WAITING.match(records[0]), one
            assert records[1].startswith("INFO start command in vm-short: the shortage passed")
    assert results[0]["records"], "with no descriptor free the command did not wait"
    # with room for the start, nothing waits (a check asking for more than a start needs
    # would make a host that can run the command wait out its whole timeout); a bwrap
    # command on a worker thread needs 13 at once (its environment is a memory file)
    assert not [one["free"] for one in results[13:] if one["records"]], results


@pytest.mark.parametrize(("isolation", "path"), VARIANTS)
def test_a_shortage_that_never_passes_fails_at_the_timeout_in_one_line(
    isolation: str, path: str
) -> None:
    (one,) = run_child(isolation, path, "never", [0])
    assert isinstance(one["error"], str), one
    assert re.fullmatch(
        r"cannot start command in vm-short: no file descriptors free \(EMFILE\) for 1(\.\d)?s: "
        r"raise ulimit -n or lower --max-vms",
        one["error"],
    ), one
    records = one["records"]
    assert isinstance(records, list) and len(records) == 1 and WAITING.match(records[0]), one
    assert one["leaked"] == 0, one


@pytest.mark.parametrize(("isolation", "path"), VARIANTS)
def test_a_cancel_ends_the_wait_at_once(isolation: str, path: str) -> None:
    (one,) = run_child(isolation, path, "cancel", [0])
    assert one["cancelled"] is True, one  # within 30 s of the cancel; its timeout is 60 s
    assert one["leaked"] == 0, one


FILE_WAITING = re.compile(
    r"^WARNING cannot (write|read) 'in.txt' in vm-short yet: no file descriptors free "
    r"\(EMFILE\); trying again for up to \d+(\.\d)?s$"
)


@pytest.mark.parametrize("isolation", ["none", "bwrap"])
def test_a_file_written_or_read_short_of_fds_waits_and_then_is(isolation: str) -> None:
    """A step's inputs written into its VM and its outputs read back wait for a shortage
    of descriptors too, and then happen; none leaks."""
    results = run_child(isolation, "file", "release", [0, 1])
    for one in results:
        assert one["stdout"] == "ran\n" and one["leaked"] == 0, one
        records = one["records"]
        assert isinstance(records, list)
        if records:
            assert len(records) == 2 and FILE_WAITING.match(records[0]), one
    assert results[0]["records"], "with no descriptor free the file was not waited for"


TWICE = r"""
import asyncio, errno, json, os, sys, tempfile
from pathlib import Path
from swarm_engine.cli.daemon import use_pidfd_child_watcher
from swarm_engine.errors import VMError
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.process import ProcessBackend, ProcessConfig

real = os.pidfd_open
failed = []


def once_short(pid, *args):  # the daemon's child watcher, out of fds after the fork
    if not failed:
        failed.append(pid)
        raise OSError(errno.EMFILE, "Too many open files")
    return real(pid, *args)


async def main() -> None:
    use_pidfd_child_watcher()  # as the daemon does
    backend = ProcessBackend(Path(tempfile.mkdtemp()), ProcessConfig(isolation=sys.argv[1]))
    await backend.start()
    vm = await backend.boot("vm-twice", VMSpec(timeout_seconds=30))
    await vm.exec("true", on_output=lambda stream, chunk: None)
    os.pidfd_open = once_short
    try:
        await vm.exec("echo started >> runs.txt; sleep 3", on_output=lambda stream, chunk: None)
        error = None
    except VMError as exc:
        error = str(exc)
    os.pidfd_open = real  # a start tried again would have run to its end before exec returned
    try:
        runs = (await vm.get_file("runs.txt")).decode().split()
    except VMError:
        runs = []
    await vm.destroy()
    await backend.close()
    print(json.dumps({"error": error, "runs": runs, "forked": bool(failed)}))


asyncio.run(main())
"""


@pytest.mark.parametrize("isolation", ["none", "bwrap"])
def test_a_start_that_fails_after_the_fork_is_not_tried_again(isolation: str) -> None:
    """asyncio can fail to watch a command it already forked (its pidfd is one fd more):
    that start is not a shortage to wait out but a failure, so the command never runs
    twice."""
    if isolation == "bwrap" and not bwrap_works():
        pytest.skip("bubblewrap does not work on this host")
    done = subprocess.run(
        [sys.executable, "-c", TWICE, isolation], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["forked"], out
    assert out["error"] == "cannot start command in vm-twice: [Errno 24] Too many open files"
    assert len(out["runs"]) <= 1, out

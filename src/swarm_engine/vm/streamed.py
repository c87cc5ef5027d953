"""The event-loop path of a sandbox command (`ProcessVM.exec` when output is streamed to a
callback or ports are forwarded): the subprocess protocol that tells when the command's
own process exits, the pumps that read its pipes into bounded output (and the callback),
and the command from its start to its end within its time and disk limits (`finish`).

The common path runs the whole command on a worker thread instead (`vm/threaded.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable

from swarm_engine.vm.base import ExecResult, OutputCallback, Stream
from swarm_engine.vm.ending import Ended, said_no_space
from swarm_engine.vm.output import BoundedOutput
from swarm_engine.vm.proctree import kill_tree
from swarm_engine.vm.settled import settled


class ExecProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """`create_subprocess_exec`'s protocol plus `exited`, set when the process itself
    exits (`Process.wait()` also waits for every holder of its pipes to close them)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2**16, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


async def pump(
    stream: asyncio.StreamReader | None,
    name: Stream,
    sink: BoundedOutput,
    cb: OutputCallback | None,
) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        sink.add(chunk)
        if cb is not None:
            maybe = cb(name, chunk)
            if inspect.isawaitable(maybe):
                await maybe


async def exited_within(
    exited: asyncio.Event, pumps: list[asyncio.Task[None]], limit: float
) -> bool:
    """Wait until `exited` is set (True) or `limit` seconds pass (False). An error in a
    pump (raised by `on_output`) is raised at once instead of waiting for the timeout."""
    waiter = asyncio.ensure_future(exited.wait())
    deadline = asyncio.get_running_loop().time() + limit
    try:
        while not waiter.done():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            running = [waiter, *(p for p in pumps if not p.done())]
            done, _ = await asyncio.wait(running, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not waiter:
                    task.result()
        return True
    finally:
        waiter.cancel()


async def finish(
    transport: asyncio.SubprocessTransport,
    proto: ExecProtocol,
    *,
    started: float,
    limit: float,
    stdin: bytes | None,
    on_output: OutputCallback | None,
    keep: int,
    over_disk: Callable[[], bool],
    ending: Callable[[Ended], tuple[int, bytes]],
    drain: float,
    check_every: float,
) -> ExecResult:
    """A started command to its end: `stdin` written, its output pumped (bounded to `keep`
    bytes of head and tail per stream, and to `on_output` as it comes), its tree killed
    past `limit` seconds (exit code 124) or when `over_disk()` (a worker thread's call,
    every `check_every` seconds) says its workspace is over its limits; what its pipes
    still hold is read for `drain` seconds after it exits. `over_disk()` is asked once
    more when the command has ended by itself. How it ended goes to `ending` (as on the
    worker-thread path, `vm/ending.py`), which gives its exit code and the note (b"" for
    none) its stderr ends with. The transport is closed."""
    pid = transport.get_pid()
    out, err = BoundedOutput(keep), BoundedOutput(keep)
    pumps = [
        asyncio.create_task(pump(proto.stdout, "stdout", out, on_output)),
        asyncio.create_task(pump(proto.stderr, "stderr", err, on_output)),
    ]
    watch = asyncio.create_task(_watch_disk(pid, proto.exited, over_disk, check_every))
    timed_out = False
    try:
        if stdin is not None and proto.stdin is not None:
            proto.stdin.write(stdin)
            proto.stdin.close()
        # The command is over when its own process exits (the subreaper or bubblewrap
        # has killed its leftovers by then), not when every holder of its pipes is gone.
        if not await exited_within(proto.exited, pumps, limit):
            timed_out = True
            kill_tree(pid)
            await proto.exited.wait()
        done, late = await asyncio.wait(pumps, timeout=drain)
        if late:  # a pipe is still held by something outside the tree: stop reading
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for task in done:
            task.result()  # an error of `on_output` is the caller's
    except BaseException:
        if transport.get_returncode() is None:
            kill_tree(pid)
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        await proto.exited.wait()
        raise
    finally:
        watch.cancel()
        went_over = (await asyncio.gather(watch, return_exceptions=True))[0] is True
        transport.close()
    # what it wrote since the last count (a burst shorter than `check_every`), on a worker
    # thread that never walks on after a cancel (vm/settled.py)
    ended_over = not went_over and not timed_out and await settled(over_disk)
    code, note = ending(
        Ended(
            transport.get_returncode(),
            timed_out=timed_out,
            killed_over_disk=went_over,
            ended_over_disk=ended_over,
            no_space=transport.get_returncode() != 0 and said_no_space(err.value()),
        )
    )
    if note:
        err.add(note)
    return ExecResult.of(code, out, err, started, timed_out=timed_out)


async def _watch_disk(
    pid: int, exited: asyncio.Event, over_disk: Callable[[], bool], every: float
) -> bool:
    """While the command runs, ask `over_disk()` (on a worker thread) every `every`
    seconds; when it says so, kill the command and return True (a single file is capped
    by RLIMIT_FSIZE). A call that raises is taken as a yes: the watcher never ends
    silently, leaving the command uncapped."""
    while not exited.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(exited.wait(), every)
            return False
        try:
            over = await settled(over_disk)  # never walks on after a cancel (vm/settled.py)
        except Exception:  # fail closed
            over = True
        if over:
            kill_tree(pid)
            return True
    return False

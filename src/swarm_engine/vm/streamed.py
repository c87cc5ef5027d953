"""The event-loop path of a sandbox command (`ProcessVM.exec` when output is streamed to a
callback or ports are forwarded): the subprocess protocol that tells when the command's
own process exits, the pumps that read its pipes into bounded output (and the callback),
and the wait for its exit within its time limit.

The common path runs the whole command on a worker thread instead (`vm/threaded.py`).
"""

from __future__ import annotations

import asyncio
import inspect

from swarm_engine.vm.base import OutputCallback, Stream
from swarm_engine.vm.output import BoundedOutput


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

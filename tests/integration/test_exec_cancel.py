"""A command cancelled while it is being started (asyncio has forked it but not yet
connected its pipes) is stopped whole: its process tree and group are killed, the cancel
ends at once, and nothing of it is left holding its pipes.

asyncio's own answer to a cancel there kills the command's process alone, then waits for
every holder of its pipes to close them; a child the command had started (or, under
bubblewrap, the sandbox's first process, still waiting for its parent) kept them open
and the step hung until its timeout, with its process left running (a tester saw 600 s).
The moment is made deterministic by holding the real loop's `connect_read_pipe` (what
asyncio awaits to connect the pipes) until the cancel has come. Real processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from swarm_engine.vm.base import VM, VMSpec
from swarm_engine.vm.process import ProcessBackend, ProcessConfig
from swarm_engine.vm.proctree import tagged


class HeldPipes:
    """While armed, the loop's next `connect_read_pipe` waits for `release`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self._real: Callable[..., Any] = loop.connect_read_pipe
        self._loop = loop

    async def connect_read_pipe(self, *args: Any, **kwargs: Any) -> Any:
        self.held.set()
        await self.release.wait()
        return await self._real(*args, **kwargs)

    def __enter__(self) -> HeldPipes:
        self._loop.connect_read_pipe = self.connect_read_pipe  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.connect_read_pipe = self._real  # type: ignore[method-assign]


@pytest.fixture
async def vm(tmp_path: Path) -> AsyncIterator[VM]:
    # without a PID namespace the command's own child outlives a kill of its process
    # alone: the fault shows on every run (under bubblewrap only in a race)
    backend = ProcessBackend(tmp_path / "home", ProcessConfig(isolation="none"))
    machine = await backend.boot("vm-cancelspawn", VMSpec(timeout_seconds=60))
    try:
        yield machine
    finally:
        await machine.destroy()
        await backend.close()


async def test_a_command_cancelled_as_it_starts_is_stopped_whole(vm: VM) -> None:
    with HeldPipes(asyncio.get_running_loop()) as pipes:
        running = asyncio.ensure_future(
            vm.exec("sleep 120 & exec sleep 120", on_output=lambda stream, text: None)
        )
        await asyncio.wait_for(pipes.held.wait(), 30)  # forked; its pipes not connected
        for _ in range(3000):  # and running: the subreaper and both sleeps (bounded poll)
            if len(tagged(vm.id)) >= 3:
                break
            await asyncio.sleep(0.01)  # sleep-ok: polling /proc, which has no event
        assert len(tagged(vm.id)) >= 3, "the command never started"
        running.cancel()
        await asyncio.sleep(0)  # the cancel is taken before the pipes connect
        pipes.release.set()
        done, _ = await asyncio.wait([running], timeout=30)
        assert done, "the cancelled command's start never ended"
        assert running.cancelled()
    assert tagged(vm.id) == [], "a process of the cancelled command is still running"

"""Which spawn failures mean nothing ran (`vm/spawned.py` `past_fork`): an error of
`Popen` itself (its pipes, its fork, its child before the exec) is waited out like a
shortage when it is one; an error once asyncio watches the running child is not (the
command is killed, never run again). Real asyncio and real processes."""

from __future__ import annotations

import asyncio
import os

import pytest

from swarm_engine.vm.spawned import past_fork


async def test_an_error_of_popen_itself_is_before_the_fork() -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(OSError) as caught:
        await loop.subprocess_exec(asyncio.SubprocessProtocol, "/nonexistent/swarm-no-such-program")
    assert not past_fork(caught.value)


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no pidfd on this host")
async def test_an_error_watching_the_child_is_past_the_fork() -> None:
    watcher = asyncio.PidfdChildWatcher()  # the daemon's watcher (cli/daemon.py)
    gone = os.fork()
    if gone == 0:  # pragma: no cover - the child
        os._exit(0)
    os.waitpid(gone, 0)  # reaped: pidfd_open of it fails, as one of EMFILE would
    with pytest.raises(OSError) as caught:
        watcher.add_child_handler(gone, lambda *args: None)
    assert past_fork(caught.value)

"""What the process backend does when a command's start goes wrong on the event loop: a
start whose caller was cancelled is stopped whole (`stop_spawned`), and a failed start is
told apart from one that ran (`past_fork`)."""

from __future__ import annotations

import asyncio
import contextlib
import traceback

from swarm_engine.vm.bwrap import SandboxFds
from swarm_engine.vm.proctree import kill_tree
from swarm_engine.vm.streamed import ExecProtocol


async def stop_spawned(
    spawn: asyncio.Future[tuple[SandboxFds, asyncio.SubprocessTransport, ExecProtocol]],
) -> None:
    """A spawn whose caller was cancelled: let it end, then kill what it started, its
    whole tree and process group, and wait for its exit (whatever cancel comes meanwhile).

    asyncio's own answer to a cancel there is to SIGKILL the command's process alone and
    wait until its pipes close. Under bubblewrap that process may have just cloned the
    sandbox's first process, which waits for it (on an eventfd) before it asks to die
    with its parent: it would wait forever, holding the pipes, and the wait with it."""
    while not spawn.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([spawn])
    if spawn.cancelled() or spawn.exception() is not None:
        return  # nothing started, or asyncio stopped what it did (its own error path)
    fds, transport, proto = spawn.result()
    fds.close()
    if transport.get_returncode() is None:
        kill_tree(transport.get_pid())
    while not proto.exited.is_set():
        with contextlib.suppress(asyncio.CancelledError):
            await proto.exited.wait()
    transport.close()


def past_fork(exc: BaseException) -> bool:
    """Whether asyncio raised `exc` once the command was running: watching the child
    (`add_child_handler`, a pidfd) comes after `Popen` has returned, while an error of
    `Popen` itself (its pipes, its fork, its child before the exec) means nothing ran."""
    return any(
        frame.f_code.co_name == "add_child_handler"
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )

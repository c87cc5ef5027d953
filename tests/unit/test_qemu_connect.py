"""Waiting for a QEMU being launched (`vm/qemu/connect.py`): what a wait made just as it
was cancelled (an engine's abort, a step's timeout) is closed, not dropped open."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from swarm_engine.vm.qemu.connect import accept_one, until_ready


@pytest.mark.asyncio
async def test_a_socket_made_just_as_the_wait_is_cancelled_is_closed(tmp_path: Path) -> None:
    made, peer = socket.socketpair()
    work: asyncio.Future[socket.socket] = asyncio.get_running_loop().create_future()
    proc = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        waiting = asyncio.ensure_future(until_ready(work, proc, 30, tmp_path, "connecting"))
        await asyncio.sleep(0)  # sleep-ok: one turn of the loop, for the wait to begin
        work.set_result(made)  # the connection is accepted...
        waiting.cancel()  # ...as the boot is cancelled, before the wait saw it
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert made.fileno() == -1  # closed (it was dropped open: a ResourceWarning)
    finally:
        proc.kill()
        await proc.wait()
        peer.close()


@pytest.mark.asyncio
async def test_accept_one_gives_the_connection(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "s.sock"))
    listener.listen(1)
    listener.setblocking(False)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(str(tmp_path / "s.sock"))
        conn = await asyncio.wait_for(accept_one(listener), 10)
        conn.sendall(b"x")
        assert client.recv(1) == b"x"
        conn.close()
    finally:
        client.close()
        listener.close()

"""bubblewrap's `--info-fd` (the sandbox's child pid, for pasta's declared ports) is read
on the event loop: a cancelled start leaves nothing reading that fd once it is closed, so
a pipe that later gets the same fd number keeps every byte written to it. Real pipes."""

from __future__ import annotations

import asyncio
import json
import os

from swarm_engine.vm.pasta import _read_child_pid


async def test_the_child_pid_is_read_across_partial_writes() -> None:
    r, w = os.pipe()
    try:
        reading = asyncio.ensure_future(_read_child_pid(r))
        text = json.dumps({"child-pid": 4242, "cgroup-namespace": 1}).encode()
        os.write(w, text[:7])  # bubblewrap may write it in pieces
        await asyncio.sleep(0)
        assert not reading.done()
        os.write(w, text[7:])
        assert await asyncio.wait_for(reading, 5) == 4242
    finally:
        os.close(r)
        os.close(w)


async def test_a_sandbox_that_ended_first_gives_none() -> None:
    r, w = os.pipe()
    try:
        reading = asyncio.ensure_future(_read_child_pid(r))
        os.write(w, b'{"child-')
        os.close(w)
        w = -1
        assert await asyncio.wait_for(reading, 5) is None
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


async def test_a_cancelled_read_leaves_no_reader_on_a_reused_fd() -> None:
    loop = asyncio.get_running_loop()
    r, w = os.pipe()
    reading = asyncio.ensure_future(_read_child_pid(r))
    os.write(w, b'{"child-')  # a first piece read: the reader waits for the rest
    for _ in range(3):
        await asyncio.sleep(0)
    assert not reading.done()
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)
    assert reading.cancelled()
    os.close(r)  # as the step's exec does once the start is cut short
    os.close(w)
    r2, w2 = os.pipe()  # the lowest free numbers: the closed ones, here
    try:
        assert not loop.remove_reader(r2)  # nothing of the cancelled read watches it
        os.write(w2, b"another file's bytes")
        for _ in range(3):
            await asyncio.sleep(0)
        assert os.read(r2, 100) == b"another file's bytes"
    finally:
        os.close(r2)
        os.close(w2)

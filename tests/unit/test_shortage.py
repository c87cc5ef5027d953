"""`patiently` (vm/shortage.py): which errors are waited out, and the one line each ends with.

The waits here are on a start that fails a given number of times; the deadlines are far
(the real backend under a real shortage is tested in tests/integration/test_host_shortage.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import time

import pytest

from swarm_engine.errors import VMError
from swarm_engine.vm.shortage import noticing, patiently, waiting


class Start:
    """A start that fails with `code` for its first `failures` calls."""

    def __init__(self, code: int, failures: int) -> None:
        self.code = code
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise OSError(self.code, "refused")
        return "started"


@pytest.mark.parametrize(
    "code", [errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.ENOSPC]
)
async def test_a_shortage_is_tried_again_and_logged_once(
    code: int, caplog: pytest.LogCaptureFixture
) -> None:
    start = Start(code, failures=5)
    with caplog.at_level(logging.INFO, logger="swarm_engine.vm.shortage"):
        done = await patiently(
            start, deadline=time.monotonic() + 60, doing="start command in vm-1", vm_id="vm-1"
        )
    assert done == "started" and start.calls == 6
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert f"({errno.errorcode[code]})" in warnings[0].getMessage()
    assert getattr(warnings[0], "vm_id", None) == "vm-1"


@pytest.mark.parametrize("code", [errno.ENOENT, errno.EACCES, errno.E2BIG, errno.EROFS])
async def test_any_other_error_fails_at_once(code: int, caplog: pytest.LogCaptureFixture) -> None:
    start = Start(code, failures=1)
    with pytest.raises(VMError) as caught:
        await patiently(
            start, deadline=time.monotonic() + 60, doing="start command in vm-1", vm_id="vm-1"
        )
    assert start.calls == 1
    assert str(caught.value) == f"cannot start command in vm-1: [Errno {code}] refused"
    assert not caplog.records


@pytest.mark.parametrize(
    ("code", "line"),
    [
        (
            errno.EMFILE,
            "no file descriptors free (EMFILE) for 0s: raise ulimit -n or lower --max-vms",
        ),
        (errno.ENFILE, "the host has no file descriptors free (ENFILE) for 0s: raise fs.file-max"),
        (errno.ENOMEM, "no memory free (ENOMEM) for 0s: lower --max-vms or the agents' memory_mb"),
        (errno.EAGAIN, "no processes free (EAGAIN) for 0s: raise ulimit -u or lower --max-vms"),
    ],
)
async def test_past_the_deadline_it_says_what_is_short_and_how_to_make_room(
    code: int, line: str
) -> None:
    start = Start(code, failures=1000)
    with pytest.raises(VMError) as caught:
        await patiently(start, deadline=time.monotonic(), doing="create workspace", vm_id="vm-1")
    assert str(caught.value).startswith(f"cannot create workspace: {line}")
    assert "\n" not in str(caught.value)
    assert start.calls == 1


async def test_a_wait_is_counted_while_it_lasts_for_the_daemon_to_hold_back() -> None:
    """`waiting()` (the daemon claims nothing while it is not 0) counts each start that
    waits out a shortage, from its first refusal to its end, however it ends."""
    seen: list[int] = []

    class Watched(Start):
        async def __call__(self) -> str:
            seen.append(waiting())
            return await super().__call__()

    assert waiting() == 0
    assert await patiently(
        Watched(errno.EMFILE, failures=2),
        deadline=time.monotonic() + 60, doing="start command in vm-1", vm_id="vm-1",
    ) == "started"  # fmt: skip
    assert seen == [0, 1, 1] and waiting() == 0
    with pytest.raises(VMError):
        await patiently(
            Start(errno.EMFILE, failures=10**6),
            deadline=time.monotonic() + 0.05, doing="start command in vm-2", vm_id="vm-2",
        )  # fmt: skip
    assert waiting() == 0


async def test_a_wait_that_a_cancel_ends_leaves_its_line_with_whoever_notices() -> None:
    """A timeout above the command's own (the ticket's) ends the wait with a cancel: the
    wait's line goes to `noticing`, for the timeout's error to name (tasks made inside it
    share the list); outside it, or once the shortage passed, nothing is left."""

    async def waits_once_started(started: asyncio.Event) -> str:
        async def never() -> str:
            started.set()
            raise OSError(errno.EMFILE, "refused")

        return await patiently(
            never, deadline=time.monotonic() + 60, doing="start command in vm-1", vm_id="vm-1"
        )

    with noticing() as cut:
        started = asyncio.Event()
        task = asyncio.create_task(waits_once_started(started))
        await started.wait()
        await asyncio.sleep(0)  # sleep-ok: a yield, so the wait has begun
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        passed = await patiently(
            Start(errno.EMFILE, failures=1), deadline=time.monotonic() + 60,
            doing="start command in vm-2", vm_id="vm-2",
        )  # fmt: skip
    assert passed == "started"
    assert len(cut) == 1 and re.fullmatch(
        r"cannot start command in vm-1: no file descriptors free \(EMFILE\) for \d+(\.\d)?s:"
        r" raise ulimit -n or lower --max-vms",
        cut[0],
    ), cut
    started = asyncio.Event()
    task = asyncio.create_task(waits_once_started(started))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(cut) == 1 and waiting() == 0

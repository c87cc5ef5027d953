"""Declared network ports for the process sandbox: pasta joins a sandbox's network
namespace and forwards its loopback ports `allowed_ports` to the same ports on the host's
loopback (nothing else is routed). One pasta per command: a helper of its VM
(`vm/helper.py`), the engine's child in the foreground, stopped with the command, or with
the VM when it is destroyed first; tagged with the VM, so that `cleanup` finds one that a
killed engine left.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence

from swarm_engine.errors import VMError
from swarm_engine.vm.helper import Helper

PASTA_READY_SECONDS = 10.0
LOOPBACK_WAIT_SECONDS = 10.0
NS_GET_USERNS = 0xB701


def pasta_problem() -> str | None:
    """Why declared ports cannot be given on this host, or None."""
    if not shutil.which("pasta"):
        return "pasta is not installed (apt-get install passt)"
    return None


Spawn = Callable[[Sequence[str], Sequence[int], int], Helper]
"""Starts pasta as a helper of the VM (`argv`, the fds it is given, its stderr), tracked
from its fork; raises `VMError` when the VM is destroyed (nothing is started then)."""


async def forward_ports(
    vm_id: str,
    ports: Sequence[int],
    info_r: int,
    block_w: int,
    *,
    pasta: str,
    as_root: bool,
    spawn: Spawn,
) -> Helper:
    """Start pasta on the network namespace of the sandbox that bubblewrap reports on
    `info_r` (its `--info-fd`), forwarding `ports`, then let the command run (a byte on
    `block_w`, its `--block-fd`). Returns pasta; `VMError` if it cannot be done.
    `pasta`: the program; `as_root`: the engine is root (pasta joins the namespace
    directly); `spawn`: starts it (`Spawn`).

    pasta runs in the foreground, the engine's child from its fork (`vm/helper.py`), so
    whoever stops the command or the VM stops it too, at whatever point of this start:
    it holds the sandbox's network namespace, so it never ends by itself. It writes its
    pid when its ports are forwarded, to a pipe (`--pid /proc/self/fd/N`): no pid file."""
    child = await _read_child_pid(info_r)
    if child is None:
        raise VMError(f"VM {vm_id}: the sandbox did not start, so its ports cannot be given")
    # bubblewrap reports the child before the child has set up its loopback; pasta
    # brings `lo` up too, and if it comes first bubblewrap's own address request fails
    # ("loopback: Failed RTM_NEWADDR") and the command never runs: so pasta waits
    await asyncio.to_thread(_wait_for_loopback, child)
    listed = ",".join(str(p) for p in ports)
    passed: list[int] = []
    ready_r, err = -1, -1
    try:
        try:
            passed.append(os.open(f"/proc/{child}/ns/net", os.O_RDONLY | os.O_CLOEXEC))
        except OSError as exc:
            raise VMError(f"VM {vm_id}: cannot open the sandbox's network: {exc}") from exc
        try:
            ready_r, ready_w = os.pipe()
            passed.append(ready_w)
            err = _stderr_file()
            argv = [pasta, "--quiet", "--foreground", "--tcp-ports", "none",
                    "--udp-ports", "none", "--udp-ns", "none", "--tcp-ns", listed,
                    "--pid", f"/proc/self/fd/{ready_w}",
                    "--netns", f"/proc/self/fd/{passed[0]}"]  # fmt: skip
            if as_root:  # root may join the namespace directly (and open /dev/net/tun)
                argv += ["--runas", "0:0", "--netns-only"]
            else:  # join the user namespace that owns the network namespace first
                passed.append(fcntl.ioctl(passed[0], NS_GET_USERNS))
                argv += ["--userns", f"/proc/self/fd/{passed[-1]}"]
            helper = spawn(argv, passed, err)
        except OSError as exc:
            raise VMError(f"VM {vm_id}: cannot start pasta: {exc}") from exc
        finally:
            for fd in passed:
                os.close(fd)
        try:  # the pipe ends when pasta does (it keeps its write end): its pid, or b""
            ready = await asyncio.wait_for(_read_line(ready_r), PASTA_READY_SECONDS)
        except TimeoutError:  # the caller stops it
            raise VMError(f"VM {vm_id}: pasta did not set up the network ports in time") from None
        if not ready.strip().isdigit():
            await helper.exited()  # at once: it has closed its pipe
            lines = [ln for ln in _first_text(err).splitlines()
                     if ln.strip() and not ln.startswith("Failed to send")]  # fmt: skip
            why = lines[-1] if lines else f"exit {helper.returncode}"
            raise VMError(f"VM {vm_id}: pasta could not forward ports {listed}: {why}")
    finally:
        for fd in (ready_r, err):
            if fd >= 0:
                os.close(fd)
    try:
        os.write(block_w, b"1")
    except BrokenPipeError:  # bubblewrap ended before the command could start
        raise VMError(f"VM {vm_id}: the sandbox ended before its command started") from None
    return helper


STDERR_BYTES = 64 * 1024
"""What is kept of pasta's stderr (its reason, when it fails): a memory file of this size
that cannot grow, so a pasta that writes on for hours holds no more."""


def _stderr_file() -> int:
    fd = os.memfd_create("pasta-stderr", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, STDERR_BYTES)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _first_text(fd: int) -> str:
    """What was written to a `_stderr_file` (up to its first NUL)."""
    return os.pread(fd, STDERR_BYTES, 0).split(b"\0", 1)[0].decode(errors="replace")


async def _read_line(fd: int) -> bytes:
    """The first line written to pipe `fd` (without waiting past its newline), or what
    was written before it was closed (b"" for nothing). Read on the event loop."""
    os.set_blocking(fd, False)
    loop = asyncio.get_running_loop()
    data = b""
    while b"\n" not in data and len(data) < 64:
        readable: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _wake, readable)
        try:
            await readable
        finally:
            loop.remove_reader(fd)
        try:
            chunk = os.read(fd, 64)
        except BlockingIOError:
            continue
        if not chunk:
            break
        data += chunk
    return data


async def _read_child_pid(fd: int) -> int | None:
    """bubblewrap's `--info-fd` JSON: the host pid of the sandbox's first process; None
    if bubblewrap ended first. Read on the event loop, never on a thread: a cancel leaves
    nothing reading `fd` once the caller closes it (a thread would read on from whatever
    file gets its number next)."""
    os.set_blocking(fd, False)
    loop = asyncio.get_running_loop()
    data = b""
    while True:
        readable: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _wake, readable)
        try:
            await readable
        finally:
            loop.remove_reader(fd)
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            continue
        if not chunk:
            return None
        data += chunk
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return int(json.loads(data)["child-pid"])


def _wake(readable: asyncio.Future[None]) -> None:
    if not readable.done():
        readable.set_result(None)


def _wait_for_loopback(child: int) -> None:
    """Wait until bubblewrap's child `child` has given its network namespace's loopback
    its address (127.0.0.1 shows in the namespace's routing table), or has ended."""
    deadline = time.monotonic() + LOOPBACK_WAIT_SECONDS
    delay = 0.0005
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{child}/net/fib_trie", "rb") as fh:
                if b"127.0.0.1" in fh.read():
                    return
        except OSError:  # it ended: the command will not run, and the caller says so
            return
        time.sleep(delay)  # sleep-ok: polling a kernel state that has no event to wait on
        delay = min(delay * 2, 0.01)

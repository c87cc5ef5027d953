"""Declared network ports for the process sandbox: pasta joins a sandbox's network
namespace and forwards its loopback ports `allowed_ports` to the same ports on the host's
loopback (nothing else is routed). One pasta per command, tagged with the VM's id so that
it is reaped with the VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from swarm_engine.errors import VMError
from swarm_engine.vm.proctree import VM_TAG, kill_tagged, kill_tree, tagged

PASTA_READY_SECONDS = 10.0
LOOPBACK_WAIT_SECONDS = 10.0
NS_GET_USERNS = 0xB701


def pasta_problem() -> str | None:
    """Why declared ports cannot be given on this host, or None."""
    if not shutil.which("pasta"):
        return "pasta is not installed (apt-get install passt)"
    return None


async def forward_ports(
    vm_id: str,
    folder: Path,
    ports: Sequence[int],
    info_r: int,
    block_w: int,
    *,
    pasta: str,
    as_root: bool,
    path: str,
) -> int:
    """Start pasta on the network namespace of the sandbox that bubblewrap reports on
    `info_r` (its `--info-fd`), forwarding `ports`, then let the command run (a byte on
    `block_w`, its `--block-fd`). Returns pasta's pid; `VMError` if it cannot be done.
    `pasta`: the program; `as_root`: the engine is root (pasta joins the namespace
    directly); `path`: pasta's PATH. Its pid file goes under `folder/run`."""
    child = await _read_child_pid(info_r)
    if child is None:
        raise VMError(f"VM {vm_id}: the sandbox did not start, so its ports cannot be given")
    # bubblewrap reports the child before the child has set up its loopback; pasta
    # brings `lo` up too, and if it comes first bubblewrap's own address request fails
    # ("loopback: Failed RTM_NEWADDR") and the command never runs: so pasta waits
    await asyncio.to_thread(_wait_for_loopback, child)
    run = folder / "run"  # pasta's pid file, out of the sandbox's reach
    run.mkdir(mode=0o700, exist_ok=True)
    pidfile = run / "pasta.pid"
    pidfile.unlink(missing_ok=True)
    listed = ",".join(str(p) for p in ports)
    try:
        net = os.open(f"/proc/{child}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise VMError(f"VM {vm_id}: cannot open the sandbox's network: {exc}") from exc
    passed = [net]
    try:
        argv = [pasta, "--quiet", "--tcp-ports", "none", "--udp-ports", "none",
                "--udp-ns", "none", "--tcp-ns", listed, "--pid", str(pidfile),
                "--netns", f"/proc/self/fd/{net}"]  # fmt: skip
        if as_root:  # root may join the namespace directly (and open /dev/net/tun)
            argv += ["--runas", "0:0", "--netns-only"]
        else:  # join the user namespace that owns the network namespace first
            owner = fcntl.ioctl(net, NS_GET_USERNS)
            passed.append(owner)
            argv += ["--userns", f"/proc/self/fd/{owner}"]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": path, VM_TAG: vm_id},  # tagged: reaped with the VM
            pass_fds=passed,
        )
    except OSError as exc:
        raise VMError(f"VM {vm_id}: cannot start pasta: {exc}") from exc
    finally:
        for fd in passed:
            os.close(fd)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), PASTA_READY_SECONDS)
    except TimeoutError:
        kill_tree(proc.pid)
        kill_tagged(vm_id)
        raise VMError(f"VM {vm_id}: pasta did not set up the network ports in time") from None
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        pid = 0
    if proc.returncode != 0 or pid <= 0:
        lines = [ln for ln in err.decode(errors="replace").splitlines()
                 if ln.strip() and not ln.startswith("Failed to send")]  # fmt: skip
        why = lines[-1] if lines else f"exit {proc.returncode}"
        if pid > 0:
            kill_pasta(pid, vm_id)
        raise VMError(f"VM {vm_id}: pasta could not forward ports {listed}: {why}")
    try:
        os.write(block_w, b"1")
    except BrokenPipeError:  # bubblewrap ended before the command could start
        kill_pasta(pid, vm_id)
        raise VMError(f"VM {vm_id}: the sandbox ended before its command started") from None
    return pid


def kill_pasta(pid: int, vm_id: str) -> None:
    """SIGKILL the pasta of this VM (checked by its tag, so a reused pid is left alone)."""
    if pid in tagged(vm_id):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


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

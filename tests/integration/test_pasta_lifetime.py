"""A networked VM's pasta (its declared ports) never outlives its command nor its VM:
not when a destroy or a cancel cuts the command's start at any point, with many VMs at
once, nor when the engine is SIGKILLed; and `cleanup` stops the pasta that a gone VM of
this host left. Real bubblewrap sandboxes, real pasta processes."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarm_engine.engine.reaper import cleanup
from swarm_engine.store import open_store
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.helper import FOLDER_TAG
from swarm_engine.vm.pasta import NS_GET_USERNS
from swarm_engine.vm.process import ProcessBackend, ProcessConfig, bwrap_works
from swarm_engine.vm.process_vm import ProcessVM
from swarm_engine.vm.proctree import VM_TAG, pid_alive

pytestmark = pytest.mark.skipif(
    not shutil.which("pasta") or not bwrap_works(), reason="needs pasta and bubblewrap"
)

PORT = 47101


def pastas(home: Path) -> list[int]:
    """Live pasta processes of VMs of `home`: named by their command line (a pid file in
    a VM folder) or by their environment (their VM's folder tag)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        program = os.path.basename(argv[0])
        named = any(str(home).encode() in arg for arg in argv)
        if (program.startswith((b"pasta", b"passt")) and named) or (
            f"{FOLDER_TAG}={home}/".encode() in environ
        ):
            found.append(int(entry))
    return found


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    home.mkdir()
    yield home
    for pid in pastas(home):  # what a failing test left: this test's alone, by its home
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def names(pid: int, folder: Path) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return str(folder).encode() in argv or f"{FOLDER_TAG}={folder}\0".encode() in environ


async def started_pasta(folder: Path) -> None:
    """Until a pasta of the VM of `folder` runs (its start is under way)."""
    for _ in range(10_000):
        if any(names(pid, folder) for pid in pastas(folder.parent.parent)):
            return
        await asyncio.sleep(0.001)  # sleep-ok: polling a condition of the host's processes
    raise AssertionError(f"no pasta started for {folder.name}")


async def cut(vm: ProcessVM, i: int, rng: random.Random) -> None:
    """Start a command of `vm` and cut it short at one of many points of its start: a
    number of steps of the event loop, a random time, or the moment its pasta runs; by a
    destroy, a cancel then a destroy, or both at once."""
    command = asyncio.ensure_future(vm.exec("sleep 5"))
    where = i % 3
    if where == 0:
        for _ in range(rng.randrange(60)):
            await asyncio.sleep(0)  # sleep-ok: a yield, a point of the start to cut at
    elif where == 1:
        await asyncio.sleep(rng.uniform(0, 0.1))  # sleep-ok: a random point to cut at
    else:
        await asyncio.wait_for(started_pasta(vm.folder), 30)
    how = (i // 3) % 3
    if how == 0:
        await vm.destroy()
        await asyncio.gather(command, return_exceptions=True)
    elif how == 1:
        command.cancel()
        await asyncio.gather(command, return_exceptions=True)
        await vm.destroy()
    else:
        command.cancel()
        await asyncio.gather(vm.destroy(), command, return_exceptions=True)


async def test_no_pasta_outlives_its_vm_whatever_point_a_destroy_or_cancel_hits(
    home: Path,
) -> None:
    backend = ProcessBackend(home, ProcessConfig())
    await backend.start()
    rng = random.Random(47)
    at_once = asyncio.Semaphore(8)
    spec = VMSpec(timeout_seconds=30, network=True, allowed_ports=(PORT,))

    async def one(i: int) -> None:
        async with at_once:
            vm = await backend.boot(f"vm-cut{i:04d}", spec)
            try:
                await cut(vm, i, rng)
            finally:
                await vm.destroy()

    try:
        results = await asyncio.gather(*(one(i) for i in range(54)), return_exceptions=True)
    finally:
        await backend.close()
    assert [r for r in results if r is not None] == []
    assert pastas(home) == []


ENGINE = """
import asyncio, sys
from pathlib import Path
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.process import ProcessBackend, ProcessConfig

async def main() -> None:
    backend = ProcessBackend(Path(sys.argv[1]), ProcessConfig())
    vm = await backend.boot("vm-killed01", VMSpec(timeout_seconds=60, network=True,
                                                  allowed_ports=(int(sys.argv[2]),)))
    def said(stream: str, data: bytes) -> None:
        sys.stdout.write(data.decode())
        sys.stdout.flush()
    await vm.exec("echo up; sleep 60", on_output=said)

asyncio.run(main())
"""


def test_a_sigkilled_engine_leaves_no_pasta(home: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", ENGINE, str(home), str(PORT)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    ) as engine:
        try:
            assert engine.stdout is not None
            assert engine.stdout.readline() == b"up\n"  # its command runs: its pasta too
            [pasta] = pastas(home)
        finally:
            engine.kill()
    # the kernel kills it with its parent (setpriv --pdeathsig): no reaper needed
    deadline = time.monotonic() + 10
    while pid_alive(pasta) and time.monotonic() < deadline:
        time.sleep(0.01)  # sleep-ok: polling a condition (another process's end)
    assert pastas(home) == []


def leftover_pasta(folder: Path, *, tagged_folder: bool) -> int:
    """A pasta running on its own (daemonized: its parent is gone) for the VM of `folder`,
    its sandbox ended: as an engine killed while it destroyed the VM leaves one
    (`tagged_folder`), or as engines before the folder tag left them (a pid file in the
    VM's folder, the VM's id alone in its environment)."""
    info_r, info_w = os.pipe()
    sandbox = subprocess.Popen(
        ["bwrap", "--unshare-all", "--unshare-user", "--die-with-parent",
         "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
         "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
         "--info-fd", str(info_w), "--", "sleep", "600"],
        pass_fds=[info_w], stdin=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(info_w)
    try:
        text = b""
        while b"child-pid" not in text or b"," not in text.split(b"child-pid", 1)[1]:
            chunk = os.read(info_r, 4096)  # bubblewrap may write it in pieces
            assert chunk, text
            text += chunk
        child = int(text.split(b"child-pid", 1)[1].split(b":", 1)[1].split(b",", 1)[0])
        net = os.open(f"/proc/{child}/ns/net", os.O_RDONLY)
        passed = [net]
        (folder / "run").mkdir(parents=True)
        pidfile = folder / "run" / "pasta.pid"
        argv = ["pasta", "--quiet", "--tcp-ports", "none", "--udp-ports", "none",
                "--udp-ns", "none", "--tcp-ns", str(PORT), "--pid", str(pidfile),
                "--netns", f"/proc/self/fd/{net}"]  # fmt: skip
        if os.geteuid() == 0:
            argv += ["--runas", "0:0", "--netns-only"]
        else:
            passed.append(fcntl.ioctl(net, NS_GET_USERNS))
            argv += ["--userns", f"/proc/self/fd/{passed[-1]}"]
        env = {"PATH": "/usr/bin:/bin", VM_TAG: folder.name}
        if tagged_folder:
            env[FOLDER_TAG] = str(folder)
        subprocess.run(argv, env=env, pass_fds=passed, check=True, stdin=subprocess.DEVNULL)
        for fd in passed:
            os.close(fd)
        return int(pidfile.read_text())  # its daemon: it outlives its sandbox
    finally:
        os.close(info_r)
        sandbox.kill()
        sandbox.wait()


def test_cleanup_stops_the_pasta_a_gone_vm_left(home: Path, tmp_path: Path) -> None:
    store = open_store(tmp_path / "tickets.db")
    vms = home / "vms"
    store.engines.register("e1", kind="daemon", host="here", pid=os.getpid(), max_vms=1,
                           backend="process")  # fmt: skip
    kept = {}
    for name, state, host in (("vm-gone0001", "destroyed", "here"),
                              ("vm-gone0002", "failed", "here"),
                              ("vm-live0003", "live", "here"),
                              ("vm-else0004", "destroyed", "elsewhere")):  # fmt: skip
        store.vms.record_boot(name, backend="process", host=host, engine_id="e1",
                              owner_pid=os.getpid(), memory_mb=64, vcpus=1)  # fmt: skip
        if state != "live":
            store.vms.record_destroyed(name, None if state == "destroyed" else "destroy failed")
        pid = leftover_pasta(vms / name, tagged_folder=name != "vm-gone0001")
        shutil.rmtree(vms / name)  # destroyed: its folder is gone, its pasta runs on
        kept[name] = pid
    try:
        assert all(pid_alive(pid) for pid in kept.values())
        report = cleanup(store, home, "here")
        # SIGKILLed: gone once the kernel has ended them (a dying one is still listed)
        deadline = time.monotonic() + 10
        while any(pid_alive(kept[name]) for name in ("vm-gone0001", "vm-gone0002")):
            assert time.monotonic() < deadline, pastas(home)
            time.sleep(0.01)  # sleep-ok: polling a condition (other processes' end)
        # a VM still live here is its engine's to reap (this one's engine, this test,
        # lives), and another host's VM of the same id is not this one's: left alone
        assert sorted(pastas(home)) == sorted([kept["vm-live0003"], kept["vm-else0004"]])
        assert sorted(report.helpers) == sorted([kept["vm-gone0001"], kept["vm-gone0002"]])
    finally:
        store.close()

"""Escape attempts from inside a qemu microVM step, each one refused (issue 9: the QEMU half
of the escape suite; `test_sandbox_escape.py` is the process-backend half).

Real QEMU, real guest, real listeners (only on 127.0.0.1, started here). The step is root in
its guest, so every attempt is made as root. One VM is shared by the attempts that leave it
as they found it; the ones that exhaust something boot their own, and then check that the
host is fine and the next VM boots. docs/security.md lists them. Skipped without QEMU or an
image; CI runs it on the `tiny` image (scripts/test.sh).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from tests.support.listener import Greeter as Listener

from swarm_engine.config import load_settings
from swarm_engine.errors import VMError
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.qemu.backend import QemuBackend, create
from swarm_engine.vm.qemu.doctor import unavailable
from swarm_engine.vm.qemu.folders import images_dir_for
from swarm_engine.vm.qemu.vm import GUEST_ENV, QemuVM

pytestmark = [pytest.mark.qemu, pytest.mark.asyncio(loop_scope="module")]

SECRET = "s3cr3t-" + os.urandom(6).hex()
MEMORY_MB = 256  # the size the image's template snapshot is made for: boots in ~0.5 s
MiB = 1024 * 1024


def _vm_id() -> str:
    return f"vm-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module", autouse=True)
def _needs_qemu() -> None:
    reason = unavailable(images_dir_for(load_settings().home))
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The engine's home and tmp folder on the host, each with a secret in it."""
    base = tmp_path_factory.mktemp("escape")
    home = base / "home"
    home.mkdir()
    (home / "tickets.db").write_text(f"SQLite format 3 {SECRET}")
    key = base / "anthropic.key"
    key.write_text(f"sk-ant-{SECRET}")
    key.chmod(0o600)
    return home


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend(home: Path) -> AsyncIterator[QemuBackend]:
    # The engine's environment holds secrets before any VM boots (QEMU inherits it).
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SWARM_ESCAPE_SECRET", SECRET)
        env.setenv("ANTHROPIC_API_KEY", f"sk-ant-{SECRET}")
        made = create(home, {"images_dir": str(images_dir_for(load_settings().home)),
                             "kill_grace": 3})  # fmt: skip
        try:
            yield made
        finally:
            await made.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vm(backend: QemuBackend) -> AsyncIterator[QemuVM]:
    """The VM shared by the attempts that do not change it."""
    vm = await backend.boot(_vm_id(), VMSpec(memory_mb=MEMORY_MB, timeout_seconds=30))
    yield vm
    await vm.destroy()


@pytest_asyncio.fixture(loop_scope="module")
async def own_vm(backend: QemuBackend) -> AsyncIterator[QemuVM]:
    """A VM of its own, for an attempt that exhausts something."""
    vm = await backend.boot(_vm_id(), VMSpec(memory_mb=MEMORY_MB, timeout_seconds=30,
                                             max_processes=10))  # fmt: skip
    yield vm
    await vm.destroy()


CLIENT = """
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2) as c:
            print(target, c.recv(100).decode().strip())
    except OSError as exc:
        print(target, type(exc).__name__)
"""


async def connect(vm: QemuVM, *targets: str) -> dict[str, str]:
    """Connect from the guest to each `host:port`: what the host said, or the error."""
    res = await vm.exec(["python3", "-c", CLIENT, *targets], timeout=30)
    assert res.ok, res.stderr
    return dict(line.split(" ", 1) for line in res.stdout.decode().splitlines())


def rss_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no VmRSS for {pid}")


def host_rss_bound(vm: QemuVM) -> int:
    """What one QEMU may hold on the host, in MiB: the guest's RAM, QEMU itself and, under
    TCG, its translation cache (at most 1 GiB by default)."""
    return vm.spec.memory_mb + 256 + (1024 if vm.accel == "tcg" else 0)


async def files_holding_the_secret(vm: QemuVM) -> list[str]:
    """The guest's files outside /proc, /sys and its read-only /usr that hold SECRET. The
    patterns come on stdin (so the secret is in no command line) with a canary the search
    must find, so a search that silently did nothing fails."""
    canary = "canary-" + os.urandom(6).hex()
    res = await vm.exec(
        f"echo {canary} > /tmp/canary; grep -rlsF --devices=skip --exclude-dir=proc"
        " --exclude-dir=sys --exclude-dir=usr -f - /; rm /tmp/canary",
        stdin=f"{SECRET}\n{canary}\n".encode(),
    )
    found = res.stdout.decode().split()
    assert "/tmp/canary" in found, res
    return [path for path in found if path != "/tmp/canary"]


async def host_is_fine(backend: QemuBackend, vm: QemuVM) -> None:
    """After an attempt: its QEMU stayed within its bound, and the next VM boots and runs."""
    assert rss_mb(vm.pid) < host_rss_bound(vm)
    sizes = [p.stat().st_size for p in vm.folder.rglob("*") if p.is_file()]
    assert sum(sizes) < 4 * MiB  # what the guest did lives in its RAM, not on the host
    fresh = await backend.boot(_vm_id(), VMSpec(memory_mb=MEMORY_MB, timeout_seconds=30))
    try:
        assert (await fresh.exec("echo fine")).stdout == b"fine\n"
    finally:
        await fresh.destroy()


async def test_host_files_outside_the_workspace_are_not_there(vm: QemuVM, home: Path) -> None:
    key = home.parent / "anthropic.key"
    for path in (home / "tickets.db", key, home):
        res = await vm.exec(["cat", str(path)])
        assert res.exit_code != 0 and SECRET.encode() not in res.stdout, path
        # The host side of put/get refuses any path outside the workspace ...
        for name in (str(path), f"../../../../../..{path}"):
            with pytest.raises(VMError, match="outside the VM workspace"):
                await vm.get_file(name)
    # ... and a link in the workspace is resolved in the guest, where the host file is not.
    await vm.exec(["ln", "-sf", str(key), "/workspace/key"])
    with pytest.raises(VMError):
        await vm.get_file("key")
    # every file it can see outside /proc, /sys and its read-only /usr
    assert await files_holding_the_secret(vm) == []
    # no shared folder, no disk but its own read-only root image
    res = await vm.exec("ls /sys/block; grep -cE ' (9p|virtiofs|nfs|cifs) ' /proc/mounts")
    assert res.stdout.split() == [b"vda", b"0"]
    res = await vm.exec("echo x > /dev/vda")
    assert res.exit_code != 0


async def test_another_vms_workspace_is_out_of_reach(backend: QemuBackend, vm: QemuVM) -> None:
    other = await backend.boot(_vm_id(), VMSpec(memory_mb=MEMORY_MB, timeout_seconds=30))
    try:
        await other.put_file("secret.txt", SECRET.encode())
        res = await vm.exec(f"cat /workspace/secret.txt; cat /proc/*/root/workspace/secret.txt;"
                            f" ls {other.folder}")  # fmt: skip
        assert res.exit_code != 0 and SECRET.encode() not in res.stdout
        assert await files_holding_the_secret(vm) == []
        with pytest.raises(VMError):
            await vm.get_file("secret.txt")
        assert (await other.get_file("secret.txt")) == SECRET.encode()
    finally:
        await other.destroy()


async def test_no_network_without_declared_ports(
    backend: QemuBackend, vm: QemuVM, listeners: tuple[Listener, Listener]
) -> None:
    allowed, _ = listeners
    assert (await vm.exec("ls /sys/class/net")).stdout.split() == [b"lo"]  # no -netdev at all
    got = await connect(vm, f"127.0.0.1:{allowed.port}", f"10.0.2.2:{allowed.port}",
                        f"10.0.2.100:{allowed.port}")  # fmt: skip
    assert got == {
        f"127.0.0.1:{allowed.port}": "ConnectionRefusedError",  # its own loopback
        f"10.0.2.2:{allowed.port}": "OSError",  # Network is unreachable
        f"10.0.2.100:{allowed.port}": "OSError",
    }
    # network: true but no ports: user-mode networking with restrict=on and no forwards
    bare = await backend.boot(_vm_id(), VMSpec(memory_mb=MEMORY_MB, timeout_seconds=30,
                                               network=True))  # fmt: skip
    try:
        got = await connect(bare, f"10.0.2.2:{allowed.port}", f"10.0.2.100:{allowed.port}",
                            f"127.0.0.1:{allowed.port}")  # fmt: skip
        # refused, or no answer: the 2 s timeout, or the guest's ARP giving up first
        # (EHOSTUNREACH, an OSError) on a loaded host; never a connection
        assert set(got.values()) <= {"ConnectionRefusedError", "TimeoutError", "OSError"}, got
    finally:
        await bare.destroy()
    assert allowed.accepted == 0


async def test_declared_ports_and_nothing_else(
    backend: QemuBackend, listeners: tuple[Listener, Listener]
) -> None:
    allowed, other = listeners
    spec = VMSpec(memory_mb=MEMORY_MB, timeout_seconds=30, network=True,
                  allowed_ports=(allowed.port,))  # fmt: skip
    vm = await backend.boot(_vm_id(), spec)
    try:
        got = await connect(vm, f"10.0.2.100:{allowed.port}", f"10.0.2.100:{other.port}",
                            f"10.0.2.2:{other.port}", f"10.0.2.2:{allowed.port}",
                            f"127.0.0.1:{allowed.port}")  # fmt: skip
        assert got == {
            f"10.0.2.100:{allowed.port}": "hello from the host",
            f"10.0.2.100:{other.port}": "ConnectionRefusedError",
            f"10.0.2.2:{other.port}": "ConnectionRefusedError",  # the host's own address
            f"10.0.2.2:{allowed.port}": "ConnectionRefusedError",
            f"127.0.0.1:{allowed.port}": "ConnectionRefusedError",  # the guest's loopback
        }
    finally:
        await vm.destroy()
    assert (allowed.accepted, other.accepted) == (1, 0)


GUEST_PS = """
import os, signal, sys
pids = {int(p) for p in os.listdir("/proc") if p.isdigit()}
for pid in sorted(pids):
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")[0].decode()
    except OSError:
        continue
    print("proc", pid, cmd or "[kernel]")
for host_pid in map(int, sys.argv[1:]):
    if host_pid in pids:
        print("same-number", host_pid)
        continue
    try:
        os.kill(host_pid, signal.SIGKILL)
        print("signalled", host_pid)
    except ProcessLookupError:
        print("refused", host_pid)
"""


async def test_host_pids_cannot_be_seen_or_signalled(vm: QemuVM) -> None:
    host_pids = [os.getpid(), os.getppid(), vm.pid]  # this test, its parent, the VM's QEMU
    res = await vm.exec(["python3", "-c", GUEST_PS, *map(str, host_pids)])
    lines = [line.split(" ", 2) for line in res.stdout.decode().splitlines()]
    user = {line[2] for line in lines if line[0] == "proc" and line[2] != "[kernel]"}
    # its init, its agent, this command: nothing of the host's (no python of ours, no QEMU)
    assert user == {"/init", "/opt/swarm/swarm-agent", "python3"}, user
    outcome = {int(line[1]): line[0] for line in lines if line[0] != "proc"}
    assert set(outcome) == set(host_pids)
    assert "signalled" not in outcome.values()
    assert "refused" in outcome.values()  # at least one pid was not a guest pid by chance
    assert await vm.is_alive() and Path(f"/proc/{vm.pid}").exists()
    res = await vm.exec(f"kill -0 {os.getpid()} || echo refused; /opt/swarm/busybox ps")
    assert b"refused" in res.stdout or os.getpid() < 4096  # pid_max 4096 in the guest
    assert b"qemu" not in res.stdout and b"pytest" not in res.stdout


async def test_host_environment_does_not_leak(vm: QemuVM) -> None:
    assert os.environ["SWARM_ESCAPE_SECRET"] == SECRET  # set before the VM booted
    res = await vm.exec("env; cat /proc/[0-9]*/environ | tr '\\0' '\\n'; cat /proc/cmdline")
    assert SECRET.encode() not in res.stdout and b"sk-ant-" not in res.stdout
    res = await vm.exec("env")
    names = {line.split(b"=", 1)[0].decode() for line in res.stdout.splitlines()}
    assert names <= {*GUEST_ENV, "PWD", "SHLVL", "_", "OLDPWD"}, names
    # nor is it in the host process that runs the guest (an escape from QEMU finds nothing)
    pid = vm.info().pid
    assert pid is not None
    qemu_env = Path(f"/proc/{pid}/environ").read_bytes()
    assert SECRET.encode() not in qemu_env and b"sk-ant-" not in qemu_env


async def test_memory_is_bounded(backend: QemuBackend, own_vm: QemuVM) -> None:
    res = await own_vm.exec("awk '/MemTotal/ {print $2}' /proc/meminfo")
    assert int(res.stdout) <= MEMORY_MB * 1024
    # every command runs in a cgroup of its own under `commands`, whose memory.max leaves
    # the guest a reserve (both images' kernels have the memory controller)
    res = await own_vm.exec("cat /proc/self/cgroup /sys/fs/cgroup/commands/memory.max")
    where, limit = res.stdout.split()
    assert where.startswith(b"0::/commands/exec-"), res
    assert MEMORY_MB * 1024 * 1024 // 4 < int(limit) < MEMORY_MB * 1024 * 1024
    res = await own_vm.exec("python3 -c 'b = bytearray(1024 * 1024 * 1024)'")
    assert res.exit_code != 0 and b"MemoryError" in res.stderr
    # memory that is really used (every page touched), grown slowly enough that the kernel
    # would evict and re-read python's own pages for minutes before its OOM killer ran (it
    # did, past a 120 s timeout, 3 runs in 12): the guest agent's guard kills it first
    for chunk in (256 << 10, 16 << 20):
        grow = f"a = []\nwhile True:\n x = bytearray({chunk}); x[::4096] = b'x' * {chunk // 4096}; a.append(x)"
        res = await own_vm.exec(["python3", "-c", grow])
        assert res.exit_code == 137 and not res.timed_out, res
        assert res.stderr.endswith(b"(raise memory_mb, or use less)\n"), res.stderr[-300:]
        assert b"swarm-engine: the step ran out of memory" in res.stderr
        assert (await own_vm.exec("echo alive")).stdout == b"alive\n"
    # memory no process maps (a memfd written to, never mapped): nobody's resident memory,
    # so once the guest has stayed low for a second the command holding the most goes;
    # written faster than the guard acts (32 MiB a call), it meets the commands' limit and
    # the kernel kills it there: never the agent, and the guest kernel does not panic
    # (before the limit: "System is deadlocked on memory", 1 run in 4 on a loaded host)
    for size in (1 << 20, 32 << 20, 32 << 20):
        fill = f"import os\nfd = os.memfd_create('m')\nwhile True:\n os.write(fd, b'x' * {size})"
        res = await own_vm.exec(["python3", "-c", fill])
        assert res.exit_code == 137 and not res.timed_out, res
        assert b"swarm-engine: the step ran out of memory" in res.stderr, res.stderr[-300:]
        assert (await own_vm.exec("echo alive")).stdout == b"alive\n"
    # a command that uses a good part of the memory and then ends is left alone
    res = await own_vm.exec(["python3", "-c", "b = bytearray(64 << 20); b[::4096] = b'x' * 16384"])
    assert res.ok, res
    await host_is_fine(backend, own_vm)


# Six small processes (a static program: no Python, so each holds ~100 KiB, under the
# guard's floor) fill pipes (each grown to 1 MiB, as root may) or unix socket pairs (send
# buffers forced to 1 MiB), never read, until each runs out of descriptors: kernel memory
# that no process maps and that a kernel without kernel-memory accounting (the tiny
# image's, SLOB) charges to no cgroup, so the guest as a whole runs out.
BUFFER_FILL_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
static char chunk[65536];
int main(int argc, char **argv) {
    int sock = argc > 1 && !strcmp(argv[1], "socket"), size = 1 << 20;
    memset(chunk, 'x', sizeof chunk);
    for (int i = 0; i < 6; i++) {
        if (fork()) continue;
        for (int fd[2]; !(sock ? socketpair(AF_UNIX, SOCK_STREAM, 0, fd) : pipe(fd));) {
            int w = sock ? fd[0] : fd[1];
            if (sock) setsockopt(w, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);
            else fcntl(w, F_SETPIPE_SZ, size);
            fcntl(w, F_SETFL, O_NONBLOCK);
            while (write(w, chunk, sizeof chunk) > 0) {}
        }
        pause();
    }
    while (wait(NULL) > 0) {}
    return 0;
}
"""


@pytest.fixture(scope="module")
def buffer_fill(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """BUFFER_FILL_C, compiled static here (as the image's agent is; skipped without gcc)."""
    folder = tmp_path_factory.mktemp("fill")
    (folder / "fill.c").write_text(BUFFER_FILL_C)
    try:
        subprocess.run(["gcc", "-static", "-O2", "-o", str(folder / "fill"), str(folder / "fill.c")],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot build the buffer filler: {exc}")
    return (folder / "fill").read_bytes()


@pytest.mark.parametrize("kind", ["pipe", "socket"])
async def test_pipe_and_socket_buffers_fail_the_step_with_an_honest_reason(
    backend: QemuBackend, own_vm: QemuVM, buffer_fill: bytes, kind: str
) -> None:
    # far more than the guest's memory: the step fails fast (the guard, the commands'
    # memory.max where the kernel charges these buffers to it, or the kernel's OOM killer),
    # never at its timeout, and its line says the commands' limit only when it was reached
    events = "cat /sys/fs/cgroup/commands/memory.events"
    before = dict(line.split() for line in (await own_vm.exec(events)).stdout.decode().splitlines())
    await own_vm.put_file("fill", buffer_fill, mode=0o755)
    res = await own_vm.exec(["./fill", kind], timeout=20)
    assert res.exit_code == 137 and not res.timed_out, res
    reason = res.stderr.decode().strip().splitlines()[-1]
    assert reason.startswith("swarm-engine: the step ran out of memory"), res.stderr[-300:]
    after = dict(line.split() for line in (await own_vm.exec(events)).stdout.decode().splitlines())
    limit_reached = int(after["oom"]) > int(before["oom"])
    assert ("the commands used all the memory the VM gives them" in reason) == limit_reached, (
        reason, before, after)  # fmt: skip
    assert (await own_vm.exec("echo alive")).stdout == b"alive\n"
    await host_is_fine(backend, own_vm)


async def test_pids_are_bounded(own_vm: QemuVM) -> None:
    # RLIMIT_NPROC does not hold root, so the agent puts each command in a cgroup whose
    # pids.max is the spec's max_processes (the python below is one of them)
    script = """
import subprocess
started, refused = [], 0
for _ in range(30):
    try:
        started.append(subprocess.Popen(["sleep", "5"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
    except BlockingIOError:
        refused += 1
print(len(started), refused)
"""
    for _ in range(2):  # each command has the whole budget (its cgroup starts empty)
        res = await own_vm.exec(["python3", "-c", script])
        started, refused = map(int, res.stdout.split())
        assert 0 < started < 10 and refused == 30 - started  # max_processes = 10


async def test_a_burst_of_processes_runs_or_fails_at_once(vm: QemuVM) -> None:
    # 100 background processes at once in the default 256 MiB guest (measured: 101 pids,
    # ~15 MiB of stacks, page tables and memory): they run, and the step ends with them
    res = await vm.exec("for i in $(seq 100); do sleep 1 & done; wait; echo done", timeout=30)
    assert res.ok and res.stdout == b"done\n", res
    # more than max_processes (256 by default): the shell cannot fork and the step fails
    # then, not at its timeout (what it started is killed with it)
    res = await vm.exec("for i in $(seq 300); do sleep 60 & done; wait", timeout=30)
    assert res.exit_code != 0 and not res.timed_out and b"fork" in res.stderr, res
    assert (await vm.exec("echo alive")).stdout == b"alive\n"


async def test_a_fork_bomb_ends_with_its_command(backend: QemuBackend, own_vm: QemuVM) -> None:
    try:
        res = await own_vm.exec("f() { f | f & }; f; wait", timeout=3)
    except VMError as exc:
        # a guest so busy that its agent cannot even answer in time is ended by the host
        # (on a loaded host under TCG this happens): the host is fine, the next VM boots
        assert "no answer" in str(exc) or "destroyed" in str(exc), exc
        assert not await own_vm.is_alive()
        await host_is_fine_after_end(backend)
        return
    # pids.max (max_processes = 10) starves the bomb: it burns out and the command ends
    # by itself, or it lasts until the timeout
    assert res.exit_code == 124 if res.timed_out else res.duration_ms < 3000, res
    if not await own_vm.is_alive():  # ended by the host for not answering (see above)
        await host_is_fine_after_end(backend)
        return
    # its cgroup was killed (at the timeout, or when the command ended): only the guest's
    # own processes are left, and it answers
    res = await own_vm.exec(["python3", "-c", GUEST_PS])
    user = [line for line in res.stdout.decode().splitlines() if not line.endswith("[kernel]")]
    assert [line.split()[2] for line in user] == ["/init", "/opt/swarm/swarm-agent", "python3"]
    # on the host it was one QEMU process all along (its vCPU is one thread)
    group = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _pgid(p) == own_vm.pid]
    assert [int(p.name) for p in group] == [own_vm.pid]
    await host_is_fine(backend, own_vm)


async def host_is_fine_after_end(backend: QemuBackend) -> None:
    """After the host ended a VM: the next VM boots and runs."""
    fresh = await backend.boot(_vm_id(), VMSpec(memory_mb=MEMORY_MB, timeout_seconds=30))
    try:
        assert (await fresh.exec("echo fine")).stdout == b"fine\n"
    finally:
        await fresh.destroy()


def _pgid(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


async def test_tmp_and_workspace_are_bounded(backend: QemuBackend, own_vm: QemuVM) -> None:
    # / (so /tmp and /workspace) is a tmpfs overlay in the guest's RAM: half of it at most
    for folder in ("/tmp", "/workspace", "/dev"):
        res = await own_vm.exec(f"head -c 300M /dev/zero > {folder}/fill")
        assert res.exit_code != 0 and b"No space left" in res.stderr, folder
        res = await own_vm.exec(f"du -sm {folder}/fill; rm {folder}/fill")
        assert res.ok and int(res.stdout.split()[0]) <= MEMORY_MB // 2, folder
    res = await own_vm.exec("i=0; while true; do i=$((i+1)); head -c 4M /dev/zero > f$i || exit 3;"
                            " done", timeout=20)  # fmt: skip
    assert res.exit_code == 3 and b"No space left" in res.stderr and not res.timed_out
    assert (await own_vm.exec("rm -f f*; echo ok")).stdout == b"ok\n"
    await host_is_fine(backend, own_vm)

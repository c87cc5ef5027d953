"""Escape attempts from inside a process-sandbox step (bubblewrap), each one refused.

Real bubblewrap, real processes, real listeners (only on 127.0.0.1, started here). Every
test runs a hostile command in a VM and asserts what the user relies on: the secret is not
in its output, the host is untouched, the limit held. docs/security.md lists them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tests.support.listener import Greeter as Listener

from swarm_engine.errors import VMError
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.bwrap import SandboxFds
from swarm_engine.vm.process import ProcessBackend, ProcessConfig, ProcessVM, bwrap_problem

pytestmark = pytest.mark.skipif(bwrap_problem() is not None, reason=f"{bwrap_problem()}")

SECRET = "s3cr3t-" + os.urandom(6).hex()


@pytest.fixture(params=["private", "reachable"])
def home(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A home in a 0700 folder (a root engine binds each workspace in a private mount
    first), or one that any uid may walk through (o+x down to it: bound by its path)."""
    if request.param == "reachable":
        tmp_path = Path(tempfile.mkdtemp(prefix="swarm-reachable-", dir="/tmp"))
        tmp_path.chmod(0o711)
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o711 if request.param == "reachable" else 0o700)
    (home / "tickets.db").write_text(f"SQLite format 3 {SECRET}")
    key = tmp_path / "anthropic.key"
    key.write_text(f"sk-ant-{SECRET}")
    key.chmod(0o600)
    yield home
    if request.param == "reachable":
        shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
async def backend(home: Path) -> AsyncIterator[ProcessBackend]:
    config = ProcessConfig(isolation="bwrap", tmp_mb=4, disk_mb=16, max_files=2000)
    backend = ProcessBackend(home, config)
    await backend.start()
    yield backend
    await backend.close()


@pytest.fixture
async def vm(backend: ProcessBackend) -> AsyncIterator[ProcessVM]:
    vm = await backend.boot("vm-escape0001", VMSpec(timeout_seconds=30, memory_mb=64,
                                                    max_processes=40))  # fmt: skip
    yield vm
    await vm.destroy()


def connect(port: int) -> str:
    return (f"python3 -c \"import socket; c = socket.create_connection(('127.0.0.1', {port}), 3);"
            ' print(c.recv(100).decode())"')  # fmt: skip


async def test_host_files_outside_the_workspace_are_not_there(vm: ProcessVM, home: Path) -> None:
    key = home.parent / "anthropic.key"
    for path in (home / "tickets.db", key, home, Path("/root"), Path("/etc/shadow")):
        res = await vm.exec(["cat", str(path)])
        assert res.exit_code != 0 and SECRET.encode() not in res.stdout, path
    # every file it can see outside /proc and the host's read-only /usr (the secret comes
    # on stdin, so that it is in no command line)
    res = await vm.exec(
        "grep -rlsF --devices=skip --exclude-dir=proc --exclude-dir=usr -f /dev/stdin /; echo done",
        stdin=SECRET.encode(),
    )
    assert res.stdout == b"done\n"
    res = await vm.exec("ls /etc /")
    assert sorted(res.stdout.split()) == sorted(
        b"alternatives group hosts ld.so.cache localtime nsswitch.conf passwd ssl".split()
        + b"/etc: /: bin dev etc lib lib64 proc sbin tmp usr workspace".split()
    )


async def test_the_system_folders_are_read_only(vm: ProcessVM) -> None:
    res = await vm.exec(
        "for d in / /usr /usr/bin /etc /dev; do touch $d/x 2>/dev/null && echo $d; done; true"
    )
    assert res.stdout == b""


async def test_another_vms_workspace_is_out_of_reach(
    backend: ProcessBackend, vm: ProcessVM
) -> None:
    other = await backend.boot("vm-escape0002", VMSpec(timeout_seconds=30))
    try:
        await other.put_file("secret.txt", SECRET.encode())
        res = await vm.exec(f"cat {other.workspace}/secret.txt; cat /proc/*/root/workspace/secret.txt;"
                            f" ls {other.folder}")  # fmt: skip
        assert res.exit_code != 0 and SECRET.encode() not in res.stdout
        assert (await other.get_file("secret.txt")) == SECRET.encode()
    finally:
        await other.destroy()


async def test_the_host_s_disks_are_not_seen_through_proc(vm: ProcessVM) -> None:
    """A PID namespace's /proc still shows every filesystem's free blocks and every disk's
    I/O counts: a step could watch other VMs' workspaces fill. They are hidden."""
    res = await vm.exec(
        "ls -A /proc/fs; cat /proc/diskstats /proc/partitions 2>/dev/null | wc -c;"
        " cat /proc/fs/ext4/*/mb_groups 2>&1 | head -1"
    )
    assert res.stdout.split(b"\n")[0:2] == [
        b"0",
        b"cat: '/proc/fs/ext4/*/mb_groups': No such file or directory",
    ], res


async def test_no_network_without_declared_ports(
    backend: ProcessBackend, vm: ProcessVM, listeners: tuple[Listener, Listener]
) -> None:
    allowed, _ = listeners
    res = await vm.exec(connect(allowed.port))
    assert res.exit_code != 0 and b"Connection refused" in res.stderr
    res = await vm.exec("python3 -c 'import socket; print(socket.if_nameindex())'")
    assert res.stdout.strip() == b"[(1, 'lo')]"
    # network: true but no ports is no network either (as on qemu: restrict=on, no forwards)
    bare = await backend.boot("vm-escape0003", VMSpec(timeout_seconds=30, network=True))
    try:
        res = await bare.exec(connect(allowed.port))
        assert res.exit_code != 0 and b"Connection refused" in res.stderr
    finally:
        await bare.destroy()
    assert allowed.accepted == 0


async def test_declared_ports_and_nothing_else(
    backend: ProcessBackend, listeners: tuple[Listener, Listener]
) -> None:
    allowed, other = listeners
    spec = VMSpec(timeout_seconds=30, network=True, allowed_ports=(allowed.port,))
    vm = await backend.boot("vm-escape0004", spec)
    try:
        res = await vm.exec(connect(allowed.port))
        assert res.ok and res.stdout == b"hello from the host\n\n", res.stderr
        res = await vm.exec(connect(other.port))
        assert res.exit_code != 0 and b"Connection refused" in res.stderr, res
        res = await vm.exec("ip route; ip -4 addr show scope global")
        assert res.stdout.strip() == b"", res  # no route anywhere but its loopback
    finally:
        await vm.destroy()
    assert (allowed.accepted, other.accepted) == (1, 0)


async def test_host_processes_cannot_be_seen_or_signalled(vm: ProcessVM) -> None:
    me = os.getpid()
    res = await vm.exec(
        f"kill -0 {me} || echo refused; ls /proc | grep -c '^[0-9]'; cat /proc/{me}/environ"
    )
    lines = res.stdout.decode().split()
    assert lines[0] == "refused"
    assert int(lines[1]) <= 4  # its init, sh, ls, grep: its own processes only
    res = await vm.exec("ps -e -o comm=")
    assert set(res.stdout.decode().split()) <= {"bwrap", "ps", "sh"}, res.stdout  # its own init


async def test_no_root_no_capabilities_no_other_uid(vm: ProcessVM) -> None:
    res = await vm.exec("id -u; id -g; grep -E '^Cap(Prm|Eff|Bnd|Amb)' /proc/self/status")
    out = res.stdout.decode().split()
    assert out[:2] == ["1000", "1000"]
    assert [v for k, v in zip(out[2::2], out[3::2], strict=True)] == ["0000000000000000"] * 4
    for attempt in ("python3 -c 'import os; os.setuid(0)'", "python3 -c 'import os; os.setgid(0)'",
                    "unshare -r id", "unshare --user --map-root-user true",
                    "python3 -c 'import os; os.setuid(1001)'"):  # fmt: skip
        res = await vm.exec(attempt)
        assert res.exit_code != 0, attempt
    if vm.host_uid is not None:  # a root engine: the sandbox is not root on the host either
        await vm.exec("echo x > mine")
        assert (vm.workspace / "mine").stat().st_uid == vm.host_uid != 0


async def test_a_root_engine_binds_a_workspace_by_path_only_where_any_uid_reaches_it(
    vm: ProcessVM, home: Path
) -> None:
    """A root engine runs bubblewrap as the VM's own uid. From a home any uid may walk
    through, the workspace is bound by its path; from a private one (0700), each command
    first binds it in a mount namespace of its own (programs of its own: unshare, mount).
    Either way the command runs in its workspace as that uid."""
    if vm.host_uid is None:
        pytest.skip("a root engine's layout (the engine runs as root)")
    res = await vm.exec("echo made > here")
    assert res.exit_code == 0 and (vm.workspace / "here").read_text() == "made\n"
    assert (vm.workspace / "here").stat().st_uid == vm.host_uid
    fds = SandboxFds.open(network=False)
    try:
        argv = vm._argv(["true"], None, 10, fds)  # the command line it chose
    finally:
        fds.close()
    argv = argv[len(vm.memory.join_argv()) :] if vm.memory is not None else argv
    private = (home.stat().st_mode & 0o001) == 0
    assert (Path(argv[0]).name == "unshare") == private, argv


async def test_host_environment_does_not_leak(
    vm: ProcessVM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWARM_ESCAPE_SECRET", SECRET)
    monkeypatch.setenv("ANTHROPIC_API_KEY", f"sk-ant-{SECRET}")
    res = await vm.exec("env; cat /proc/1/environ; cat /proc/self/environ")
    assert SECRET.encode() not in res.stdout
    names = {line.split(b"=", 1)[0] for line in res.stdout.splitlines() if b"=" in line}
    assert names <= {b"PATH", b"HOME", b"LANG", b"TMPDIR", b"SWARM_WORKSPACE", b"SWARM_VM_ID",
                     b"PWD", b"SHLVL", b"_", b"OLDPWD"}  # fmt: skip


async def test_memory_is_bounded(vm: ProcessVM) -> None:
    res = await vm.exec("python3 -c 'b = bytearray(1024 * 1024 * 1024)'")
    assert res.exit_code != 0 and b"MemoryError" in res.stderr


async def test_processes_are_bounded(vm: ProcessVM) -> None:
    script = """
import subprocess
started, refused = [], 0
for _ in range(100):
    try:
        started.append(subprocess.Popen(["sleep", "5"]))
    except BlockingIOError:
        refused += 1
print(len(started), refused)
"""
    res = await vm.exec(["python3", "-c", script])
    started, refused = map(int, res.stdout.split())
    assert started < 40 and refused == 100 - started  # max_processes held: a fork bomb stops


async def test_tmp_is_bounded(vm: ProcessVM) -> None:
    for folder in ("/tmp", "/dev/shm"):
        res = await vm.exec(f"head -c 50M /dev/zero > {folder}/fill")
        assert res.exit_code != 0 and b"No space left" in res.stderr, folder
        res = await vm.exec(f"du -sm {folder}")
        assert int(res.stdout.split()[0]) <= 4


async def test_one_big_file_is_bounded(vm: ProcessVM) -> None:
    res = await vm.exec("head -c 100M /dev/zero > big")
    assert res.exit_code != 0
    assert (vm.workspace / "big").stat().st_size <= 16 * 1024 * 1024


FILE_SIZE_NOTE = (
    b"\nswarm-engine: exit code 153 means a file reached the size limit of 8 MiB per file"
    b" (disk_mb) and the write past it was stopped (SIGXFSZ), unless the command chose that"
    b" exit code itself\n"
)


@pytest.mark.parametrize("streamed", [False, True], ids=["on-a-thread", "on-the-loop"])
async def test_a_write_past_the_file_size_limit_says_which_limit_stopped_it(
    home: Path, streamed: bool
) -> None:
    """One file written past `disk_mb` (in /tmp, so the workspace stays within its total)
    is stopped by SIGXFSZ: the command exits 153 and its stderr ends with a line that
    names the limit, on both paths of `exec` (a worker thread; the loop, when output is
    streamed, as the shell agent does). A command that exits 153 by itself gets the same
    line, which says it may have."""
    backend = ProcessBackend(home, ProcessConfig(isolation="bwrap", disk_mb=8, tmp_mb=32))
    await backend.start()
    seen: list[bytes] = []

    def keep(_: str, chunk: bytes) -> None:
        seen.append(chunk)

    vm = await backend.boot("vm-fsize0001", VMSpec(timeout_seconds=30))
    try:
        for command in (
            "head -c 20M /dev/zero > /tmp/big",
            "dd if=/dev/zero of=/tmp/d bs=1M count=999",
        ):
            res = await vm.exec(command, on_output=keep if streamed else None)
            assert res.exit_code == 153 and not res.timed_out, res
            assert res.stderr.endswith(FILE_SIZE_NOTE), res.stderr
            assert res.stderr.count(b"swarm-engine:") == 1
        own = await vm.exec("exit 153", on_output=keep if streamed else None)
        assert own.exit_code == 153 and own.stderr == FILE_SIZE_NOTE
        other = await vm.exec("echo no >&2; exit 3", on_output=keep if streamed else None)
        assert other.exit_code == 3 and other.stderr == b"no\n"  # no note for other codes
    finally:
        await vm.destroy()
        await backend.close()


async def test_many_files_are_bounded(vm: ProcessVM) -> None:
    res = await vm.exec(
        "i=0; while true; do i=$((i+1)); head -c 1M /dev/zero > f$i || exit 3; done"
    )
    assert res.exit_code != 0 and not res.timed_out
    assert b"over its disk limit of 16 MiB" in res.stderr
    used = sum(p.stat().st_size for p in vm.workspace.iterdir())
    assert used < 64 * 1024 * 1024  # stopped within a few checks of the cap


async def test_many_empty_files_are_bounded(vm: ProcessVM) -> None:
    """Empty files take no blocks: the count of entries is bounded on its own."""
    res = await vm.exec(
        "mkdir d && cd d && i=0; while true; do i=$((i+1)); : > f$i || exit 3; done"
    )
    assert res.exit_code != 0 and not res.timed_out
    assert b"or 2000 files" in res.stderr
    left = sum(1 for _ in (vm.workspace / "d").iterdir())
    assert 2000 < left < 200_000  # stopped within a few checks of the bound


async def test_ports_that_cannot_be_given_refuse_the_step(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    backend = ProcessBackend(home, ProcessConfig())
    await backend.start()
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("bwrap", "setpriv", "unshare"):
        (bare / tool).symlink_to(shutil.which(tool) or tool)
    monkeypatch.setenv("PATH", str(bare))  # everything but pasta
    with pytest.raises(VMError, match=r"network ports 8080, but pasta is not installed"):
        await backend.boot("vm-escape0005", VMSpec(network=True, allowed_ports=(8080,)))
    assert not (home / "vms" / "vm-escape0005").exists()


BURST = "i=0; while [ $i -lt 200 ]; do : > f$i; i=$((i+1)); done"
"""200 empty files in a few milliseconds, then exit 0: over before the next periodic count."""


@pytest.mark.parametrize("streamed", [False, True], ids=["on-a-thread", "on-the-loop"])
async def test_a_burst_of_files_between_two_counts_fails_the_command(
    home: Path, streamed: bool
) -> None:
    """The workspace is counted once more as each command ends: a command that made more
    files than `max_files` and exited before the next count fails all the same, every
    time, on both paths of `exec` (a worker thread; the loop, when output is streamed)."""
    backend = ProcessBackend(home, ProcessConfig(isolation="bwrap", max_files=10))
    await backend.start()
    seen: list[bytes] = []

    def keep(_: str, chunk: bytes) -> None:
        seen.append(chunk)

    try:
        for i in range(6):
            vm = await backend.boot(f"vm-burst{i}", VMSpec(timeout_seconds=30))
            try:
                ok = await vm.exec("touch a b c", on_output=keep if streamed else None)
                assert ok.exit_code == 0 and ok.stderr == b""  # within its limits
                res = await vm.exec(BURST, on_output=keep if streamed else None)
                assert res.exit_code == 137 and not res.timed_out, res
                assert b"the workspace went over its disk limit of 2048 MiB or 10 files" in (
                    res.stderr
                )
            finally:
                await vm.destroy()
    finally:
        await backend.close()


async def test_a_home_made_private_meanwhile_takes_the_private_mount_for_new_vms(
    backend: ProcessBackend, vm: ProcessVM, home: Path
) -> None:
    """The path a root engine's command takes is chosen for each VM as its folder is
    made: a home made private (0700) while the engine runs sends the next VMs through the
    private mount, and their commands still run."""
    if vm.host_uid is None or home.stat().st_mode & 0o001 == 0:
        pytest.skip("a root engine's searchable home")
    assert (await vm.exec("true")).exit_code == 0
    home.chmod(0o700)
    later = await backend.boot("vm-escape0003", VMSpec(timeout_seconds=30))
    try:
        res = await later.exec("echo made > here")
        assert res.exit_code == 0, res.stderr
        assert (later.workspace / "here").read_text() == "made\n"
    finally:
        await later.destroy()
        home.chmod(0o711)

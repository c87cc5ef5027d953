"""One contract suite for every VM backend (dramatiq-style): `process` and `qemu`.

The qemu parameter is skipped, with the reason, only when qemu-system-x86_64 or the guest
image is missing (`swarm-engine vm image build`, or `scripts/build-images.sh`). The image
is looked up in $SWARM_QEMU_IMAGES, else in the images folder of the default settings.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from swarm_engine.config import load_settings
from swarm_engine.errors import VMError
from swarm_engine.vm.backends import create_backend
from swarm_engine.vm.base import VM, VMBackend, VMSpec
from swarm_engine.vm.qemu.doctor import unavailable
from swarm_engine.vm.qemu.folders import images_dir_for

BACKENDS = ["process", "qemu"]


def qemu_images_dir() -> Path:
    return images_dir_for(load_settings().home)


def qemu_missing() -> str | None:
    """Why the qemu backend cannot run here, or None."""
    return unavailable(qemu_images_dir())


def backend_options(name: str) -> dict[str, object]:
    if name == "qemu":
        return {"images_dir": str(qemu_images_dir())}
    return {}


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VMBackend]:
    name: str = request.param
    if name == "qemu":
        reason = qemu_missing()
        if reason is not None:
            pytest.skip(reason)
    created = create_backend(name, tmp_path / "home", backend_options(name))
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
async def vm(backend: VMBackend) -> AsyncIterator[VM]:
    booted = await backend.boot(f"vm-{uuid.uuid4().hex[:12]}", VMSpec(timeout_seconds=60))
    try:
        yield booted
    finally:
        await booted.destroy()


async def test_exec_argv_and_shell_string(vm: VM) -> None:
    res = await vm.exec(["echo", "hello", "two words"])
    assert res.ok
    assert res.stdout == b"hello two words\n"
    res = await vm.exec("echo out; echo err >&2; printf '%s' \"$((6 * 7))\"")
    assert res.stdout == b"out\n42"
    assert res.stderr == b"err\n"
    assert res.duration_ms >= 0


async def test_exit_codes(vm: VM) -> None:
    assert (await vm.exec("exit 0")).exit_code == 0
    res = await vm.exec("exit 3")
    assert res.exit_code == 3
    assert not res.ok and not res.timed_out
    missing = await vm.exec(["definitely-not-a-command-xyz"])
    assert missing.exit_code == 127


async def test_workspace_is_cwd_and_cwd_option(vm: VM) -> None:
    await vm.put_file("sub/marker.txt", b"x")
    res = await vm.exec("ls")
    assert b"sub" in res.stdout.split()
    res = await vm.exec("ls", cwd="sub")
    assert res.stdout == b"marker.txt\n"
    with pytest.raises(VMError):
        await vm.exec("true", cwd="does/not/exist")
    with pytest.raises(VMError):
        await vm.exec("true", cwd="../..")


async def test_output_is_streamed_in_order(vm: VM) -> None:
    seen: list[tuple[str, bytes]] = []
    first_chunk = asyncio.Event()

    async def on_output(stream: str, chunk: bytes) -> None:
        seen.append((stream, chunk))
        first_chunk.set()

    script = "for i in 1 2 3 4 5; do echo line$i; done; echo oops >&2; echo done"
    res = await vm.exec(script, on_output=on_output)
    assert first_chunk.is_set()
    streamed_out = b"".join(c for s, c in seen if s == "stdout")
    streamed_err = b"".join(c for s, c in seen if s == "stderr")
    assert streamed_out == res.stdout == b"line1\nline2\nline3\nline4\nline5\ndone\n"
    assert streamed_err == res.stderr == b"oops\n"


async def test_output_arrives_before_the_command_ends(vm: VM) -> None:
    """The command cannot finish until the test has seen its first line and answered."""
    got_first = asyncio.Event()

    def on_output(stream: str, chunk: bytes) -> None:
        if b"started" in chunk:
            got_first.set()

    script = "echo started; while [ ! -e go ]; do sleep 0.05; done; echo finished"
    task = asyncio.create_task(vm.exec(script, on_output=on_output, timeout=60))
    await asyncio.wait_for(got_first.wait(), 60)
    assert not task.done()
    await vm.put_file("go", b"")
    res = await task
    assert res.ok
    assert res.stdout == b"started\nfinished\n"


async def test_stdin(vm: VM) -> None:
    res = await vm.exec(["cat"], stdin=b"from stdin\x00\xff")
    assert res.stdout == b"from stdin\x00\xff"
    res = await vm.exec("wc -c", stdin=b"")
    assert res.stdout.strip() == b"0"
    # Without stdin the command reads end-of-file at once instead of hanging.
    res = await vm.exec("cat", timeout=20)
    assert res.ok and res.stdout == b""


async def test_env_is_passed_and_host_env_is_not_leaked(
    vm: VM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWARM_CONTRACT_HOST_SECRET", "do-not-leak")
    res = await vm.exec("env", env={"GREETING": "hi there", "EMPTY": ""})
    lines = res.stdout.decode().splitlines()
    assert "GREETING=hi there" in lines
    assert "EMPTY=" in lines
    assert not any(line.startswith("SWARM_CONTRACT_HOST_SECRET=") for line in lines)
    assert any(line.startswith("PATH=") for line in lines)


async def test_put_get_roundtrip(vm: VM) -> None:
    blob = bytes(range(256)) * 1024 + b"\x00\r\n"
    await vm.put_file("deep/nested/folder/blob.bin", blob)
    assert await vm.get_file("deep/nested/folder/blob.bin") == blob
    await vm.put_file("/workspace/abs.txt", b"absolute inside the workspace")
    assert await vm.get_file("abs.txt") == b"absolute inside the workspace"
    await vm.put_file("empty", b"")
    assert await vm.get_file("empty") == b""
    await vm.put_file("run.sh", b"#!/bin/sh\necho ran\n", mode=0o755)
    assert (await vm.exec(["./run.sh"])).stdout == b"ran\n"
    res = await vm.exec("cat deep/nested/folder/blob.bin | wc -c")
    assert int(res.stdout) == len(blob)
    # Files written by commands can be read back.
    await vm.exec("mkdir -p out && printf 'made by a command' > out/result.txt")
    assert await vm.get_file("out/result.txt") == b"made by a command"
    with pytest.raises(VMError):
        await vm.get_file("no/such/file")


async def test_path_escape_is_refused(vm: VM) -> None:
    for bad in ("../x", "/etc/passwd", "a/../../x", "/workspace/../etc/passwd"):
        with pytest.raises(VMError):
            await vm.put_file(bad, b"nope")
        with pytest.raises(VMError):
            await vm.get_file(bad)
    # A symlink that points out of the workspace may not be followed either.
    await vm.exec("ln -s /etc link-out")
    with pytest.raises(VMError):
        await vm.get_file("link-out/passwd")
    with pytest.raises(VMError):
        await vm.put_file("link-out/evil", b"nope")


async def _marker_processes(vm: VM, backend: VMBackend, marker: str) -> int:
    """How many processes carry `marker` in their argv, where the VM's processes live."""
    if backend.name == "process":
        count = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            count += marker.encode() in cmdline
        return count
    # In a microVM the whole guest is the tree: look inside it (the checker splits the
    # marker so that it does not count itself).
    half = len(marker) // 2
    script = (
        "import os,sys\n"
        "m=(sys.argv[1]+sys.argv[2]).encode()\n"
        "n=0\n"
        "for p in os.listdir('/proc'):\n"
        "    if p.isdigit():\n"
        "        try: n+=m in open('/proc/%s/cmdline'%p,'rb').read()\n"
        "        except OSError: pass\n"
        "print(n)\n"
    )
    res = await vm.exec(["python3", "-c", script, marker[:half], marker[half:]])
    return int(res.stdout)


async def test_timeout_kills_the_whole_tree(vm: VM, backend: VMBackend) -> None:
    marker = f"swarm-marker-{uuid.uuid4().hex}"
    # A background child (two commands, so its shell cannot exec into sleep) and a
    # foreground sleep; both must die when the timeout hits.
    script = f"sh -c 'sleep 300; true {marker}' & sleep 300; true {marker}"
    res = await vm.exec(script, timeout=1.5)
    assert res.timed_out
    assert res.exit_code in (124, 137)
    assert not res.ok
    assert await _marker_processes(vm, backend, marker) == 0
    # The VM is still usable after a timeout.
    assert (await vm.exec("echo still here")).stdout == b"still here\n"


async def test_a_background_job_holding_stdout_does_not_hold_the_command(
    vm: VM, backend: VMBackend
) -> None:
    # The command is over when its own process exits; what it left running (here a job
    # that keeps the stdout pipe open) is killed then, on every backend.
    marker = f"swarm-marker-{uuid.uuid4().hex}"
    res = await vm.exec(f"sh -c 'sleep 300; true {marker}' & echo started", timeout=30)
    assert (res.exit_code, res.stdout, res.timed_out) == (0, b"started\n", False)
    assert res.duration_ms < 10_000  # the drain after the exit is short, not the timeout
    assert await _marker_processes(vm, backend, marker) == 0


async def test_destroy_is_idempotent_and_removes_everything(backend: VMBackend) -> None:
    vm = await backend.boot(f"vm-{uuid.uuid4().hex[:12]}", VMSpec())
    assert await vm.is_alive()
    await vm.put_file("f.txt", b"data")
    info = vm.info()
    await vm.destroy()
    await vm.destroy()
    assert not await vm.is_alive()
    if info.workspace:
        assert not Path(info.workspace).exists()
    if info.overlay_path:
        assert not Path(info.overlay_path).exists()
    if info.pid:
        assert not Path(f"/proc/{info.pid}").exists()
    with pytest.raises(VMError):
        await vm.exec("true")
    with pytest.raises(VMError):
        await vm.get_file("f.txt")


async def test_vms_are_isolated_from_each_other(backend: VMBackend) -> None:
    a = await backend.boot(f"vm-{uuid.uuid4().hex[:12]}", VMSpec())
    try:
        await a.put_file("only-in-a.txt", b"a")
        b = await backend.boot(f"vm-{uuid.uuid4().hex[:12]}", VMSpec())
        try:
            with pytest.raises(VMError):
                await b.get_file("only-in-a.txt")
            assert a.id != b.id
        finally:
            await b.destroy()
        assert await a.get_file("only-in-a.txt") == b"a"
    finally:
        await a.destroy()


async def test_open_files_limit_from_the_spec(backend: VMBackend) -> None:
    vm = await backend.boot(f"vm-{uuid.uuid4().hex[:12]}", VMSpec(max_open_files=100))
    try:
        assert (await vm.exec("ulimit -n")).stdout == b"100\n"
    finally:
        await vm.destroy()

"""A step's environment reaches its command only, never a host program.

An agent's `env:` and a ticket's `INPUT_*` values are anyone's to write. The host programs
the engine starts to build a sandbox (setpriv as root, unshare, bubblewrap; the subreaper
with isolation "none") get a fixed environment, and the step's variables are handed to
the command through a memory file (`vm/sandbox_env.py`). Real bubblewrap, real processes
and a real preload library built here with gcc.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from swarm_engine.errors import VMError
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.bwrap import GUEST_UID
from swarm_engine.vm.process import ProcessBackend, ProcessConfig, ProcessVM, bwrap_problem
from swarm_engine.vm.sandbox_env import MAX_ENV_VARS

pytestmark = pytest.mark.skipif(bwrap_problem() is not None, reason=f"{bwrap_problem()}")

PRELOAD_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <limits.h>
__attribute__((constructor)) static void loaded(void) {
    const char *marker = getenv("H90_MARKER");
    char exe[PATH_MAX] = "?";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) exe[n] = 0;
    FILE *f = fopen(marker ? marker : "/tmp/swarm-preload-marker", "a");
    if (f) { fprintf(f, "%d %s\n", (int)getuid(), exe); fclose(f); }
}
"""


@pytest.fixture(scope="module")
def shared() -> Iterator[Path]:
    """A folder any uid may read and write: a root engine's setpriv and bubblewrap (as the
    sandbox's host uid) could load a library from it and write a marker into it."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    folder = Path(tempfile.mkdtemp(prefix="swarm-preload-", dir="/tmp"))
    folder.chmod(0o777)
    (folder / "evil.c").write_text(PRELOAD_C)
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", str(folder / "evil.so"), str(folder / "evil.c")],
        check=True,
    )
    (folder / "evil.so").chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["bwrap", "none"])
async def vm(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ProcessVM]:
    backend = ProcessBackend(tmp_path / "home", ProcessConfig(isolation=request.param))
    await backend.start()
    try:
        yield await backend.boot("vm-envtest0001", VMSpec(timeout_seconds=30))
    finally:
        await backend.close()


def _marks(marker: Path) -> list[tuple[int, str]]:
    if not marker.exists():
        return []
    lines = marker.read_text().splitlines()
    return [(int(uid), exe) for uid, exe in (line.split(" ", 1) for line in lines)]


async def test_ld_preload_reaches_the_command_not_the_host(vm: ProcessVM, shared: Path) -> None:
    marker = shared / f"marker-{vm.isolated}"
    env = {"LD_PRELOAD": str(shared / "evil.so"), "H90_MARKER": str(marker)}
    res = await vm.exec('echo "preload=$LD_PRELOAD"', env=env)
    assert res.exit_code == 0, res.stderr
    assert f"preload={shared / 'evil.so'}".encode() in res.stdout
    python = Path(os.path.realpath(sys.executable)).name  # the subreaper
    host_programs = {"setpriv", "bwrap", "unshare", "mount", python}
    loaders = [exe for _, exe in _marks(marker) if Path(exe).name in host_programs]
    assert not loaders, f"host programs loaded the agent's LD_PRELOAD: {loaders}"
    if vm.isolated:  # the host's /tmp is not in the sandbox: nothing there loaded it
        assert _marks(marker) == []
        # a library in the workspace is loaded inside, by the sandbox's uid alone
        shutil.copy(shared / "evil.so", vm.workspace / "evil.so")
        os.chmod(vm.workspace / "evil.so", 0o755)
        env = {"LD_PRELOAD": "/workspace/evil.so", "H90_MARKER": "/workspace/marker"}
        res = await vm.exec(["/bin/sh", "-c", "echo $LD_PRELOAD"], env=env)
        assert res.stdout == b"/workspace/evil.so\n", res.stderr
        inside = _marks(vm.workspace / "marker")
        assert inside and all(uid == GUEST_UID for uid, _ in inside), inside
        assert not [e for _, e in inside if Path(e).name in host_programs], inside


async def test_the_agents_path_is_the_commands_and_breaks_no_host_exec(vm: ProcessVM) -> None:
    res = await vm.exec('echo "$PATH"', env={"PATH": "/nonexist"})
    assert (res.exit_code, res.stdout) == (0, b"/nonexist\n"), res.stderr
    # a list command is looked up in the agent's PATH, as a shell would
    res = await vm.exec(["true"], env={"PATH": "/nonexist"})
    assert res.exit_code == 127, res
    res = await vm.exec(["env"], env={"PATH": "/usr/bin"})
    assert res.exit_code == 0 and b"PATH=/usr/bin\n" in res.stdout, res.stderr


def _pid_ns(pid: int | str) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


def _holders(secret: bytes) -> list[tuple[int, str, str]]:
    """(pid, exe, where) of every process whose command line or environment holds `secret`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        for where in ("cmdline", "environ"):
            try:
                data = Path(f"/proc/{entry}/{where}").read_bytes()
                exe = os.readlink(f"/proc/{entry}/exe")
                ns = _pid_ns(entry)
            except OSError:
                continue
            if secret in data:
                found.append((int(entry), exe, f"{where} {ns}"))
    return found


async def test_input_values_are_in_no_host_process(vm: ProcessVM) -> None:
    secret = "input-" + os.urandom(8).hex()
    ready = asyncio.Event()

    async def on_output(_stream: str, chunk: bytes) -> None:
        if b"ready" in chunk:
            ready.set()

    env = {"INPUT_SECRET": secret, "INPUT_OTHER": "x"}
    run = asyncio.ensure_future(vm.exec("echo ready; exec sleep 30", env=env, on_output=on_output))
    try:
        await asyncio.wait_for(ready.wait(), 20)
        holders = await asyncio.to_thread(_holders, secret.encode())
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    assert holders, "the command itself must hold its input"
    if vm.isolated:  # only processes of the sandbox's own PID namespace hold it
        mine = _pid_ns("self")
        outside = [h for h in holders if h[2].endswith(mine)]
        assert not outside, f"host processes hold an input value: {outside}"
    else:  # the command runs on the host by design: only the command, never its subreaper
        command = {"sh", "dash", "bash", "sleep"}  # (before or after its `exec`)
        assert all(Path(exe).name in command for _, exe, _ in holders), holders


async def test_an_environment_no_process_can_have_is_refused(vm: ProcessVM) -> None:
    with pytest.raises(VMError, match="is not an environment variable name"):
        await vm.exec("true", env={"A=B": "x"})
    with pytest.raises(VMError, match="contains a NUL"):
        await vm.exec("true", env={"A": "x\0y"})
    many = {f"V{n}": "1" for n in range(MAX_ENV_VARS + 1)}
    with pytest.raises(VMError, match=f"over {MAX_ENV_VARS}"):
        await vm.exec("true", env=many)
    most = {f"V{n}": "1" for n in range(MAX_ENV_VARS - 10)}
    res = await vm.exec("env | grep -c '^V'", env=most)
    assert res.stdout == f"{MAX_ENV_VARS - 10}\n".encode(), res.stderr

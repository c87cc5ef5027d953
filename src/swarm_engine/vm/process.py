"""The process sandbox: the embedded default backend.

Each VM is a workspace folder; each command runs as a fresh process tree in its own
session, with a scrubbed environment and resource limits (`prlimit`). Where bubblewrap
works, the tree also gets its own user, pid, network, IPC and mount namespaces: it sees
the system's read-only /usr, a private /tmp and its workspace at /workspace, nothing
else, and has no network. Without bubblewrap it runs in the workspace folder directly
(`vm doctor` says so), under a child subreaper (`vm/subreaper.py`).

Either way a command is over when its own process exits, and what it left running dies
then (the PID namespace ends, or the subreaper kills it): a background job holding stdout
does not hold the command. Output is captured bounded (`vm/output.py`).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from swarm_engine.errors import ConfigError, VMError
from swarm_engine.models import first_error
from swarm_engine.vm.base import (
    GUEST_WORKSPACE,
    ExecResult,
    OrphanRecord,
    OutputCallback,
    Stream,
    VMInfo,
    VMSpec,
    safe_relpath,
)
from swarm_engine.vm.output import BoundedOutput
from swarm_engine.vm.proctree import VM_TAG, kill_tagged, kill_tree

SUBREAPER = Path(__file__).with_name("subreaper.py")
DRAIN_SECONDS = 2.0
"""After a command's own process has exited, how long its pipes are still read (what is
buffered in them); its leftovers are killed by then, so they reach EOF at once."""
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
ETC_FILES = (
    "passwd",
    "group",
    "hosts",
    "nsswitch.conf",
    "ld.so.cache",
    "localtime",
    "alternatives",
    "ssl",
)


class ProcessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    isolation: Literal["auto", "bwrap", "none"] = "auto"


def bwrap_works() -> bool:
    exe = shutil.which("bwrap")
    if not exe:
        return False
    try:
        done = subprocess.run(
            [exe, "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
             "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
             "--symlink", "usr/lib64", "/lib64", "true"],
            capture_output=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


class ProcessBackend:
    name = "process"

    def __init__(self, home: Path, config: ProcessConfig) -> None:
        self.root = home / "vms"
        self.config = config
        self._bwrap: bool | None = None

    @property
    def isolated(self) -> bool:
        if self._bwrap is None:
            if self.config.isolation == "none":
                self._bwrap = False
            else:
                self._bwrap = bwrap_works()
                if not self._bwrap and self.config.isolation == "bwrap":
                    raise VMError("isolation 'bwrap' asked for, but bubblewrap does not work here")
        return self._bwrap

    async def start(self) -> None:
        _ = self.isolated  # probe bubblewrap once, before the first step needs it

    async def boot(self, vm_id: str, spec: VMSpec) -> ProcessVM:
        workspace = self.root / vm_id / "workspace"
        try:
            workspace.mkdir(parents=True, exist_ok=False)
        except OSError as exc:
            raise VMError(f"cannot create workspace for {vm_id}: {exc}") from exc
        isolated = self.isolated
        return ProcessVM(vm_id, self.root / vm_id, spec, isolated=isolated)

    def reap(self, record: OrphanRecord) -> None:
        kill_tagged(record.id)
        folder = self.root / record.id
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)

    async def close(self) -> None:
        return None


class ProcessVM:
    def __init__(self, vm_id: str, folder: Path, spec: VMSpec, *, isolated: bool) -> None:
        self.id = vm_id
        self.folder = folder
        self.workspace = folder / "workspace"
        self.spec = spec
        self.isolated = isolated
        self._procs: set[asyncio.SubprocessTransport] = set()
        self._destroyed = False

    def info(self) -> VMInfo:
        return VMInfo(pid=None, workspace=str(self.workspace))

    @property
    def guest_workspace(self) -> str:
        return GUEST_WORKSPACE if self.isolated else str(self.workspace)

    def _env(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        env = {
            "PATH": BASE_PATH,
            "HOME": self.guest_workspace,
            "LANG": "C.UTF-8",
            "TMPDIR": "/tmp",
            "SWARM_WORKSPACE": self.guest_workspace,
            VM_TAG: self.id,
        }
        env.update(extra or {})
        env[VM_TAG] = self.id
        return env

    def _argv(self, command: Sequence[str] | str, cwd: str | None, timeout: float) -> list[str]:
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        if not argv:
            raise VMError("empty command")
        rel = safe_relpath(cwd) if cwd else "."
        limits = [
            "prlimit",
            f"--as={self.spec.memory_mb * 1024 * 1024 + 256 * 1024 * 1024}",
            f"--cpu={int(timeout) + 2}",
            f"--nofile={self.spec.max_open_files}",
            f"--nproc={self.spec.max_processes}",
            "--",
        ]
        if not self.isolated:
            # no PID namespace: a child subreaper keeps every descendant findable, and
            # kills the leftovers when the command's own process exits (vm/subreaper.py)
            reaper = [sys.executable, "-I", "-S", str(SUBREAPER), str(os.getpid()), "--"]
            return [*reaper, *limits, *argv]
        wrap = [
            "bwrap", "--unshare-all", "--die-with-parent", "--new-session",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            "--bind", str(self.workspace), GUEST_WORKSPACE,
        ]  # fmt: skip
        for name in ETC_FILES:
            if os.path.exists(f"/etc/{name}"):
                wrap += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        chdir = GUEST_WORKSPACE if rel == "." else f"{GUEST_WORKSPACE}/{rel}"
        wrap += ["--chdir", chdir, "--"]
        return [*wrap, *limits, *argv]

    async def exec(
        self,
        command: Sequence[str] | str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        stdin: bytes | None = None,
        on_output: OutputCallback | None = None,
    ) -> ExecResult:
        if self._destroyed:
            raise VMError(f"VM {self.id} is destroyed")
        limit = timeout if timeout is not None else self.spec.timeout_seconds
        host_cwd = self.workspace / (safe_relpath(cwd) if cwd else ".")
        if not host_cwd.is_dir():
            raise VMError(f"working folder {cwd!r} does not exist in the VM")
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            transport, proto = await loop.subprocess_exec(
                lambda: _ExecProtocol(loop),
                *self._argv(command, cwd, limit),
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=host_cwd,
                env=self._env(env),
                start_new_session=True,
            )
        except OSError as exc:
            raise VMError(f"cannot start command in {self.id}: {exc}") from exc
        self._procs.add(transport)
        pid = transport.get_pid()
        out = BoundedOutput(self.spec.output_keep_bytes)
        err = BoundedOutput(self.spec.output_keep_bytes)
        pumps = [
            asyncio.create_task(_pump(proto.stdout, "stdout", out, on_output)),
            asyncio.create_task(_pump(proto.stderr, "stderr", err, on_output)),
        ]
        timed_out = False
        try:
            if stdin is not None and proto.stdin is not None:
                proto.stdin.write(stdin)
                proto.stdin.close()
            # The command is over when its own process exits (the subreaper or bubblewrap
            # has killed its leftovers by then), not when every holder of its pipes is gone.
            if not await _exited_within(proto.exited, pumps, limit):
                timed_out = True
                kill_tree(pid)
                await proto.exited.wait()
            done, late = await asyncio.wait(pumps, timeout=DRAIN_SECONDS)
            if late:  # a pipe is still held by something outside the tree: stop reading
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
            for task in done:
                task.result()  # an error of `on_output` is the caller's
        except BaseException:
            if transport.get_returncode() is None:
                kill_tree(pid)
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            await proto.exited.wait()
            raise
        finally:
            self._procs.discard(transport)
            transport.close()
        returncode = transport.get_returncode()
        code = returncode if returncode is not None else -9
        if code < 0:  # killed by a signal: report as a shell would
            code = 128 - code
        if timed_out:
            code = 124
        return ExecResult(
            exit_code=code,
            stdout=out.value(),
            stderr=err.value(),
            duration_ms=int((time.monotonic() - started) * 1000),
            timed_out=timed_out,
            stdout_bytes=out.total,
            stderr_bytes=err.total,
        )

    def _host_path(self, path: str) -> Path:
        """The host path for a workspace path; symlinks may not lead outside."""
        full = self.workspace / safe_relpath(path)
        root = os.path.realpath(self.workspace)
        real = os.path.realpath(full)
        if real != root and not real.startswith(root + os.sep):
            raise VMError(f"path {path!r} is outside the VM workspace")
        return full

    async def put_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        if self._destroyed:
            raise VMError(f"VM {self.id} is destroyed")
        target = self._host_path(path)
        if target.is_dir():
            raise VMError(f"{path}: is a folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        except OSError as exc:
            raise VMError(f"{path}: cannot write: {exc.strerror}") from exc
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(target, mode)

    async def get_file(self, path: str) -> bytes:
        if self._destroyed:
            raise VMError(f"VM {self.id} is destroyed")
        target = self._host_path(path)
        try:
            return target.read_bytes()
        except FileNotFoundError as exc:
            raise VMError(f"{path}: no such file in the VM") from exc
        except IsADirectoryError as exc:
            raise VMError(f"{path}: is a folder") from exc

    async def is_alive(self) -> bool:
        return not self._destroyed and self.workspace.is_dir()

    async def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        for transport in list(self._procs):
            if transport.get_returncode() is None:  # once reaped, its pid may be another's
                kill_tree(transport.get_pid())
        if not self.isolated:
            # without a PID namespace a command may have left daemons behind: find them by
            # their SWARM_VM_ID tag (a /proc scan, so off the event loop). Under bubblewrap
            # the kernel already killed everything when each command's namespace ended.
            await asyncio.to_thread(kill_tagged, self.id)
        await asyncio.to_thread(shutil.rmtree, self.folder, True)


async def _exited_within(
    exited: asyncio.Event, pumps: list[asyncio.Task[None]], limit: float
) -> bool:
    """Wait until `exited` is set (True) or `limit` seconds pass (False). An error in a
    pump (raised by `on_output`) is raised at once instead of waiting for the timeout."""
    waiter = asyncio.ensure_future(exited.wait())
    deadline = asyncio.get_running_loop().time() + limit
    try:
        while not waiter.done():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            running = [waiter, *(p for p in pumps if not p.done())]
            done, _ = await asyncio.wait(running, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not waiter:
                    task.result()
        return True
    finally:
        waiter.cancel()


class _ExecProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """`create_subprocess_exec`'s protocol plus `exited`, set when the process itself
    exits (`Process.wait()` also waits for every holder of its pipes to close them)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2**16, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


async def _pump(
    stream: asyncio.StreamReader | None,
    name: Stream,
    sink: BoundedOutput,
    cb: OutputCallback | None,
) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        sink.add(chunk)
        if cb is not None:
            maybe = cb(name, chunk)
            if inspect.isawaitable(maybe):
                await maybe


def create(home: Path, options: dict[str, Any]) -> ProcessBackend:
    try:
        config = ProcessConfig(**options)
    except ValidationError as exc:
        raise ConfigError(f"process backend option {first_error(exc)}") from exc
    return ProcessBackend(home, config)

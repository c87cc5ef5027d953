"""A process sandbox's VM (`ProcessVM`): a workspace folder, and each command in it a
fresh process tree in its own session, with an environment built from scratch and
resource limits (`prlimit`), in the VM's memory cgroup, joined before anything of it runs
(`vm/memcap.py`), under bubblewrap or, with `isolation = "none"`, a child
subreaper (`vm/subreaper.py`): its command line is `vm/process_argv.py`. Its files are
written and read off the event loop. The
command's environment goes to it alone, through a memory file; the host programs that
start it get a fixed one (`vm/sandbox_env.py`). The backend that boots and reaps these
VMs is `vm/process.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from swarm_engine.errors import VMError
from swarm_engine.vm.base import (
    ExecResult,
    OutputCallback,
    VMInfo,
    VMSpec,
    safe_relpath,
)
from swarm_engine.vm.bwrap import (
    SHORTAGES,
    SandboxFds,
    host_tool,
    root_engine,
)
from swarm_engine.vm.diskcap import used_since
from swarm_engine.vm.ending import DiskLimits, Ended, ending
from swarm_engine.vm.helper import Helper, stop_helpers
from swarm_engine.vm.memcap import VMGroup
from swarm_engine.vm.pasta import forward_ports
from swarm_engine.vm.process_argv import BASE_PATH as BASE_PATH
from swarm_engine.vm.process_argv import CPU_SECONDS_MAX as CPU_SECONDS_MAX
from swarm_engine.vm.process_argv import PROC_MASKS as PROC_MASKS
from swarm_engine.vm.process_argv import SUBREAPER as SUBREAPER
from swarm_engine.vm.process_argv import CommandLine
from swarm_engine.vm.process_argv import cpu_seconds as cpu_seconds
from swarm_engine.vm.process_config import ProcessConfig
from swarm_engine.vm.proctree import kill_tagged, kill_tree
from swarm_engine.vm.sandbox_env import host_env
from swarm_engine.vm.settled import settled
from swarm_engine.vm.shortage import SPAWN_FDS, patiently, room_for
from swarm_engine.vm.spawned import past_fork, stop_spawned
from swarm_engine.vm.streamed import ExecProtocol, finish
from swarm_engine.vm.threaded import Command, Job
from swarm_engine.vm.workspace import (
    UncountableError,
    disk_usage,
    read_regular_file,
    remove_folder,
    resolve_inside,
    write_file,
)

T = TypeVar("T")
log = logging.getLogger(__name__)
DRAIN_SECONDS = 2.0
"""After a command's own process has exited, how long its pipes are still read (what is
buffered in them); its leftovers are killed by then, so they reach EOF at once."""
DISK_CHECK_SECONDS = 0.05
"""How often a running command's workspace is measured against `disk_mb`."""


class ProcessVM(CommandLine):
    def __init__(
        self,
        vm_id: str,
        folder: Path,
        spec: VMSpec,
        *,
        isolated: bool,
        host_uid: int | None = None,
        config: ProcessConfig | None = None,
        no_userns: bool = False,
        release: Callable[[int], None] | None = None,
        threads: ThreadPoolExecutor | None = None,
        real_workspace: str | None = None,
        reachable: bool = False,
        capped: bool = False,
        fresh: tuple[int, int] | None = None,
        retire: Callable[[Path], str | None] = remove_folder,
        memory: VMGroup | None = None,
    ) -> None:
        self.id = vm_id
        self.folder = folder
        self.workspace = folder / "workspace"
        self._real_workspace = real_workspace
        """`workspace` with its symlinks resolved (made by the engine: none of its parts is
        the step's); found on first use when not given."""
        self.spec = spec
        self.isolated = isolated
        self.host_uid = host_uid
        """The host uid its commands run as when the engine is root (else the engine's)."""
        self._reachable = reachable
        """Root engine: its folder is reachable by any uid, so bubblewrap, run as
        `host_uid`, binds the workspace by its path (no private mount first)."""
        self.config = config or ProcessConfig()
        self.capped = capped
        """Its workspace is a filesystem of its own, of `disk_mb` (`vm/diskcap.py`)."""
        self._fresh = fresh if capped else None
        """A new workspace filesystem's free blocks and inodes (`Template.fresh`): what its
        use is counted from (`diskcap.used_since`), instead of a walk of its files."""
        self.memory = memory
        """Its memory cgroup, which each command joins first (`vm/memcap.py`); None with
        `memory_cap = "rlimit"`."""
        self._no_userns = no_userns
        self._release = release
        self._retire = retire
        """Ends its folder once it is destroyed: deleted, or its workspace kept emptied
        for the next VM (`vm/spares.py`); None, or one line saying what is left."""
        self._procs: set[asyncio.SubprocessTransport] = set()
        self._helpers: set[Helper] = set()
        """Its commands' helper processes (pasta) that run now, each from its fork on."""
        self._threads = threads
        self._jobs: dict[Job, asyncio.Future[Any]] = {}
        self._files: set[asyncio.Future[Any]] = set()
        """File work on its folder that a worker thread may be doing now (`_on_thread`)."""
        self._destroyed = False
        self._uncountable: str | None = None
        """Why the workspace could not be counted, once it could not (a note says so)."""

    def info(self) -> VMInfo:
        return VMInfo(
            pid=None,
            workspace=str(self.workspace),
            isolation="bwrap" if self.isolated else "none",
        )

    @property
    def _ports(self) -> tuple[int, ...]:
        return self.spec.allowed_ports if self.isolated and self.spec.network else ()

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
        deadline = started + limit  # a start the host is short for is tried until then
        doing = f"start command in {self.id}"  # vm/shortage.py
        if self._threads is not None and on_output is None and not self._ports:
            return await patiently(
                lambda: self._exec_on_thread(command, cwd, deadline, env, host_cwd, stdin),
                deadline=deadline, doing=doing, vm_id=self.id,
            )  # fmt: skip
        ooms = self._oom_kills()  # its VM's OOM kills so far: one more is this command's
        fds, transport, proto = await patiently(
            lambda: self._spawn(command, cwd, deadline - time.monotonic(), env, host_cwd, stdin),
            deadline=deadline, doing=doing, vm_id=self.id,
        )  # fmt: skip
        limit = deadline - time.monotonic()  # what the wait for a shortage left of it
        helpers: list[Helper] = []  # this command's (pasta), each from its fork on
        try:
            try:
                self._procs.add(transport)
                pid = transport.get_pid()
                if fds.block_w is not None:
                    try:  # the command waits (--block-fd) until its ports are forwarded
                        await self._forward_ports(fds, helpers)
                    except BaseException:
                        kill_tree(pid)
                        await proto.exited.wait()
                        self._procs.discard(transport)
                        transport.close()
                        raise
            finally:
                fds.close()
            try:
                return await finish(
                    transport, proto, started=started, limit=limit, stdin=stdin,
                    on_output=on_output, keep=self.spec.output_keep_bytes,
                    over_disk=self._over_disk,
                    ending=functools.partial(self._ending, ooms_before=ooms),
                    drain=DRAIN_SECONDS, check_every=DISK_CHECK_SECONDS,
                )  # fmt: skip
            finally:
                self._procs.discard(transport)
        finally:  # whatever ended it (a cancel, a destroy, an error): its helpers go too
            try:
                await stop_helpers(helpers)
            finally:
                self._helpers.difference_update(helpers)

    async def _spawn(
        self,
        command: Sequence[str] | str,
        cwd: str | None,
        limit: float,
        env: Mapping[str, str] | None,
        host_cwd: Path,
        stdin: bytes | None,
    ) -> tuple[SandboxFds, asyncio.SubprocessTransport, ExecProtocol]:
        """Start the command on the event loop, with its sandbox's fds. Raises `OSError`
        only when nothing was started (the caller may try again); a spawn that fails is a
        `VMError`, never tried again: asyncio can fail after the fork (watching the child
        takes a pidfd), and the command must not run twice."""
        if self._destroyed:  # while it waited for a shortage to pass
            raise VMError(f"VM {self.id} is destroyed")
        loop = asyncio.get_running_loop()
        forking = False

        async def start() -> tuple[SandboxFds, asyncio.SubprocessTransport, ExecProtocol]:
            # in one step of the loop up to the fork: the sandbox's fds, the check that the
            # spawn has room, the fork (nothing is held from one try to the next)
            nonlocal forking
            fds = SandboxFds.open(
                network=bool(self._ports), env=self._guest_env(env), sandbox=self.isolated
            )
            try:
                room_for(SPAWN_FDS)  # a shortage now is waited out before anything starts
                forking = True
                transport, proto = await loop.subprocess_exec(
                    lambda: ExecProtocol(loop),
                    *self._argv(command, cwd, limit, fds),
                    stdin=asyncio.subprocess.PIPE
                    if stdin is not None
                    else asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    cwd=self.workspace if self.isolated else host_cwd,
                    env=host_env(self.id),
                    start_new_session=True,
                    pass_fds=fds.passed,
                )
            except BaseException:
                fds.close()
                raise
            fds.close_passed()
            return fds, transport, proto

        # a task of its own: a cancel of this step lets the start end, then stops it whole
        # (`vm/spawned.py`), where asyncio would kill the command's process alone
        spawn = asyncio.ensure_future(start())
        try:
            return await asyncio.shield(spawn)
        except asyncio.CancelledError:
            if not forking:  # its first step has not run: it never will
                spawn.cancel()
            await stop_spawned(spawn)
            raise
        except BaseException as exc:
            del spawn  # (the task holds this error, whose traceback holds this frame)
            if not isinstance(exc, OSError) or not forking:
                raise  # a shortage before the fork: nothing started, it may be tried again
            if exc.errno in SHORTAGES and not past_fork(exc):
                # Popen failed (before its fork, or its child before the exec): nothing ran.
                # Another thread took what `room_for` saw free: waited out like a shortage
                raise
            # it may have started: whatever carries this VM's tag is stopped, not run again
            with contextlib.suppress(OSError):
                await asyncio.to_thread(kill_tagged, self.id)
            raise VMError(f"cannot start command in {self.id}: {exc}") from exc

    async def _exec_on_thread(
        self,
        command: Sequence[str] | str,
        cwd: str | None,
        deadline: float,
        env: Mapping[str, str] | None,
        host_cwd: Path,
        stdin: bytes | None,
    ) -> ExecResult:
        """The whole command on a worker thread (`vm/threaded.py`): spawned, read, waited
        for and killed there; the loop awaits one result. Raises `OSError` only when it
        could not start (nothing ran)."""
        assert self._threads is not None
        if self._destroyed:  # while it waited for a shortage to pass
            raise VMError(f"VM {self.id} is destroyed")
        started = time.monotonic()
        limit = deadline - started
        fds = SandboxFds.open(network=False, env=self._guest_env(env), sandbox=self.isolated)
        try:
            job = Job(
                Command(
                    argv=self._argv(command, cwd, limit, fds),
                    cwd=self.workspace if self.isolated else host_cwd,
                    env=host_env(self.id),
                    pass_fds=fds.passed,
                    stdin=stdin,
                    limit=limit,
                    keep=self.spec.output_keep_bytes,
                    drain=DRAIN_SECONDS,
                    check_every=DISK_CHECK_SECONDS,
                    over_disk=self._over_disk,
                    spawned=fds.close_passed,
                    oom_kills=self._oom_kills,
                )
            )
        except BaseException:
            fds.close()
            raise
        done = asyncio.get_running_loop().run_in_executor(self._threads, job.run)
        self._jobs[job] = done
        try:
            try:
                outcome = await asyncio.shield(done)
            except asyncio.CancelledError:
                job.cancel()  # its tree is killed; wait until its process is gone
                while not done.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait([done])
                raise
        except OSError as exc:
            if not job.started:
                raise  # nothing ran: it may be tried again (vm/shortage.py)
            raise VMError(f"cannot run command in {self.id}: {exc}") from exc
        finally:
            self._jobs.pop(job, None)
            fds.close()
        code, note = self._ending(
            Ended(
                outcome.returncode,
                timed_out=outcome.timed_out,
                killed_over_disk=outcome.over_disk,
                ended_over_disk=outcome.ended_over_disk,
                no_space=outcome.no_space,
                out_of_memory=outcome.out_of_memory,
            )
        )
        if note:
            outcome.stderr.add(note)
        return ExecResult.of(
            code, outcome.stdout, outcome.stderr, started, timed_out=outcome.timed_out
        )

    def _over_disk(self) -> bool:
        """Whether the workspace is over `disk_mb` or `max_files` (a worker thread's call,
        while a command runs and as it ends; it counts no further than past either). A
        count that fails, for any reason, says True: a limit not checked is not kept."""
        cap, most = self.config.disk_mb * 1024 * 1024, self.config.max_files
        try:
            if self._fresh is not None:  # its own filesystem: its counters, no walk
                used, entries = used_since(self.workspace, self._fresh)
            else:
                used, entries = disk_usage(self.workspace, cap, most)
        except UncountableError as exc:  # fail closed: a limit that cannot be checked
            self._uncountable = str(exc)
            return True
        except Exception as exc:  # any failure of the count fails closed too
            self._uncountable = f"the count failed: {type(exc).__name__}: {exc}"[:300]
            return True
        return used > cap or entries > most

    def _oom_kills(self) -> int:
        """The OOM kills its memory cgroup counted so far (0 without one)."""
        return self.memory.oom_kills() if self.memory is not None else 0

    def _ending(self, ended: Ended, ooms_before: int | None = None) -> tuple[int, bytes]:
        """How a command that `ended` so is told, on either path: its exit code and the
        note its stderr ends with (b"" for none; `vm/ending.py`). `ooms_before`: the OOM
        kills its VM's cgroup had counted as it started (more now: it ran out of memory)."""
        if ooms_before is not None and self._oom_kills() > ooms_before:
            ended = dataclasses.replace(ended, out_of_memory=True)
        limits = DiskLimits(
            self.config.disk_mb,
            self.config.max_files,
            self._uncountable,
            tmp_mb=self.config.tmp_mb if self.isolated else None,
            capped=self.capped,
            memory_mb=self.spec.memory_mb if self.memory is not None else None,
        )
        return ending(ended, limits)

    async def _forward_ports(self, fds: SandboxFds, helpers: list[Helper]) -> None:
        """Give the sandbox its `allowed_ports` (vm/pasta.py); pasta joins `helpers` (and
        the VM's) at its fork, before anything else is awaited."""
        assert fds.info_r is not None and fds.block_w is not None

        def spawn(argv: Sequence[str], passed: Sequence[int], stderr: int) -> Helper:
            if self._destroyed:  # while its sandbox started: it runs no command any more
                raise VMError(f"VM {self.id} is destroyed")
            helper = Helper(  # in the VM's memory cgroup: what it buffers is the VM's
                self.id, self.folder, argv, setpriv=host_tool("setpriv"),
                env={"PATH": BASE_PATH}, pass_fds=passed, stderr=stderr,
                prefix=self.memory.join_argv() if self.memory is not None else (),
            )  # fmt: skip
            helpers.append(helper)
            self._helpers.add(helper)
            return helper

        await forward_ports(
            self.id, self._ports, fds.info_r, fds.block_w,
            pasta=host_tool("pasta"), as_root=root_engine(), spawn=spawn,
        )  # fmt: skip

    def _host_path(self, path: str) -> tuple[Path, str]:
        """The host path for a workspace path, and its real path: symlinks may not lead
        outside. Blocking file work (an `lstat` per part of `path`), for a worker thread."""
        relpath = safe_relpath(path)
        if self._real_workspace is None:
            self._real_workspace = os.path.realpath(self.workspace)
        real = resolve_inside(self._real_workspace, relpath)
        if real is None:
            raise VMError(f"path {path!r} is outside the VM workspace")
        return self.workspace / relpath, real

    async def _on_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)`, file work in this VM's folder, on a worker thread that never runs on
        after a cancel of this await (`vm/settled.py`) nor while the VM is destroyed: not
        begun once it is, and waited for by `destroy` before the folder goes."""
        if self._destroyed:  # (also while a shortage was waited out)
            raise VMError(f"VM {self.id} is destroyed")
        return await settled(fn, *args, busy=self._files)

    async def put_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        if self._destroyed:
            raise VMError(f"VM {self.id} is destroyed")
        await patiently(  # off the event loop; a host shortage is waited out (shortage.py)
            lambda: self._on_thread(self._write_file, path, data, mode),
            deadline=time.monotonic() + self.spec.timeout_seconds,
            doing=f"write {path!r} in {self.id}", vm_id=self.id,
        )  # fmt: skip

    def _write_file(self, path: str, data: bytes, mode: int) -> None:
        capped = (
            f"disk_mb = {self.config.disk_mb} MiB, max_files = {self.config.max_files}"
            if self.capped
            else None
        )
        target = self._host_path(path)[0]
        write_file(self.workspace, target, path, data, mode, self.host_uid, capped)

    def _read_file(self, path: str) -> bytes:
        return read_regular_file(Path(self._host_path(path)[1]), path)

    async def get_file(self, path: str) -> bytes:
        if self._destroyed:
            raise VMError(f"VM {self.id} is destroyed")
        safe_relpath(path)  # a path that cannot be inside is refused at once
        # off the event loop, never blocking (a FIFO), never unbounded (a sparse file)
        return await patiently(  # a host shortage is waited out (vm/shortage.py)
            lambda: self._on_thread(self._read_file, path),
            deadline=time.monotonic() + self.spec.timeout_seconds,
            doing=f"read {path!r} in {self.id}", vm_id=self.id,
        )  # fmt: skip

    async def is_alive(self) -> bool:
        return not self._destroyed and self.workspace.is_dir()

    async def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        for transport in list(self._procs):
            if transport.get_returncode() is None:  # once reaped, its pid may be another's
                kill_tree(transport.get_pid())
        helpers = list(self._helpers)  # pasta: none starts after this (`_forward_ports`)
        for helper in helpers:
            helper.kill()
        running = list(self._jobs.items())
        for job, _ in running:  # its own thread kills it (it alone knows if reaped)
            job.cancel()
        busy = [*(done for _, done in running), *self._files, *(h.exited() for h in helpers)]
        if busy:  # and the workspace goes once nothing runs or writes in it any more
            await asyncio.wait(busy)
        if not self.isolated:
            # without a PID namespace a command may have left daemons behind: find them by
            # their SWARM_VM_ID tag (a /proc scan, so off the event loop). Under bubblewrap
            # the kernel already killed everything when each command's namespace ended.
            await settled(kill_tagged, self.id, drop=False)
        retire = self._retire
        if self.memory is not None:  # what is left in it killed, then it goes
            gone = await settled(self.memory.remove, drop=False)
            if gone is not None:  # the next start's (or cleanup's) sweep removes it
                log.warning("VM %s: %s", self.id, gone, extra={"vm_id": self.id})
                retire = remove_folder  # something may live on: its workspace is not kept
        left = await settled(retire, self.folder, drop=False)  # to its end
        if self.host_uid is not None and self._release is not None:
            self._release(self.host_uid)
        if left is not None:  # recorded as a failed destroy; `cleanup` deletes it later
            raise VMError(left)

"""One booted microVM: a QEMU process plus the channel to its guest agent."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from swarm_engine.errors import VMError
from swarm_engine.vm.base import (
    GUEST_WORKSPACE,
    TIMEOUT_EXIT,
    ExecResult,
    OutputCallback,
    Stream,
    VMInfo,
    VMSpec,
    safe_relpath,
)
from swarm_engine.vm.output import BoundedOutput
from swarm_engine.vm.qemu.connect import EXIT_WAIT, exit_error, exit_status
from swarm_engine.vm.qemu.console import ConsoleSink
from swarm_engine.vm.qemu.forwards import kill_relays, relays_of
from swarm_engine.vm.qemu.machine import kill_group
from swarm_engine.vm.qemu.protocol import MAX_FILE, Channel, ChannelClosed, Frame
from swarm_engine.vm.workspace import remove_folder

log = logging.getLogger(__name__)

GUEST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": GUEST_WORKSPACE,
    "LANG": "C.UTF-8",
    "TMPDIR": "/tmp",
    "SWARM_WORKSPACE": GUEST_WORKSPACE,
}


class QemuVM:
    """Used by one step, then destroyed. `id` may be renamed when a warm VM is handed out."""

    def __init__(
        self,
        vm_id: str,
        *,
        spec: VMSpec,
        proc: asyncio.subprocess.Process,
        channel: Channel,
        folder: Path,
        socket_path: Path,
        kill_grace: float,
        accel: str,
        booted_ms: int,
        start: str = "boot",
        console: ConsoleSink | None = None,
    ) -> None:
        self.id = vm_id
        self.spec = spec
        self._forwards = bool(spec.allowed_ports)
        """Its QEMU was started with port forwards, so it may have relays (`destroy`); a
        warm VM handed out (`spec` replaced) keeps what its QEMU was started with."""
        self.folder = folder
        self.socket_path = socket_path
        self.accel = accel
        self.booted_ms = booted_ms
        self.start = start
        """How it started: `boot` (a kernel boot), or restored from a `mapped` or `copy`
        template (docs/qemu.md, "Snapshot restore")."""
        self._proc = proc
        self._channel = channel
        self._kill_grace = kill_grace
        self._destroyed = False
        self._console = console
        """Reads the guest's serial console into a bounded console.log while QEMU runs."""
        self._halted: str | None = None
        """The kernel's halt line, once the engine ended a QEMU whose guest halted."""
        self._halt_task: asyncio.Task[None] | None = None
        channel.on_violation = self._guest_broke_protocol
        if console is not None:
            console.on_halt = self._guest_halted

    def _guest_halted(self, line: str) -> None:
        """The guest's kernel halted (or powered off): QEMU is given `EXIT_WAIT` s to end by
        itself (a power-off with ACPI does), then ended, so that a call waiting on the
        guest fails now with the halt said, not at its timeout."""
        if self._halt_task is None and not self._destroyed:
            self._halt_task = asyncio.ensure_future(self._end_halted(line))

    async def _end_halted(self, line: str) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._proc.wait()), EXIT_WAIT)
        if self._proc.returncode is None and not self._destroyed:
            log.warning("ending VM: its guest halted (%s)", line, extra={"vm_id": self.id})
            self._halted = line
            kill_group(self._proc.pid)

    def _guest_broke_protocol(self, problem: str) -> None:
        """The guest is not to be trusted any more: end the whole VM now (`destroy` still
        reaps it). Pending and later calls fail with the channel's close reason."""
        log.error("ending VM: the guest broke the protocol: %s", problem, extra={"vm_id": self.id})
        kill_group(self._proc.pid)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def info(self) -> VMInfo:
        return VMInfo(
            pid=self._proc.pid,
            workspace=None,  # the workspace lives inside the guest (GUEST_WORKSPACE)
            socket_path=str(self.socket_path),
            overlay_path=str(self.folder),
            extra={
                "backend": "qemu",
                "accel": self.accel,
                "guest_workspace": GUEST_WORKSPACE,
                "boot_ms": str(self.booted_ms),
                "start": self.start,
            },
            isolation="microvm",  # recorded in vms.isolation (issue 9)
        )

    def _check(self) -> None:
        if self._destroyed:
            raise VMError(f"VM {self.id} is destroyed")
        if self._channel.violation is not None:
            raise VMError(f"VM {self.id} was ended: {self._channel.close_reason}")
        if self._halted is not None:
            raise VMError(f"VM {self.id} is not running (its guest halted: {self._halted})")
        if self._proc.returncode is not None:
            raise VMError(
                f"VM {self.id} is not running (QEMU {exit_status(self._proc.returncode)})"
            )

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
        """Run a command in the guest. `on_output` is awaited in line with the stream (the
        guest is held back while it runs), so it must not wait on another call to this VM."""
        self._check()
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        if not argv:
            raise VMError("empty command")
        if stdin is not None and len(stdin) > MAX_FILE:  # one frame, as put_file's
            raise VMError(
                f"standard input of {len(stdin)} bytes: the qemu backend moves at most "
                f"{MAX_FILE} into a command"
            )
        limit = timeout if timeout is not None else self.spec.timeout_seconds
        request = {
            "t": "exec",
            "argv": argv,
            "env": {**GUEST_ENV, **(env or {})},
            "cwd": safe_relpath(cwd) if cwd else ".",
            "timeout": limit,
            "stdin": stdin is not None,
            "limits": {"nofile": self.spec.max_open_files, "nproc": self.spec.max_processes},
        }
        out = BoundedOutput(self.spec.output_keep_bytes)
        err = BoundedOutput(self.spec.output_keep_bytes)
        sinks: dict[Stream, BoundedOutput] = {"stdout": out, "stderr": err}
        started = time.monotonic()
        deadline = started + limit + self._kill_grace
        async with self._channel.request(request, stdin or b"") as replies:
            while True:
                try:
                    frame = await asyncio.wait_for(replies.get(), deadline - time.monotonic())
                except TimeoutError:
                    # The guest did not end the command itself: end the whole VM.
                    log.warning("guest did not answer past the timeout", extra={"vm_id": self.id})
                    with contextlib.suppress(VMError):  # the timeout is what to report
                        await self.destroy()
                    return ExecResult.of(TIMEOUT_EXIT, out, err, started, timed_out=True)
                if frame is None:
                    raise await self._gone("during exec")
                header, data = frame  # types checked by the channel (protocol.check_reply)
                kind = header["t"]
                if kind == "out":
                    stream: Stream = "stderr" if header["stream"] == "stderr" else "stdout"
                    sinks[stream].add(data)
                    if on_output is not None:
                        maybe = on_output(stream, data)
                        if inspect.isawaitable(maybe):
                            await maybe
                elif kind == "exit":
                    timed_out = bool(header.get("timed_out"))
                    code = TIMEOUT_EXIT if timed_out else int(header["code"])
                    return ExecResult.of(code, out, err, started, timed_out=timed_out)
                elif kind == "error":
                    raise VMError(f"{self.id}: {str(header.get('message', 'exec failed'))[:1000]}")
                else:
                    self._channel.fail(f"{kind} frame in reply to exec")

    async def _gone(self, when: str) -> VMError:
        """The guest's channel closed mid-call: when QEMU exits within `EXIT_WAIT` s (it
        was killed, the guest powered off or panicked), its exit and its last words (QEMU's
        error line, else the console's tail) say why; else the channel's close reason."""
        if not self._destroyed and self._channel.violation is None:  # (else: its own line)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._proc.wait()), EXIT_WAIT)
            if self._halted is not None:  # (QEMU ended by the engine: `_end_halted`)
                return VMError(f"the guest halted {when} in VM {self.id}: {self._halted}")
            if self._proc.returncode is not None:
                where = f"{when} in VM {self.id}"
                return await exit_error(self._proc, self.folder, "", self._console, when=where)
        return VMError(f"VM {self.id} went away {when}: {self._channel.close_reason}")

    async def put_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._check()
        if len(data) > MAX_FILE:
            raise VMError(f"{path}: {len(data)} bytes; the qemu backend moves at most {MAX_FILE}")
        await self._call({"t": "put", "path": safe_relpath(path), "mode": mode}, data)

    async def get_file(self, path: str) -> bytes:
        self._check()
        _, data = await self._call({"t": "get", "path": safe_relpath(path)}, max_reply=MAX_FILE)
        return data

    async def ping(self) -> float:
        """Round trip to the guest agent, in seconds."""
        self._check()
        started = time.perf_counter()
        await self._call({"t": "ping"})
        return time.perf_counter() - started

    async def _call(
        self, header: dict[str, object], payload: bytes = b"", *, max_reply: int = 0
    ) -> Frame:
        """One request and its reply; a guest that does not answer within the step's
        timeout (plus the kill grace) is ended like one that hangs an exec."""
        limit = self.spec.timeout_seconds + self._kill_grace
        try:
            return await self._channel.call(header, payload, max_reply=max_reply, timeout=limit)
        except ChannelClosed as exc:
            if self._channel.violation is not None or self._destroyed:
                raise
            raise await self._gone(f"during {header.get('t')}") from exc
        except TimeoutError:
            log.warning("guest did not answer %s", header.get("t"), extra={"vm_id": self.id})
            with contextlib.suppress(VMError):  # the unanswered call is the error to report
                await self.destroy()
            raise VMError(
                f"VM {self.id}: no answer to {header.get('t')} in {limit:.0f} s"
            ) from None

    async def is_alive(self) -> bool:
        return (
            not self._destroyed
            and self._proc.returncode is None
            and not self._channel.closed.is_set()
        )

    async def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        if self._halt_task is not None:
            self._halt_task.cancel()
        kill_group(self._proc.pid)
        with contextlib.suppress(ChannelClosed, Exception):
            await self._channel.close()
        await self._proc.wait()
        # its relays end by themselves once QEMU is gone; one that has not yet is killed
        # here, whatever the host server at its other end does (vm/qemu/forwards.py); a
        # QEMU without forwards starts none, and /proc is not scanned for them
        if self._forwards:
            kill_relays(await asyncio.to_thread(relays_of, self.folder))
        if self._console is not None:
            self._console.close()
        with contextlib.suppress(OSError):
            self.socket_path.unlink()
        left = await asyncio.to_thread(remove_folder, self.folder)
        if left is not None:  # recorded as a failed destroy; `cleanup` deletes it later
            raise VMError(left)

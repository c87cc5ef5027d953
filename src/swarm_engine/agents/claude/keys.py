"""Where the API key comes from, and where it goes: the host says both, never the VM.

Order: `ANTHROPIC_API_KEY` in the host environment, then the host's `api_key_file`, then
its `api_key_command` (its stdout, stripped). The key is only ever handed to the SDK client;
callers redact it from everything they write.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import shlex
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from swarm_engine.agents.claude.settings import HostConfig
from swarm_engine.errors import AgentError

KEY_ENV = "ANTHROPIC_API_KEY"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"
DEFAULT_ENDPOINT = "https://api.anthropic.com"
COMMAND_TIMEOUT = 30.0
"""Seconds `api_key_command` has to print the key and end."""
MAX_KEY_BYTES = 4096
"""The most bytes of a key (and of what `api_key_file` or `api_key_command` gives)."""

MISSING_KEY = (
    f"{KEY_ENV} is not set: export it on the host, or set api_key_file or api_key_command "
    "under [agents.claude] in config.toml"
)


def resolve_api_key(
    host: HostConfig, environ: Mapping[str, str], stop: threading.Event | None = None
) -> str:
    """Return the key or raise `AgentError` with one clear line (never containing the key).
    A key is at most `MAX_KEY_BYTES` of visible ASCII (no space, newline or control
    character: it goes into an HTTP header); what a file or command gives is read up to
    that and no further. `stop`, once set, ends a key command still running (with its
    process group) within about 50 ms: its step was stopped."""
    key = environ.get(KEY_ENV, "").strip()
    if key:
        return _checked(key, KEY_ENV)
    if host.api_key_file:
        path = Path(host.api_key_file).expanduser()
        try:
            data = _read_key_file(path)
        except OSError as exc:
            raise AgentError(f"api_key_file {path}: {exc.strerror or exc}") from None
        if len(data) > MAX_KEY_BYTES:
            raise AgentError(f"api_key_file {path} holds more than {MAX_KEY_BYTES} bytes")
        key = data.decode("utf-8", "replace").strip()
        if not key:
            raise AgentError(f"api_key_file {path} is empty")
        return _checked(key, f"api_key_file {path}")
    if host.api_key_command:
        return _run_key_command(host.api_key_command, stop)
    raise AgentError(MISSING_KEY)


KEY_READERS = 4
"""Threads that read keys (`resolve_api_key_async`): a key file or command that hangs holds
one of them, never a thread of the event loop's default pool, which the engine's other
work shares (tester h-211: six hung key commands held every ticket's file work)."""
_readers = ThreadPoolExecutor(max_workers=KEY_READERS, thread_name_prefix="api-key")


async def resolve_api_key_async(host: HostConfig, environ: Mapping[str, str]) -> str:
    """`resolve_api_key` on one of the `KEY_READERS` threads kept for it. Cancelled, it
    stops a key command still running, so the thread is free at once (an engine's stop
    waited out a hung key command, up to `COMMAND_TIMEOUT`, before it could exit)."""
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    try:
        return await loop.run_in_executor(_readers, resolve_api_key, host, environ, stop)
    except asyncio.CancelledError:
        stop.set()
        raise


def check_key_source(host: HostConfig, environ: Mapping[str, str]) -> None:
    """What a ticket's claim checks (on the engine's store thread, for every claim): that
    the host gives a key somehow, with no file read and no command run (a FIFO for a file,
    a command that hangs, held every ticket of the engine); the key is read when the step
    runs (`resolve_api_key`, off the event loop), which fails the step with one line. A
    key in the environment is checked whole here. Raises `AgentError` (`MISSING_KEY`)."""
    key = environ.get(KEY_ENV, "").strip()
    if key:
        _checked(key, KEY_ENV)
        return
    if not (host.api_key_file or host.api_key_command):
        raise AgentError(MISSING_KEY)


def _read_key_file(path: Path) -> bytes:
    """Up to `MAX_KEY_BYTES` + 1 bytes of a regular file, opened without blocking (a FIFO
    or a device is refused, never waited on)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file (a key file is read whole, never waited on)")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_KEY_BYTES:
            chunk = os.read(fd, MAX_KEY_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _checked(key: str, source: str) -> str:
    """`key`, if it can be sent as one: else the line saying why (never the key itself)."""
    if len(key.encode("utf-8", "replace")) > MAX_KEY_BYTES:
        raise AgentError(f"{source}: the key is longer than {MAX_KEY_BYTES} bytes")
    if not all("!" <= ch <= "~" for ch in key):
        raise AgentError(
            f"{source}: the key holds a space, a line break, a control or a non-ASCII"
            " character (a key is one word of visible ASCII)"
        )
    return key


def resolve_endpoint(host: HostConfig, environ: Mapping[str, str]) -> str:
    """Where the key goes: `ANTHROPIC_BASE_URL` of the host, else the host's `base_url`,
    else the public API. Never an agent definition's choice."""
    return environ.get(BASE_URL_ENV) or host.base_url or DEFAULT_ENDPOINT


def _run_key_command(command: str | list[str], stop: threading.Event | None = None) -> str:
    """Its stdout, stripped: at most `MAX_KEY_BYTES` read, within `COMMAND_TIMEOUT`
    seconds (a command printing without end is killed, not read into memory), and only
    until `stop` is set."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    shown = argv[0] if argv else "''"
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True,  # (its group is killed: a `sh -c` and what it started)
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise AgentError(f"api_key_command {shown} could not run: {exc}") from None
    assert proc.stdout is not None
    deadline = time.monotonic() + COMMAND_TIMEOUT
    data = b""
    why = None
    with proc, selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                why = f"did not end within {COMMAND_TIMEOUT:g}s"
                break
            if stop is not None and stop.is_set():
                why = "was not waited for: its step was stopped"
                break
            if not sel.select(min(left, 0.05)):
                if proc.poll() is not None:  # ended, what it printed read: a child it
                    break  # left (an agent of its own) may keep the pipe open
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_KEY_BYTES:
                why = f"printed more than {MAX_KEY_BYTES} bytes"
                break
        if why is not None:
            _kill_group(proc)
        try:
            code = proc.wait(timeout=max(0.0, deadline - time.monotonic()) if why is None else 5)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
            why = f"did not end within {COMMAND_TIMEOUT:g}s"
        _kill_group(proc)  # what it left running in its group ends with it (never its key)
    if why is not None:
        raise AgentError(f"api_key_command {shown} {why}; it was stopped")
    if code != 0:
        raise AgentError(f"api_key_command {shown} exited with {code}")
    key = data.decode("utf-8", "replace").strip()
    if not key:
        raise AgentError(f"api_key_command {shown} printed nothing")
    return _checked(key, f"api_key_command {shown}")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)

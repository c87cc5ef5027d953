"""Checking a value against an agent's `inputs` JSON Schema in bounded time and memory.

Both the schema (a registry row) and the value (a ticket row, or what a workflow step's
template made of earlier outputs) are untrusted, and together they may make a check cost
anything: `uniqueItems` over 6,000 small objects is quadratic (80 s), a `pattern` such as
`^(a+)+$` backtracks catastrophically inside `re`, which holds the GIL, so a check on any
thread of the engine would freeze all of it (heartbeats, leases, `stop`).

So `SchemaChecker` runs each check in a helper process (`swarm_engine.schema_worker`),
started once, lazily (only when a schema is checked), and waits for its answer for at most
`CHECK_SECONDS` with the GIL released (`poll`). A check that takes longer, or a helper that
dies (its address space is capped too), fails that check alone with one line
(`SchemaCheckError`): the helper is killed and a new one is started for the next check.
Fail closed: a value is accepted only on the helper's `ok`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from swarm_engine.errors import AgentError, ConfigError, InputsInvalidError, SchemaCheckError
from swarm_engine.osthreads import executor
from swarm_engine.schema_worker import HEADER

CHECK_SECONDS = 5.0
"""Wall time one check may take, from sending the request to reading the answer."""
START_SECONDS = 30.0
"""Wall time the helper may take to start (import jsonschema) before its first check."""
MAX_ANSWER_BYTES = 64 * 1024
"""An answer longer than this is a broken helper (answers are one short line)."""
KEPT_ENV = ("PATH", "LD_LIBRARY_PATH", "LANG", "LC_ALL", "TMPDIR")
"""The only environment the helper gets (never the engine's keys)."""
COSTLY = "a schema or input too costly to check"


class _Ended(Exception):
    """The helper closed its end, or answered something that is not an answer."""


class SchemaChecker:
    """Checks values against JSON Schemas in a helper process (see the module's docstring).

    Thread-safe (one check at a time); `check_async` runs checks on a thread of its own.
    Close it when done: the helper is killed (it also dies with the thread that started
    it, and ends at EOF on its stdin)."""

    def __init__(self, limit: float = CHECK_SECONDS) -> None:
        self.limit = limit
        """Seconds one check may take (`CHECK_SECONDS`)."""
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    def check(self, schema: Mapping[str, Any], instance: Any, agent: str) -> None:
        """Return if `instance` matches `schema` (as jsonschema's `validate` decides, with
        references resolved only within the schema: `swarm_engine.schemas`). `agent`
        (`name@version`) names the schema's owner in messages. Raises, each with one line:
        `InputsInvalidError` (jsonschema's message), `ConfigError` (not a valid JSON
        Schema), `AgentError` (a schema that cannot be used: a reference that does not
        resolve, endless recursion), `SchemaCheckError` (not checked within `limit`
        seconds or the helper's memory, or the helper could not start or died)."""
        try:
            data = json.dumps(
                {"schema": json.dumps(schema), "instance": instance},
                separators=(",", ":"),
            ).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise SchemaCheckError(
                f"could not be checked against agent {agent}'s schema: not JSON ({exc})"
            ) from exc
        with self._lock:
            proc = self._started()
            deadline = time.monotonic() + self.limit
            try:
                _send(proc, HEADER.pack(len(data)) + data, deadline)
                answer = _receive(proc, deadline)
            except TimeoutError:
                self._discard()
                raise SchemaCheckError(
                    f"could not be checked against agent {agent}'s schema within "
                    f"{self.limit:g} s ({COSTLY})"
                ) from None
            except (OSError, _Ended) as exc:
                self._discard()
                raise SchemaCheckError(
                    f"could not be checked against agent {agent}'s schema: the checking "
                    f"process ended ({_why(proc, exc)}; {COSTLY}?)"
                ) from None
        _raise_for(answer, agent)

    async def check_async(self, schema: Mapping[str, Any], instance: Any, agent: str) -> None:
        """`check` on the checker's own thread: the event loop goes on meanwhile. A cancel
        stops the wait, not the check (which ends within `limit` seconds)."""
        if self._closed:  # (its thread is gone: nothing would run the check)
            raise SchemaCheckError("could not be checked: the schema checker is closed")
        if self._pool is None:
            self._pool = executor(1, "schema-check")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._pool, functools.partial(self.check, schema, instance, agent)
        )

    def close(self) -> None:
        """Kill the helper (a check under way fails at once) and end the checker's thread.
        Checks after this fail (`SchemaCheckError`)."""
        self._closed = True
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()
        with self._lock:
            self._discard()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _started(self) -> subprocess.Popen[bytes]:
        """The helper, started if there is none (under `_lock`)."""
        if self._closed:
            raise SchemaCheckError("could not be checked: the schema checker is closed")
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._discard()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-m", "swarm_engine.schema_worker", str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={k: os.environ[k] for k in KEPT_ENV if k in os.environ},
            )
        except OSError as exc:
            raise SchemaCheckError(f"could not start the schema checker: {exc}") from exc
        self._proc = proc
        try:
            ready = _receive(proc, time.monotonic() + START_SECONDS)
            if ready != {"ready": True}:
                raise _Ended(f"it said {str(ready)[:100]!r}")
        except (TimeoutError, OSError, _Ended) as exc:
            why = f"not ready in {START_SECONDS:g} s" if isinstance(exc, TimeoutError) else ""
            self._discard()
            raise SchemaCheckError(
                f"could not start the schema checker ({why or _why(proc, exc)})"
            ) from None
        assert proc.stdin is not None
        os.set_blocking(proc.stdin.fileno(), False)  # writes wait in `poll`, bounded
        return proc

    def _discard(self) -> None:
        """Kill the helper, if any, reap it and close its pipes (under `_lock`)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _raise_for(answer: Any, agent: str) -> None:
    """Nothing for `{"ok": true}`; the error the helper's answer names otherwise."""
    if answer == {"ok": True}:
        return
    kind, message = answer.get("refused"), str(answer.get("message"))
    if kind == "inputs":
        raise InputsInvalidError(message)
    if kind == "schema":
        raise ConfigError(f"agent {agent}: {message}")
    if kind == "agent":
        raise AgentError(message)
    if kind == "costly":
        raise SchemaCheckError(
            f"could not be checked against agent {agent}'s schema: {message} ({COSTLY})"
        )
    raise SchemaCheckError(f"could not be checked against agent {agent}'s schema: {answer!r:.200}")


def _why(proc: subprocess.Popen[bytes], exc: BaseException) -> str:
    code = proc.poll()
    if code is not None and code < 0:
        return f"killed by signal {-code}"
    if code is not None:
        return f"exit status {code}"
    return str(exc) or type(exc).__name__


def _wait(fd: int, event: int, deadline: float) -> None:
    """Wait until `fd` is ready for `event` (`select.POLLIN`/`POLLOUT`), with the GIL
    released; `TimeoutError` at `deadline` (monotonic)."""
    poller = select.poll()
    poller.register(fd, event)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        if poller.poll(max(1, int(left * 1000) + 1)):
            return  # ready, or hung up / in error: the read or write says which


def _send(proc: subprocess.Popen[bytes], data: bytes, deadline: float) -> None:
    assert proc.stdin is not None
    fd, view = proc.stdin.fileno(), memoryview(data)
    while view:
        _wait(fd, select.POLLOUT, deadline)
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            continue
        except BrokenPipeError as exc:
            raise _Ended("it closed its input") from exc


def _receive(proc: subprocess.Popen[bytes], deadline: float) -> Any:
    """The helper's next frame, decoded; `_Ended` at EOF or for a frame that is not one."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    (size,) = HEADER.unpack(_read(fd, HEADER.size, deadline))
    if size > MAX_ANSWER_BYTES:
        raise _Ended(f"an answer of {size} bytes")
    try:
        answer = json.loads(_read(fd, size, deadline))
    except ValueError as exc:
        raise _Ended(f"an answer that is not JSON: {exc}") from exc
    if not isinstance(answer, dict):
        raise _Ended(f"an answer that is not an object: {answer!r:.100}")
    return answer


def _read(fd: int, size: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    while size:
        _wait(fd, select.POLLIN, deadline)
        chunk = os.read(fd, size)  # ready: returns what is there without blocking
        if not chunk:
            raise _Ended("it closed its output")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)

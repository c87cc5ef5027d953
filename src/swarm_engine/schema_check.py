"""Checking a value against an agent's `inputs` JSON Schema in bounded time and memory.

Both the schema (a registry row) and the value (a ticket row, or what a workflow step's
template made of earlier outputs) are untrusted, and together they may make a check cost
anything: `uniqueItems` over 6,000 small objects is quadratic (80 s), a `pattern` such as
`^(a+)+$` backtracks catastrophically inside `re`, which holds the GIL, so a check on any
thread of the engine would freeze all of it (heartbeats, leases, `stop`).

So `SchemaChecker` runs each check in a helper process (`swarm_engine.schema_worker`):
a small pool of them (at most `size`, the engine's `min(max_vms, MAX_HELPERS)`), each
started lazily (only when a schema is checked), and waits for an answer for at most
`CHECK_SECONDS` with the GIL released (`poll`). A check that takes longer, or a helper that
dies (its address space is capped too), fails that check alone with one line
(`SchemaCheckError`): its helper is killed and a new one is started for a later check,
while the other helpers go on checking. Fail closed: a value is accepted only on the
helper's `ok`. Checking a schema itself (at registration: `check_schemas`) goes through a
helper too, within the same bound.
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
MAX_HELPERS = 4
"""At most this many helper processes (checks at once) per engine."""
COSTLY = "a schema or input too costly to check"


class _Ended(Exception):
    """The helper closed its end, or answered something that is not an answer."""


class _Helper:
    """One helper process, used by one check at a time."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc


class SchemaChecker:
    """Checks values against JSON Schemas in helper processes (see the module's docstring).

    Thread-safe: up to `size` checks run at once, each in a helper of its own (started
    lazily, at most `size` of them), so one costly check holds one helper, not all; a
    further check waits for a free helper. `check_async` runs checks on `size` threads of
    the checker's own. Close it when done: the helpers are killed (each also dies with the
    thread that started it, and ends at EOF on its stdin), and checks not yet started are
    cancelled."""

    def __init__(self, limit: float = CHECK_SECONDS, size: int = 1) -> None:
        self.limit = limit
        """Seconds one check may take (`CHECK_SECONDS`)."""
        self.size = max(1, size)
        """How many checks may run at once (one helper process each)."""
        self._cond = threading.Condition()
        self._idle: list[_Helper] = []
        self._helpers: set[_Helper] = set()
        self._starting = 0
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    @property
    def _proc(self) -> subprocess.Popen[bytes] | None:
        """A helper's process, if any (the last one freed: for tests)."""
        with self._cond:
            if self._idle:
                return self._idle[-1].proc
            return next((h.proc for h in self._helpers), None)

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
        answer = self._ask(data, f"could not be checked against agent {agent}'s schema")
        _raise_for(answer, agent)

    def check_schema(self, schema: Any, field: str) -> None:
        """Return if `schema` (held in an agent's `field`) is a valid JSON Schema of its
        dialect whose references resolve within it (`schemas.check_schema`), checked in a
        helper within `limit` seconds. Raises `ConfigError` (one line: `<field>: not a
        valid JSON Schema: ...`, or `<field>: the schema could not be checked within 5 s`
        for one too costly to check)."""
        try:
            data = json.dumps(
                {"check_schema": json.dumps(schema), "field": field}, separators=(",", ":")
            ).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise ConfigError(f"{field}: not JSON ({exc})") from exc
        try:
            answer = self._ask(data, f"{field}: the schema could not be checked", note="")
        except SchemaCheckError as exc:
            raise ConfigError(str(exc)) from None
        if answer == {"ok": True}:
            return
        message = str(answer.get("message"))
        if answer.get("refused") == "costly":
            raise ConfigError(f"{field}: the schema could not be checked: {message}")
        raise ConfigError(message)

    def _ask(self, data: bytes, failed: str, note: str = f" ({COSTLY})") -> Any:
        """Send one request to a free helper and return its answer; `SchemaCheckError`
        (`failed` and why; `note` after the time limit) past `limit` seconds or when the
        helper ends."""
        helper = self._acquire()
        proc = helper.proc
        ok = False
        try:
            deadline = time.monotonic() + self.limit
            try:
                _send(proc, HEADER.pack(len(data)) + data, deadline)
                answer = _receive(proc, deadline)
            except TimeoutError:
                raise SchemaCheckError(f"{failed} within {self.limit:g} s{note}") from None
            except (OSError, _Ended) as exc:
                if self._closed:
                    raise SchemaCheckError(
                        "could not be checked: the schema checker is closed"
                    ) from None
                raise SchemaCheckError(
                    f"{failed}: the checking process ended ({_why(proc, exc)}; {COSTLY}?)"
                ) from None
            ok = True
            return answer
        finally:
            self._release(helper, keep=ok)

    async def check_async(self, schema: Mapping[str, Any], instance: Any, agent: str) -> None:
        """`check` on one of the checker's own threads: the event loop goes on meanwhile.
        A cancel stops the wait, and the check too if it has not started (one under way
        ends within `limit` seconds)."""
        if self._closed:  # (its threads are gone: nothing would run the check)
            raise SchemaCheckError("could not be checked: the schema checker is closed")
        if self._pool is None:
            self._pool = executor(self.size, "schema-check")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._pool, functools.partial(self.check, schema, instance, agent)
        )

    def close(self) -> None:
        """Kill the helpers (a check under way fails at once), cancel the checks not yet
        started and end the checker's threads. Checks after this fail
        (`SchemaCheckError`)."""
        with self._cond:
            self._closed = True
            helpers = list(self._helpers)
            self._cond.notify_all()
        for helper in helpers:
            with contextlib.suppress(OSError):
                helper.proc.kill()
        with self._cond:
            idle, self._idle = self._idle, []
            for helper in idle:
                self._helpers.discard(helper)
        for helper in idle:
            _discard(helper.proc)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _acquire(self) -> _Helper:
        """A free helper, started if there is none and fewer than `size` run; waits for
        one to be freed otherwise. `SchemaCheckError` once the checker is closed."""
        with self._cond:
            while True:
                if self._closed:
                    raise SchemaCheckError("could not be checked: the schema checker is closed")
                while self._idle:
                    helper = self._idle.pop()
                    if helper.proc.poll() is None:
                        return helper
                    self._helpers.discard(helper)  # died between checks: replaced
                    _discard(helper.proc)
                if len(self._helpers) + self._starting < self.size:
                    self._starting += 1
                    break
                self._cond.wait()
        try:
            proc = _start()
        finally:
            with self._cond:
                self._starting -= 1
                self._cond.notify()
        helper = _Helper(proc)
        with self._cond:
            self._helpers.add(helper)
            if self._closed:
                self._helpers.discard(helper)
                _discard(proc)
                raise SchemaCheckError("could not be checked: the schema checker is closed")
        return helper

    def _release(self, helper: _Helper, *, keep: bool) -> None:
        """Give `helper` back (`keep`), or kill it (a check that failed it)."""
        with self._cond:
            if keep and not self._closed:
                self._idle.append(helper)
                self._cond.notify()
                return
            self._helpers.discard(helper)
            self._cond.notify()
        _discard(helper.proc)


def _start() -> subprocess.Popen[bytes]:
    """A new helper, ready for its first request; `SchemaCheckError` if it cannot start."""
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-m", "swarm_engine.schema_worker", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={k: os.environ[k] for k in KEPT_ENV if k in os.environ},
        )
    except OSError as exc:
        raise SchemaCheckError(f"could not start the schema checker: {exc}") from exc
    try:
        ready = _receive(proc, time.monotonic() + START_SECONDS)
        if ready != {"ready": True}:
            raise _Ended(f"it said {str(ready)[:100]!r}")
    except (TimeoutError, OSError, _Ended) as exc:
        why = f"not ready in {START_SECONDS:g} s" if isinstance(exc, TimeoutError) else ""
        _discard(proc)
        raise SchemaCheckError(
            f"could not start the schema checker ({why or _why(proc, exc)})"
        ) from None
    assert proc.stdin is not None
    os.set_blocking(proc.stdin.fileno(), False)  # writes wait in `poll`, bounded
    return proc


def _discard(proc: subprocess.Popen[bytes]) -> None:
    """Kill a helper, reap it and close its pipes."""
    with contextlib.suppress(OSError):
        proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def check_schemas(schemas: Mapping[str, Any], source: str) -> None:
    """Check each of `schemas` (field -> schema) as `SchemaChecker.check_schema` does, in
    one helper started for them; `ConfigError` ("<source>: <field>: ...") for the first
    that is not a valid JSON Schema or could not be checked within `CHECK_SECONDS`."""
    checker = SchemaChecker()
    try:
        for field, schema in schemas.items():
            try:
                checker.check_schema(schema, field)
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc}") from None
    finally:
        checker.close()


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

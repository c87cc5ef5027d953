"""Worker threads that carry their names into the OS, for `top -H`, `ps -L` and profilers.

Python (before 3.14) names its threads only for itself: the kernel sees every thread of
the engine as `swarm-engine`. An engine runs a few kinds of worker thread (the store's,
the file workers, the command threads), and what each kind costs is what an operator
looking at a busy host, or `benchmarks/engine_cpu.py`, wants to know. `executor()` makes
a `ThreadPoolExecutor` whose threads set their kernel name (`/proc/<pid>/task/<tid>/comm`,
at most 15 bytes) with `prctl(PR_SET_NAME)`; where that call is not there (not Linux, no
C library), the threads are unnamed as before and nothing fails.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

PR_SET_NAME = 15
"""`prctl` option: set the calling thread's name (linux/prctl.h)."""

COMM_BYTES = 15
"""The kernel keeps a thread's name in 16 bytes, the last one a NUL."""


def _find_prctl() -> Any:
    """`prctl` of the C library this process already has (`find_library` would run
    `ldconfig`); None without a dynamic C library or without `prctl`."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_prctl = _find_prctl()


def name_this_thread(name: str) -> None:
    """Give the calling thread `name` in the kernel (cut to 15 bytes of UTF-8); a no-op
    where `prctl` is missing. Never raises: a thread's name is a courtesy."""
    if _prctl is None:
        return
    raw = name.encode("utf-8", "replace")[:COMM_BYTES]
    _prctl(PR_SET_NAME, ctypes.c_char_p(raw), 0, 0, 0)


def executor(max_workers: int, name: str) -> ThreadPoolExecutor:
    """A `ThreadPoolExecutor` of at most `max_workers` threads, each named `name` both in
    Python (`name_N`, as `thread_name_prefix` does) and in the kernel (`name`)."""
    return ThreadPoolExecutor(
        max_workers=max_workers,
        thread_name_prefix=name,
        initializer=name_this_thread,
        initargs=(name,),
    )


def kernel_name(native_id: int | None = None) -> str:
    """The kernel's name of one of this process's threads (the calling one by default),
    as `/proc/self/task/<tid>/comm` holds it; '' when it cannot be read."""
    tid = threading.get_native_id() if native_id is None else native_id
    try:
        with open(f"/proc/self/task/{tid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().rstrip("\n")
    except OSError:
        return ""


def name_file_workers(loop: asyncio.AbstractEventLoop) -> None:
    """Make `loop`'s default executor (`asyncio.to_thread`, `run_in_executor(None, ...)`:
    the engine's file work) one of named threads, `files`, of Python's default size."""
    loop.set_default_executor(executor(min(32, (os.cpu_count() or 1) + 4), "files"))


class OneThread(Executor):
    """An executor of one daemon thread named `name`, in order: what the engine's store
    calls run on (`engine/gate.py`). Unlike a `ThreadPoolExecutor`, whose threads the
    interpreter joins as it exits, a call that never returns (a database server that
    stopped answering mid-query) cannot keep the process from ending: `shutdown(wait=False)`
    leaves it behind. `submit_first` puts a call ahead of every queued one (the lease
    renewals: they never wait behind other calls' lock waits, only for the call under way)."""

    def __init__(self, name: str) -> None:
        self._jobs: collections.deque[tuple[Future[Any], Callable[[], Any]] | None] = (
            collections.deque()
        )
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, args=(name,), daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return self._put(False, functools.partial(fn, *args, **kwargs))

    def submit_first(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Like `submit`, but run next: after the call under way, before every queued one
        (the latest of several such calls goes first)."""
        return self._put(True, functools.partial(fn, *args, **kwargs))

    def _put(self, first: bool, call: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError("cannot schedule new calls after shutdown")
            if first:
                self._jobs.appendleft((future, call))
            else:
                self._jobs.append((future, call))
            self._ready.notify()
        return future

    def _work(self, name: str) -> None:
        name_this_thread(name)
        while True:
            with self._ready:
                while not self._jobs:
                    self._ready.wait()
                job = self._jobs.popleft()
            if job is None:
                return
            future, call = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
            del job, future, call

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls; the queued ones still run (all of them cancelled first with
        `cancel_futures`); `wait`: until the thread has run them all."""
        with self._ready:
            self._closed = True
            if cancel_futures:
                for job in self._jobs:
                    if job is not None:
                        job[0].cancel()
            self._jobs.append(None)
            self._ready.notify()
        if wait:
            self._thread.join()

"""A running engine's worker threads carry their kind in the kernel's thread name, so
`top -H`, `ps -L` and `benchmarks/engine_cpu.py` can say what each one costs."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from tests.acceptance.conftest import engine_ready, stop, write_agent
from tests.support.cli import query, start_engine, swarm_inproc, wait_until

from swarm_engine.osthreads import executor, kernel_name, name_this_thread


def thread_names(pid: int) -> dict[int, str]:
    """Each thread of `pid` (by thread id) and its kernel name."""
    names = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names[int(task.name)] = (task / "comm").read_text().rstrip("\n")
        except OSError:  # the thread ended as it was listed
            continue
    return names


def settled_names(pid: int) -> list[str]:
    """The kernel names of `pid`'s threads once none but the main one (whose id is the
    pid) is still called `python`: a worker thread carries the process's name from the
    moment it starts until its first line names it, and the engine starts file workers
    whenever it needs one, so a look may catch one in between; such a thread is looked at
    again. A thread that never names itself keeps the wait going until it fails."""
    last: dict[int, str] = {}

    def named() -> bool:
        nonlocal last
        last = thread_names(pid)
        return all(name != "python" for tid, name in last.items() if tid != pid)

    try:
        wait_until(named, 10, "every worker thread to carry its name")
    except AssertionError:
        raise AssertionError(f"a worker thread kept the process's name: {last}") from None
    assert last.get(pid) == "python", last  # (`python -m swarm_engine`)
    return [last[tid] for tid in sorted(last)]


def test_a_running_engines_threads_are_named_by_kind(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    write_agent(tmp_path / "nap", "name: nap\nkind: shell\ncommand: sleep 300\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "nap")).returncode == 0
    assert swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", "nap").returncode == 0
    proc = start_engine(home, "--max-vms", "1")
    engines.append(proc)
    engine_ready(home, proc)
    db = home / "tickets.db"
    wait_until(
        lambda: query(db, "SELECT 1 FROM step_executions WHERE status = 'running'"), 30, "a step"
    )
    # the main thread keeps the process's name; the store's one thread, the file workers
    # (the VM's folder was made on one) and any command thread have their own
    names = settled_names(proc.pid)
    assert names.count("python") == 1, names
    assert names.count("store") == 1 and "files" in names, names
    assert set(names) <= {"python", "store", "files", "vm-command"}, names
    assert swarm_inproc(home, "ticket", "cancel", "1").returncode == 0
    out = stop(proc)
    assert proc.returncode == 0 and "Traceback" not in out, out


def test_a_name_is_cut_to_what_the_kernel_keeps() -> None:
    seen: list[str] = []

    def body() -> None:
        name_this_thread("a-name-longer-than-fifteen-bytes")
        seen.append(kernel_name())

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == ["a-name-longer-t"]
    with executor(2, "pool-x") as pool:
        assert pool.submit(kernel_name).result() == "pool-x"
    assert kernel_name() != "pool-x"  # the caller's own name is left alone

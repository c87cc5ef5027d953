"""Finding and killing host processes: whole trees, and everything tagged with a VM id."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Iterator
from pathlib import Path

VM_TAG = "SWARM_VM_ID"


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may contain spaces and parentheses: split after the last ')'
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _ppid(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


KILL_ROUNDS = 50


def kill_tree(pid: int) -> None:
    """SIGKILL every descendant of `pid`, then `pid` itself and its process group.

    Descendants go first and the tree is scanned again until none is left alive: when
    `pid` is a child subreaper (`vm/subreaper.py`), whatever a killed process had started
    is re-parented to it and caught by the next scan, however it changed its session or
    environment. Bounded to `KILL_ROUNDS` scans (a process in uninterruptible sleep dies
    when it wakes). When `/proc` cannot be listed (the engine is out of file
    descriptors), only the process group and `pid` are killed.
    """
    for _ in range(KILL_ROUNDS):
        try:
            found = descendants(pid)
        except OSError:  # /proc cannot be read now (out of fds): the group and `pid` still go
            break
        alive = [p for p in found if _state(p) not in (None, "Z", "X")]
        if not alive:
            break
        for victim in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(victim, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _tags() -> Iterator[tuple[int, str]]:
    """(pid, VM id) for each host process that carries a SWARM_VM_ID tag."""
    prefix = f"{VM_TAG}=".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        for item in environ.split(b"\0"):
            if item.startswith(prefix):
                yield int(entry), item[len(prefix) :].decode(errors="replace")


def tagged(vm_id: str) -> list[int]:
    """Host pids whose environment carries SWARM_VM_ID=<vm_id>."""
    return [pid for pid, tag in _tags() if tag == vm_id]


def tagged_ids(vm_ids: set[str]) -> set[str]:
    """Which of these VM ids some host process still carries as its SWARM_VM_ID tag (a
    sandbox's command, its helpers): one walk of /proc for them all."""
    return {tag for _, tag in _tags() if tag in vm_ids} if vm_ids else set()


def kill_tagged(vm_id: str) -> int:
    pids = tagged(vm_id)
    for pid in pids:
        kill_tree(pid)
    return len(pids)


def pid_alive(pid: int) -> bool:
    """True if process `pid` exists and is not a zombie. A pid read from the store is
    anything a writer put there: only a positive whole number can be alive (0 and -1
    would ask about a process group, or every process)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 2**31:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = _state(pid)
    return state not in ("Z", "X")


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn`: SIGKILL this child when the thread that started it (the engine) dies,
    so a killed engine leaves no helper (mksquashfs, npm) running on its own."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def stale_tmp(path: Path) -> bool:
    """True for a `<name>.<pid>.tmp` file or folder whose writer process is gone."""
    parts = path.name.rsplit(".", 2)
    return (
        len(parts) == 3
        and parts[2] == "tmp"
        and parts[1].isdigit()
        and not pid_alive(int(parts[1]))
    )


def is_engine(pid: int) -> bool:
    """True if `pid` is alive and runs `swarm-engine start` (its command line says so):
    what `stop` may signal, whatever pid an `engines` row holds."""
    if not pid_alive(pid) or pid == os.getpid():
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    args = engine_args(argv)
    return args is not None and b"start" in args


ENGINE_MODULES = (b"swarm_engine", b"swarm_engine.__main__")
_VALUED = b"cmWX"  # the interpreter's one-letter options that take a value


def engine_args(argv: list[bytes]) -> list[bytes] | None:
    """The arguments given to swarm-engine when command line `argv` runs it, else None:
    the `swarm-engine` script run as a program, or a Python interpreter (`python*`,
    `pypy*`) run with any of its options (`-u`, `-I -S`, `-X dev`, `-Wignore`, `-um`...)
    and then `-m swarm_engine` or the `swarm-engine` script (a shebang's form)."""
    if not argv:
        return None
    program = os.path.basename(argv[0])
    if program == b"swarm-engine":
        return argv[1:]
    if not program.startswith((b"python", b"pypy")):
        return None
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == b"--":
            i += 1
            break
        if not arg.startswith(b"-") or arg == b"-":
            break
        if arg == b"--check-hash-based-pycs":
            i += 2
            continue
        if arg.startswith(b"--"):  # --help, --version...: no program runs
            return None
        for at in range(1, len(arg)):
            letter = arg[at : at + 1]
            if letter not in _VALUED:
                continue
            value = arg[at + 1 :]
            if not value:  # the value is the next argument
                i += 1
                value = argv[i] if i < len(argv) else b""
            if letter == b"m":
                return argv[i + 1 :] if value in ENGINE_MODULES else None
            if letter == b"c":
                return None  # a program in the command line, not swarm-engine
            break
        i += 1
    if i < len(argv) and os.path.basename(argv[i]) == b"swarm-engine":
        return argv[i + 1 :]
    return None


def runs_swarm_engine(pid: int) -> bool:
    """True if `pid` is alive and its command line runs swarm-engine (`engine_args`), any
    command of it (`start`, `run-ticket`, `vm doctor`...), this process included."""
    if _state(pid) in (None, "Z", "X"):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return engine_args(argv) is not None


ANCESTRY_LIMIT = 4096
"""At most this many processes are looked at above a VM's processes (a deeper chain is
not judged: its VM is left alone)."""


def live_work(pids: list[int]) -> str | None:
    """Why the processes `pids` (all that carry one VM's tag) are the live work of a
    running swarm-engine process, so that no reaper may kill them, or None when they are
    not. Above each one, up to init or to another of `pids`, each ancestor's command line
    is read (`/proc/<pid>/stat`'s ppid): one that runs swarm-engine (`runs_swarm_engine`:
    the engine or `run-ticket` that started the VM and runs it; this process too, when it
    is one) makes them so, whatever a row says. A process between two of `pids` is the
    VM's own (a command can name itself anything): not looked at. What cannot be judged
    counts as live (fail closed): an ancestor gone while read, a parent outside this pid
    namespace (ppid 0 below init), more than `ANCESTRY_LIMIT` processes. A process gone
    before it is read is no one's work. Each process is read at most once."""
    tagged_here = set(pids)
    judged: dict[int, str | None] = {1: None, 0: None}
    looked = 0
    for start in pids:
        pid = _ppid(start)
        if pid is None:
            continue  # gone already: nothing of it to kill
        chain: list[int] = []
        verdict: str | None = None
        while pid not in judged and pid not in tagged_here:  # a tagged one: its own walk
            looked += 1
            if looked > ANCESTRY_LIMIT:
                verdict = f"more than {ANCESTRY_LIMIT} processes above them: not judged"
                break
            chain.append(pid)
            if runs_swarm_engine(pid):
                verdict = f"its processes are the live work of engine process {pid}"
                break
            parent = _ppid(pid)
            if parent is None:
                verdict = f"the parent of process {pid} could not be read"
                break
            if parent == 0:
                verdict = f"process {pid} has a parent outside this pid namespace"
                break
            pid = parent
        else:
            verdict = judged.get(pid)
        for seen in chain:
            judged[seen] = verdict
        if verdict is not None:
            return verdict
    return None


def started_at(pid: int) -> float | None:
    """When process `pid` started (epoch seconds, to the kernel's clock tick; the boot
    time it counts from is whole seconds), or None if it cannot be read."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, IndexError, ValueError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")

"""Run one command under a child subreaper, so that nothing it starts can outlive it.

A standalone script (standard library only), run by the process backend around every
command when there is no PID namespace (isolation "none"):

    python -I -S subreaper.py PARENT_PID ENV_FD -- ARGV...

ENV_FD is a file (a memory file the engine wrote) of the command's environment, as
NUL-terminated `NAME=value` strings: the command gets exactly that, while this script runs
with the engine's fixed host environment (`vm/sandbox_env.py`), never the command's.

1. It marks itself a child subreaper (`prctl(PR_SET_CHILD_SUBREAPER)`): every process the
   command starts and then orphans (a background job, a double fork, `setsid`, `env -i`,
   `nohup`) is re-parented to it rather than to init, so it stays a descendant that can be
   found and killed, whatever its session, process group or environment.
2. It asks for SIGTERM when its parent (the engine) dies (`PR_SET_PDEATHSIG`).
3. It starts the command and reaps every child until the command's own process exits.
4. Then it SIGKILLs every descendant that is left, again and again until it has no child,
   and exits with the command's status (`128 + N` when signal N ended the command). So a
   background job that holds stdout open cannot keep the command's pipes open.

SIGTERM, SIGINT or SIGHUP (or the parent dying) go to step 4 at once, then exit 128 + N.
Exit 125: it could not become a subreaper (the message is on stderr). Exit 127/126: the
command was not found / could not be run, as a shell reports it.
"""

from __future__ import annotations

# Lean imports: this starts before every command. `_signal` is what `signal` wraps (that
# one imports enum), and no contextlib (collections, functools): ~7 ms less per command.
import ctypes
import os
import sys

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing costs ~5 ms
if TYPE_CHECKING:
    import signal
else:
    import _signal as signal

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Python ignores these at start; a command must get the default disposition back.
RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_stop(signum: int, _frame: object) -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise _Stop(signum)


def descendants(root: int) -> list[int]:
    """Pids below `root` in the process tree (a /proc scan)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: split after the last ')'
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def sweep() -> None:
    """SIGKILL every descendant and reap them all; returns once no child is left."""
    me = os.getpid()
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0]:
                continue  # reaped one that had ended
        except ChildProcessError:
            return  # no child left (the usual case: no /proc scan at all)
        for pid in descendants(me):
            try:  # noqa: SIM105 - no contextlib (import time)
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            os.waitpid(-1, 0)  # one child gone; its own children are ours now: scan again
        except ChildProcessError:
            return


def read_env(fd: int) -> dict[bytes, bytes]:
    """The environment in file `fd` (NUL-terminated `NAME=value` strings), read to its end;
    `fd` is closed, so the command does not inherit it."""
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    env = {}
    for item in b"".join(chunks).split(b"\0")[:-1]:
        name, sep, value = item.partition(b"=")
        if not name or not sep:
            raise ValueError(f"not NAME=value: {item[:40]!r}")
        env[name] = value
    return env


def exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def main(argv: list[str]) -> int:
    if len(argv) < 5 or argv[3] != "--":
        sys.stderr.write("usage: subreaper.py PARENT_PID ENV_FD -- COMMAND [ARG...]\n")
        return 125
    parent, command = int(argv[1]), argv[4:]
    try:
        env = read_env(int(argv[2]))
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"subreaper: cannot read the command's environment: {exc}\n")
        return 125
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.stderr.write(f"subreaper: prctl: {os.strerror(ctypes.get_errno())}\n")
        return 125
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_stop)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    try:
        if os.getppid() != parent:  # the parent died before PDEATHSIG was set
            return 128 + signal.SIGTERM
        try:
            child = os.posix_spawnp(
                command[0], command, env, setsigdef=RESET_SIGNALS + STOP_SIGNALS
            )
        except OSError as exc:
            sys.stderr.write(f"{command[0]}: {exc.strerror}\n")
            return 127 if isinstance(exc, FileNotFoundError) else 126
        while True:
            pid, status = os.waitpid(-1, 0)
            if pid == child:
                break
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        sweep()
        return exit_code(status)
    except _Stop as stop:
        sweep()
        return 128 + stop.signum


if __name__ == "__main__":
    sys.exit(main(sys.argv))

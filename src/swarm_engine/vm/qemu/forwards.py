"""The relay processes of a VM's allowed ports, seen from the engine: the command QEMU
runs for each guest connection (vm/qemu/relay.py) and how the engine finds and stops the
ones a VM left.

QEMU starts each relay in a session of its own (libslirp's `setsid`), through a double
fork: neither killing QEMU's process group nor its death reaches them. A relay ends by
itself once QEMU's end of its connection closes; `destroy`, `reap` and `cleanup` kill
any left all the same, found by the VM folder named in their command line.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from swarm_engine.vm.qemu.folders import is_vm_folder, read_pid

MAX_FORWARDED_CONNECTIONS = 16
"""Per VM, all its allowed ports together: at most this many guest connections are relayed
at once (one host process each); a connection past it is closed at once (docs/qemu.md)."""
RELAY = Path(__file__).with_name("relay.py")
"""Relays one guest connection to an allowed port of the host's loopback (vm/qemu/relay.py)."""
LOCK_FILE = "relays.lock"
"""In a VM's folder: the file whose byte locks are the relays' slots (relay.py)."""


def relay_command(port: int, folder: Path) -> str:
    """The `cmd:` of a `guestfwd`: QEMU splits it as a shell would (no shell runs) and the
    whole netdev option is comma-separated, so a comma is doubled."""
    words = [sys.executable, "-I", "-S", str(RELAY), str(int(port)), str(folder)]
    words.append(str(MAX_FORWARDED_CONNECTIONS))
    return " ".join(shlex.quote(w) for w in words).replace(",", ",,")


def relays_under(run_dir: Path) -> dict[Path, list[int]]:
    """The running relays of the VMs whose folders are (or were) directly in `run_dir`,
    by folder. A `/proc` scan: for a worker thread."""
    parent = str(run_dir)
    found: dict[Path, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            continue
        if len(argv) != 7 or argv[1:3] != [b"-I", b"-S"] or not argv[3].endswith(b"/relay.py"):
            continue  # (any install's relay.py: an engine's upgrade leaves none behind)
        folder = Path(os.fsdecode(argv[5]))
        if str(folder.parent) == parent and folder.name:
            found.setdefault(folder, []).append(int(entry))
    return found


def relays_of(folder: Path) -> list[int]:
    """The running relays of the VM whose folder is `folder` (deleted or not)."""
    return relays_under(folder.parent).get(folder, [])


def kill_relays(pids: list[int]) -> None:
    """SIGKILL each (not our children: nothing to reap)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def stop_strays(run_dir: Path, is_our_qemu: Callable[[int, str | None], bool]) -> list[int]:
    """Kill the relays of the VMs of `run_dir` that are gone: their folder deleted (or no
    longer of a VM folder's shape), or its QEMU no longer running (`is_our_qemu`, from
    machine.py, which imports this module). A live VM's are left alone (its folder and
    QEMU are there for as long as they may run). The pids killed."""
    killed: list[int] = []
    for folder, pids in relays_under(run_dir).items():
        if is_vm_folder(folder):
            qemu = read_pid(folder / "qemu.pid")
            if qemu is not None and is_our_qemu(qemu, _named_socket(folder)):
                continue
        kill_relays(pids)
        killed += pids
    return killed


def _named_socket(folder: Path) -> str | None:
    try:
        return (folder / "socket").read_text().strip() or None
    except OSError:
        return None

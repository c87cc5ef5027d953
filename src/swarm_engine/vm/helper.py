"""A VM's helper processes on the host (pasta, for a sandbox's ports): each one the
engine's own child from its fork, tracked from then on, in the foreground (never a daemon
found afterwards by a pid file), killed by the kernel when the engine's thread that
started it ends (`setpriv --pdeathsig`), and stopped and reaped with the command or the VM it serves
(`stop_helpers`). Each carries its VM's tags, so that `cleanup` finds one a killed
engine left (`vm_helpers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path

from swarm_engine.vm.base import is_plain_name
from swarm_engine.vm.proctree import VM_TAG

FOLDER_TAG = "SWARM_VM_FOLDER"
"""A helper's environment names its VM's folder too: the VM id alone may be another
home's VM of the same id, and a destroyed VM has no folder left to tell them apart."""


class Helper:
    """A helper process of VM `vm_id` (whose folder is `folder`), started at once through
    `setpriv` (the host's program): the fork and this object come in one step of the
    event loop, with nothing awaited between them, so whoever holds it can always stop
    it."""

    def __init__(
        self,
        vm_id: str,
        folder: Path,
        argv: Sequence[str],
        *,
        setpriv: str,
        env: Mapping[str, str],
        pass_fds: Sequence[int],
        stderr: int,
        prefix: Sequence[str] = (),
    ) -> None:
        # a SIGKILLed engine leaves it running no longer: the kernel kills it then (set by
        # `setpriv` in the forked child, kept across the exec; no Python runs in the child);
        # `prefix` execs it in turn (the VM's memory cgroup joined: vm/memcap.py)
        self._proc = subprocess.Popen(
            [*prefix, setpriv, "--pdeathsig", "KILL", "--", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**env, VM_TAG: vm_id, FOLDER_TAG: str(folder)},
            pass_fds=tuple(pass_fds),
            start_new_session=True,
        )
        self.pid = self._proc.pid
        self._exited: asyncio.Future[None] | None = None

    @property
    def returncode(self) -> int | None:
        """Its exit status once it has been reaped (`exited`), else None."""
        return self._proc.returncode

    def kill(self) -> None:
        """SIGKILL it, unless already reaped (its pid is not reused before that)."""
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                self._proc.kill()

    def exited(self) -> asyncio.Future[None]:
        """Done once it has exited and been reaped (its pidfd is readable: no thread, no
        poll). One future per helper, shared by every waiter."""
        if self._exited is None:
            loop = asyncio.get_running_loop()
            self._exited = loop.create_future()
            if self._proc.returncode is not None:  # reaped already (a kill polls first)
                self._exited.set_result(None)
            else:  # not reaped: its pid is still its own (alive, or a zombie)
                try:
                    pidfd = os.pidfd_open(self.pid)
                except OSError:  # out of file descriptors: a worker thread waits for it
                    waited = loop.run_in_executor(None, self._proc.wait)
                    waited.add_done_callback(lambda _: self._done())
                else:
                    loop.add_reader(pidfd, self._reap, pidfd)
        return self._exited

    def _reap(self, pidfd: int) -> None:
        asyncio.get_running_loop().remove_reader(pidfd)
        os.close(pidfd)
        with contextlib.suppress(ChildProcessError):
            self._proc.wait()  # exited: at once
        self._done()

    def _done(self) -> None:
        assert self._exited is not None
        if not self._exited.done():
            self._exited.set_result(None)


async def stop_helpers(helpers: Iterable[Helper]) -> None:
    """SIGKILL each helper and wait until each is reaped, whatever cancel comes meanwhile
    (a cancel is raised once they are gone)."""
    stopping = list(helpers)
    for helper in stopping:
        helper.kill()
    cancelled = False
    for helper in stopping:
        done = helper.exited()
        while not done.done():
            try:
                await asyncio.wait([done])
            except asyncio.CancelledError:
                cancelled = True
    if cancelled:
        raise asyncio.CancelledError


def vm_helpers(folder: Path) -> list[int]:
    """Host pids of the helper processes of the VM whose folder is `folder`, its folder
    deleted or not (`helpers_under`). A `/proc` scan: for a worker thread."""
    return helpers_under(folder.parent).get(folder.name, [])


def helpers_under(root: Path) -> dict[str, list[int]]:
    """The helper processes of every VM whose folder is (or was) directly in `root`, by
    VM id: those tagged with the VM's id and folder, and the daemonized pasta of engines
    before these tags (tagged with the id, its pid file in `<root>/<id>/run/`). A `/proc`
    scan: for a worker thread."""
    folder_tag, id_tag = f"{FOLDER_TAG}={root}/".encode(), f"{VM_TAG}=".encode()
    found: dict[str, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ids = {item[len(id_tag) :] for item in environ if item.startswith(id_tag)}
        if len(ids) != 1:
            continue
        vm_id = ids.pop()
        if folder_tag + vm_id not in environ and not _old_pasta(int(entry), root, vm_id):
            continue
        name = vm_id.decode(errors="replace")
        if is_plain_name(name):
            found.setdefault(name, []).append(int(entry))
    return found


def _old_pasta(pid: int, root: Path, vm_id: bytes) -> bool:
    """Whether process `pid` is a pasta that an engine before `FOLDER_TAG` started for VM
    `vm_id` of `root` (its pid file there, `--pid <root>/<id>/run/pasta.pid`)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    pidfile = f"{root}/".encode() + vm_id + b"/run/pasta.pid"
    return any(a == b"--pid" and b == pidfile for a, b in pairwise(argv))

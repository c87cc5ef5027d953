"""The process sandbox: the embedded default backend.

Each VM is a workspace folder and a memory cgroup of `memory_mb` (`vm/memcap.py`, unless
`memory_cap = "rlimit"`); each command runs as a fresh process tree in its own session, in
that cgroup, with an environment built from scratch and resource limits (`prlimit`). By
default the tree runs under bubblewrap: its own user, pid, network, IPC, UTS and mount
namespaces, an unprivileged uid with every capability dropped, the system's read-only
/usr, a size-capped private /tmp and its workspace at /workspace, nothing else; no network
unless the agent declares ports (then pasta forwards exactly those to the host's
loopback). Where bubblewrap does not work, steps are refused (fail closed), unless the
host sets `isolation = "none"`: then commands run in the workspace folder directly (`vm
doctor` says so), under a child subreaper (`vm/subreaper.py`).

Either way a command is over when its own process exits, and what it left running dies
then (the PID namespace ends, or the subreaper kills it): a background job holding stdout
does not hold the command. Output is captured bounded (`vm/output.py`).

This module is the backend (it boots and reaps VMs); a VM, its commands and its files,
is `vm/process_vm.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from swarm_engine.errors import ConfigError, VMError
from swarm_engine.models import first_error
from swarm_engine.osthreads import executor
from swarm_engine.vm.base import OrphanRecord, VMSpec, is_plain_name
from swarm_engine.vm.bwrap import (
    HOST_UID_BASE,
    HOST_UID_SPAN,
    SHORTAGES,
    disables_userns,
    others_can_reach,
    root_engine,
)
from swarm_engine.vm.bwrap import HOW_TO_FIX as HOW_TO_FIX  # re-exported
from swarm_engine.vm.bwrap import bwrap_problem as bwrap_problem  # re-exported
from swarm_engine.vm.bwrap import bwrap_works as bwrap_works  # re-exported
from swarm_engine.vm.diskcap import DiskCapError, Template, how_to_fix
from swarm_engine.vm.helper import vm_helpers
from swarm_engine.vm.hostlimits import can_raise_limits, hard_limit_problem
from swarm_engine.vm.memcap import Groups, MemCapError, VMGroup, sweep
from swarm_engine.vm.memcap import how_to_fix as memory_fix
from swarm_engine.vm.owner import engine_owner, write_owner
from swarm_engine.vm.pasta import pasta_problem as pasta_problem  # re-exported
from swarm_engine.vm.process_config import ProcessConfig as ProcessConfig  # re-exported
from swarm_engine.vm.process_vm import ProcessVM as ProcessVM  # re-exported
from swarm_engine.vm.proctree import kill_tagged, kill_tree, live_work, tagged
from swarm_engine.vm.settled import settled
from swarm_engine.vm.shortage import patiently
from swarm_engine.vm.spares import Spares
from swarm_engine.vm.workspace import prepare_folder, remove_folder, workspace_for

log = logging.getLogger(__name__)

COMMAND_THREADS = 1024
"""At most this many commands run on worker threads at once (threads are made as needed);
a command with ports or streamed output runs on the event loop instead (`exec`)."""


class ProcessBackend:
    name = "process"

    def __init__(self, home: Path, config: ProcessConfig) -> None:
        self.root = home / "vms"
        self.config = config
        self._problem: str | None = None
        self._probed = False
        self._no_userns = False
        self._uids: set[int] = set()
        self._threads: ThreadPoolExecutor | None = None
        self._real_root: str | None = None
        """`root` with its symlinks resolved, once (its VM folders are the engine's own)."""
        self._image: Template | None = None
        """Each workspace's filesystem as it starts (`disk_cap = "mount"`), made once."""
        self._cap_problem: DiskCapError | None = None
        """Why the workspace cannot be capped here (`disk_cap = "mount"`), once known."""
        self._groups: Groups | None = None
        """Its VMs' memory cgroups' folder (`memory_cap = "cgroup"`), made once."""
        self._memory_problem: str | None = None
        """Why a VM's memory cannot be capped here (`memory_cap = "cgroup"`), once known."""
        self._probing = threading.Lock()
        self._spares: Spares | None = None
        """Emptied workspaces kept mounted for the next VMs (`vm/spares.py`)."""

    def _probe(self) -> None:
        with self._probing:  # once (two boots may ask at once, each on a thread)
            self._probe_once()

    def _probe_once(self) -> None:
        if not self._probed:
            self._real_root = os.path.realpath(self.root)
            if self.config.isolation != "none":
                self._problem = bwrap_problem()
                self._no_userns = self._problem is None and disables_userns()
            if self.config.disk_cap == "mount":
                try:
                    self._image = Template.build(
                        self.config.disk_mb, self.config.max_files, self.root
                    )
                    if self.config.isolation != "none":
                        self._spares = Spares(self.root, self._image)
                except DiskCapError as exc:
                    self._cap_problem = exc
            if self.config.memory_cap == "cgroup":
                for name in sweep():  # the folders of engines now gone (vm/memcap.py)
                    log.info("removed the memory cgroups of a gone engine: %s", name)
                try:
                    self._groups = Groups.make()
                except MemCapError as exc:
                    self._memory_problem = str(exc)
            self._probed = True

    @property
    def isolated(self) -> bool:
        """True when commands run under bubblewrap; False only with `isolation = "none"`.
        Raises `VMError` (why, and how to fix it) when bubblewrap does not work here."""
        if self.config.isolation == "none":
            return False
        self._probe()
        if self._problem is not None:
            raise VMError(f"process sandbox refused: {self._problem}; {HOW_TO_FIX}")
        return True

    @property
    def image(self) -> Template | None:
        """Each workspace's filesystem (`disk_cap = "mount"`), None when measured. Raises
        `VMError` (why, and how to fix it) when the cap cannot be had here."""
        if self.config.disk_cap == "measured":
            return None
        self._probe()
        if self._cap_problem is not None:
            raise VMError(
                f"process sandbox refused: the workspace cannot be capped at disk_mb: "
                f"{self._cap_problem}; {how_to_fix(self._cap_problem)}"
            )
        return self._image

    @property
    def groups(self) -> Groups | None:
        """Its VMs' memory cgroups (`memory_cap = "cgroup"`), None with "rlimit". Raises
        `VMError` (why, and how to fix it) when no memory cgroup can be had here."""
        if self.config.memory_cap == "rlimit":
            return None
        self._probe()
        if self._memory_problem is not None:
            raise VMError(
                f"process sandbox refused: the VM's memory cannot be capped at memory_mb: "
                f"{self._memory_problem}; {memory_fix()}"
            )
        return self._groups

    async def start(self) -> None:
        # probe bubblewrap and the disk cap once, before the first step needs them; a
        # failure is reported by every boot (the step is refused), not here
        with contextlib.suppress(VMError):  # a shortage now: the first boot checks again
            await asyncio.to_thread(self._probe)

    async def boot(self, vm_id: str, spec: VMSpec) -> ProcessVM:
        if not self._probed:
            await asyncio.to_thread(self._probe)
        isolated = self.isolated
        image = self.image
        groups = self.groups
        if isolated and spec.network and spec.allowed_ports:
            problem = pasta_problem()
            if problem:
                raise VMError(
                    f"process sandbox refused: the agent asks for network ports "
                    f"{', '.join(map(str, spec.allowed_ports))}, but {problem}"
                )
        if isolated or not can_raise_limits():  # then prlimit cannot raise a hard limit
            problem = hard_limit_problem(spec)
            if problem:
                raise VMError(f"process sandbox refused: {problem}")
        folder = self.root / vm_id
        host_uid = self._new_uid() if isolated and root_engine() else None
        made = False
        reachable = False
        memory: VMGroup | None = None
        limit_mb = spec.memory_mb + (2 * self.config.tmp_mb if isolated else 0)

        spares = self._spares if isolated and image is not None else None

        def prepare() -> None:
            nonlocal made, reachable, memory
            if groups is not None:  # its memory cgroup first: a shortage leaves nothing
                try:
                    memory = groups.create(vm_id, limit_mb)
                except OSError as exc:
                    if exc.errno in SHORTAGES:  # waited out (vm/shortage.py)
                        raise
                    raise VMError(
                        f"cannot make the VM's memory cgroup of memory_mb: {exc.strerror}"
                    ) from exc
            try:
                if spares is not None and spares.take(folder):
                    made = True  # an emptied workspace, its filesystem mounted (vm/spares.py)
                    workspace_for(folder / "workspace", host_uid)
                else:
                    prepare_folder(folder, isolated, host_uid, image)
            except BaseException:
                if memory is not None:
                    memory.remove()
                    memory = None
                raise
            made = True
            write_owner(folder, as_file=False)  # whose it is, for a reaper (`reap`)
            if host_uid is not None:  # each VM anew: a folder's mode may change meanwhile
                reachable = others_can_reach(os.path.realpath(folder))

        try:  # file work off the event loop: on a busy ext4 a mkdir can take milliseconds
            await patiently(  # a shortage (of memory) is waited out: vm/shortage.py
                lambda: settled(prepare),  # a cancel waits for it to end (vm/settled.py)
                deadline=time.monotonic() + spec.timeout_seconds,
                doing=f"create workspace for {vm_id}", vm_id=vm_id,
            )  # fmt: skip
        except BaseException:
            try:  # a cancel that came as the folder was made: the folder goes again
                if made:
                    await self._unmake(folder, vm_id)
                if memory is not None:
                    await settled(memory.remove, drop=False)
            finally:
                if host_uid is not None:
                    self._uids.discard(host_uid)
            raise
        if self._threads is None:
            self._threads = executor(COMMAND_THREADS, "vm-command")
        real = (
            None if self._real_root is None else os.path.join(self._real_root, vm_id, "workspace")
        )
        return ProcessVM(
            vm_id, folder, spec, isolated=isolated, host_uid=host_uid, config=self.config,
            no_userns=self._no_userns, release=self._uids.discard, threads=self._threads,
            real_workspace=real, reachable=reachable, capped=image is not None, memory=memory,
            fresh=None if image is None else image.fresh,
            retire=remove_folder if spares is None else spares.retire,
        )  # fmt: skip

    async def _unmake(self, folder: Path, vm_id: str) -> None:
        """Delete the folder of a VM whose boot was cut short once it was made (to the end,
        whatever cancel comes meanwhile)."""
        left = await settled(remove_folder, folder, drop=False)
        if left is not None:  # `cleanup` deletes it later
            log.warning("VM %s: boot cancelled: %s", vm_id, left, extra={"vm_id": vm_id})

    def _new_uid(self) -> int:
        while True:
            uid = HOST_UID_BASE + secrets.randbelow(HOST_UID_SPAN)
            if uid not in self._uids:
                self._uids.add(uid)
                return uid

    def reap(self, record: OrphanRecord) -> None:
        """Kill what carries the VM's tag and delete its folder, unless it is a running
        engine's (raises `VMError`, one line): its folder's `owner.pid` names one
        (`engine_owner`), or its processes are one's live work (`live_work`). A row says
        whose VM it is, but any writer may have made it say so."""
        if not is_plain_name(record.id):  # `vms.id` is any writer's: never a path
            raise VMError(f"not a VM id: {record.id!r}")
        folder = self.root / record.id
        if not folder.is_dir():  # its helpers alone may be left (a destroy cut short)
            self._stop_helpers(folder)
            return  # nothing else is known to be this home's VM's (see `fence`)
        why = engine_owner(folder)  # between its commands, no process of it runs
        pids = tagged(record.id)
        why = why or live_work(pids)
        if why is not None:
            raise VMError(f"left as it is: {why}")
        for pid in pids:
            kill_tree(pid)
        remove_folder(folder)  # (its filesystem unmounted; what is left, `cleanup` retries)

    def _stop_helpers(self, folder: Path) -> None:
        """Kill the helper processes (pasta) of the VM whose folder was `folder`, found by
        their tags (`vm_helpers`), unless a running engine's live work (`VMError`)."""
        pids = vm_helpers(folder)
        why = live_work(pids) if pids else None
        if why is not None:
            raise VMError(f"left as it is: {why}")
        for pid in pids:
            kill_tree(pid)

    def fence(self, record: OrphanRecord) -> int | None:
        if not is_plain_name(record.id):  # `vms.id` is any writer's: never a path
            raise VMError(f"not a VM id: {record.id!r}")
        if not (self.root / record.id).is_dir():  # not a VM of this home (its commands are
            return None  # tagged with the id alone: another home's VM of that id would die)
        return kill_tagged(record.id)  # what carries its tag, with everything it started

    async def close(self) -> None:
        if self._threads is not None:  # its VMs are destroyed: no command runs any more
            self._threads.shutdown(wait=False)
            self._threads = None
        if self._spares is not None:
            await asyncio.to_thread(self._spares.close)
            self._spares = None
        if self._image is not None:
            self._image.close()
            self._image = None
            self._probed = False
        if self._groups is not None:  # its VMs are destroyed: their cgroups are gone
            left = await asyncio.to_thread(self._groups.close)
            if left is not None:  # the next start's (or cleanup's) sweep removes it
                log.warning("%s", left)
            self._groups = None
            self._probed = False


def create(home: Path, options: dict[str, Any]) -> ProcessBackend:
    try:
        config = ProcessConfig(**options)
    except ValidationError as exc:
        raise ConfigError(f"process backend option {first_error(exc)}") from exc
    return ProcessBackend(home, config)

"""Cleaning up after engines that died: orphan VMs, dead engine rows, expired leases.

Host-scoped: an engine reaps only VMs recorded on its own host, because only there can
it tell whether the owner process is alive and reach the VM's processes and files. So is
the fence of an expired lease: the VMs of this host that a reclaimed attempt still runs
are stopped before its ticket is re-queued (`vm_fence`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarm_engine.engine.hostlock import engine_lock_held
from swarm_engine.errors import StoreBusyError, StoreError
from swarm_engine.package_folders import sweep
from swarm_engine.records import escaped_name
from swarm_engine.store import Store
from swarm_engine.store.engines import UNOWNED_RUN
from swarm_engine.store.tickets import Fence
from swarm_engine.vm.backends import BACKENDS, create_backend
from swarm_engine.vm.base import OrphanRecord, VMBackend, is_plain_name
from swarm_engine.vm.diskcap import SCRATCH_PREFIX, remove_scratch
from swarm_engine.vm.options import BackendOptions, as_mapping
from swarm_engine.vm.owner import engine_owner, owner_of
from swarm_engine.vm.proctree import kill_tree, live_work, pid_alive, tagged
from swarm_engine.vm.spares import is_spare
from swarm_engine.vm.workspace import remove_folder

log = logging.getLogger(__name__)


@dataclass
class ReapReport:
    vms: list[str] = field(default_factory=list)
    engines: list[str] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    helpers: list[int] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    """The memory cgroup folders of process backends whose engine is gone, removed
    (`vm/memcap.py`: those below this process's own memory cgroup)."""
    waiting: list[dict[str, Any]] = field(default_factory=list)
    """Engines of this host whose process is gone but that heartbeated within the lease:
    not reaped yet (`id`, `pid`, `reaped_in` seconds; `EngineStore.gone_unreaped`)."""
    runs: list[int] = field(default_factory=list)
    """Runs left `running` that no engine can close (`engine_id` NULL) and whose ticket
    is not held under their attempt, closed failed (`close_unowned_runs`)."""
    stuck: list[int] = field(default_factory=list)
    """Tickets whose lease ran out but whose re-queue the store refused (a trigger, a
    constraint): left as they are, each said once in a line of its own."""
    packages: list[str] = field(default_factory=list)
    """Old agent package copies no link names and no step reads any more, removed
    (`<name>/<copy>`; `package_folders.sweep`), and the staging folders of registrations
    killed while they copied (`.staging-*`, an older version's `tmp*`)."""


SHOWN_NAMES = 6
"""How many names a line of what was removed shows (`removed_line`); the rest counted."""


def removed_line(report: ReapReport) -> str:
    """One line naming the leftover folders `report` removed, as the engine's start logs
    it (`Daemon._run`; the `cleanup` command prints counts): `removed 3 leftover
    folder(s): warm-ab12, template-x.tmp, 7f3e`, the first `SHOWN_NAMES` of each kind
    and how many more; the memory cgroup folders after a `;`. "" when none was removed."""
    parts = []
    for names, what in ((report.folders, "leftover folder(s)"),
                        (report.cgroups, "leftover memory cgroup folder(s)")):  # fmt: skip
        if names:
            more = len(names) - SHOWN_NAMES
            shown_names = ", ".join(escaped_name(n) for n in names[:SHOWN_NAMES])
            shown_names += f" and {more} more" if more > 0 else ""
            parts.append(f"{len(names)} {what}: {shown_names}")
    return f"removed {'; '.join(parts)}" if parts else ""


SILENT_AFTER = 30.0
"""Seconds without a heartbeat after which an engine whose process is gone is dead (the
callers pass their `lease_ttl`)."""


GONE = ("destroyed", "failed")
"""The states of a VM row whose VM is gone (its folder and processes are leftovers)."""


def reap_engines(
    store: Store, host: str, report: ReapReport, silent_after: float = SILENT_AFTER
) -> None:
    """Record dead the engines of `host` whose process is gone and whose heartbeat is
    older than `silent_after` (`EngineStore.gone_from`: a row's pid alone is not
    trusted; an engine in another pid namespace has a pid this host does not show)."""
    for engine in store.engines.gone_from(host, pid_alive, silent_after):
        if _refused(store.engines.stopped, engine["id"], state="dead"):
            continue
        report.engines.append(engine["id"])


def _refused(write: Callable[..., object], row_id: object, *args: Any, **kwargs: Any) -> bool:
    """Write `row_id`'s change; True (one line logged) if the store refused it: a row any
    writer can make unchangeable (a trigger's RAISE, a constraint) is left as it is, and
    the others are cleaned up. A busy store is raised (the caller waits it out)."""
    try:
        write(row_id, *args, **kwargs)
    except StoreBusyError:
        raise
    except StoreError as exc:
        log.warning("row %r left as it is: the store refused to change it (%s)", row_id, exc)
        return True
    return False


def reap_vms(
    store: Store,
    home: Path,
    host: str,
    report: ReapReport,
    backend_options: Mapping[str, BackendOptions],
    silent_after: float = SILENT_AFTER,
) -> None:
    """Reap the VMs of `host` whose engine is gone: recorded stopped or dead, or with no
    heartbeating engine row and no live owner process. A VM of an engine that heartbeats
    is never reaped, whatever its row's pids say."""
    dead = store.engines.gone()
    beating = store.engines.heartbeating(silent_after)
    for vm in store.vms.live(host=host):
        engine = vm["engine_id"]
        unread = [d for d in vm.get("defects", []) if d.startswith(("id: ", "engine_id: "))]
        if unread:  # over its cap, not read (`vm_columns`): which VM, or whose, is not
            log.warning("VM row left as it is: %s", unread[0])  # known: nothing touched
            continue
        if isinstance(engine, str) and engine in beating:
            continue  # its engine lives (its pid may be another namespace's, or edited)
        if pid_alive(vm["owner_pid"]) and engine not in dead:
            continue
        if not is_plain_name(vm["id"]) or vm["backend"] not in BACKENDS:
            # a path, not an id, or no backend of ours: nothing on the host is touched
            log.warning("VM row %r is not a VM of a backend: recorded failed", vm["id"])
            _refused(
                store.vms.record_destroyed, vm["id"], "not a VM id: nothing reaped on the host"
            )
            continue
        record = OrphanRecord(
            id=vm["id"],
            pid=vm["pid"],
            workspace=vm["workspace"],
            socket_path=vm["socket_path"],
            overlay_path=vm["overlay_path"],
        )
        try:
            create_backend(vm["backend"], home, backend_options.get(vm["backend"])).reap(record)
        except Exception as exc:  # keep reaping the others; say what failed
            log.warning("could not reap VM %s: %s", vm["id"], exc)
            continue
        if not _refused(store.vms.record_destroyed, vm["id"], "reaped: owner engine is gone"):
            report.vms.append(vm["id"])


def reap_folders(store: Store, home: Path, report: ReapReport) -> None:
    """Delete VM folders whose VM is recorded as gone (e.g. destroy was interrupted)."""
    root = home / "vms"
    if not root.is_dir():
        return
    for folder in root.iterdir():
        row = store.vms.get(folder.name)
        if row is not None and row["state"] in GONE:
            left = remove_folder(folder)
            if left is None:
                report.folders.append(folder.name)
            else:  # counted only once it is gone; said every time until then
                log.warning("%s", left)


UNOWNED_GRACE = 600.0
"""Seconds a folder of `vms/` that names no owner is left alone (`reap_unrecorded`): its
owner is recorded right after the folder is made, so only an engine killed in between,
or of a version that did not record it, leaves one; this much later no engine is still
making it (sizing an image takes at most 8 mke2fs runs of 60 s)."""


def reap_unrecorded(
    store: Store, home: Path, report: ReapReport, *, clock: Callable[[], float] = time.time
) -> None:
    """Delete what an engine killed mid-way left in the home's `vms/` with no `vms` row to
    say whose it is: a VM folder whose boot never got (or lost) its row, its workspace
    perhaps still mounted, the disk cap's sizing folder (`swarm-diskcap-*`, an image
    perhaps mounted on its `mnt/`) and its spare workspaces (`.spare-*`, mounted). Only a dead engine's: never one whose recorded owner
    is a running engine (`engine_owner`, another pid namespace's included), nor a VM
    folder whose tagged processes are a running engine's live work (`live_work`); one
    naming no owner only once `UNOWNED_GRACE` old. Unmounted, then deleted; each one
    deleted is named in `report.folders`, one that is left is said in a line."""
    root = home / "vms"
    if not root.is_dir():
        return
    for folder in root.iterdir():
        name = folder.name
        scratch = name.startswith(SCRATCH_PREFIX)
        spare = is_spare(name)  # an emptied workspace kept mounted (vm/spares.py)
        if folder.is_symlink() or not folder.is_dir():
            continue
        if not (scratch or spare) and (not is_plain_name(name) or store.vms.get(name) is not None):
            continue  # a row says whose it is: `reap_vms` and `reap_folders` decide
        why = engine_owner(folder)
        if why is None and owner_of(folder)[0] is None:
            try:
                young = clock() - folder.lstat().st_mtime < UNOWNED_GRACE
            except OSError:
                continue  # gone meanwhile
            why = "it names no owner and is younger than the grace" if young else None
        pids = [] if scratch or spare else tagged(name)
        why = why or live_work(pids)
        if why is not None:
            log.debug("folder %s of vms/ left as it is: %s", name, why)
            continue
        for pid in pids:
            kill_tree(pid)
        if scratch:
            remove_scratch(folder)
            left = f"could not delete {folder}" if os.path.lexists(folder) else None
        else:
            left = remove_folder(folder)  # its workspace unmounted first
        if left is None:
            report.folders.append(name)
        else:  # counted only once it is gone; said every time until then
            log.warning("%s", left)


def reap_helpers(store: Store, home: Path, host: str, report: ReapReport) -> None:
    """Kill the helper processes (pasta) that VMs of this home recorded on `host` as
    gone (`destroyed`, `failed`) left running: an engine killed as it destroyed one, or
    an engine before helpers were tied to their VM (`vm/helper.py`). Found by their tags
    (`helpers_under`), their VM's folder deleted or not; a VM not recorded here, or still
    live (`reap_vms` reaps it with its engine), is left alone, and so is a helper that a
    running engine started (`live_work`). Each pid killed is named in `report.helpers`."""
    from swarm_engine.vm.helper import helpers_under

    for vm_id, pids in helpers_under(home / "vms").items():
        row = store.vms.get(vm_id)
        if row is None or row.get("host") != host or row.get("state") not in GONE:
            continue
        why = live_work(pids)
        if why is not None:
            log.warning("helpers of VM %s left as they are: %s", vm_id, why)
            continue
        for pid in pids:
            kill_tree(pid)
        report.helpers += pids


def reap_relays(
    home: Path, report: ReapReport, backend_options: Mapping[str, BackendOptions]
) -> None:
    """Kill the QEMU backend's port relays (vm/qemu/relay.py) whose VM is gone (its folder
    deleted, or its QEMU not running): each a process QEMU started in a session of its own
    for one guest connection, which a host server holding its connection open kept
    running. A live VM's relays are left alone. Each pid killed is named in
    `report.helpers`."""
    from swarm_engine.vm.qemu.backend import stop_leftover_relays

    try:
        report.helpers += stop_leftover_relays(home, as_mapping(backend_options.get("qemu")))
    except Exception as exc:  # the rest of the cleanup goes on; say what failed
        log.warning("could not stop the qemu backend's leftover port relays: %s", exc)


def reap_memory_groups(report: ReapReport) -> None:
    """Remove the memory cgroups (what runs in them killed) that process backends of
    engines now gone left below this process's memory cgroup (`vm/memcap.py`: `sweep`,
    which judges each by the pid and start time in its name)."""
    from swarm_engine.vm.memcap import sweep

    report.cgroups += sweep()


def reap_pool_folders(
    store: Store,
    home: Path,
    host: str,
    report: ReapReport,
    backend_options: Mapping[str, BackendOptions],
    store_target: str | Path,
) -> None:
    """Delete the QEMU backend's VM folders that engines now gone left and no `vms` row
    names: a warm pool's VMs, booted ahead and recorded only once handed out, which only
    the next engine's start removed (`QemuBackend.sweep`). Only while no engine of this
    host runs with this store (`store_target`): none recorded running (the dead ones were
    just recorded dead) and the engine lock free; even then a folder whose owner process
    lives is left alone. Each folder removed is named in `report.folders`."""
    if any(e["host"] == host for e in store.engines.running()):
        return
    if engine_lock_held(store_target, host):
        return
    from swarm_engine.vm.qemu.backend import sweep_leftovers

    try:
        report.folders += sweep_leftovers(home, as_mapping(backend_options.get("qemu")))
    except Exception as exc:  # the rest of the cleanup goes on; say what failed
        log.warning("could not sweep the qemu backend's VM folders: %s", exc)


def reap_qemu_leftovers(
    home: Path, report: ReapReport, backend_options: Mapping[str, BackendOptions]
) -> None:
    """An engine's start: delete what engines now gone left of the QEMU backend that no
    `vms` row names, as creating the backend does (`QemuBackend.sweep`), whatever other
    engines of this host run: a warm pool's VM folders and the unfinished template
    folders (`*.tmp`) of an engine killed while it saved one, each judged by its own
    recorded owner (a live one's, or another pid namespace's, is never touched). Before,
    they stayed until this engine first made its qemu backend, or the next template was
    saved. Each one removed is named in `report.folders`."""
    from swarm_engine.vm.qemu.backend import sweep_leftovers

    try:
        report.folders += sweep_leftovers(home, as_mapping(backend_options.get("qemu")))
    except Exception as exc:  # the rest of the cleanup goes on; say what failed
        log.warning("could not sweep the qemu backend's leftover folders: %s", exc)


def vm_fence(
    home: Path, host: str, backend_options: Mapping[str, BackendOptions] | None = None
) -> Fence:
    """The `Fence` of a reclaim on `host`: what the expired attempts' VMs of this host
    still run is stopped (`VMBackend.fence`) before their tickets are re-queued, so that
    a ticket never runs twice at once here, even when its old engine is frozen (alive,
    but not renewing its leases). A VM of another host cannot be reached from here: it is
    named in one line (a frozen host's VM runs on until that host resumes). A ticket whose
    VM could not be stopped is left as it is this round."""

    def fence(vms: list[dict[str, Any]]) -> dict[int, str]:
        backends: dict[str, VMBackend] = {}
        left: dict[int, str] = {}
        for vm in vms:
            ticket_id, vm_id = int(vm["ticket_id"]), vm["id"]
            if vm["host"] != host:
                log.warning(
                    "ticket %s: its lease ran out; its VM %r is on host %r, which alone can"
                    " stop it", ticket_id, vm_id, vm["host"],
                )  # fmt: skip
                continue
            name = vm["backend"]
            if not is_plain_name(vm_id) or name not in BACKENDS:
                continue  # no VM of a backend of ours: nothing of it runs on the host
            record = OrphanRecord(
                id=vm_id,
                pid=vm["pid"],
                workspace=vm["workspace"],
                socket_path=vm["socket_path"],
                overlay_path=vm["overlay_path"],
            )
            try:
                if name not in backends:
                    backends[name] = create_backend(name, home, (backend_options or {}).get(name))
                stopped = backends[name].fence(record)
            except Exception as exc:  # then that ticket does not run again this round
                left[ticket_id] = f"its VM {vm_id} on this host could not be stopped ({exc})"
                continue
            if stopped:
                log.warning(
                    "ticket %s: its lease ran out; stopped VM %s of engine %s (pid %s) on this"
                    " host before re-queuing it", ticket_id, vm_id, vm["engine_id"],
                    vm["owner_pid"],
                )  # fmt: skip
        return left

    return fence


def reclaim_expired(store: Store, report: ReapReport, fence: Fence | None = None) -> None:
    """Tickets whose lease expired: re-queue (or fail after max_attempts); close the run.
    `fence`: see `TicketStore.reclaim_expired` (`vm_fence`)."""
    for expired in store.tickets.reclaim_expired(fence):
        if expired.status == "stuck":  # the store refused to change it: left as it is
            log.warning("ticket %s: its lease ran out, but %s", expired.ticket_id, expired.error)
            report.stuck.append(expired.ticket_id)
            continue
        (report.requeued if expired.status == "open" else report.failed).append(expired.ticket_id)


def close_unowned_runs(store: Store, report: ReapReport) -> None:
    """Close, failed with one line, the runs left `running` that no engine can close
    (`engine_id` NULL: a row another writer made) and whose ticket is not held under
    their attempt (`EngineStore.close_unowned_runs`); a run of any engine is its
    engine's (or, once that is gone, `engine/orphans.py`'s) to close. A close the store
    refuses leaves them as they are, said in one line; a busy store is raised."""
    try:
        closed = store.engines.close_unowned_runs()
    except StoreBusyError:
        raise
    except StoreError as exc:
        log.warning(
            "runs that no engine holds left running: the store refused to close them (%s)", exc
        )
        return
    if closed:
        log.warning("runs %s closed failed: %s", closed, UNOWNED_RUN)
    report.runs += closed


def cleanup(
    store: Store,
    home: Path,
    host: str,
    backend_options: Mapping[str, BackendOptions] | None = None,
    *,
    store_target: str | Path | None = None,
    silent_after: float = SILENT_AFTER,
    packages_dir: Path | None = None,
    agent_registered: Callable[[str], bool] | None = None,
) -> ReapReport:
    """Reap this host's dead engines and orphan VMs and its leftover VM folders (those with
    no `vms` row too: `reap_unrecorded`), then
    reclaim expired leases (of any host: a dead host's tickets come back this way; what
    their VMs of this host still run is stopped first, `vm_fence`). With `store_target`
    (the store's path or URL, as the engine lock names it; the `cleanup` command's), the
    VM folders of gone engines' warm pools too, when no engine of this host runs
    (`reap_pool_folders`); without it (an engine's start) those and the unfinished
    template folders of engines gone, each by its recorded owner whatever else runs
    (`reap_qemu_leftovers`). An engine is
    dead when its process is gone and it has not heartbeated for `silent_after` s (the
    caller's `lease_ttl`). With `store_target`, nothing of this host is reaped while the
    kernel says this store's engine lock of this host is held (an engine runs, whatever
    the rows say: one line says so); expired leases are still reclaimed, and the runs no
    engine can close are closed (`close_unowned_runs`). With
    `packages_dir`, old agent package copies nobody reads any more are removed (whatever
    runs: a copy a step holds stays; a folder that cannot be swept is a warning line);
    with `agent_registered` too, an older version's staging folders a day old
    (`package_folders.LEGACY_STAGING_AGE`)."""
    report = ReapReport()
    if packages_dir is not None:
        try:
            report.packages = sweep(packages_dir, agent_registered)
        except OSError as exc:
            log.warning("old agent package copies in %s not removed: %s", packages_dir, exc)
    if store_target is not None and engine_lock_held(store_target, host):
        log.warning(
            "an engine holds this store's engine lock on this host: none of this host's"
            " engines, VMs or folders reaped (its engine cleans up after itself)"
        )
    else:
        reap_engines(store, host, report, silent_after)
        report.waiting = [
            {"id": e["id"], "pid": e["pid"], "reaped_in": e["reaped_in"]}
            for e in store.engines.gone_unreaped(host, pid_alive, silent_after)
        ]
        if store_target is not None:
            reap_pool_folders(store, home, host, report, backend_options or {}, store_target)
        else:  # an engine's start: what the gone left, each folder judged by its owner
            reap_qemu_leftovers(home, report, backend_options or {})
        reap_vms(store, home, host, report, backend_options or {}, silent_after)
        reap_folders(store, home, report)
        reap_unrecorded(store, home, report)
        reap_helpers(store, home, host, report)
        reap_relays(home, report, backend_options or {})
        reap_memory_groups(report)
    reclaim_expired(store, report, vm_fence(home, host, backend_options))
    close_unowned_runs(store, report)
    return report

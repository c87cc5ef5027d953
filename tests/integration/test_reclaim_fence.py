"""Reclaiming an expired lease stops what its VMs of this host still run first (a frozen
engine's sandboxes), on both stores: only the VMs busy with a step of the expired
attempt and booted by its holder, only processes provably theirs, before any change."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Target
from tests.support.cli import query, sqlite_shell, wait_until

from swarm_engine.engine.reaper import cleanup, vm_fence
from swarm_engine.store import Store, open_store
from swarm_engine.store.tickets import FENCED_VMS
from swarm_engine.vm.proctree import pid_alive

HOST = "this-host"


def running_step(store: Store, ticket_id: int, engine: str, vm_id: str, host: str = HOST) -> int:
    """Claim `ticket_id` for `engine` and start its run's step in VM `vm_id` (of `host`),
    as an engine records it; returns the step's row id."""
    ticket = store.tickets.claim(
        ticket_id, engine_id=engine, attempt_id=uuid.uuid4().hex, lease_ttl=30
    )
    run_id = store.runs.start_run(
        ticket, engine_id=engine, workflow_name=None, workflow_version=None, inputs={}
    )
    exec_id = store.runs.add_step(
        run_id, step_id="main", agent_name="s", agent_version="1", agent_kind="shell", inputs={}
    )
    store.vms.record_boot(
        vm_id, backend="process", host=host, engine_id=engine, owner_pid=os.getpid(),
        memory_mb=512, vcpus=1,
    )  # fmt: skip
    store.vms.record_ready(vm_id, pid=None, workspace=None, socket_path=None, overlay_path=None)
    store.vms.record_busy(vm_id, exec_id)
    store.runs.step_started(exec_id, vm_id)
    return exec_id


def sandbox(home: Path, vm_id: str, *, folder: bool = True) -> subprocess.Popen[bytes]:
    """A process tagged as VM `vm_id`'s (as the process backend tags its commands), with
    the VM's folder in `home` unless `folder` is False (then: another home's VM)."""
    if folder:
        (home / "vms" / vm_id / "workspace").mkdir(parents=True)
    return subprocess.Popen(["sleep", "300"], env={"PATH": "/usr/bin:/bin", "SWARM_VM_ID": vm_id})


@pytest.fixture
def procs() -> Any:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()


def test_the_fence_gets_the_expired_attempts_vms_before_anything_changes(
    store_target: Target,
) -> None:
    store = open_store(store_target.target)
    for engine in ("frozen", "alive"):
        store.engines.register(
            engine, kind="daemon", host=HOST, pid=1, max_vms=2, backend="process"
        )
    expired, kept, refused = (store.tickets.create(title=t, agent_id="s") for t in "ekr")
    step = running_step(store, expired, "frozen", "vm-expired")
    running_step(store, kept, "alive", "vm-kept")
    running_step(store, refused, "frozen", "vm-refused")
    # a VM of another engine that claims to be busy with the expired step: not its holder's
    store.vms.record_boot(
        "vm-other", backend="process", host=HOST, engine_id="alive", owner_pid=1,
        memory_mb=512, vcpus=1,
    )  # fmt: skip
    store.vms.record_busy("vm-other", step)
    store_target.sql(
        "UPDATE tickets SET lease_expires_at = '2000-01-01T00:00:00Z'"
        f" WHERE id IN ({expired}, {refused})"
    )
    seen: list[tuple[str, int, str]] = []

    def fence(vms: list[dict[str, Any]]) -> dict[int, str]:
        for vm in vms:  # called before the reclaim changes anything
            status = store.tickets.get(int(vm["ticket_id"])).status
            seen.append((vm["id"], int(vm["ticket_id"]), status))
        return {refused: "its VM vm-refused could not be stopped"}

    got = {e.ticket_id: e for e in store.tickets.reclaim_expired(fence)}
    assert sorted(seen) == [("vm-expired", expired, "running"), ("vm-refused", refused, "running")]
    assert got[expired].status == "open"
    assert got[refused].status == "stuck" and "vm-refused" in str(got[refused].error)
    assert kept not in got
    assert [store.tickets.get(t).status for t in (expired, kept, refused)] == [
        "open", "running", "running",
    ]  # fmt: skip
    store.close()


def test_cleanup_stops_the_sandbox_of_an_expired_lease_and_nothing_else(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    store = open_store(home / "tickets.db")
    store.engines.register(
        "frozen", kind="daemon", host=HOST, pid=os.getpid(), max_vms=3, backend="process"
    )  # (its process lives: `cleanup` reaps nothing of it, only the leases are fenced)
    mine, elsewhere, foreign = (store.tickets.create(title=t, agent_id="s") for t in "mef")
    running_step(store, mine, "frozen", "vm-mine")
    running_step(store, elsewhere, "frozen", "vm-far", host="other-host")
    running_step(store, foreign, "frozen", "vm-foreign")
    ours = sandbox(home, "vm-mine")
    same_id_elsewhere = sandbox(home, "vm-far", folder=False)  # a process of another host's?
    no_folder = sandbox(home, "vm-foreign", folder=False)  # another home's VM of that id
    procs += [ours, same_id_elsewhere, no_folder]
    wait_until(lambda: all(pid_alive(p.pid) for p in procs), 10, "the sandboxes to start")
    sqlite_shell(home / "tickets.db", "UPDATE tickets SET lease_expires_at = '2000-01-01'")
    report = cleanup(store, home, HOST)
    assert sorted(report.requeued) == [mine, elsewhere, foreign]
    assert ours.wait(timeout=10) is not None  # killed (a signal's delivery takes a moment)
    assert pid_alive(same_id_elsewhere.pid) and pid_alive(no_folder.pid)
    assert "stopped VM vm-mine" in caplog.text
    assert "'vm-far' is on host 'other-host', which alone can stop it" in caplog.text
    assert (home / "vms" / "vm-mine").is_dir()  # its folder is its owner's to delete
    store.close()


def test_a_vm_that_cannot_be_looked_for_keeps_its_ticket_from_running_again(
    tmp_path: Path,
) -> None:
    """Fail closed: a ticket whose VM of this host could not be stopped is not re-queued."""
    home = tmp_path / "home"
    store = open_store(home / "tickets.db")
    store.engines.register(
        "frozen", kind="daemon", host=HOST, pid=os.getpid(), max_vms=1, backend="process"
    )
    ticket = store.tickets.create(title="t", agent_id="s")
    running_step(store, ticket, "frozen", "vm-x")
    sqlite_shell(home / "tickets.db", "UPDATE tickets SET lease_expires_at = '2000-01-01'")
    options = {"process": {"isolation": "sideways"}}  # a backend that cannot be made
    (got,) = store.tickets.reclaim_expired(vm_fence(home, HOST, options))  # type: ignore[arg-type]
    assert got.status == "stuck" and "its VM vm-x on this host could not be stopped" in str(
        got.error
    )
    assert store.tickets.get(ticket).status == "running"
    store.close()


def test_more_vms_than_one_round_fences_leave_their_tickets_for_later(tmp_path: Path) -> None:
    """Bounded: at most FENCED_VMS VMs are fenced per round, a ticket's all at once; the
    tickets past the cut wait (a ticket with more VMs than that, which only a hostile
    writer makes, is never re-queued while they may run)."""
    db = tmp_path / "tickets.db"
    store = open_store(db)
    store.engines.register("e", kind="daemon", host=HOST, pid=1, max_vms=1, backend="process")
    few, many = (store.tickets.create(title=t, agent_id="s") for t in "fm")
    running_step(store, few, "e", "vm-few")
    exec_id = running_step(store, many, "e", "vm-many-0")
    (step,) = query(db, "SELECT run_id FROM step_executions WHERE id = ?", exec_id)
    run_id = step["run_id"]
    sqlite_shell(
        db,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < "
        f"{FENCED_VMS}) "
        "INSERT INTO vms (id, backend, host, engine_id, owner_pid, state) "
        f"SELECT 'vm-many-' || i, 'process', '{HOST}', 'e', 1, 'busy' FROM n;"
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < "
        f"{FENCED_VMS}) "
        "INSERT INTO step_executions (run_id, step_id, agent_name, agent_version, agent_kind,"
        f" vm_id, status) SELECT {run_id}, 's' || i, 's', '1', 'shell', 'vm-many-' || i,"
        " 'running' FROM n;"
        "UPDATE vms SET step_execution_id = (SELECT id FROM step_executions s"
        " WHERE s.vm_id = vms.id) WHERE id LIKE 'vm-many-%';"
        "UPDATE tickets SET lease_expires_at = '2000-01-01'",
    )
    fenced: list[list[str]] = []

    def fence(vms: list[dict[str, Any]]) -> dict[int, str]:
        fenced.append([vm["id"] for vm in vms])
        return {}

    got = {e.ticket_id: e for e in store.tickets.reclaim_expired(fence)}
    assert len(fenced[0]) == FENCED_VMS and fenced[0][0] == "vm-few"
    assert got[few].status == "open"
    assert got[many].status == "stuck" and "next round" in str(got[many].error)
    assert store.tickets.get(many).status == "running"
    store.close()

"""Tickets end to end inside QEMU microVMs, through the real CLI and engine processes.
Skipped (with the reason) only where QEMU or the guest image is missing; CI builds both."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent
from tests.support.cli import EXAMPLES, query, sqlite_shell, start_engine, swarm, wait_until

from swarm_engine.config import load_settings
from swarm_engine.vm.qemu.doctor import unavailable
from swarm_engine.vm.qemu.folders import images_dir_for

pytestmark = [pytest.mark.qemu]


@pytest.fixture(autouse=True)
def _needs_qemu() -> None:
    reason = unavailable(images_dir_for(load_settings().home))
    if reason is not None:
        pytest.skip(reason)


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_echo_ticket_and_workflow_run_in_microvms(home: Path) -> None:
    db = home / "tickets.db"
    sqlite_shell(db, "INSERT INTO tickets (title, status, agent_id, inputs)"
                     " VALUES ('hi', 'open', 'echo', '{\"greeting\": \"from a microVM\"}')")  # fmt: skip
    done = swarm(home, "run-ticket", "1", "--wait", "--backend", "qemu", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(query(db, "SELECT result FROM tickets WHERE id = 1")[0]["result"]) == {
        "greeting": "from a microVM"
    }
    swarm(home, "agent", "register", "--all", str(EXAMPLES / "agents"), check=True)
    swarm(home, "workflow", "register", str(EXAMPLES / "workflows" / "text-report"), check=True)
    swarm(home, "ticket", "create", "--title", "r", "--workflow", "text-report",
          "--description", "three little words", check=True)  # fmt: skip
    done = swarm(home, "run-ticket", "2", "--wait", "--backend", "qemu", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(query(db, "SELECT result FROM tickets WHERE id = 2")[0]["result"])
    assert result["words"] == 3 and "total: 12" in result["report"]  # python3 ran in the guest
    vms = query(db, "SELECT backend, state, pid FROM vms")
    assert len(vms) == 4 and {v["backend"] for v in vms} == {"qemu"}
    assert {v["state"] for v in vms} == {"destroyed"}
    assert not any(running(v["pid"]) for v in vms if v["pid"])


def test_five_tickets_run_in_five_concurrent_microvms(home: Path, tmp_path: Path) -> None:
    write_agent(tmp_path / "nap", "name: nap\nkind: shell\ncommand: sleep 2\n")
    swarm(home, "agent", "register", str(tmp_path / "nap"), check=True)
    for i in range(5):
        swarm(home, "ticket", "create", "--title", f"n{i}", "--agent", "nap", check=True)
    proc = start_engine(home, "--max-vms", "5", "--backend", "qemu", "--until-idle",
                        SWARM_HEARTBEAT_INTERVAL="0.5")  # fmt: skip
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    db = home / "tickets.db"
    steps = query(db, "SELECT s.started_at, s.completed_at, s.status, v.pid, v.backend"
                      " FROM step_executions s JOIN vms v ON v.id = s.vm_id")  # fmt: skip
    assert len(steps) == 5 and {s["status"] for s in steps} == {"done"}
    assert {s["backend"] for s in steps} == {"qemu"} and len({s["pid"] for s in steps}) == 5
    assert max(s["started_at"] for s in steps) < min(s["completed_at"] for s in steps)


def test_a_killed_engine_leaves_no_qemu_after_cleanup(home: Path, tmp_path: Path) -> None:
    write_agent(tmp_path / "long", "name: long\nkind: shell\ncommand: sleep 300\n")
    swarm(home, "agent", "register", str(tmp_path / "long"), check=True)
    for i in range(2):
        swarm(home, "ticket", "create", "--title", f"l{i}", "--agent", "long", check=True)
    proc = start_engine(home, "--max-vms", "2", "--backend", "qemu")
    db = home / "tickets.db"
    try:
        wait_until(lambda: len(query(db, "SELECT 1 FROM step_executions WHERE status = 'running'")) == 2,
                   240, "two steps running in microVMs")  # fmt: skip
        pids = [v["pid"] for v in query(db, "SELECT pid FROM vms WHERE state = 'busy'")]
        assert len(pids) == 2 and all(running(p) for p in pids)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the engine only, not its process group
        proc.communicate()
    # dead once its heartbeat is older than lease_ttl too (moved back, as if that long after)
    sqlite_shell(db, "UPDATE engines SET heartbeat_at = '2000-01-01T00:00:00Z'")
    report = json.loads(swarm(home, "cleanup", "--json", check=True).stdout)
    assert len(report["vms"]) == 2
    wait_until(lambda: not any(running(p) for p in pids), 30, "QEMU processes to exit")
    assert {v["state"] for v in query(db, "SELECT state FROM vms")} == {"failed"}
    leftover = subprocess.run(
        ["pgrep", "-f", f"qemu-system.*{home}"], capture_output=True, text=True
    )
    assert leftover.stdout == ""

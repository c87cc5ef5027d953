"""An agent's `memory_mb` holds the whole step, enforced by the kernel (a memory cgroup per
VM, `vm/memcap.py`): a step that holds a memfd of twice its `memory_mb` (a tester held
3,000 MiB under a 512 MB agent this way) fails its ticket with one line naming
`memory_mb`, while the engine and the other tickets go on; `memory_cap = "rlimit"` keeps
the old address-space limit alone; a bad setting is refused where settings load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent
from tests.support.cgroups import no_memory_cgroup
from tests.support.cli import query, swarm, swarm_inproc

from swarm_engine.vm.memcap import PARENT, find_hierarchy
from swarm_engine.vm.process import bwrap_problem

NO_SANDBOX = bwrap_problem() or no_memory_cgroup()
needs_cgroup = pytest.mark.skipif(NO_SANDBOX is not None, reason=f"{NO_SANDBOX}")
HOG = (
    "import os\nfd = os.memfd_create('hold')\nfor _ in range(128):\n"
    "    os.write(fd, b'x' * (1 << 20))\nprint('held', os.fstat(fd).st_size >> 20, 'MiB')\n"
)


def setup(home: Path, tmp_path: Path, config: str) -> None:
    (home / "config.toml").write_text(f"[backend_options.process]\n{config}")
    command = json.dumps(["python3", "-c", HOG])
    write_agent(tmp_path / "hog", f"name: hog\nkind: shell\nmemory_mb: 64\ncommand: {command}\n")
    write_agent(tmp_path / "ok", "name: ok\nkind: shell\ncommand: echo fine\n")
    for name, count in (("hog", 1), ("ok", 3)):
        assert swarm_inproc(home, "agent", "register", str(tmp_path / name)).returncode == 0
        for _ in range(count):
            made = swarm_inproc(home, "ticket", "create", "--title", name, "--agent", name)
            assert made.returncode == 0, made.stderr


def tickets(home: Path) -> dict[str, list[dict[str, object]]]:
    rows = query(home / "tickets.db", "SELECT agent_id, status, error FROM tickets ORDER BY id")
    found: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        found.setdefault(str(row["agent_id"]), []).append(row)
    return found


def engine_folders(home: Path) -> set[str]:
    """The backend folders of this home's engines (by their pids in `engines`): the other
    tests' engines, running beside this one, make and remove their own."""
    pids = {int(str(row["pid"])) for row in query(home / "tickets.db", "SELECT pid FROM engines")}
    assert pids, "the engine recorded no row"
    return {
        p.name
        for p in find_hierarchy().base.iterdir()
        if (found := PARENT.fullmatch(p.name)) is not None and int(found.group(2)) in pids
    }


@needs_cgroup
def test_a_step_past_memory_mb_fails_its_ticket_while_the_others_go_on(
    home: Path, tmp_path: Path
) -> None:
    setup(home, tmp_path, 'tmp_mb = 8\ndisk_cap = "measured"\n')
    done = swarm(home, "start", "--foreground", "--until-idle", "--max-vms", "2", timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stdout + done.stderr, done
    found = tickets(home)
    (hog,) = found["hog"]
    assert hog["status"] == "failed", hog
    assert "the step ran out of memory" in str(hog["error"]), hog
    assert "memory_mb = 64 MiB" in str(hog["error"]), hog
    assert [t["status"] for t in found["ok"]] == ["done"] * 3, found
    assert not engine_folders(home)  # its VMs' cgroups went with them, its folder too


@needs_cgroup
def test_rlimit_keeps_the_address_space_limit_alone(home: Path, tmp_path: Path) -> None:
    setup(home, tmp_path, 'memory_cap = "rlimit"\ndisk_cap = "measured"\n')
    done = swarm(home, "start", "--foreground", "--until-idle", "--max-vms", "2", timeout=300)
    assert done.returncode == 0, done
    found = tickets(home)
    assert [t["status"] for t in found["hog"] + found["ok"]] == ["done"] * 4, found


@pytest.mark.parametrize("value", ['"lots"', '"Cgroup"', "1", "true"])
def test_a_bad_memory_cap_is_refused_at_load(home: Path, value: str) -> None:
    (home / "config.toml").write_text(f"[backend_options.process]\nmemory_cap = {value}\n")
    done = swarm_inproc(home, "ticket", "list")
    assert done.returncode == 5, done.stdout + done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "memory_cap" in done.stderr, done.stderr


@needs_cgroup
def test_vm_doctor_says_whether_each_vms_memory_is_capped(home: Path) -> None:
    doctor = swarm(home, "vm", "doctor", "--json")
    check = next(c for c in json.loads(doctor.stdout) if c["name"] == "process memory cap")
    assert check["level"] == "ok", check
    assert check["message"].startswith("each VM is a memory cgroup of its own (cgroup v"), check
    # in a pipe each check is one line, as its JSON says it, with nothing after it
    piped = swarm(home, "vm", "doctor").stdout.splitlines()
    assert f"ok   process memory cap: {check['message']}" in piped, piped
    assert all(line == line.rstrip() for line in piped), piped
    (home / "config.toml").write_text('[backend_options.process]\nmemory_cap = "rlimit"\n')
    doctor = swarm(home, "vm", "doctor", "--json")
    check = next(c for c in json.loads(doctor.stdout) if c["name"] == "process memory cap")
    assert check["level"] == "warn" and "hold more than memory_mb" in check["message"], check

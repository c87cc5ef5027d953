"""The polling engine as users run it: real engine processes sharing one real store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from tests.acceptance.conftest import engine_ready, status_of, stop, write_agent
from tests.support.cli import (
    env_for,
    query,
    sqlite_shell,
    start_engine,
    swarm,
    swarm_inproc,
    wait_until,
)

from swarm_engine.config import hostname
from swarm_engine.vm.proctree import pid_alive, tagged

LOCK_HELD = (
    "an engine holds this store's engine lock on this host: none of this host's engines,"
    " VMs or folders reaped (its engine cleans up after itself)\n"
)
FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.5"}


def test_tickets_opened_by_the_sqlite3_shell_are_picked_up(
    home: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    proc = start_engine(home, "--max-vms", "2", **FAST)
    engines.append(proc)
    engine_ready(home, proc)
    sqlite_shell(db, "INSERT INTO tickets (title, description, status, agent_id, inputs)"
                     " VALUES ('ins', 'd', 'open', 'echo', '{\"k\": 1}')")  # fmt: skip
    sqlite_shell(
        db,
        "INSERT INTO tickets (title, description, status, agent_id) VALUES ('later', 'd', 'draft', 'echo')",
    )
    wait_until(lambda: status_of(home, 1) == "done", 30, "the inserted ticket to run")
    assert status_of(home, 2) == "draft"  # drafts are not picked up...
    sqlite_shell(
        db, "UPDATE tickets SET status = 'open' WHERE id = 2"
    )  # ...until someone opens them
    wait_until(lambda: status_of(home, 2) == "done", 30, "the updated ticket to run")
    assert json.loads(query(db, "SELECT result FROM tickets WHERE id = 1")[0]["result"]) == {"k": 1}
    # a ticket naming an agent nobody registered fails with the reason, and is recorded
    sqlite_shell(
        db, "INSERT INTO tickets (title, status, agent_id) VALUES ('ghost', 'open', 'ghost')"
    )
    wait_until(lambda: status_of(home, 3) == "failed", 30, "the unknown-agent ticket to fail")
    ghost_run = query(db, "SELECT * FROM workflow_runs WHERE ticket_id = 3")[0]
    assert ghost_run["status"] == "failed" and "unknown agent 'ghost'" in ghost_run["error"]
    assert (
        "unknown agent 'ghost'" in query(db, "SELECT error FROM tickets WHERE id = 3")[0]["error"]
    )
    status = json.loads(swarm_inproc(home, "status", "--json").stdout)
    (engine,) = [e for e in status["engines"] if e["pid"] == proc.pid]
    assert engine["max_vms"] == 2 and engine["kind"] == "daemon" and engine["state"] == "running"
    assert status["tickets"] == {"done": 2, "failed": 1}
    out = stop(proc)
    assert proc.returncode == 0, out
    assert query(db, "SELECT state FROM engines WHERE pid = ?", proc.pid)[0]["state"] == "stopped"


def test_five_sleeping_tickets_run_at_the_same_time(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    write_agent(tmp_path / "nap", "name: nap\nkind: shell\ncommand: sleep 2\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "nap")).returncode == 0
    for i in range(5):
        assert (
            swarm_inproc(home, "ticket", "create", "--title", f"n{i}", "--agent", "nap").returncode
            == 0
        )
    proc = start_engine(home, "--max-vms", "5", "--until-idle", **FAST)
    engines.append(proc)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    steps = query(
        home / "tickets.db", "SELECT started_at, completed_at, status FROM step_executions"
    )
    assert len(steps) == 5 and {s["status"] for s in steps} == {"done"}
    # all five intervals overlap: the last start comes before the first end
    assert max(s["started_at"] for s in steps) < min(s["completed_at"] for s in steps)


def peak_concurrency(rows: list[dict[str, str]]) -> int:
    """Most VMs alive at once, from recorded create/destroy times (ends sort before starts)."""
    points = [(r["created_at"], 1) for r in rows] + [(r["destroyed_at"], -1) for r in rows]
    live = peak = 0
    for _, delta in sorted(points, key=lambda p: (p[0], p[1])):
        live += delta
        peak = max(peak, live)
    return peak


def test_a_tickets_timeout_does_not_run_while_another_tickets_vm_is_destroyed(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """A ticket is claimed only once a VM slot is really free: with one slot, a quick
    ticket with a 1 s timeout behind a ticket whose workspace takes long to delete still
    runs in its own time (its timeout never covers the other VM's destruction)."""
    write_agent(
        tmp_path / "many",
        "name: many\nkind: shell\ncommand: mkdir d && cd d && seq 1 90000 | xargs touch\n",
    )
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "many")).returncode == 0
    db = home / "tickets.db"
    sqlite_shell(
        db,
        "INSERT INTO tickets (title, status, agent_id, priority) VALUES ('many', 'open', 'many', 1);"
        "INSERT INTO tickets (title, status, agent_id, timeout_seconds, inputs)"
        " VALUES ('quick', 'open', 'echo', 1, '{\"q\": 1}')",
    )
    proc = start_engine(home, "--max-vms", "1", "--until-idle", **FAST)
    engines.append(proc)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    rows = {r["title"]: r for r in query(db, "SELECT title, status, error FROM tickets")}
    assert rows["many"]["status"] == "done", rows
    assert rows["quick"]["status"] == "done", rows  # not "ticket timed out after 1s"
    vms = query(db, "SELECT created_at, destroyed_at FROM vms ORDER BY created_at")
    assert len(vms) == 2 and vms[0]["destroyed_at"] <= vms[1]["created_at"]


def test_three_engines_run_every_ticket_exactly_once(
    home: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    total = 240
    values = ",".join(f"('t{i}', '', 'open', 'echo', '{{\"i\": {i}}}')" for i in range(total))
    sqlite_shell(
        db, f"INSERT INTO tickets (title, description, status, agent_id, inputs) VALUES {values}"
    )
    for _ in range(3):
        engines.append(start_engine(home, "--max-vms", "4", "--until-idle", "--another", **FAST))
    for proc in engines:
        proc.wait(timeout=300)
        assert proc.returncode == 0, proc.communicate()[0]
    tickets = query(db, "SELECT id, status, attempts, result, inputs FROM tickets")
    assert Counter(t["status"] for t in tickets) == {"done": total}
    assert all(json.loads(t["result"]) == json.loads(t["inputs"]) for t in tickets)
    done_steps = query(
        db,
        "SELECT r.ticket_id, s.vm_id FROM step_executions s JOIN workflow_runs r ON r.id = s.run_id WHERE s.status = 'done'",
    )
    per_ticket = Counter(s["ticket_id"] for s in done_steps)
    assert sorted(per_ticket) == [t["id"] for t in sorted(tickets, key=lambda t: t["id"])]
    assert set(per_ticket.values()) == {1}, "a ticket was executed more than once"
    all_steps = query(db, "SELECT vm_id FROM step_executions")
    assert len({s["vm_id"] for s in all_steps}) == len(all_steps), "two steps shared a VM"
    vms = query(db, "SELECT engine_id, created_at, destroyed_at, state FROM vms")
    assert {v["state"] for v in vms} == {"destroyed"}
    by_engine: dict[str, list[dict[str, str]]] = {}
    for v in vms:
        by_engine.setdefault(v["engine_id"], []).append(v)
    assert len(by_engine) == 3, "all three engines took part"
    assert all(peak_concurrency(rows) <= 4 for rows in by_engine.values())
    assert query(db, "PRAGMA foreign_key_check") == []


def test_a_killed_engines_tickets_are_finished_by_another(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    write_agent(tmp_path / "slow", "name: slow\nkind: shell\ncommand: sleep 1.5; echo finished\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "slow")).returncode == 0
    for i in range(4):
        assert (
            swarm_inproc(home, "ticket", "create", "--title", f"s{i}", "--agent", "slow").returncode
            == 0
        )
    env = dict(FAST, SWARM_LEASE_TTL="2")
    victim = start_engine(home, "--max-vms", "4", **env)
    engines.append(victim)
    wait_until(
        lambda: len(query(db, "SELECT 1 FROM step_executions WHERE status = 'running'")) == 4,
        30,
        "4 running steps",
    )
    victim_vms = [v["id"] for v in query(db, "SELECT id FROM vms WHERE state IN ('ready','busy')")]
    os.killpg(victim.pid, signal.SIGKILL)  # the engine and everything in its process group
    victim.wait()
    rescuer = start_engine(home, "--max-vms", "4", "--until-idle", **env)
    engines.append(rescuer)
    rescuer.wait(timeout=120)
    assert rescuer.returncode == 0, rescuer.communicate()[0]
    tickets = query(db, "SELECT status, attempts FROM tickets")
    assert [t["status"] for t in tickets] == ["done"] * 4
    assert {t["attempts"] for t in tickets} == {2}
    runs = query(db, "SELECT ticket_id, status, error FROM workflow_runs ORDER BY id")
    assert Counter(r["status"] for r in runs) == {"failed": 4, "done": 4}
    assert all("lease expired" in r["error"] for r in runs if r["status"] == "failed")
    # nothing of the dead engine is left: VMs reaped, folders gone, no sandbox process
    rows = query(
        db, f"SELECT state FROM vms WHERE id IN ({','.join('?' * len(victim_vms))})", *victim_vms
    )
    assert {r["state"] for r in rows} <= {"destroyed", "failed"}
    assert list((home / "vms").iterdir()) == []
    assert all(tagged(vm) == [] for vm in victim_vms)
    assert query(db, "SELECT state FROM engines WHERE pid = ?", victim.pid)[0]["state"] == "dead"


def test_cancel_stops_a_running_ticket(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    write_agent(tmp_path / "long", "name: long\nkind: shell\ncommand: sleep 300\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "long")).returncode == 0
    assert swarm_inproc(home, "ticket", "create", "--title", "l", "--agent", "long").returncode == 0
    proc = start_engine(home, "--max-vms", "1", **FAST)
    engines.append(proc)
    step = wait_until(
        lambda: query(db, "SELECT * FROM step_executions WHERE status = 'running'"),
        30,
        "the step to run",
    )[0]
    assert swarm_inproc(home, "ticket", "cancel", "1").returncode == 0
    vm = wait_until(
        lambda: query(db, "SELECT * FROM vms WHERE id = ? AND state = 'destroyed'", step["vm_id"]),
        10,
        "the VM to be destroyed",
    )[0]
    assert not Path(vm["workspace"]).exists() and tagged(vm["id"]) == []
    assert status_of(home, 1) == "cancelled"
    run = wait_until(
        lambda: query(db, "SELECT * FROM workflow_runs WHERE status = 'cancelled'"),
        10,
        "the run to be closed",
    )[0]
    assert run["ticket_id"] == 1
    assert query(db, "SELECT status FROM step_executions")[0]["status"] == "cancelled"
    stop(proc)
    assert proc.returncode == 0


def test_stop_drains_then_a_second_stop_aborts(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    write_agent(tmp_path / "mid", "name: mid\nkind: shell\ncommand: sleep 1; echo ok\n")
    write_agent(tmp_path / "long", "name: long\nkind: shell\ncommand: sleep 300\n")
    for name in ("mid", "long"):
        assert swarm_inproc(home, "agent", "register", str(tmp_path / name)).returncode == 0
    assert swarm_inproc(home, "ticket", "create", "--title", "m", "--agent", "mid").returncode == 0
    proc = start_engine(home, "--max-vms", "1", **FAST)
    engines.append(proc)
    wait_until(lambda: status_of(home, 1) == "running", 30, "ticket 1 to run")
    proc.send_signal(signal.SIGTERM)  # drain: the running ticket finishes
    proc.wait(timeout=30)
    assert proc.returncode == 0 and status_of(home, 1) == "done"

    assert swarm_inproc(home, "ticket", "create", "--title", "l", "--agent", "long").returncode == 0
    proc = start_engine(home, "--max-vms", "1", **FAST)
    engines.append(proc)
    step = wait_until(
        lambda: query(db, "SELECT * FROM step_executions WHERE status = 'running'"),
        30,
        "ticket 2 to run",
    )[0]
    proc.send_signal(signal.SIGTERM)
    wait_until(
        lambda: query(db, "SELECT 1 FROM engines WHERE pid = ? AND state = 'draining'", proc.pid),
        10,
        "draining",
    )
    proc.send_signal(
        signal.SIGTERM
    )  # abort: the ticket goes back to the queue, its VM is destroyed
    proc.wait(timeout=30)
    assert proc.returncode == 0
    assert status_of(home, 2) == "open"
    assert query(db, "SELECT state FROM vms WHERE id = ?", step["vm_id"])[0]["state"] == "destroyed"
    assert (
        query(db, "SELECT status, error FROM workflow_runs WHERE ticket_id = 2")[0]["status"]
        == "failed"
    )


def test_a_closed_terminal_stops_the_engine_as_sigterm_does(
    home: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """SIGHUP (the terminal of `start --foreground` closed) used to kill the engine at
    once, its spare workspaces left mounted: it now stops it as SIGTERM does."""
    assert swarm_inproc(home, "ticket", "create", "--title", "h", "--agent", "echo").returncode == 0
    proc = start_engine(home, "--max-vms", "1", **FAST)
    engines.append(proc)
    wait_until(lambda: status_of(home, 1) == "done", 30, "ticket 1 to run")
    proc.send_signal(signal.SIGHUP)
    proc.wait(timeout=30)
    assert proc.returncode == 0
    assert query(home / "tickets.db", "SELECT state FROM engines")[0]["state"] == "stopped"
    vms = home / "vms"
    assert not vms.exists() or os.listdir(vms) == []  # nothing left mounted or kept


def test_start_daemonizes_and_stop_stops_it(home: Path) -> None:
    started = swarm_inproc(home, "start", "--max-vms", "1")
    assert started.returncode == 0, started.stderr
    assert "started (pid" in started.stdout
    sqlite_shell(
        home / "tickets.db",
        "INSERT INTO tickets (title, status, agent_id) VALUES ('d', 'open', 'echo')",
    )
    wait_until(lambda: status_of(home, 1) == "done", 30, "the daemon to run the ticket")
    stopped = swarm_inproc(home, "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert (
        query(home / "tickets.db", "SELECT state FROM engines WHERE kind = 'daemon'")[0]["state"]
        == "stopped"
    )
    assert (home / "logs" / "engine.log").is_file()


def test_an_engine_goes_on_past_a_ticket_whose_claim_the_store_refuses(home: Path) -> None:
    """A store whose `ticket_events` holds the largest id (written while its guard was
    dropped): no status change can be recorded, so the ticket can be neither claimed nor
    failed. The engine used to exit on its first claim (h-130 report, 2); it now passes
    that ticket over with one warning line naming the table and the row, and goes on
    (`start` says started, exit 0; the engine keeps running until stopped)."""
    made = swarm_inproc(home, "ticket", "create", "--title", "a", "--agent", "echo")
    assert made.returncode == 0, made.stderr
    sqlite_shell(
        home / "tickets.db",
        "DROP TRIGGER ticket_events_id_guard; INSERT INTO ticket_events (id, ticket_id,"
        " new_status) VALUES (9223372036854775807, 1, 'open');",
    )
    started = swarm_inproc(home, "start", "--max-vms", "1")
    assert started.returncode == 0, started.stdout + started.stderr
    log = home / "logs" / "engine.log"
    wait_until(lambda: "this engine passes it over" in log.read_text(), 30, "the warning")
    (line,) = [x for x in log.read_text().splitlines() if "passes it over" in x]
    assert "ticket 1: cannot be claimed or failed" in line, line
    assert "delete the row with id 9223372036854775807" in line, line
    assert query(home / "tickets.db", "SELECT state FROM engines") == [{"state": "running"}]
    stopped = swarm_inproc(home, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert query(home / "tickets.db", "SELECT status FROM tickets") == [{"status": "open"}]


def test_start_until_idle_with_nothing_to_run_is_a_success(home: Path) -> None:
    """An engine with nothing to run ends at once (exit 0), perhaps before `start` saw it
    ready: `start` says so, exit 0, not "exited at start" (a race, so a few times)."""
    for _ in range(3):
        started = swarm_inproc(home, "start", "--until-idle", "--another")
        assert started.returncode == 0, started.stderr
        said = started.stdout
        assert " started (pid " in said or "started and has stopped already" in said, said
    running = "SELECT 1 FROM engines WHERE state IN ('running', 'draining')"
    wait_until(lambda: not query(home / "tickets.db", running), 30, "the engines to end")


def test_cleanup_removes_a_gone_engines_warm_pool_folders_never_a_running_ones(
    home: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """A QEMU warm pool's VMs are in no `vms` row until handed out, so the folders of a
    killed engine's pool were left for the next `start` to remove, and `cleanup` said
    nothing of them. It now names and removes them, but only while no engine of this host
    runs with this store (by its row or by the engine lock), and never a folder whose
    owner process lives. An engine's start removes them itself (each folder judged by its
    owner), before it ever makes a qemu backend."""
    pool = home / "run" / "qemu"
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    dead = int(ended.stdout)
    folders = {"warm-0123456789ab": dead, "warm-ba9876543210": os.getpid()}

    def warm(name: str, owner: int) -> None:
        (pool / name).mkdir(parents=True)
        (pool / name / "owner.pid").write_text(f"{owner}\n")
        (pool / name / "socket").write_text(f"{pool / name / 'agent.sock'}\n")
        (pool / name / "console.log").write_text("booted\n")

    for name, owner in folders.items():  # a gone engine's warm VM; a live process's one
        warm(name, owner)

    def cleanup() -> dict[str, list[object]]:
        done = swarm(home, "cleanup", "--json")
        said = done.stderr.replace(LOCK_HELD, "")  # (the one line while the lock is held)
        assert (done.returncode, said) == (0, ""), done.stderr
        report: dict[str, list[object]] = json.loads(done.stdout)
        return report

    proc = start_engine(home, "--another", **FAST)  # (takes no engine lock: seen by its row)
    engines.append(proc)
    engine_ready(home, proc)
    started = "the engine's start to remove the gone engine's warm folder"
    wait_until(lambda: not (pool / "warm-0123456789ab").exists(), 30, started)
    assert (pool / "warm-ba9876543210").is_dir()  # its owner lives
    # another gone engine's, made once the start's sweep had listed the run folder (it
    # removed the first one after): `cleanup` leaves it while an engine runs
    folders = {"warm-0123456789cd": dead, "warm-ba9876543210": os.getpid()}
    warm("warm-0123456789cd", dead)
    assert cleanup()["folders"] == []  # an engine of this home runs: its pool is its own
    stop(proc)
    assert proc.returncode == 0
    holder = subprocess.Popen(  # an engine's lock, with no row (another pid namespace)
        [sys.executable, "-c", HOLD_LOCK, str(home / "tickets.db"), hostname()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert cleanup()["folders"] == []
    finally:
        holder.communicate("")  # its stdin closed: it ends, and the lock goes with it
    assert all((pool / name).is_dir() for name in folders)
    assert cleanup()["folders"] == ["warm-0123456789cd"]
    assert sorted(p.name for p in pool.iterdir()) == ["warm-ba9876543210"]
    said = swarm(home, "cleanup")
    assert said.stdout.startswith("reaped 0 VM(s), 0 dead engine(s), 0 leftover folder(s);")


def test_an_engines_start_says_which_leftover_folders_it_removed(
    home: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """The start's cleanup removed a gone engine's QEMU folders without a word (only
    `cleanup` printed counts): it now says so in one line at INFO (a daemon's log), bounded,
    the count and the first 6 names (`removed 8 leftover folder(s): warm-..., ... and 2
    more`)."""
    pool = home / "run" / "qemu"
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    names = [f"warm-{i:012x}" for i in range(8)]
    for name in names:  # a gone engine's warm VMs
        (pool / name).mkdir(parents=True)
        (pool / name / "owner.pid").write_text(f"{int(ended.stdout)}\n")
    proc = start_engine(home, "--another", SWARM_LOG_LEVEL="info", **FAST)
    engines.append(proc)
    engine_ready(home, proc)
    wait_until(lambda: not any(pool.iterdir()), 30, "the start to remove the warm folders")
    said = [line for line in stop(proc).splitlines() if "leftover folder(s)" in line]
    assert len(said) == 1, said
    line = said[0].partition("engine start: ")[2]
    assert line.startswith("removed 8 leftover folder(s): ") and line.endswith(" and 2 more"), line
    assert len([n for n in names if n in line]) == 6, line


HOLD_LOCK = """
import sys
from pathlib import Path
from swarm_engine.engine.hostlock import hold_engine_lock
hold_engine_lock(Path(sys.argv[1]), sys.argv[2])
print("held", flush=True)
sys.stdin.read()
"""


def test_cleanup_removes_only_folders_of_the_qemu_backends_shape(
    home: Path, tmp_path: Path
) -> None:
    """`run_dir` is any path (the home itself, a shared folder): `cleanup` removed every
    folder there with no live `owner.pid` (the home's `vms`, `packages`, a user's data).
    Now only folders named and filled as the backend makes them are removed; nothing is
    made (no `<images_dir>/.snapshots`); a dead VM folder that cannot be removed is said."""
    run_dir = tmp_path / "shared"
    images = tmp_path / "images"
    images.mkdir()
    (home / "config.toml").write_text(
        f'[backend_options.qemu]\nrun_dir = "{run_dir}"\nimages_dir = "{images}"\n'
    )
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    dead = int(ended.stdout)
    old = 1_000_000_000  # mtime: long past any boot timeout
    kept = {
        "packages": ["a.yaml"],  # a user's folders, no owner.pid
        "vms": [],
        "warm-0123456789ab.bak": ["owner.pid"],  # not a VM id
        "warm-aaaaaaaaaaaa": ["owner.pid", "notes.txt"],  # a file the backend never makes
        "vm-bbbbbbbbbbbb": ["owner.pid", "sub/"],  # a folder inside
    }
    for name, files in kept.items():
        (run_dir / name).mkdir(parents=True)
        for file in files:
            if file.endswith("/"):
                (run_dir / name / file).mkdir()
            else:
                (run_dir / name / file).write_text(f"{dead}\n")
        os.utime(run_dir / name, (old, old))
    ours = run_dir / "vm-0123456789ab"
    ours.mkdir()
    (ours / "owner.pid").write_text(f"{dead}\n")
    (ours / "qemu.log").write_text("")
    done = swarm(home, "cleanup", "--json")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert json.loads(done.stdout)["folders"] == ["vm-0123456789ab"]
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(kept)
    assert list(images.iterdir()) == []  # nothing made
    stuck = run_dir / "warm-cccccccccccc"
    stuck.mkdir()
    (stuck / "owner.pid").write_text(f"{dead}\n")
    os.utime(stuck, (old, old))
    pinned = subprocess.run(["chattr", "+i", str(stuck / "owner.pid")], capture_output=True)
    if pinned.returncode != 0:  # (not root, or a file system without the flag)
        stuck.chmod(0o500)
    try:
        said = swarm(home, "cleanup", "--json")
        assert said.returncode == 0 and json.loads(said.stdout)["folders"] == []
        assert f"could not delete VM folder {stuck}" in said.stderr, said.stderr
    finally:
        subprocess.run(["chattr", "-i", str(stuck / "owner.pid")], capture_output=True)
        stuck.chmod(0o700)


def test_cleanup_never_reaps_a_heartbeating_engine_whatever_its_row_pid_says(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """`cleanup` called an engine dead, and killed its running ticket's sandbox, when its
    row's pid was not a process of this host (an engine in another pid namespace, or a
    row edited). An engine is dead now only when its pid is gone AND its heartbeat is
    older than `lease_ttl`; and while this store's engine lock of this host is held,
    nothing of this host is reaped. `status` says the same."""
    db = home / "tickets.db"
    write_agent(tmp_path / "long", "name: long\nkind: shell\ncommand: sleep 300\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "long")).returncode == 0
    proc = start_engine(home, "--another", **FAST)  # no engine lock: the heartbeat alone
    engines.append(proc)
    engine_ready(home, proc)
    sqlite_shell(db, "INSERT INTO tickets (title, status, agent_id) VALUES ('l', 'open', 'long')")
    wait_until(lambda: status_of(home, 1) == "running", 30, "the ticket to run")
    sqlite_shell(db, "UPDATE engines SET pid = 999999")
    done = swarm(home, "cleanup", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["vms"], report["engines"]) == ([], []), report
    (engine,) = json.loads(swarm(home, "status", "--json").stdout)["engines"]
    assert engine["state"] == "running"
    assert status_of(home, 1) == "running"
    assert query(db, "SELECT state FROM vms")[0]["state"] != "destroyed"
    proc.send_signal(signal.SIGTERM)
    wait_until(lambda: query(db, "SELECT 1 FROM engines WHERE state = 'draining'"), 10, "drain")
    proc.send_signal(signal.SIGTERM)  # abort
    proc.wait(timeout=30)
    # a silent engine row whose pid is gone, while an engine holds the lock: left alone
    sqlite_shell(db, "INSERT INTO engines (id, host, pid, max_vms, backend, heartbeat_at)"
                     f" VALUES ('ghost', '{hostname()}', 999999, 1, 'process',"
                     " '2000-01-01T00:00:00Z')")  # fmt: skip
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(db), hostname()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        held = swarm(home, "cleanup", "--json")
        assert held.returncode == 0 and json.loads(held.stdout)["engines"] == []
        assert "holds this store's engine lock on this host" in held.stderr
    finally:
        holder.communicate("")
    freed = swarm(home, "cleanup", "--json")
    assert json.loads(freed.stdout)["engines"] == ["ghost"]


def test_right_after_a_kill_status_cleanup_and_stop_agree_and_say_when_it_is_reaped(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """Right after `kill -9` of an engine, `status` said it was running, `cleanup` reaped
    nothing without a word and `stop` said no engine was running. Its process is gone but
    its heartbeat is younger than a lease (a pid alone is not trusted: an engine of
    another pid namespace lives on): all three say its process is not on this host and
    when `cleanup` reaps it."""
    db = home / "tickets.db"
    write_agent(tmp_path / "long", "name: long\nkind: shell\ncommand: sleep 300\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "long")).returncode == 0
    assert swarm_inproc(home, "ticket", "create", "--title", "l", "--agent", "long").returncode == 0
    proc = start_engine(home, **FAST, SWARM_LEASE_TTL="120")
    engines.append(proc)
    wait_until(lambda: status_of(home, 1) == "running", 30, "the ticket to run")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    env = {"SWARM_LEASE_TTL": "120"}
    (engine,) = json.loads(swarm(home, "status", "--json", **env).stdout)["engines"]
    assert engine["process_seen"] is False and 0 < engine["reaped_in"] <= 120, engine
    shown = swarm(home, "status", **env).stdout
    assert "running, no process" in shown and f"its process {proc.pid} is not on this host" in shown
    report = json.loads(swarm(home, "cleanup", "--json", **env).stdout)
    assert report["engines"] == [] and report["vms"] == [], report
    (waiting,) = report["waiting"]
    assert (waiting["id"], waiting["pid"]) == (engine["id"], proc.pid)
    assert 0 < waiting["reaped_in"] <= 120
    said = swarm(home, "cleanup", **env).stdout
    assert "not reaped yet" in said and "reaps it and its VMs once its heartbeat is a lease" in said
    stopped = swarm(home, "stop", **env)
    assert stopped.returncode == 0
    assert stopped.stdout.startswith("no engine is running on this host\n"), stopped.stdout
    assert f"its process {proc.pid} is not on this host" in stopped.stdout
    # once its heartbeat is a lease old, cleanup reaps it, and nothing waits any more
    sqlite_shell(db, "UPDATE engines SET heartbeat_at = '2000-01-01T00:00:00Z'")
    reaped = json.loads(swarm(home, "cleanup", "--json", **env).stdout)
    assert reaped["engines"] == [engine["id"]] and reaped["waiting"] == [], reaped


@pytest.mark.parametrize("another", [False, True])
def test_cleanup_leaves_a_running_engine_of_another_pid_namespace_alone(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]], another: bool
) -> None:
    """An engine in another pid namespace (`unshare --pid --fork --mount-proc`) has a row
    pid this host does not show: `cleanup` recorded it dead and killed its running ticket
    (137). With the engine lock (a plain `start`) nothing of this host is reaped; without
    it (`--another`) its heartbeat keeps it alive."""
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                           capture_output=True)  # fmt: skip
    if probe.returncode != 0:
        pytest.skip("no pid namespaces here")
    db = home / "tickets.db"
    write_agent(tmp_path / "long", "name: long\nkind: shell\ncommand: sleep 300\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "long")).returncode == 0
    # its pid there: one that no process of this host has (pid 1 would be this host's init)
    gap = next(n for n in range(3, 4000) if not os.path.exists(f"/proc/{n}"))
    engine = [sys.executable, "-m", "swarm_engine", "start", "--foreground"]
    script = f'i=2; while [ $i -lt {gap} ]; do /bin/true; i=$((i+1)); done; "$@"; true'
    argv = ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script, "sh", *engine,
            *(["--another"] if another else [])]  # fmt: skip
    proc = subprocess.Popen(argv, env=env_for(home, **FAST), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    engines.append(proc)
    sqlite_shell(db, "INSERT INTO tickets (title, status, agent_id) VALUES ('l', 'open', 'long')")
    wait_until(lambda: status_of(home, 1) == "running", 30, "the ticket to run")
    assert query(db, "SELECT pid FROM engines")[0]["pid"] == gap
    done = swarm(home, "cleanup", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["vms"], report["engines"]) == ([], []), report
    (row,) = json.loads(swarm(home, "status", "--json").stdout)["engines"]
    assert row["state"] == "running", row
    assert status_of(home, 1) == "running"
    assert query(db, "SELECT state FROM vms")[0]["state"] == "busy"
    swarm(home, "ticket", "cancel", "1")
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)


def test_cleanup_leaves_the_vm_folders_of_another_pid_namespaces_engine(
    home: Path, tmp_path: Path
) -> None:
    """A VM folder's `owner.pid` names its engine's pid in that engine's pid namespace:
    from another namespace (an engine run in `unshare --pid`) that pid says nothing, and
    the folder of a live VM was swept as its owner's pid was not a process here. The
    namespace is recorded next to the pid; a folder of another one is never swept."""
    pool = home / "run" / "qemu"
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    here = os.readlink("/proc/self/ns/pid")
    owners = {"warm-0123456789ab": f"{ended.stdout.strip()} pid:[1]", "warm-ba9876543210":
              f"{ended.stdout.strip()} {here}"}  # fmt: skip
    for name, owner in owners.items():
        (pool / name).mkdir(parents=True)
        (pool / name / "owner.pid").write_text(f"{owner}\n")
    done = swarm(home, "cleanup", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["folders"] == ["warm-ba9876543210"]
    assert [p.name for p in pool.iterdir()] == ["warm-0123456789ab"]


def test_a_relative_qemu_run_dir_is_the_homes_not_the_current_folders(
    home: Path, tmp_path: Path
) -> None:
    """A relative `run_dir` was taken from the current folder of `cleanup`: run elsewhere,
    it swept that folder's `relrun`. It is from the home now, for every command."""
    (home / "config.toml").write_text('[backend_options.qemu]\nrun_dir = "relrun"\n')
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    for root in (home, elsewhere):
        (root / "relrun" / "vm-0123456789ab").mkdir(parents=True)
        (root / "relrun" / "vm-0123456789ab" / "owner.pid").write_text(ended.stdout)
    done = subprocess.run(
        [sys.executable, "-m", "swarm_engine", "cleanup", "--json"], cwd=elsewhere,
        env=env_for(home), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["folders"] == ["vm-0123456789ab"]
    assert (elsewhere / "relrun" / "vm-0123456789ab").is_dir()
    assert not (home / "relrun" / "vm-0123456789ab").exists()


START_BOUND = 8.0
"""`start`'s start-up timeout in the tests of a store locked at start: long enough for an
engine on a loaded host to reach the lock and say so in its log (its `store busy` line is
what makes `start` wait on rather than fail)."""


def test_start_waits_for_a_busy_store_while_its_engine_waits_for_it(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another client holds the store's write lock past `START_TIMEOUT` (h-130 report, 7):
    `start` said "engine did not register" (exit 1) and the engine came up anyway. It now
    says once that it waits for the store, and reports the engine started once the lock
    is let go (here: when that line is printed, past the start-up timeout)."""
    import sqlite3

    from swarm_engine.cli import daemon as cli_daemon

    assert swarm_inproc(home, "status", "--init").returncode == 0
    lock = sqlite3.connect(home / "tickets.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    said = []

    def waiting(pid: int, bound: float) -> None:
        said.append((pid, bound))
        lock.execute("COMMIT")  # the other client lets go only now, past the timeout

    # the engine must have said `store busy` by the start-up timeout: its start (imports,
    # then 0.5 s of waiting for the lock) takes over 1 s on a loaded host
    monkeypatch.setattr(cli_daemon, "START_TIMEOUT", START_BOUND)
    monkeypatch.setattr(cli_daemon, "say_waiting", waiting)
    try:
        started = swarm_inproc(home, "start", "--max-vms", "1", SWARM_BUSY_TIMEOUT="0.5")
    finally:
        lock.close()
    assert started.returncode == 0, started.stdout + started.stderr
    assert "started" in started.stdout, started.stdout
    assert len(said) == 1 and said[0][1] == START_BOUND + cli_daemon.STORE_WAIT
    assert query(home / "tickets.db", "SELECT state FROM engines") == [{"state": "running"}]
    assert swarm_inproc(home, "stop").returncode == 0


def test_start_stops_the_engine_it_gives_up_on(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store stays locked past the start-up timeout and the wait for a busy store:
    `start` fails with one line saying the engine was stopped, and no engine is left
    running (no process, no pid file); the waiting line was printed once."""
    import sqlite3

    from swarm_engine.cli import daemon as cli_daemon

    assert swarm_inproc(home, "status", "--init").returncode == 0
    monkeypatch.setattr(cli_daemon, "START_TIMEOUT", START_BOUND)  # (see above)
    monkeypatch.setattr(cli_daemon, "STORE_WAIT", 1.0)
    monkeypatch.setattr(cli_daemon, "STOP_WAIT", 2.0)  # (then killed)
    lock = sqlite3.connect(home / "tickets.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        started = swarm_inproc(home, "start", "--max-vms", "1", SWARM_BUSY_TIMEOUT="0.5")
    finally:
        lock.close()
    assert started.returncode == 1, started.stdout + started.stderr
    lines = started.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("waiting for the store"), lines
    assert f"while waiting {START_BOUND + 1:g}s for a busy store; it was stopped" in lines[1]
    pid = int(lines[1].split("(pid ")[1].split(")")[0])
    assert not pid_alive(pid)
    assert sorted(p.name for p in (home / "run").glob("engine-*")) == []


def test_an_engine_that_fails_its_own_start_is_recorded_stopped(home: Path, tmp_path: Path) -> None:
    """`start --backend qemu` with no image: exit 7 with the one line, as before, and its
    engine row, registered before the backend was found unusable, is marked stopped
    (it was left `running`, h-130 report, 8)."""
    images = tmp_path / "no-images"
    images.mkdir()
    started = swarm(home, "start", "--foreground", "--backend", "qemu",
                    SWARM_QEMU_IMAGES=str(images), SWARM_QEMU_IMAGE="cloud")  # fmt: skip
    assert started.returncode == 7, started.stdout + started.stderr
    assert "qemu image 'cloud' is not built" in started.stderr
    rows = query(home / "tickets.db", "SELECT state FROM engines")
    assert rows == [{"state": "stopped"}], rows

"""Several engine hosts on one PostgreSQL database (docs/scale-out.md).

Three `swarm-engine start` processes, each with its own host id and home, share one
database while an outside `psql` writer inserts tickets. One engine is killed with
SIGKILL (its whole process group: the host dies) half-way. Every ticket must end done
with exactly one successful run, no two runs of a ticket overlapping in time, and the
dead engine's tickets finished by the others once its leases ran out. The second version
puts each engine in a network namespace of its own, reaching the server over TCP on a
veth pair, as separate machines would.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from tests.support.cli import env_for, wait_until
from tests.support.postgres import Server, pg_query, psql, start_server

from swarm_engine.store import open_store

pytestmark = pytest.mark.slow

LEASE_TTL = "3"


def engine_env(home: Path, url: str, host: str) -> dict[str, str]:
    return env_for(
        home,
        SWARM_DATABASE_URL=url,
        SWARM_HOST_ID=host,
        SWARM_LEASE_TTL=LEASE_TTL,
        SWARM_HEARTBEAT_INTERVAL="0.5",
        SWARM_POLL_INTERVAL="1",
    )


def launch(argv_prefix: list[str], home: Path, url: str, host: str) -> subprocess.Popen[str]:
    home.mkdir(parents=True, exist_ok=True)
    with (home / "engine.out").open("w") as log:  # the engine keeps its own copy
        return subprocess.Popen(
            [*argv_prefix, sys.executable, "-m", "swarm_engine", "start", "--foreground",
             "--max-vms", "3"],
            env=engine_env(home, url, host),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip


def done_count(url: str) -> int:
    return int(pg_query(url, "SELECT count(*) AS n FROM tickets WHERE status = 'done'")[0]["n"])


def freeze_holding(proc: subprocess.Popen[str], url: str, host: str) -> bool:
    """Stop `proc`'s process group; keep it stopped only if `host` then holds a live run.

    A stopped engine writes nothing, so what the store says it holds stays true until the
    kill: the death is certain to strand work, whatever the timing of the echo tickets.
    """
    os.killpg(proc.pid, signal.SIGSTOP)
    held = pg_query(
        url,
        "SELECT count(*) AS n FROM workflow_runs r JOIN engines e ON e.id = r.engine_id"
        f" WHERE r.status = 'running' AND e.host = '{host}'",
    )
    if int(held[0]["n"]) > 0:
        return True
    os.killpg(proc.pid, signal.SIGCONT)
    return False


def open_count(url: str) -> int:
    rows = pg_query(url, "SELECT count(*) AS n FROM tickets WHERE status = 'open'")
    return int(rows[0]["n"])


def run_fleet(
    tmp_path: Path,
    admin_url: str,
    engine_urls: list[str],
    prefixes: list[list[str]],
    tickets: int,
) -> None:
    open_store(admin_url).close()  # the schema, before the engines and the writer race
    hosts = [f"host-{i}" for i in range(len(engine_urls))]
    procs = [
        launch(prefix, tmp_path / h, url, h)
        for prefix, url, h in zip(prefixes, engine_urls, hosts, strict=True)
    ]
    try:

        def registered() -> bool:
            for p in procs:
                assert p.poll() is None, (tmp_path / "host-0" / "engine.out").read_text()
            rows = pg_query(admin_url, "SELECT count(DISTINCT host) AS n FROM engines"
                            " WHERE state = 'running'")  # fmt: skip
            return int(rows[0]["n"]) == len(procs)

        wait_until(registered, 60, "every engine to register")
        batch = tickets // 10
        total = 0

        def insert(n: int) -> None:  # an outside writer, while the engines run
            nonlocal total
            psql(
                admin_url,
                "INSERT INTO tickets (title, status, agent_id, inputs)"
                f" SELECT 'fleet ' || g, 'open', 'echo', jsonb_build_object('n', g)"
                f" FROM generate_series({total + 1}, {total + n}) g",
            )
            total += n

        def stranding(victim: subprocess.Popen[str]) -> bool:
            if freeze_holding(victim, admin_url, hosts[0]):
                return True
            if not open_count(admin_url):  # everything ran already: give the host work
                insert(batch)
            return False

        for b in range(10):
            insert(batch)
            if b == 4:
                wait_until(lambda: done_count(admin_url) >= tickets // 4, 300, "a quarter done")
                victim = procs[0]
                wait_until(lambda: stranding(procs[0]), 120,
                           "the first host frozen while it holds a ticket")  # fmt: skip
                os.killpg(victim.pid, signal.SIGKILL)  # the host dies, sandboxes and all
                victim.wait()
        wait_until(lambda: done_count(admin_url) == total, 600, "every ticket done")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    check_exactly_once(admin_url, total, dead_host=hosts[0])


def check_exactly_once(url: str, tickets: int, dead_host: str) -> None:
    rows = pg_query(url, "SELECT status, count(*) AS n FROM tickets GROUP BY status")
    assert {r["status"]: r["n"] for r in rows} == {"done": tickets}
    done_runs = pg_query(
        url,
        "SELECT ticket_id, count(*) AS n FROM workflow_runs WHERE status = 'done'"
        " GROUP BY ticket_id",
    )
    assert len(done_runs) == tickets and {r["n"] for r in done_runs} == {1}
    runs = pg_query(
        url,
        "SELECT r.ticket_id, r.started_at, r.completed_at, r.status, e.host"
        " FROM workflow_runs r JOIN engines e ON e.id = r.engine_id ORDER BY r.ticket_id, r.id",
    )
    by_ticket: dict[int, list[dict[str, object]]] = {}
    for r in runs:
        by_ticket.setdefault(int(r["ticket_id"]), []).append(r)  # type: ignore[arg-type]
    for tid, its in by_ticket.items():
        for earlier, later in itertools.pairwise(its):
            end, start = earlier["completed_at"], later["started_at"]
            assert isinstance(end, datetime) and isinstance(start, datetime), (tid, its)
            assert end <= start, f"ticket {tid}: two runs overlap: {its}"
    # the dead host's unfinished runs were closed and redone elsewhere
    lost = [r for r in runs if r["host"] == dead_host and r["status"] != "done"]
    assert lost, "the killed engine held no ticket: the test did not test a host death"
    for r in lost:
        assert r["status"] == "failed"
        redone = by_ticket[int(r["ticket_id"])]  # type: ignore[call-overload]
        assert any(x["status"] == "done" and x["host"] != dead_host for x in redone)
    hosts = {r["host"] for r in runs if r["status"] == "done"}
    assert len(hosts) >= 2


def test_three_hosts_run_every_ticket_exactly_once_through_a_host_death(
    tmp_path: Path, pg_url: str
) -> None:
    run_fleet(tmp_path, pg_url, [pg_url] * 3, [[], [], []], tickets=1000)


@pytest.fixture
def namespaces() -> Iterator[Callable[[int], list[tuple[str, str, str]]]]:
    """Network namespaces joined to this host by veth pairs: (name, host ip, ns ip)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    made: list[str] = []
    tag = uuid.uuid4().hex[:4]

    def make(n: int) -> list[tuple[str, str, str]]:
        out = []
        for i in range(n):
            ns, outside, inside = f"swarm-{tag}-{i}", f"sw{tag}{i}h", f"sw{tag}{i}n"
            host_ip, ns_ip = f"10.211.{i}.1", f"10.211.{i}.2"
            subprocess.run(["ip", "netns", "add", ns], check=True)
            made.append(ns)
            for argv in (
                ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside],
                ["ip", "link", "set", inside, "netns", ns],
                ["ip", "addr", "add", f"{host_ip}/30", "dev", outside],
                ["ip", "link", "set", outside, "up"],
                ["ip", "-n", ns, "addr", "add", f"{ns_ip}/30", "dev", inside],
                ["ip", "-n", ns, "link", "set", inside, "up"],
                ["ip", "-n", ns, "link", "set", "lo", "up"],
            ):
                subprocess.run(argv, check=True)
            out.append((ns, host_ip, ns_ip))
        return out

    yield make
    for ns in made:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_hosts_in_their_own_network_namespaces_reach_postgres_over_tcp(
    tmp_path: Path, namespaces: Callable[[int], list[tuple[str, str, str]]]
) -> None:
    links = namespaces(3)
    server = start_server(listen=tuple(h for _, h, _ in links), trust=("10.211.0.0/16",))
    if isinstance(server, str):
        pytest.skip(f"no PostgreSQL server: {server}")
    assert isinstance(server, Server)
    try:
        admin = server.create_database()
        name = admin.rsplit("/", 1)[1]
        urls = [f"postgresql://postgres@{h}:{server.port}/{name}" for _, h, _ in links]
        # each engine sees only its veth: the loopback address of the server is not there
        probe = subprocess.run(
            ["ip", "netns", "exec", links[0][0], "psql", server.url(name).replace(
                "127.0.0.1", "127.0.0.1"), "-c", "SELECT 1", "-X", "-q"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert probe.returncode != 0
        # nsenter enters the network namespace alone (`ip netns exec` also remounts /sys,
        # which hides the cgroup mounts: each VM's memory cgroup could not be had there)
        run_fleet(
            tmp_path,
            admin,
            urls,
            [["nsenter", f"--net=/run/netns/{ns}", "--"] for ns, _, _ in links],
            tickets=300,
        )
    finally:
        server.stop()

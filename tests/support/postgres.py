"""A throwaway PostgreSQL server for the tests, and an outside writer for it (`psql`).

`SWARM_TEST_POSTGRES_URL` (a server URL whose user may CREATE DATABASE) is used when set.
Otherwise Debian's PostgreSQL binaries start a new cluster in a temporary folder (as the
`postgres` user when running as root, since PostgreSQL refuses to run as root), listening
on a Unix socket in that folder and on a loopback port. Each test gets a database of its
own. Where neither is possible the PostgreSQL tests skip, saying why.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running server: `url(db)` gives a URL for one of its databases."""

    host: str
    port: int
    user: str
    folder: Path | None = None
    bindir: Path | None = None
    owner: str | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        psql(self.url(), f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        if self.folder is None or self.bindir is None:
            return
        _as_owner(
            [str(self.bindir / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate",
             "stop"],
            self.owner,
        )  # fmt: skip
        shutil.rmtree(self.folder, ignore_errors=True)


def _as_owner(argv: list[str], owner: str | None) -> subprocess.CompletedProcess[str]:
    if owner is not None and os.geteuid() == 0:
        pw = pwd.getpwnam(owner)

        def drop() -> None:
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)

        return subprocess.run(
            argv, capture_output=True, text=True, preexec_fn=drop, check=False, timeout=120,
            env={**os.environ, "HOME": pw.pw_dir},
        )  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)


def start_server(
    *, listen: tuple[str, ...] = (), trust: tuple[str, ...] = (), port: int | None = None
) -> Server | str:
    """A server to test against, or the reason there is none. `listen`: more addresses to
    listen on besides 127.0.0.1; `trust`: networks (CIDR) allowed in without a password;
    `port`: the port to listen on (a new server is started for these, never the one
    SWARM_TEST_POSTGRES_URL names)."""
    url = os.environ.get("SWARM_TEST_POSTGRES_URL")
    if url and not listen and port is None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        return Server(
            parts.hostname or "127.0.0.1", parts.port or 5432, parts.username or "postgres"
        )
    bindir = _bindir()
    if bindir is None:
        return "PostgreSQL is not installed (Debian: apt-get install postgresql; or set SWARM_TEST_POSTGRES_URL)"
    owner: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run a server as"
        owner = "postgres"
    folder = Path(tempfile.mkdtemp(prefix="swarm-pg-"))
    if owner is not None:
        shutil.chown(folder, owner)
    data = folder / "data"
    init = _as_owner(
        [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync",
         "-E", "UTF8", "--locale=C"],
        owner,
    )  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        return f"initdb failed: {init.stderr.strip()[-300:]}"
    if trust:
        hba = data / "pg_hba.conf"
        lines = "".join(f"host all all {cidr} trust\n" for cidr in trust)
        _as_owner(["sh", "-c", f"printf '%s' '{lines}' >> {hba}"], owner)
    port = _free_port() if port is None else port
    addresses = ",".join(("127.0.0.1", *listen))
    options = (
        f"-k {folder} -c listen_addresses={addresses} -p {port} -c fsync=off"
        " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    started = _as_owner(
        [str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"),
         "-w", "-t", "60", "start"],
        owner,
    )  # fmt: skip
    if started.returncode != 0:
        log = (
            (folder / "log").read_text(errors="replace")[-500:] if (folder / "log").exists() else ""
        )
        shutil.rmtree(folder, ignore_errors=True)
        return f"the PostgreSQL server did not start: {started.stderr.strip()} {log}"
    return Server("127.0.0.1", port, "postgres", folder, bindir, owner)


def psql(url: str, sql: str, *args: Any) -> str:
    """Run SQL with the real `psql` client, as any outside writer would (variables :'v1'...
    for `args`, quoted by psql). Returns its unaligned output; raises on an error."""
    argv = ["psql", url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
    for i, value in enumerate(args, 1):
        argv += ["-v", f"v{i}={value}"]
    done = subprocess.run(argv, input=sql, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, argv, done.stdout, done.stderr)
    return done.stdout.strip()


def pg_query(url: str, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        return list(conn.execute(sql, params or {}).fetchall())

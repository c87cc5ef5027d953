"""A PostgreSQL store not up yet when `start` or `serve` starts is a delay, not a failure:
each says so in one line and waits (with backoff) until the server answers, then goes
on. A one-shot command still exits 6 with one line."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from tests.support.cli import env_for, swarm
from tests.support.postgres import _free_port, start_server


class Watched:
    """A `swarm-engine ARGS` process whose output lines (both streams) can be waited on."""

    def __init__(self, home: Path, *args: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "swarm_engine", *args], env=env_for(home, **env),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.pumps = [
            threading.Thread(target=self._pump, args=(stream,), daemon=True)
            for stream in (self.proc.stdout, self.proc.stderr)
        ]
        for pump in self.pumps:
            pump.start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.seen:
                if text in line:
                    return line
            left = deadline - time.monotonic()
            assert left > 0 and self.proc.poll() is None, (text, self.seen, self.proc.poll())
            try:
                self.seen.append(self.lines.get(timeout=min(left, 1)))
            except queue.Empty:
                continue

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        for pump in self.pumps:
            pump.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return code


def test_start_and_serve_wait_for_a_store_not_up_yet(tmp_path: Path) -> None:
    port = _free_port()
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    env = {"SWARM_DATABASE_URL": url}
    once = swarm(tmp_path / "one", "status", SWARM_DATABASE_URL=url)  # a one-shot command
    assert once.returncode == 6 and once.stderr.startswith(f"error: cannot connect to {url}")
    assert len(once.stderr.splitlines()) == 1
    serve = Watched(tmp_path / "api", "serve", "--port", "0", env=env)
    engine = Watched(tmp_path / "engine", "start", "--foreground", env=env)
    server = None
    try:
        for proc in (serve, engine):
            line = proc.wait_for("waiting for the store at")
            assert line.startswith(f"waiting for the store at {url} (") and "retrying" in line
        time.sleep(1.5)  # sleep-ok: both keep waiting, one line each, while no server is up
        for proc in (serve, engine):
            proc.seen += [proc.lines.get() for _ in range(proc.lines.qsize())]
            assert proc.proc.poll() is None
            assert sum("waiting for the store" in x for x in proc.seen) == 1, proc.seen
        server = start_server(port=port)
        if isinstance(server, str):
            pytest.skip(f"no PostgreSQL server: {server}")
        address = serve.wait_for("serving the API on").split()[4]
        assert requests.get(address + "/v1/status", timeout=30).status_code == 200
        engine.wait_for("engine starting")
        assert engine.stop() == 0, engine.seen
    finally:
        serve.stop()
        engine.stop()
        if not isinstance(server, str) and server is not None:
            server.stop()


def test_a_server_that_answers_and_refuses_is_no_wait(tmp_path: Path, postgres: object) -> None:
    """A server that answers but refuses (a database that does not exist, a user it does
    not know) is a mistake in the URL, not a delay: `start` and `serve` exit 6 at once with
    one line, as a one-shot command does, and never say they are waiting."""
    from tests.support.postgres import Server

    assert isinstance(postgres, Server)
    base = postgres.url()
    for url in (base.rsplit("/", 1)[0] + "/no_such_database",
                base.replace("postgres@", "no_such_user@", 1)):  # fmt: skip
        for args in (("start", "--foreground"), ("serve", "--port", "0")):
            done = swarm(tmp_path / "home", *args, timeout=60, SWARM_DATABASE_URL=url)
            assert done.returncode == 6, (args, url, done.stdout, done.stderr)
            assert "waiting for the store" not in done.stdout + done.stderr
            assert done.stderr.startswith("error: cannot connect to "), done.stderr
            assert len(done.stderr.splitlines()) == 1, done.stderr

"""A real `swarm-engine serve` process on a free port, and a client for it (requests)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.support.cli import env_for

ADDRESS = re.compile(r"serving the API on (http://\S+) ")


@dataclass
class Api:
    """A running server: `call(method, path, ...)` sends a request with its token."""

    proc: subprocess.Popen[str]
    url: str
    token: str | None = None
    lines: list[str] = field(default_factory=list)
    pump: threading.Thread | None = None
    session: requests.Session = field(default_factory=requests.Session)

    def headers(self, token: Any = ...) -> dict[str, str]:
        """The Authorization header: the server's token, or `token` (None: none)."""
        use = self.token if token is ... else token
        return {"Authorization": f"Bearer {use}"} if use else {}

    def call(
        self, method: str, path: str, *, token: Any = ..., timeout: float = 30, **kw: Any
    ) -> requests.Response:
        headers = {**self.headers(token), **kw.pop("headers", {})}
        return self.session.request(method, self.url + path, headers=headers, timeout=timeout, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.call("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.call("POST", path, **kw)

    def stop(self) -> str:
        """SIGTERM, then what it printed on stderr."""
        self.session.close()
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.pump is not None:
            self.pump.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return "".join(self.lines)


def start_api(home: Path, *args: str, token: str | None = None, **env: str) -> Api:
    """`swarm-engine serve --port 0 ARGS` with SWARM_HOME=home; waits until it listens."""
    if token is not None:
        env["SWARM_API_TOKEN"] = token
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm_engine", "serve", "--port", "0", *args],
        env=env_for(home, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    lines: list[str] = []
    found = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if ADDRESS.search(line):
                found.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while not found.wait(0.05):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            reader.join(10)
            assert proc.stderr is not None
            proc.stderr.close()
            raise AssertionError("the API server did not start:\n" + "".join(lines))
    match = next(m for line in lines if (m := ADDRESS.search(line)))
    return Api(proc, match.group(1), token, lines, reader)


def sse_events(response: requests.Response) -> Any:
    """The server-sent events of a streamed response, as dicts: `id`, `event`, `data`."""
    event: dict[str, str] = {}
    for raw in response.iter_lines(decode_unicode=True):
        line = raw if isinstance(raw, str) else raw.decode()
        if not line:
            if event.get("event") or event.get("data"):
                yield event
            event = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        event[name] = event[name] + "\n" + value if name == "data" and name in event else value

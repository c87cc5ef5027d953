"""Two hosts (two homes, two host ids) sharing one ticket store and one registry
(docs/scale-out.md, step 3): an agent whose folder holds only `agent.yaml` runs on any of
them; an agent with files runs on a host that holds its package as registered, and on
any other its ticket fails with one line saying to register it there, which then works.
A package is still read only from the running host's own `<home>/packages/<name>/<version>`
(a row's `package_path` names no folder a step reads), and only with the content
registered (`package_digest`)."""

from __future__ import annotations

import re
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from tests.acceptance.conftest import write_agent
from tests.support.cli import EXAMPLES, insert_agent_row, swarm_inproc

from swarm_engine.models import AgentSpec


@dataclass
class Host:
    home: Path
    env: dict[str, str]

    def swarm(self, *args: str) -> tuple[int, str]:
        done = swarm_inproc(self.home, *args, **self.env)
        return done.returncode, done.stdout + done.stderr

    def ticket(self, agent: str, *inputs: str) -> str:
        args = [f"--input={i}" for i in inputs]
        code, out = self.swarm("ticket", "create", "--title", "t", "--agent", agent, *args)
        assert code == 0, out
        found = re.search(r"ticket (\d+) created", out)
        assert found, out
        return found.group(1)

    def run(self, agent: str, *inputs: str) -> tuple[int, str]:
        return self.swarm("run-ticket", self.ticket(agent, *inputs), "--wait")


@pytest.fixture(params=["sqlite", "postgresql"])
def hosts(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Host, Host]:
    """Hosts `host1` and `host2`, each with its own home, sharing one store and registry."""
    if request.param == "sqlite":
        shared = {
            "SWARM_DATABASE_URL": f"sqlite:///{tmp_path}/tickets.db",
            "SWARM_REGISTRY_URL": f"sqlite:///{tmp_path}/registry.db",
        }
    else:
        shared = {"SWARM_DATABASE_URL": request.getfixturevalue("pg_url")}
    return (
        Host(tmp_path / "h1", {**shared, "SWARM_HOST_ID": "host1"}),
        Host(tmp_path / "h2", {**shared, "SWARM_HOST_ID": "host2"}),
    )


def test_an_agent_of_only_agent_yaml_runs_on_a_host_that_did_not_register_it(
    hosts: tuple[Host, Host],
) -> None:
    """The tester's p6: `sleeper` (a folder holding only agent.yaml) registered from host1
    failed every ticket host2 ran."""
    h1, h2 = hosts
    code, out = h1.swarm("agent", "register", str(EXAMPLES / "agents" / "sleeper"))
    assert code == 0, out
    assert not (h1.home / "packages" / "sleeper").exists()  # no package: nothing copied
    code, out = h2.run("sleeper", "seconds=0")
    assert code == 0, out
    assert "done" in out
    code, out = h1.run("sleeper", "seconds=0")
    assert code == 0, out


def test_an_agent_with_files_runs_on_a_second_host_once_registered_there(
    hosts: tuple[Host, Host],
) -> None:
    h1, h2 = hosts
    folder = EXAMPLES / "agents" / "word-count"
    assert (folder / "count.py").is_file()
    code, out = h1.swarm("agent", "register", str(folder))
    assert code == 0, out
    code, out = h2.run("word-count", "text=a b c")
    assert code != 0
    own = h2.home / "packages" / "word-count" / "1.0.0"
    line = (
        f"step 'main' failed: agent word-count@1.0.0: its package is not on this host ({own});"
        " register it on this host too: swarm-engine agent register PATH"
    )
    errors = [x for x in out.splitlines() if x.startswith("error: ticket ")]
    assert errors and errors[-1].endswith(f" failed: {line}"), out
    code, out = h2.swarm("agent", "register", str(folder))  # the same definition and files
    assert code == 0, out
    for host in (h2, h1):
        code, out = host.run("word-count", "text=a b c")
        assert code == 0, out
        assert '"words": 3' in out


def test_a_host_whose_package_differs_from_the_registered_one_fails_its_ticket(
    hosts: tuple[Host, Host], tmp_path: Path
) -> None:
    """A copy changed since (or left from another registration of the same version) is
    not run; a folder whose files differ cannot be registered as the same version."""
    h1, h2 = hosts
    folder = write_agent(
        tmp_path / "src",
        "name: reader\nkind: shell\ntimeout_seconds: 20\ncommand: cat hello.txt\n",
        {"hello.txt": "hello\n"},
    )
    assert h1.swarm("agent", "register", str(folder))[0] == 0
    # same files, links kept as docs/scale-out.md says (`cp -a`): runs as is
    shutil.copytree(h1.home / "packages", h2.home / "packages", symlinks=True)
    code, out = h2.run("reader")
    assert code == 0, out
    (h2.home / "packages" / "reader" / "1.0.0" / "hello.txt").write_text("changed\n")
    code, out = h2.run("reader")
    assert code != 0
    assert "its files on this host" in out
    assert "differ from the ones this step was planned with: either" in out
    assert "registering it on this host again fixes it" in out
    (folder / "hello.txt").write_text("other\n")
    code, out = h2.swarm("agent", "register", str(folder))
    assert code == 4, out
    assert "error: agent reader@1.0.0 is already registered" in out
    code, out = h1.run("reader")  # host1's copy is untouched
    assert code == 0, out


def test_a_rows_package_path_names_no_folder_a_step_reads(tmp_path: Path) -> None:
    """A row with a digest is read from the running host's own package folder, whatever
    its `package_path` names (`/etc`): a host without that folder fails the ticket."""
    h = Host(tmp_path / "h", {})
    assert h.swarm("status", "--init")[0] == 0
    spec = AgentSpec(
        name="peek", kind="shell", timeout_seconds=20, command="cat passwd",
        package_path="/etc", package_digest="sha256:" + "0" * 64,
    )  # fmt: skip
    insert_agent_row(h.home, spec)
    code, out = h.run("peek")
    assert code != 0
    assert "its package is not on this host" in out
    assert "root:" not in out
    (h.home / "packages" / "peek" / "1.0.0").mkdir(parents=True)  # here, but not its files
    code, out = h.run("peek")
    assert code != 0
    assert "differ from the ones this step was planned with" in out
    assert "root:" not in out


def test_an_agent_registered_before_package_digests_runs_everywhere_once_registered_again(
    tmp_path: Path,
) -> None:
    """A row of an older engine: `package_path` names the registering host's folder, no
    digest. Another host fails its tickets with a line saying what to do; registering
    it again with `--force` (a folder of only agent.yaml: no package) mends every host."""
    shared = {
        "SWARM_DATABASE_URL": f"sqlite:///{tmp_path}/tickets.db",
        "SWARM_REGISTRY_URL": f"sqlite:///{tmp_path}/registry.db",
    }
    h1 = Host(tmp_path / "h1", {**shared, "SWARM_HOST_ID": "host1"})
    h2 = Host(tmp_path / "h2", {**shared, "SWARM_HOST_ID": "host2"})
    folder = EXAMPLES / "agents" / "sleeper"
    assert h1.swarm("status", "--init")[0] == 0
    old = h1.home / "packages" / "sleeper" / "1.1.0"
    shutil.copytree(folder, old)  # as an older engine registered it
    spec = AgentSpec.model_validate(
        {**yaml.safe_load((folder / "agent.yaml").read_text()), "package_path": str(old)}
    )
    conn = sqlite3.connect(tmp_path / "registry.db", timeout=30)
    try:
        with conn:
            conn.execute(
                "INSERT INTO agents (name, version, kind, description, spec) VALUES (?, ?, ?, ?, ?)",
                (spec.name, spec.version, spec.kind, spec.description, spec.model_dump_json()),
            )
    finally:
        conn.close()
    assert h1.run("sleeper", "seconds=0")[0] == 0
    code, out = h2.run("sleeper", "seconds=0")
    assert code != 0
    assert (
        "(registered by an older engine? register it again: swarm-engine agent register"
        " --force PATH)" in out
    ), out
    code, out = h2.swarm("agent", "register", "--force", str(folder))
    assert code == 0, out
    for host in (h2, h1):
        code, out = host.run("sleeper", "seconds=0")
        assert code == 0, out

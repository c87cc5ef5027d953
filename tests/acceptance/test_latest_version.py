"""An agent's "latest version" is the highest by SemVer precedence: a release above
its pre-releases, build metadata only a tie-break (docs/agents.md)."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import query, swarm, swarm_inproc


def register(home: Path, tmp_path: Path, version: str) -> None:
    folder = tmp_path / "agents" / version
    folder.mkdir(parents=True)
    (folder / "agent.yaml").write_text(f"name: sv\nversion: '{version}'\nkind: echo\n")
    done = swarm_inproc(home, "agent", "register", str(folder))
    assert done.returncode == 0, done.stderr


def test_the_latest_is_the_release_not_its_pre_release(home: Path, tmp_path: Path) -> None:
    for version in ("1.0.10", "2.0.0-rc1", "2.0.0", "1.9.0"):
        register(home, tmp_path, version)
    shown = swarm_inproc(home, "agent", "show", "sv")
    assert shown.returncode == 0 and "version: 2.0.0\n" in shown.stdout, shown.stdout
    register(home, tmp_path, "2.0.0+build9")  # same precedence: the one with a build wins
    shown = swarm_inproc(home, "agent", "show", "sv")
    assert "version: 2.0.0+build9\n" in shown.stdout, shown.stdout
    swarm(home, "ticket", "create", "--title", "t", "--agent", "sv", check=True)
    done = swarm(home, "run-ticket", "1", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    steps = query(home / "tickets.db", "SELECT agent_version FROM step_executions")
    assert [s["agent_version"] for s in steps] == ["2.0.0+build9"]

"""What `agent register PATH` copies into every VM of the agent: the folder of an
`agent.yaml` (given as the folder or as that file), never the folder of a file of another
name. `agent register ~/custom.yaml` copied the whole folder around it, dotfiles
included (`.ssh/id_rsa`, `.env`), into every workspace the agent ran in, and said
nothing of it."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import query, swarm, swarm_inproc

LIST_WORKSPACE = "name: {name}\nversion: 1.0.0\nkind: shell\ncommand: find . -type f\n"


def _folder(tmp_path: Path, definition: str, name: str) -> Path:
    folder = tmp_path / "around"
    (folder / ".ssh").mkdir(parents=True)
    (folder / ".ssh" / "id_rsa").write_text("PRIVATE KEY\n")
    (folder / ".env").write_text("TOKEN=secret\n")
    (folder / definition).write_text(LIST_WORKSPACE.format(name=name))
    return folder


def _runs_and_lists(home: Path, agent: str) -> str:
    made = swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", agent, "--json")
    assert made.returncode == 0, made.stderr
    ran = swarm(home, "run-ticket", "1", "--wait", timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    (row,) = query(home / "tickets.db", "SELECT result FROM tickets")
    return str(row["result"])


def test_a_definition_file_of_another_name_registers_without_its_folder(tmp_path: Path) -> None:
    home = tmp_path / "home"
    folder = _folder(tmp_path, "custom.yaml", "filereg")
    done = swarm_inproc(home, "agent", "register", str(folder / "custom.yaml"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "registered agent filereg@1.0.0 (shell)"
    assert "is no agent.yaml: its definition alone is registered, no package" in done.stderr
    assert not (home / "packages" / "filereg").exists()
    listed = _runs_and_lists(home, "filereg")
    assert "id_rsa" not in listed and ".env" not in listed and "custom.yaml" not in listed


def test_an_agent_yaml_brings_its_folder_and_says_where_it_was_copied(tmp_path: Path) -> None:
    home = tmp_path / "home"
    folder = _folder(tmp_path, "agent.yaml", "packaged")
    for path in (folder / "agent.yaml", folder):  # the file and its folder: the same package
        done = swarm_inproc(home, "agent", "register", "--force", str(path))
        assert done.returncode == 0, done.stderr
        copied = home / "packages" / "packaged" / "1.0.0"
        assert done.stdout.strip() == (
            f"registered agent packaged@1.0.0 (shell), its folder's files copied to {copied}"
        )
    assert "id_rsa" in _runs_and_lists(home, "packaged")  # what its author chose to ship

"""Registering again what is registered already (docs/scale-out.md, step 3: every host
registers its agents from the same folder): the same definition and files are accepted,
the row left as it is and the package copied to this host, and the line says so; another
definition under the same name@version is refused (exit 4) unless `--force`. The tester's
case: `agent register --all examples/agents` on a second host refused `claude-coder` (a
folder of only agent.yaml) and so registered nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import Target
from tests.support.cli import EXAMPLES, swarm_inproc


def _hosts(target: Target, tmp_path: Path) -> list[tuple[Path, dict[str, str]]]:
    """Two homes (`hA`, `hB`) sharing `target`'s store and registry."""
    shared = dict(target.env)
    if target.dialect == "sqlite":
        Path(target.target).parent.mkdir(parents=True, exist_ok=True)
        shared = {
            "SWARM_DATABASE_URL": f"sqlite:///{target.target}",
            "SWARM_REGISTRY_URL": f"sqlite:///{tmp_path}/registry.db",
        }
    return [
        (tmp_path / "hA", {**shared, "SWARM_HOST_ID": "hA"}),
        (tmp_path / "hB", {**shared, "SWARM_HOST_ID": "hB"}),
    ]


def _run(host: tuple[Path, dict[str, str]], *args: str) -> tuple[int, str, str]:
    done = swarm_inproc(host[0], *args, **host[1])
    return done.returncode, done.stdout, done.stderr


def _created(target: Target, tmp_path: Path, table: str, name: str) -> object:
    where = Target("sqlite", tmp_path / "registry.db", {}) if target.dialect == "sqlite" else target
    (row,) = where.rows(f"SELECT created_at FROM {table} WHERE name = %(name)s", name=name)
    return row["created_at"]


def test_agents_registered_again_on_a_second_host(store_target: Target, tmp_path: Path) -> None:
    first, second = _hosts(store_target, tmp_path)
    agents = tmp_path / "agents"
    shutil.copytree(EXAMPLES / "agents", agents)
    code, out, err = _run(first, "agent", "register", "--all", str(agents))
    assert code == 0, err
    assert "registered agent claude-coder@1.0.0 (claude)" in out
    before = _created(store_target, tmp_path, "agents", "claude-coder")
    code, out, err = _run(second, "agent", "register", "--all", str(agents))
    assert code == 0, err
    lines = out.splitlines()
    assert "agent claude-coder@1.0.0 already registered, identical" in lines
    copied = second[0] / "packages" / "word-count" / "1.0.0"
    assert (
        f"agent word-count@1.0.0 already registered, identical, its folder's files copied to"
        f" {copied}" in lines
    )
    assert len(lines) == len(list(agents.iterdir()))
    assert (copied / "count.py").is_file()
    assert _created(store_target, tmp_path, "agents", "claude-coder") == before  # left as is
    # another definition under the same name@version: refused, nothing registered
    coder = agents / "claude-coder" / "agent.yaml"
    coder.write_text(coder.read_text().replace("memory_mb: 1024", "memory_mb: 2048"))
    code, out, err = _run(second, "agent", "register", "--all", str(agents))
    assert code == 4, out + err
    assert err.strip() == (
        "error: agent claude-coder@1.0.0 is already registered with another definition (bump"
        " its version, or replace it: --force, or ?force=true in the API)"
    )
    code, out, err = _run(second, "agent", "register", "--force", str(agents / "claude-coder"))
    assert code == 0, err
    assert out.strip() == "registered agent claude-coder@1.0.0 (claude)"


def test_a_workflow_registered_again_as_it_is(store_target: Target, tmp_path: Path) -> None:
    first, second = _hosts(store_target, tmp_path)
    assert _run(first, "agent", "register", "--all", str(EXAMPLES / "agents"))[0] == 0
    flow = tmp_path / "text-report"
    shutil.copytree(EXAMPLES / "workflows" / "text-report", flow)
    code, out, err = _run(first, "workflow", "register", str(flow))
    assert code == 0, err
    assert out.startswith("registered workflow text-report@")
    ref = out.split()[2]
    before = _created(store_target, tmp_path, "workflows", "text-report")
    code, out, err = _run(second, "workflow", "register", "--all", str(tmp_path))
    assert code == 0, err
    assert out.strip() == f"workflow {ref} already registered, identical"
    assert _created(store_target, tmp_path, "workflows", "text-report") == before
    definition = flow / "workflow.yaml"
    definition.write_text(
        definition.read_text().replace("description: Counts", "description: Sums")
    )
    code, out, err = _run(second, "workflow", "register", str(flow))
    assert code == 4, out + err
    assert f"workflow {ref} is already registered" in err

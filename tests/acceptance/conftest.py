from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from tests.support.cli import swarm_inproc


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    assert swarm_inproc(h, "status").returncode == 0  # the first command creates both databases
    return h


def write_agent(folder: Path, yaml_text: str, files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "agent.yaml").write_text(textwrap.dedent(yaml_text))
    for name, text in (files or {}).items():
        (folder / name).write_text(textwrap.dedent(text))
    return folder


def write_workflow(folder: Path, yaml_text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "workflow.yaml").write_text(textwrap.dedent(yaml_text))
    return folder

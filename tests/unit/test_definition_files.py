"""Reading definition files is bounded: no YAML aliases, bounded size and depth, no
duplicate keys; an agent package has a size and file-count cap."""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

import pytest
from tests.support.hostile_yaml import BOMB

from swarm_engine.errors import ConfigError
from swarm_engine.registry.loader import (
    MAX_DEFINITION_BYTES,
    MAX_PACKAGE_BYTES,
    MAX_PACKAGE_FILES,
    MAX_YAML_DEPTH,
    check_package,
    load_agent,
    load_workflow,
    read_yaml,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_an_alias_bomb_is_refused_at_once_in_little_memory(tmp_path: Path) -> None:
    assert len(BOMB) < 1000
    write(tmp_path / "bomb" / "agent.yaml", BOMB)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ConfigError) as err:
            load_agent(tmp_path / "bomb")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 2
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes"
    assert str(err.value) == (
        f"{tmp_path / 'bomb' / 'agent.yaml'}: invalid YAML (line 4, column 7): YAML anchors "
        "and aliases (&name, *name, <<: *name) are not allowed in definitions; write the "
        "value out"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &x 1\nb: 2\n", "line 1, column 4): YAML anchors and aliases"),
        ("base: {kind: echo}\nother:\n  <<: *base\n", "line 3, column 7): YAML anchors"),
        ("name: a\nkind: echo\nname: b\n", "line 3, column 1): key 'name' is given twice"),
        ("[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1), "nested deeper than 64"),
        ("- 1\n", "expected a mapping at the top level"),
    ],
)
def test_hostile_or_odd_yaml_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        read_yaml(write(tmp_path / "x.yaml", text))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_nesting_up_to_the_limit_is_fine(tmp_path: Path) -> None:
    depth = MAX_YAML_DEPTH - 1
    data = read_yaml(write(tmp_path / "x.yaml", "k: " + "[" * depth + "]" * depth + "\n"))
    assert "k" in data


def test_an_oversized_definition_is_refused_without_parsing_it(tmp_path: Path) -> None:
    file = tmp_path / "wf" / "workflow.yaml"
    write(file, "name: big\nsteps: []\n# " + "x" * MAX_DEFINITION_BYTES + "\n")
    with pytest.raises(ConfigError) as err:
        load_workflow(file.parent)
    assert str(err.value) == f"{file}: over 1024 KiB (the limit for a definition file)"


def test_a_package_over_the_file_cap_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "pkg"
    folder.mkdir()
    for n in range(MAX_PACKAGE_FILES):
        (folder / f"f{n}").touch()
    check_package(folder)  # exactly at the cap
    (folder / ".git").mkdir()
    (folder / ".git" / "objects").touch()  # never copied, so not counted
    check_package(folder)
    (folder / "one-more").touch()
    with pytest.raises(ConfigError, match=f"over {MAX_PACKAGE_FILES} files"):
        check_package(folder)


def test_a_package_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "pkg"
    folder.mkdir()
    with (folder / "data.bin").open("wb") as f:  # sparse: no disk used
        f.truncate(MAX_PACKAGE_BYTES)
    check_package(folder)
    os.truncate(folder / "data.bin", MAX_PACKAGE_BYTES + 1)
    with pytest.raises(ConfigError, match=r"pkg: the agent package is over 64 MiB"):
        check_package(folder)

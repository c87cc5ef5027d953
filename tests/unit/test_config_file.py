"""The config file is read only when it is a regular file of at most 1 MiB; only a path
where nothing is counts as "no config file" (config_file.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.support.cli import swarm_inproc

from swarm_engine.config import load_settings, load_settings_tolerant
from swarm_engine.config_file import MAX_CONFIG_BYTES
from swarm_engine.errors import ConfigError


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in [k for k in os.environ if k.startswith("SWARM_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SWARM_HOME", str(tmp_path))
    return tmp_path


def _dangling(path: Path) -> None:
    path.symlink_to(path.parent / "moved-away.toml")


def _folder(path: Path) -> None:
    path.mkdir()


def _fifo(path: Path) -> None:
    os.mkfifo(path)  # opened, it would block a reader until a writer came: never opened


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "make", [_dangling, _folder, _fifo], ids=["dangling-link", "folder", "fifo"]
)
def test_a_home_config_that_is_there_but_not_a_file_is_refused(home: Path, make: object) -> None:
    path = home / "config.toml"
    make(path)  # type: ignore[operator]
    for load in (load_settings, lambda: load_settings_tolerant({"tickets_db"})):
        with pytest.raises(ConfigError) as caught:
            load()
        assert str(caught.value) == f"config file {path} is not a file"
    done = swarm_inproc(home, "ticket", "list")
    assert (done.returncode, done.stderr) == (5, f"error: config file {path} is not a file\n")


def test_only_a_home_config_where_nothing_is_counts_as_missing(home: Path) -> None:
    assert load_settings().max_vms == 4
    (home / "real.toml").write_text("max_vms = 2\n")
    (home / "config.toml").symlink_to(home / "real.toml")
    assert load_settings().max_vms == 2  # a link to a file is that file


def test_a_config_file_over_one_mib_is_refused_before_it_is_read(home: Path) -> None:
    path = home / "config.toml"
    with path.open("wb") as file:
        file.truncate(300 * 1024 * 1024)  # sparse: stat says 300 MB, reading it would take them
    with pytest.raises(ConfigError, match=r"is over 1048576 bytes \(1 MiB\): not read"):
        load_settings()
    with pytest.raises(ConfigError, match="is over 1048576 bytes"):
        load_settings_tolerant({"tickets_db"})
    path.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="is over 1048576 bytes"):
        load_settings()
    path.write_bytes(b"#" * (MAX_CONFIG_BYTES - 13) + b"\nmax_vms = 2\n")
    assert load_settings().max_vms == 2  # 1 MiB exactly is read

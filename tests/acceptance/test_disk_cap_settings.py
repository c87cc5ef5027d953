"""`disk_mb` and `max_files` are capped where settings load, at what an ext4 image in
memory makes cheaply (a tester's disk_mb = 1073741824 ran mke2fs for 30 s and took GBs of
RAM at each engine start, then refused every step); a filesystem a root engine cannot
make is not blamed on the engine not being root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from tests.support.cli import swarm_inproc

from swarm_engine.errors import VMError
from swarm_engine.vm.process import ProcessBackend, ProcessConfig


@pytest.mark.parametrize(("setting", "most"), [("disk_mb", 1 << 20), ("max_files", 1 << 24)])
def test_a_setting_past_its_cap_is_refused_at_load(home: Path, setting: str, most: int) -> None:
    ProcessConfig.model_validate({setting: most})  # the cap itself is accepted
    with pytest.raises(ValidationError):
        ProcessConfig.model_validate({setting: most + 1})
    (home / "config.toml").write_text(f"[backend_options.process]\n{setting} = {1 << 30}\n")
    done = swarm_inproc(home, "ticket", "list")
    assert done.returncode == 5, done.stdout + done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert setting in done.stderr and str(most) in done.stderr, done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="a root engine makes each workspace's filesystem")
def test_a_filesystem_a_root_engine_cannot_make_names_the_settings_not_root(
    tmp_path: Path,
) -> None:
    """mke2fs refuses 2^24 inodes in a 1 MiB filesystem."""
    backend = ProcessBackend(tmp_path / "home", ProcessConfig(disk_mb=1, max_files=1 << 24))
    with pytest.raises(VMError) as refused:
        _ = backend.image
    line = str(refused.value)
    assert "(disk_mb = 1, max_files = 16777216)" in line, line
    assert "run the engine as root" not in line and "lower them" in line, line

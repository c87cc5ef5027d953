"""`vm doctor --boot` boots as the engine would: with the home's `[backend_options.qemu]`
(a tester's finding: it passed on only the images folder and image, so with
`snapshot = false` it still restored from the images folder's templates, and `run_dir` was
not used). Skipped without QEMU or an image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.support.cli import swarm

pytestmark = [pytest.mark.qemu]


def test_the_doctors_boot_uses_the_homes_qemu_options(tmp_path: Path, qemu_images: Path) -> None:
    images = qemu_images
    home, run_dir = tmp_path / "home", tmp_path / "vms"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[backend_options.qemu]\nimages_dir = "{images}"\nsnapshot = false\n'
        f'run_dir = "{run_dir}"\nboot_timeout = 120\n'
    )
    done = swarm(home, "vm", "doctor", "--boot", "--json", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    boot = next(c for c in json.loads(done.stdout) if c["name"] == "boot")
    assert boot["level"] == "ok", boot
    assert boot["message"].startswith("booted in "), boot  # not `restored from a ... template`
    assert run_dir.is_dir()  # its VM's folder was made there (and removed with the VM)

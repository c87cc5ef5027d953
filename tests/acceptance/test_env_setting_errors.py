"""A bad value in a SWARM_* environment variable is one line naming that variable (never
a config file that does not hold it), with exit 5 (bad settings), for every command that
reads it: `SWARM_QEMU_IMAGE` (read as the qemu backend's default image) gave a Python
traceback ending in pydantic's error, or blamed config.toml."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.support.cli import swarm, swarm_inproc

QEMU_COMMANDS = [("vm", "doctor"), ("vm", "doctor", "--json"), ("vm", "image", "list")]


def assert_one_line(done: subprocess.CompletedProcess[str], variable: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 5, (done.returncode, done.stdout, done.stderr)
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert line.startswith("error: ") and f"(in {variable})" in line, line
    for word in ("Traceback", "pydantic", "https://"):
        assert word not in line, line


@pytest.mark.parametrize("command", QEMU_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("value", ["../../etc", "Cloud", "a" * 64, "x y"])
@pytest.mark.parametrize("config", [None, "[backend_options.qemu]\nwarm = 0\n"])
def test_a_bad_qemu_image_variable_is_one_line_naming_it(
    home: Path, command: tuple[str, ...], value: str, config: str | None
) -> None:
    if config is not None:
        (home / "config.toml").write_text(config)
    done = swarm(home, *command, SWARM_QEMU_IMAGE=value)
    assert_one_line(done, "SWARM_QEMU_IMAGE")
    assert "is not an image name" in done.stderr and "a-z, 0-9" in done.stderr
    assert "config file" not in done.stderr  # the value came from the variable


def test_a_good_qemu_image_variable_is_still_used(home: Path) -> None:
    done = swarm(home, "vm", "image", "list", SWARM_QEMU_IMAGE="tiny")
    assert done.returncode == 0, done.stderr


def test_the_config_files_image_wins_over_a_bad_variable(home: Path) -> None:
    (home / "config.toml").write_text('[backend_options.qemu]\nimage = "tiny"\n')
    done = swarm(home, "vm", "image", "list", SWARM_QEMU_IMAGE="../../etc")
    assert done.returncode == 0, done.stderr


BAD_VALUES = [
    ("SWARM_MAX_VMS", "12x"),
    ("SWARM_API_MAX_CONNECTIONS", "-1"),
    ("SWARM_LEASE_TTL", "1e"),
    ("SWARM_POLL_INTERVAL", "nan"),
    ("SWARM_BACKEND", "nope"),
    ("SWARM_HOST_ID", "b x"),
    ("SWARM_LOG_LEVEL", "loud"),
    ("SWARM_LOG_FORMAT", "bad"),
    ("SWARM_DATABASE_URL", "nope"),
    ("SWARM_REGISTRY_URL", "nope"),
    ("SWARM_TICKETS_DB", ""),
    ("SWARM_REGISTRY_DB", ""),
    ("SWARM_AGENTS", "[1]"),
    ("SWARM_GATEWAY", '{"x": 1}'),
    ("SWARM_BACKEND_OPTIONS", '{"qemu": {"image": "../x"}}'),
    ("SWARM_BACKEND_OPTIONS", '{"qemu": {"warm": -1}}'),
    ("SWARM_TRIGGERS", "[1]"),
]


@pytest.mark.parametrize("command", [*QEMU_COMMANDS, ("status",)], ids=" ".join)
@pytest.mark.parametrize(("variable", "value"), BAD_VALUES, ids=[v for v, _ in BAD_VALUES])
def test_every_settings_variable_fails_in_one_line_naming_it(
    home: Path, command: tuple[str, ...], variable: str, value: str
) -> None:
    done = swarm_inproc(home, *command, **{variable: value})
    assert_one_line(done, variable)

"""Fixtures the integration suites share."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tests.support.listener import Greeter

from swarm_engine.vm.backends import create_backend
from swarm_engine.vm.base import VM, VMSpec


@pytest.fixture
def listeners() -> Iterator[tuple[Greeter, Greeter]]:
    """Two greeting listeners on 127.0.0.1: one a step may be allowed to reach, one not."""
    a, b = Greeter(), Greeter()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def qemu_images() -> Path:
    """The guest images folder the QEMU suites boot from (`$SWARM_QEMU_IMAGES`, else the
    home's); the test is skipped, saying why, without QEMU or the image."""
    from swarm_engine.config import load_settings
    from swarm_engine.vm.qemu.doctor import unavailable
    from swarm_engine.vm.qemu.folders import images_dir_for

    found = images_dir_for(load_settings().home)
    reason = unavailable(found)
    if reason is not None:
        pytest.skip(reason)
    return found


@pytest.fixture
async def vm(tmp_path: Path) -> AsyncIterator[VM]:
    """A VM of the process backend (its defaults), destroyed after the test."""
    backend = create_backend("process", tmp_path / "home", {})
    booted = await backend.boot("vm-test", VMSpec())
    try:
        yield booted
    finally:
        await booted.destroy()
        await backend.close()


@pytest.fixture
def live_engine() -> Iterator[int]:
    """The pid of a running process whose command line is swarm-engine's, as a running
    engine's is (the folders it owns are a live engine's)."""
    proc = subprocess.Popen(["swarm-engine", "-c", "sleep 120; :"], executable="/bin/sh")
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def dead_pid() -> int:
    """A pid whose process has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid

"""Fixtures the integration suites share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.listener import Greeter


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

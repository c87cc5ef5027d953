"""Fixtures the integration suites share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.support.listener import Greeter


@pytest.fixture
def listeners() -> Iterator[tuple[Greeter, Greeter]]:
    """Two greeting listeners on 127.0.0.1: one a step may be allowed to reach, one not."""
    a, b = Greeter(), Greeter()
    yield a, b
    a.close()
    b.close()

"""The API server's connection cap keeps file descriptors for its other files."""

from __future__ import annotations

from swarm_engine.api.protocol import FD_RESERVE, connection_cap


def test_the_cap_leaves_descriptors_for_the_server_s_own_files() -> None:
    assert connection_cap(1024, 20_000) == 1024
    assert connection_cap(50_000, 20_000) == 20_000 - FD_RESERVE
    assert connection_cap(1024, 1024) == 1024 - FD_RESERVE
    assert connection_cap(1024, 256) == 128  # a low limit: half of it
    assert connection_cap(1024, -1) == 1024  # no limit (RLIM_INFINITY)
    assert connection_cap(1024, 1) == 1

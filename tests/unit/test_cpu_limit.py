"""The CPU limit a process-sandbox command runs under (`prlimit --cpu`)."""

from __future__ import annotations

import pytest

from swarm_engine.vm.process_vm import cpu_seconds


@pytest.mark.parametrize(
    ("timeout", "limit"),
    [(0.5, 2), (600.0, 602), (604800.0, 604802), (1e20, 604802), (1e308, 604802),
     (float("inf"), 604802), (float("nan"), 604802)],
)  # fmt: skip
def test_the_cpu_limit_is_clamped_to_the_longest_step(timeout: float, limit: int) -> None:
    """`prlimit --cpu` could not parse a limit past about 1.8e19 and failed every command
    as if it had exited 1: a timeout that slipped past decoding is clamped."""
    assert cpu_seconds(timeout) == limit

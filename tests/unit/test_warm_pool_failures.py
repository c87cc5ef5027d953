"""A warm pool whose boots keep failing the same way (its default spec asks more than the
host has: refused in one line each time) says so once, not at every retry for the
engine's whole life (a tester's finding: a warning every 30 s); a new reason is said."""

from __future__ import annotations

import asyncio
import logging

import pytest

from swarm_engine.errors import VMError
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.qemu import warm
from swarm_engine.vm.qemu.vm import QemuVM
from swarm_engine.vm.qemu.warm import WarmPool


def test_a_refusal_that_stays_is_said_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(warm, "FIRST_BACKOFF", 0.01)
    reasons = ["vcpus 3 is more than the 2 CPUs this host gives the engine"] * 3 + ["other"]

    tried = 0
    fourth: asyncio.Event | None = None

    async def boot() -> QemuVM:
        nonlocal tried
        tried += 1
        if tried == 5 and fourth is not None:  # (the fourth failure was said, or not)
            fourth.set()
        raise VMError(reasons.pop(0) if len(reasons) > 1 else reasons[0])

    async def scenario() -> int:
        nonlocal fourth
        fourth = asyncio.Event()
        pool = WarmPool(1, VMSpec(), "tiny", boot, lambda: "build")
        pool.start()
        await fourth.wait()
        await pool.close()
        return pool.failures

    with caplog.at_level(logging.DEBUG, logger="swarm_engine.vm.qemu.warm"):
        failures = asyncio.run(asyncio.wait_for(scenario(), 60))
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert failures >= 4
    assert said == [
        "warm VM failed to boot: vcpus 3 is more than the 2 CPUs this host gives the engine",
        "warm VM failed to boot: other",
    ], said

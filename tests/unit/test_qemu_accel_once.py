"""The qemu backend chooses its accelerator once (`QemuBackend.accel`): calls made while
the first one probes KVM wait for it, so six steps starting at once start one probe QEMU
and log one `qemu accel:` line (they started six and logged six). The probe runs a stub
`qemu_binary` that counts its runs."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from swarm_engine.vm.qemu.backend import QemuBackend
from swarm_engine.vm.qemu.config import QemuOptions

STUB = """#!/bin/sh
echo run >> "{count}"
sleep 0.3  # sleep-ok: a probe that takes a while, so that the callers overlap
cat > /dev/null
echo "qemu-system-x86_64: stub: no vCPU" >&2
exit 1
"""


async def test_six_callers_at_once_share_one_probe(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    count = tmp_path / "probes"
    stub = tmp_path / "qemu-stub"
    stub.write_text(STUB.format(count=count))
    stub.chmod(0o755)
    backend = QemuBackend(tmp_path / "home", QemuOptions(qemu_binary=str(stub), accel="auto"))
    with caplog.at_level(logging.INFO, logger="swarm_engine.vm.qemu.backend"):
        choices = await asyncio.gather(*(backend.accel() for _ in range(6)))
        again = await backend.accel()
    assert {c.mode for c in choices} == {"tcg"} and again is choices[0]
    assert all(c is choices[0] for c in choices)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("qemu accel:")]
    assert len(lines) == 1, lines
    probes = count.read_text().splitlines() if count.exists() else []
    kvm_usable = os.access("/dev/kvm", os.R_OK | os.W_OK)  # else no probe runs the binary
    assert len(probes) == (1 if kvm_usable else 0), probes
    if kvm_usable:
        assert "stub: no vCPU" in lines[0], lines

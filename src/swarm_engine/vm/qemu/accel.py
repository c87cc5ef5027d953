"""Pick the accelerator: KVM where it really works, TCG (software emulation) otherwise.

`/dev/kvm` existing is not enough: on nested or paravirtual hosts it opens, but guests
crawl and `-cpu host` aborts while QEMU sets up the vCPU. The probe starts a paused,
empty `microvm` with `-accel kvm -cpu host` and quits it through the monitor; that takes
a few tens of milliseconds where KVM works and fails fast where it does not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Literal

from swarm_engine.errors import VMError
from swarm_engine.vm.qemu.config import TCG_TB_MB, Accel

PROBE_TIMEOUT = 5.0

Mode = Literal["kvm", "tcg"]


@dataclass(frozen=True)
class AccelChoice:
    mode: Mode
    reason: str
    tcg_tb_mb: int = TCG_TB_MB
    """TCG's translation buffer in MiB (the `tcg_tb_mb` option)."""

    def qemu_args(self) -> list[str]:
        if self.mode == "kvm":
            return ["-accel", "kvm", "-cpu", "host"]
        return ["-accel", f"tcg,thread=multi,tb-size={self.tcg_tb_mb}"]


def probe_kvm(qemu_binary: str) -> tuple[bool, str]:
    """(works, why) for KVM on this host."""
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not readable and writable by this user"
    argv = [
        qemu_binary, "-accel", "kvm", "-machine", "microvm", "-cpu", "host",
        "-nodefaults", "-no-user-config", "-display", "none", "-S", "-monitor", "stdio",
    ]  # fmt: skip
    try:
        done = subprocess.run(
            argv, input=b"quit\n", capture_output=True, timeout=PROBE_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return False, "a KVM probe VM did not start within 5 s"
    except OSError as exc:
        return False, f"cannot run {qemu_binary}: {exc.strerror}"
    if done.returncode != 0:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        return False, f"KVM is present but cannot run a vCPU ({last})"
    return True, "KVM works"


def choose_accel(wanted: Accel, qemu_binary: str, tcg_tb_mb: int = TCG_TB_MB) -> AccelChoice:
    """The accelerator for `wanted` (auto, kvm or tcg); TCG with a `tcg_tb_mb` MiB
    translation buffer."""
    if wanted == "tcg":
        return AccelChoice("tcg", "TCG asked for in the backend options", tcg_tb_mb)
    if shutil.which(qemu_binary) is None:
        raise VMError(f"{qemu_binary} not found (apt-get install qemu-system-x86)")
    works, why = probe_kvm(qemu_binary)
    if wanted == "kvm":
        if not works:
            raise VMError(f"accel 'kvm' asked for, but {why}")
        return AccelChoice("kvm", "KVM asked for in the backend options")
    if works:
        return AccelChoice("kvm", why)
    return AccelChoice("tcg", f"{why}; using TCG software emulation", tcg_tb_mb)

"""Which signals a process ignores or catches, as the kernel says (/proc/PID/status)."""

from __future__ import annotations

import signal
from pathlib import Path


def _mask(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    (mask,) = [line.split()[1] for line in status.splitlines() if line.startswith(f"{field}:")]
    return int(mask, 16)


def ignores(pid: int, sig: signal.Signals) -> bool:
    """Process `pid` ignores `sig` (its `SigIgn` mask)."""
    return bool(_mask(pid, "SigIgn") >> (sig - 1) & 1)


def catches(pid: int, sig: signal.Signals) -> bool:
    """Process `pid` has a handler for `sig` (its `SigCgt` mask)."""
    return bool(_mask(pid, "SigCgt") >> (sig - 1) & 1)

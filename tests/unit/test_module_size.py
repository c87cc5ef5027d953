"""STYLE.md 8: modules stay small (a few hundred lines). Past `MAX_LINES`, a module is
split into modules named after what they hold (`vm/process_argv.py` out of
`vm/process_vm.py`, `store/reclaim.py` and `store/ids.py` out of `store/tickets.py`)."""

from __future__ import annotations

from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "swarm_engine"
MAX_LINES = 600


def test_no_module_is_over_600_lines() -> None:
    over = {
        str(path.relative_to(SRC)): n
        for path in sorted(SRC.rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert over == {}

"""scripts/test.sh checks SWARM_TEST_WORKERS before it sets anything up (a bad value used
to be found after the set-up, the image checks, lint and the QEMU suites: 1.5 min)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "test.sh"


@pytest.mark.parametrize("value", ["abc", "-1", " 2", "65", "99999999", "1e3", "2.0"])
def test_a_bad_worker_count_is_refused_before_anything_runs(value: str, tmp_path: Path) -> None:
    # nothing else ran: the set-up would print its steps, and take a minute
    env = {**os.environ, "SWARM_TEST_WORKERS": value}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=30, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "error: SWARM_TEST_WORKERS must be a whole number from 0 to 64 (0 runs the suite in"
        f" one process), not '{value}'"
    ]

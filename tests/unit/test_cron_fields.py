"""A bad cron schedule is refused with one line naming the field and value at fault: the
line said `... is not a cron schedule (5 or 6 fields)` whatever was wrong, even with the
right number of fields (tester, LOW)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.cli import swarm_inproc

from swarm_engine.cronrules import cron_problem


@pytest.mark.parametrize(
    ("cron", "said"),
    [
        ("61 * * * *", "minute 61 is out of range (0-59)"),
        ("*/0 * * * *", "minute step 0 in '*/0': a step is 1 or more"),
        ("0 0 * * 8", "weekday 8 is out of range (0-7)"),
        ("1-100000000 * * * *", "minute 100000000 is out of range (0-59)"),
        ("0 25 * * *", "hour 25 is out of range (0-23)"),
        ("0 0 0 * *", "day 0 is out of range (1-31)"),
        ("0 0 * 13 *", "month 13 is out of range (1-12)"),
        ("0 0 * jan-foo *", "month 'foo' is not a number nor a month name"),
        ("x * * * *", "minute 'x' is not a number"),
        ("*/y * * * *", "minute step 'y' is not a number"),
        ("* * * * * 60", "second 60 is out of range (0-59)"),
    ],
)
def test_the_line_names_the_field_and_its_value(cron: str, said: str) -> None:
    assert cron_problem(cron) == f"{cron!r} is not a cron schedule: {said}"


def test_other_lines() -> None:
    assert cron_problem("* * * *") == (
        "'* * * *' is not a cron schedule: 4 fields, not 5 or 6 (minute hour day month"
        " weekday, and optionally a second)"
    )
    assert cron_problem("0 0 31 2 *") == "'0 0 31 2 *' never matches a time"
    huge = "1" * 5000 + " * * * *"  # cut, never converted whole (int() refuses 4,300 digits)
    line = cron_problem(huge)
    assert line is not None and len(line) < 400 and "is out of range (0-59)" in line
    for good in ("*/5 * * * *", "0 3 * * mon-fri", "0 0 L * *", "0 0 * * 1#2", "0 0 * * 7"):
        assert cron_problem(good) is None, good


def test_workflow_register_says_it(tmp_path: Path) -> None:
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "workflow.yaml").write_text(
        "name: nightly\nsteps:\n  - id: a\n    agent: echo\n"
        'triggers:\n  - name: t\n    cron: "0 0 * * 8"\n'
    )
    done = swarm_inproc(tmp_path / "home", "workflow", "register", str(folder))
    assert done.returncode == 5, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"error: {folder / 'workflow.yaml'}: triggers.0.cron: '0 0 * * 8' is not a cron"
        " schedule: weekday 8 is out of range (0-7)"
    )

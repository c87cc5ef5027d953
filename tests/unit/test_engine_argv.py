"""Which command lines run a swarm-engine (what `stop` may signal, whose lock `start` names)."""

from __future__ import annotations

import pytest

from swarm_engine.vm.proctree import engine_args

ENGINES = [
    "swarm-engine start",
    "/venv/bin/swarm-engine start --foreground",
    "/venv/bin/python3 /venv/bin/swarm-engine start",
    "python -m swarm_engine start",
    "python3.11 -u -m swarm_engine start",
    "python -X dev -X utf8 -m swarm_engine start",
    "python -Xdev -Wignore -u -m swarm_engine start",
    "python -I -S -m swarm_engine start",
    "python -um swarm_engine start",
    "python -mswarm_engine start",
    "python -W ignore::DeprecationWarning -OO -B -m swarm_engine.__main__ start",
    "python --check-hash-based-pycs never -m swarm_engine start",
    "python -I -S /venv/bin/swarm-engine start",
]
OTHERS = [
    "",
    "python",
    "python -c import swarm_engine swarm-engine start",
    "python -m pytest swarm-engine start",
    "python -m swarm_engine_other start",
    "python script.py swarm-engine start",
    "bash -c swarm-engine start",
    "python -X swarm-engine start",
    "python --version swarm-engine start",
    "/tmp/swarm-engine-1/x start",
]


@pytest.mark.parametrize("line", ENGINES)
def test_an_engine_is_seen_through_the_interpreters_options(line: str) -> None:
    args = engine_args([a.encode() for a in line.split(" ")])
    assert args is not None and args[0] == b"start", args


@pytest.mark.parametrize("line", OTHERS)
def test_other_programs_are_not_engines(line: str) -> None:
    assert engine_args([a.encode() for a in line.split(" ")] if line else []) is None

"""Hostile definition files, shared by the unit and acceptance tests."""

from __future__ import annotations

import textwrap

LAUGHS = "".join(f"  l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]\n" for n in range(1, 10))
BOMB = 'name: bomb\nkind: echo\ninputs:\n  l0: &l0 "lol"\n' + LAUGHS
"""An agent.yaml of ~800 bytes whose `inputs` expand to 9**9 (387 million) strings."""

WORKFLOW_BOMB = "name: w\nsteps:\n  - id: a\n    agent: echo\n    inputs:\n" + textwrap.indent(
    BOMB.split("inputs:\n", 1)[1], "    "
)
"""The same bomb in a workflow step's `inputs`."""

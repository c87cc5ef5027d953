"""Why a listed definition cannot run, from what a list reads cheaply: `agent list` and
`workflow list` flag such rows (`cannot_run`, one short line, or None).

A row any client wrote may read fine and still never run: an agent whose `kind` is no
agent kind, a workflow whose steps name an agent that is not registered, a template or
an agent of an unknown kind. The engine fails their tickets with one line and `agent
show` / `workflow show` say why; a list says it in a few words, without decoding a spec:
an agent's `kind` column, a workflow's `step_agents` (the first `STEP_AGENTS` different
`agent` values of its steps, given by SQL: `workflows_page` in definitions.sql) and one
read of the agents they name a page (`agents_named`). A row whose name, version, kind or
spec cannot be read is flagged too (`defects` says how). What a list cannot see this way
(a spec the model refuses, a dependency cycle) is `workflow show`'s to say."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from swarm_engine.records import NAME_RE, shown
from swarm_engine.registry.builtins import BUILTIN_VERSIONS

if TYPE_CHECKING:
    from swarm_engine.store.db import Row

STEP_AGENTS = 64
"""The most different agents of a workflow's steps a list checks (the first, in step
order; its first 1000 steps): bounds what a page reads whatever a row holds."""
SHOWN = 40
"""How much of a kind or an agent's name a reason quotes (`shown`)."""
NEEDED = ("name", "version", "kind", "spec")
"""The columns a definition cannot run without: a defect in one flags the row."""

Versions = Mapping[str, Mapping[str, object]]
"""Agent name -> its versions -> its `kind` column (as read: None over 1 KiB)."""


def known_kinds() -> frozenset[str]:
    from swarm_engine.agents.kinds import AGENT_KINDS

    return frozenset(AGENT_KINDS)


def _unreadable(record: Mapping[str, Any]) -> str | None:
    """`unreadable kind (defects: --json)` for the first defect of a column in `NEEDED`."""
    for defect in record.get("defects") or ():
        column = str(defect).partition(":")[0]
        if column in NEEDED:
            return f"unreadable {column} (defects: --json)"
    return None


def _kind_problem(kind: object, kinds: frozenset[str]) -> str | None:
    if isinstance(kind, str) and kind in kinds:
        return None
    return "unreadable kind" if kind is None else f"unknown kind {shown(kind, SHOWN)}"


def agent_problem(record: Mapping[str, Any], kinds: frozenset[str]) -> str | None:
    """Why the agent of a list's `record` cannot run, or None (as far as a list sees)."""
    return _unreadable(record) or _kind_problem(record.get("kind"), kinds)


def step_agents(record: Mapping[str, Any]) -> list[object] | None:
    """The `step_agents` SQL gave (JSON text from SQLite, a list from PostgreSQL); None
    when the spec holds no list of steps."""
    value = record.get("step_agents")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, list) else None


def names_of(refs: Iterable[object]) -> set[str]:
    """The agent names to look up for `refs` (a built-in's, a template's or one that is
    not a name need no row)."""
    out: set[str] = set()
    for ref in refs:
        if isinstance(ref, str):
            name = ref.partition("@")[0]
            if NAME_RE.fullmatch(name) and name not in BUILTIN_VERSIONS:
                out.add(name)
    return out


def versions_of(rows: Iterable[Row]) -> dict[str, dict[str, object]]:
    """`Versions` from `agents_named` rows."""
    out: dict[str, dict[str, object]] = {}
    for row in rows:
        name, version = row["name"], row["version"]
        if isinstance(name, str) and isinstance(version, str):
            out.setdefault(name, {})[version] = row["kind"]
    return out


def _ref_problem(ref: object, agents: Versions, kinds: frozenset[str]) -> str | None:
    """Why a step's `agent:` cannot run, as `registry.agent` and the plan would refuse it."""
    from swarm_engine.registry.versions import latest_key

    if not isinstance(ref, str):
        return "a step names no agent"
    name, at, version = ref.partition("@")
    if name.startswith("_template:"):
        return f"agent {shown(ref, SHOWN)} is a template"
    if at and not version:
        return f"agent {shown(ref, SHOWN)} has no version after '@'"
    builtin = BUILTIN_VERSIONS.get(name)
    if builtin is not None:
        return None if version in ("", builtin) else f"unknown agent {shown(ref, SHOWN)}"
    stored = agents.get(name, {}) if NAME_RE.fullmatch(name) else {}
    if not at:  # the latest, as `Registry.agent` resolves it
        version = max(stored, key=latest_key, default="")
    if version not in stored:
        return f"unknown agent {shown(ref, SHOWN)}"
    problem = _kind_problem(stored[version], kinds)
    return None if problem is None else f"agent {shown(ref, SHOWN)}: {problem}"


def workflow_problem(
    record: Mapping[str, Any], agents: Versions, kinds: frozenset[str]
) -> str | None:
    """Why the workflow of a list's `record` cannot run, or None (as far as a list sees):
    `agents`, the agents its `step_agents` name (`versions_of`)."""
    from swarm_engine.models import MAX_STEPS

    unreadable = _unreadable(record)
    if unreadable is not None:
        return unreadable
    refs = step_agents(record)
    if refs is None:
        return "no list of steps (see workflow show)"
    count = record.get("steps")
    if isinstance(count, int) and count > MAX_STEPS:
        return f"{count:,} steps, more than {MAX_STEPS:,}"
    if not refs:
        return "no steps"
    for ref in refs:
        problem = _ref_problem(ref, agents, kinds)
        if problem is not None:
            return problem
    return None

"""The cron task's read of the registry: the latest version of each workflow that declares
triggers, read in bounded steps.

Registry rows are untrusted and their number is not capped, so a scan never holds the
table: it walks the rows' keys (name and version only) in pages, picks each name's latest
version, and reads that one row alone, only when the store cannot tell in SQL that it
declares no triggers (`workflow_quiet`: a workflow without triggers costs the store one
JSON check, the first time it is seen, and the engine nothing; its spec is never handed
over). Each `step` reads at most `rows` keys and `spec_bytes` bytes of specs measured
(read or only checked in SQL), then stops where it is; the next step goes on from there.
Only what a schedule needs is kept: a decoded spec without its steps.

A row that declares triggers is read and decoded once until it changes: the pass keeps
what it found of it (`Kept`: the spec without its steps, or why it was skipped) under its
spec's mark (`DefinitionStore.workflow_mark`: PostgreSQL's `xmin`, nothing read; SQLite,
which keeps no mark of a change, a digest of its text read in pieces, never decoded), and
the next pass takes that again while the mark is the same. Its `created_at` is read afresh
and the agents its steps name are looked up again each pass (an agent registered or
removed since changes the verdict, not the row): `Kept.agents` holds the first step naming
each agent, up to where the checks stopped, so that the check of those steps alone gives
the same line as the whole spec's (`check_workflow` looks at a step's agent in step order,
and nothing else it checks depends on the agents).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from swarm_engine.errors import ConfigError
from swarm_engine.registry.catalog import decode_definition
from swarm_engine.registry.versions import latest_key

if TYPE_CHECKING:
    from swarm_engine.models import StepSpec, WorkflowSpec
    from swarm_engine.registry.catalog import Registry
    from swarm_engine.store.db import Row

KEYS_PAGE = 500
"""Keys read by one query."""
KEPT_AGENTS = 64
"""Different agents a workflow's kept steps may name (`Kept.agents`): one naming more is
read and decoded again each pass, as are all before."""
KEPT_AGENT_BYTES = 16 * 1024
"""Bytes of the step ids and agent references a workflow's `Kept.agents` may hold."""

Key = tuple[bytes, bytes]


@dataclass(frozen=True, slots=True)
class Kept:
    """What a pass found of one latest row that may declare triggers, for the next pass
    while its spec's mark is `mark` (a few KiB at most: no steps' inputs, no spec text)."""

    mark: str
    spec: WorkflowSpec | None
    """The spec without its steps (and without its triggers when `line` is set); None when
    it did not decode (`line` says why) or declares no triggers."""
    line: str | None
    """Why it is skipped whatever the agents (the decode's or the checks' line), or None."""
    agents: tuple[StepSpec, ...]
    """The first step naming each agent, in step order, of those whose agent the checks
    looked at (id and agent only)."""


class ScheduleScan:
    """One pass over the registry (`step` until it returns True), begun when the registry
    was `marker` (`DefinitionStore.workflows_seen`)."""

    def __init__(
        self,
        registry: Registry,
        marker: object,
        quiet: dict[Key, str],
        kept: dict[Key, Kept] | None = None,
    ) -> None:
        self.registry = registry
        self.marker = marker
        self._quiet_before = quiet
        self._kept_before = kept or {}
        self.quiet: dict[Key, str] = {}
        """key -> `seen` of each latest row found without triggers (the next pass checks
        its JSON again only when it changed: bounded by the registry's names)."""
        self.kept: dict[Key, Kept] = {}
        """key -> what this pass found of each latest row read that may declare triggers
        (the next pass reads it again only when its mark changed: bounded by the
        registry's names, a few KiB each)."""
        self.found: list[tuple[WorkflowSpec, str]] = []
        """(spec without steps, created_at) of each latest workflow declaring triggers
        that `workflow show` accepts."""
        self.skipped: list[str] = []
        """Why a latest row declaring triggers (or that may) is left out, one line each."""
        self.steps = 0
        self.keys_read = 0
        self.bytes_measured = 0
        """Bytes of the specs of the latest rows, each measured in SQL."""
        self.bytes_read = 0
        """Bytes of specs handed over (and decoded): only rows that may declare triggers,
        and of those only the ones changed since the pass before (or never kept)."""
        self.bytes_marked = 0
        """Bytes of specs read to tell their mark, not handed over (SQLite only)."""
        self.rows_kept = 0
        """Rows that may declare triggers whose result of the pass before was taken again."""
        self._after: Key | None = None
        self._best: tuple[str, Key] | None = None
        """(version, key) of the latest row yet of the name being walked."""
        self._name: str | None = None
        self._known: dict[str, bool] = {}  # agent ref -> has_agent, for this pass

    def step(self, rows: int, spec_bytes: int) -> bool:
        """Read on, at most `rows` keys and (about) `spec_bytes` bytes of specs measured
        (a row is read whole or not at all); True when the pass is over."""
        self.steps += 1
        keys = measured = 0
        while keys < rows and measured < spec_bytes:
            page = self.registry.defs.workflow_keys(self._after, min(KEYS_PAGE, rows - keys))
            if not page:
                self._finish_name()
                return True
            for row in page:
                keys += 1
                self.keys_read += 1
                self._after = (bytes(row["key_name"]), bytes(row["key_version"]))
                name, version = str(row["name"]), str(row["version"])
                if name != self._name:
                    measured += self._finish_name()
                    self._name = name
                if self._best is None or latest_key(version) > latest_key(self._best[0]):
                    self._best = (version, self._after)
                if measured >= spec_bytes:
                    break
        return False

    def _finish_name(self) -> int:
        """Read the latest row of the name walked (if it may declare triggers); its spec's
        size in bytes."""
        best, self._best = self._best, None
        if best is None:
            return 0
        key = best[1]
        kept, marked = self._kept_before.get(key), 0
        if kept is not None:  # (read and decoded before: its result kept while unchanged)
            head = self.registry.defs.workflow_head(key)
            if head is None:  # deleted since its key was read
                return 0
            mark, marked = self.registry.defs.workflow_mark(head)
            self.bytes_marked += marked
            if mark == kept.mark:
                if isinstance(head["spec_bytes"], int):
                    self.bytes_measured += head["spec_bytes"]
                self.rows_kept += 1
                self.kept[key] = kept
                self._judge(kept, str(head["created_at"]))
                return marked
        before = self._quiet_before.get(key)
        found = self.registry.defs.workflow_quiet(key, before)
        if found is None:  # deleted since its key was read
            return marked
        size = found["spec_bytes"] if isinstance(found["spec_bytes"], int) else 0
        if found["quiet"] and before is not None and found["seen"] == before:
            self.quiet[key] = before
            # (unchanged: kept quiet; its text was checked in SQL all the same, so it
            # counts against the round: a pass over 30 rows of 7 MB took 2.5 CPU-s in one)
            return size + marked
        self.bytes_measured += size
        if found["quiet"]:
            self.quiet[key] = str(found["seen"])
            return size + marked
        assert self._name is not None
        row = self.registry.defs.workflow(self._name, best[0])
        if row is None:
            return size + marked
        if isinstance(row["spec"], str):
            self.bytes_read += len(row["spec"])
        mark = self.registry.defs.read_mark(found, row["spec"])
        created_at = str(row["created_at"])
        kept, small = self._decode(row)
        del row  # (its spec text: not kept past the decode)
        if mark is not None and small:
            self.kept[key] = replace(kept, mark=mark)
        self._judge(kept, created_at)
        return size + marked

    def _decode(self, row: Row) -> tuple[Kept, bool]:
        """What a row that may declare triggers holds (its mark left to the caller), and
        whether it is small enough to keep (`KEPT_AGENTS`, `KEPT_AGENT_BYTES`)."""
        from swarm_engine.models import StepSpec, WorkflowSpec

        try:
            spec = decode_definition(WorkflowSpec, "workflow", row)
        except ConfigError as exc:
            return Kept("", None, str(exc), ()), True
        if not spec.triggers:
            return Kept("", None, None, ()), True
        asked: set[str] = set()

        def any_agent(ref: str) -> bool:
            asked.add(ref)
            return True

        line = self._problem(spec, any_agent)  # every check but whether the agents exist
        agents: dict[str, StepSpec] = {}
        for step in spec.steps:
            if step.agent in asked and step.agent not in agents:
                agents[step.agent] = StepSpec(id=step.id, agent=step.agent)
        slim = spec.model_copy(
            update={"steps": [], "variables": {}, "outputs": None, "description": ""}
            | ({"triggers": []} if line is not None else {})
        )
        held = sum(len(s.id) + len(s.agent.encode()) for s in agents.values())
        small = len(agents) <= KEPT_AGENTS and held <= KEPT_AGENT_BYTES
        return Kept("", slim, line, tuple(agents.values())), small

    def _judge(self, kept: Kept, created_at: str) -> None:
        """Add a row's verdict to `found` or `skipped`: the agents its steps name looked
        up now (this pass), then the line found when it was decoded."""
        if kept.spec is None:
            if kept.line is not None:
                self.skipped.append(kept.line)
            return
        problem = None
        if kept.agents:  # (those steps alone: the whole spec's first agent line)
            steps = list(kept.agents)
            problem = self._problem(kept.spec.model_copy(update={"steps": steps, "triggers": []}))
        problem = problem or kept.line
        if problem is not None:
            self.skipped.append(problem)
            return
        self.found.append((kept.spec, created_at))

    def _problem(
        self, spec: WorkflowSpec, agent_exists: Callable[[str], bool] | None = None
    ) -> str | None:
        """`check_stored_workflow`'s line for `spec`, or None; `agent_exists`: by default
        `has_agent`, each agent looked up once a pass."""

        def known(ref: str) -> bool:
            if ref not in self._known:
                self._known[ref] = self.registry.has_agent(ref)
            return self._known[ref]

        try:
            self.registry.check_stored_workflow(spec, agent_exists or known)
        except ConfigError as exc:
            return str(exc)
        return None

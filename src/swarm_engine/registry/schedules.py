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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from swarm_engine.errors import ConfigError
from swarm_engine.registry.catalog import decode_definition, latest_key

if TYPE_CHECKING:
    from swarm_engine.models import WorkflowSpec
    from swarm_engine.registry.catalog import Registry

KEYS_PAGE = 500
"""Keys read by one query."""


class ScheduleScan:
    """One pass over the registry (`step` until it returns True), begun when the registry
    was `marker` (`DefinitionStore.workflows_seen`)."""

    def __init__(
        self, registry: Registry, marker: object, quiet: dict[tuple[bytes, bytes], str]
    ) -> None:
        self.registry = registry
        self.marker = marker
        self._quiet_before = quiet
        self.quiet: dict[tuple[bytes, bytes], str] = {}
        """key -> `seen` of each latest row found without triggers (the next pass checks
        its JSON again only when it changed: bounded by the registry's names)."""
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
        """Bytes of specs handed over (and decoded): only rows that may declare triggers."""
        self._after: tuple[bytes, bytes] | None = None
        self._best: tuple[str, tuple[bytes, bytes]] | None = None
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
        before = self._quiet_before.get(key)
        found = self.registry.defs.workflow_quiet(key, before)
        if found is None:  # deleted since its key was read
            return 0
        if found["quiet"] and before is not None and found["seen"] == before:
            self.quiet[key] = before
            return 0  # (unchanged: its JSON not checked again)
        size = found["spec_bytes"] if isinstance(found["spec_bytes"], int) else 0
        self.bytes_measured += size
        if found["quiet"]:
            self.quiet[key] = str(found["seen"])
            return size
        assert self._name is not None
        row = self.registry.defs.workflow(self._name, best[0])
        if row is None:
            return size
        if isinstance(row["spec"], str):
            self.bytes_read += len(row["spec"])
        from swarm_engine.models import WorkflowSpec

        created_at = str(row["created_at"])
        try:
            spec = decode_definition(WorkflowSpec, "workflow", row)
        except ConfigError as exc:
            self.skipped.append(str(exc))
            return size
        del row  # (its spec text: not kept past the decode)
        if not spec.triggers:
            return size
        problem = self._problem(spec)
        if problem is not None:
            self.skipped.append(problem)
            return size
        slim = spec.model_copy(
            update={"steps": [], "variables": {}, "outputs": None, "description": ""}
        )
        self.found.append((slim, created_at))
        return size

    def _problem(self, spec: WorkflowSpec) -> str | None:
        def agent_exists(ref: str) -> bool:
            if ref not in self._known:
                self._known[ref] = self.registry.has_agent(ref)
            return self._known[ref]

        try:
            self.registry.check_stored_workflow(spec, agent_exists)
        except ConfigError as exc:
            return str(exc)
        return None

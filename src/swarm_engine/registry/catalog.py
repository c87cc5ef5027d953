"""The registry: versioned agents and workflows (`name@version`, latest by default), checked
before they are stored and decoded as untrusted rows when read back.

pydantic and models.py are imported when a definition is built: `require_agent` (what
`ticket create` asks) checks a plain stored agent without them (registry/plain.py)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from swarm_engine.errors import ConfigError, ConflictError, NotFoundError
from swarm_engine.records import (
    MAX_NAME_BYTES,
    MAX_SPEC_BYTES,
    SPEC_OVER,
    DuplicateKey,
    binary_not_text,
    check_unique_keys,
    shown,
    split_ref,
    text_over,
)
from swarm_engine.registry import listing, runnable
from swarm_engine.registry.agent_packages import write_agents
from swarm_engine.registry.builtins import BUILTIN_REFS, BUILTIN_VERSIONS
from swarm_engine.registry.listing import PAGE_DEFINITIONS, DefinitionPage
from swarm_engine.registry.plain import plain_agent
from swarm_engine.registry.triggers import trigger_owners
from swarm_engine.registry.versions import latest_key
from swarm_engine.store.db import InvalidText, Row
from swarm_engine.store.definitions import DefinitionStore, Table, open_definitions

if TYPE_CHECKING:
    from swarm_engine.models import AgentSpec, WorkflowSpec

D = TypeVar("D", "AgentSpec", "WorkflowSpec")
REPLACE = "--force, or ?force=true in the API)"
"""How a definition registered under its name@version is replaced, whichever way it came."""


def _short(value: object, width: int = 40) -> str:
    """A row's name or version for a message: as stored, cut at `width` characters, with
    any character that is not printable escaped (`echo\\n`): the message stays one line."""
    text = str(value)
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= width else text[: width - 1] + "…"


CACHED_SPECS = 256
"""How many decoded specs `_validated` keeps (the latest used)."""
CACHED_SPEC_CHARS = 64 * 1024
"""The longest spec text whose decoded spec is kept: a larger one is decoded each time
it is read. The cache holds at most `CACHED_SPECS` texts of this size and their specs
(16 MiB of text; it kept every text, up to the 8 MiB a row holds: 30 workflows of 5 MB
held about 300 MB for as long as the engine ran, a tester's finding)."""


def _validated(model: type[D], raw: str) -> D:
    """`model.model_validate_json(raw)`, once per spec text up to `CACHED_SPEC_CHARS`:
    every ticket of an agent reads its row again (definitions change), but validating the
    same text again is waste. Specs are not changed once made (`model_copy` makes a new
    one). `DuplicateKey` first for a text holding a key twice in an object, at any depth:
    the model's parser keeps the last, SQL's `json_extract` the first, so what runs would
    not be what SQL shows."""
    if len(raw) > CACHED_SPEC_CHARS:
        return _decode(model, raw)
    spec: D = _decode_cached(model, raw)
    return spec


def _decode(model: type[D], raw: str) -> D:
    check_unique_keys(raw)
    return model.model_validate_json(raw)


_decode_cached = functools.lru_cache(maxsize=CACHED_SPECS)(_decode)


def _where(what: str, row: Row) -> str:
    """`agent x@1.0.0 in the registry`; a name or version the store did not read (over
    `MAX_NAME_BYTES`: NULL) is `?`."""
    name, version = (row[c] for c in ("name", "version"))
    name = "?" if name is None else _short(name)
    return f"{what} {name}@{'?' if version is None else _short(version)} in the registry"


_SIZED = (
    ("name", MAX_NAME_BYTES, f"text, {text_over(MAX_NAME_BYTES)} (not read)"),
    ("version", MAX_NAME_BYTES, f"text, {text_over(MAX_NAME_BYTES)} (not read)"),
    ("kind", MAX_NAME_BYTES, f"text, {text_over(MAX_NAME_BYTES)} (not read)"),
    ("spec", MAX_SPEC_BYTES, f"JSON, {SPEC_OVER}"),
)
"""A registry row's columns the store gives as NULL over their cap (`agent_columns`,
`workflow_columns` in store/sql/*/queries/definitions.sql), with the end of the line that
says so."""


def _oversized(where: str, row: Row) -> None:
    """`ConfigError` for a row whose name, version, kind or spec the store did not read
    (its size, `<name>_bytes`, over its cap): `agent x@1.0.0 in the registry: spec is
    104,857,600 bytes of JSON, more than the 8 MiB a definition may hold (not read)`."""
    keys = row.keys()
    for column, limit, over in _SIZED:
        size = row[f"{column}_bytes"] if f"{column}_bytes" in keys else None
        if isinstance(size, int) and size > limit:
            raise ConfigError(f"{where}: {column} is {size:,} bytes of {over}")


def _spec_text(where: str, row: Row) -> str:
    _oversized(where, row)
    raw = row["spec"]
    if isinstance(raw, bytes):
        raise ConfigError(f"{where}: spec is {binary_not_text(raw)}")
    if not isinstance(raw, str) or isinstance(raw, InvalidText):
        raise ConfigError(f"{where}: spec is not UTF-8 JSON text")
    return raw


def _check_names(where: str, row: Row, name: str, version: str, kind: str | None) -> None:
    """The spec's name, version and kind (None: a workflow's) must be its row's."""
    if (name, version) != (row["name"], row["version"]):
        raise ConfigError(f"{where}: spec names {name}@{version}")
    column = row["kind"] if "kind" in row.keys() else None  # noqa: SIM118 (Row: `in` is values)
    if isinstance(column, bytes):  # (as `agent list --json` says it: not `b'shell'`)
        raise ConfigError(f"{where}: kind is {binary_not_text(column)}")
    if column is not None and kind is not None and column != kind:
        raise ConfigError(f"{where}: kind column {shown(column)} but spec.kind {shown(kind)}")


def decode_definition(model: type[D], what: str, row: Row) -> D:
    """A registry row (written by anyone) as a validated spec, or `ConfigError` naming the
    definition and the field: `agent x@1.0.0 in the registry: spec.command: ...`, or
    `...: spec: duplicate key "steps"` for a spec holding a key twice (at any depth)."""
    from pydantic import ValidationError

    from swarm_engine.models import first_error

    where = _where(what, row)
    raw = _spec_text(where, row)
    try:
        spec: D = _validated(model, raw)
    except DuplicateKey as exc:
        raise ConfigError(f"{where}: spec: {exc.line}") from exc
    except ValidationError as exc:
        raise ConfigError(f"{where}: {first_error(exc, 'spec')}") from exc
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{where}: spec is not valid JSON") from exc
    _check_names(where, row, spec.name, spec.version, getattr(spec, "kind", None))
    return spec


def check_agent_row(row: Row) -> None:
    """What `decode_definition(AgentSpec, "agent", row)` checks, the same errors in the
    same order, without building the spec (nor importing pydantic) when it is plain."""
    where = _where("agent", row)
    plain = plain_agent(_spec_text(where, row))
    if plain is None:  # not plain, or bad: the model decides (and says why)
        from swarm_engine.models import AgentSpec

        decode_definition(AgentSpec, "agent", row)
        return
    _check_names(where, row, *plain)


def _same_agent(row: Row, spec: AgentSpec) -> bool:
    """Whether `row` holds `spec`: the same definition and the same package files
    (`package_digest`), or no package on either side. Registering it again (on another
    host sharing the registry, docs/scale-out.md) leaves the row as it is and only copies
    its package, if it has one, into this host's home. A row of an older engine (a
    `package_path`, no digest) is never the same: `--force` records it the new way."""
    from swarm_engine.models import AgentSpec

    try:
        stored = decode_definition(AgentSpec, "agent", row)
    except ConfigError:
        return False
    if spec.package_digest is None and stored.package_path is not None:
        return False
    host_own = {"package_path"}  # the registering host's folder: no host reads it
    return stored.model_dump(exclude=host_own) == spec.model_dump(exclude=host_own)


def _same_workflow(row: Row, spec: WorkflowSpec) -> bool:
    """Whether `row` holds `spec` as it is (a row that does not decode: no)."""
    from swarm_engine.models import WorkflowSpec

    try:
        stored = decode_definition(WorkflowSpec, "workflow", row)
    except ConfigError:
        return False
    return stored.model_dump() == spec.model_dump()


def _agent_row(spec: AgentSpec) -> dict[str, str]:
    return {
        "name": spec.name,
        "version": spec.version,
        "kind": spec.kind,
        "description": spec.description,
        "spec": spec.model_dump_json(),
    }


_WORKFLOW_COLUMNS = ("name", "version", "description", "spec", "spec_bytes", "created_at")
"""A workflow row's columns that its decode reads (and the cron task its `created_at`)."""


def _hashable(value: Any) -> Any:
    """A column's value as a dict key: as it is when it can be one (SQLite's types), else
    its `repr` (PostgreSQL's `jsonb` comes as a dict; a different repr only misses the
    cache)."""
    return value if isinstance(value, str | bytes | int | float | None) else repr(value)


class Registry:
    """`target`: the registry database, a SQLite path or a postgresql:// URL."""

    def __init__(
        self, target: str | Path, packages_dir: Path, *, busy_timeout: float = 10.0
    ) -> None:
        self.defs: DefinitionStore = open_definitions(target, busy_timeout=busy_timeout)
        self.packages_dir = packages_dir
        self._decoded: dict[tuple[Any, ...], WorkflowSpec | str] = {}
        """`latest_workflows`' decodes of its last call, by the row's whole content: a
        row decoded once is not validated again while it stays the same (a daemon's cron
        task reads the registry every 10 s; 2,000 workflows took 90-230 ms to decode)."""
        try:
            self._seed()
        except BaseException:
            self.defs.close()
            raise

    def close(self) -> None:
        self.defs.close()

    def _seed(self) -> None:
        if self.defs.builtin_agents() >= BUILTIN_REFS:
            return
        from swarm_engine.registry.builtins import builtin_agents

        self.defs.seed_agents(_agent_row(spec) for spec in builtin_agents())

    # -- agents ----------------------------------------------------------------------------
    def register_agents(
        self,
        specs: list[AgentSpec],
        *,
        force: bool = False,
        identical: set[str] | None = None,
    ) -> list[AgentSpec]:
        """Register all or none: the agents as stored (`package_path` this host's copy).
        Package files are copied under the home folder. An agent registered already
        with the same definition and package (`_same_agent`) is accepted without `force`:
        its row is left as it is, its package (if any) copied to this host, and its ref
        added to `identical` when given. `ConflictError` for a built-in agent's name, or
        a name@version registered with another definition or files (unless `force`);
        `ConfigError` for an invalid definition or a package that cannot be copied."""
        from swarm_engine.registry.agents import check_agent

        for spec in specs:
            check_agent(spec, f"agent {spec.ref}")
        names = [s.ref for s in specs]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ConfigError(f"agent {sorted(dupes)[0]} is defined twice")
        stored: list[AgentSpec] = []
        same: set[str] = set()
        for spec in specs:
            if spec.name in BUILTIN_VERSIONS:  # any version: `echo` would then name it
                raise ConflictError(
                    f"agent {spec.ref}: {spec.name!r} is the name of a built-in agent, which"
                    " cannot be replaced nor given other versions; choose another name"
                )
            existing = self._agent_row(spec.name, spec.version)
            if existing is not None and existing["builtin"]:
                raise ConflictError(f"agent {spec.ref} is built in and cannot be replaced")
            if existing is not None and not force and _same_agent(existing, spec):
                same.add(spec.ref)
            elif existing is not None and not force:
                raise ConflictError(
                    f"agent {spec.ref} is already registered with another definition (bump its"
                    f" version, or replace it: {REPLACE}"
                )
            stored.append(
                spec.model_copy(update={"package_path": str(self._package_dir(spec))})
                if spec.package_path
                else spec
            )
        rows = [_agent_row(s) for s in stored if s.ref not in same]  # the same: left as is
        write_agents(self.defs, self.packages_dir, specs, stored, rows)
        if identical is not None:
            identical.update(same)
        return stored

    def _package_dir(self, spec: AgentSpec) -> Path:
        return self.packages_dir / spec.name / spec.version

    def _agent_row(self, name: str, version: str) -> Row | None:
        return self.defs.agent(name, version)

    def _latest(self, table: Table, name: str) -> str | None:
        """The latest version of `name` (None: no row); `ConfigError` when its rows'
        versions are all over `MAX_NAME_BYTES` (not read: no ticket can run them)."""
        rows = self.defs.versions(table, name)
        versions = [v for v, _ in rows if isinstance(v, str)]
        if versions:
            return max(versions, key=latest_key)
        sizes = [size for v, size in rows if v is None and isinstance(size, int)]
        if sizes:
            what = "agent" if table == "agents" else "workflow"
            raise ConfigError(
                f"{what} {_short(name)}@? in the registry: version is {max(sizes):,} bytes of"
                f" {_SIZED[1][2]}"
            )
        return None

    def _agent_of(self, ref: str) -> Row:
        name, version = split_ref(ref)
        version = self._latest("agents", name) if version is None else version
        row = self._agent_row(name, version) if version is not None else None
        if row is None:
            raise NotFoundError(f"unknown agent {shown(ref)} (see 'swarm-engine agent list')")
        return row

    def agent(self, ref: str) -> AgentSpec:
        """The agent `ref` names (`name` or `name@version`: the latest version). A built-in
        agent's name gives the built-in spec, never a row's (`NotFoundError` for another
        version of it); `ConfigError` for a stored definition that does not decode."""
        from swarm_engine.models import AgentSpec

        if self._is_builtin(ref):
            from swarm_engine.registry.builtins import builtin_spec

            return builtin_spec(split_ref(ref)[0])
        return decode_definition(AgentSpec, "agent", self._agent_of(ref))

    def require_agent(self, ref: str) -> None:
        """`agent(ref)`'s checks (`NotFoundError`, `ConfigError` for a stored definition
        that does not decode) without building the spec when it is plain (registry/plain.py):
        `ticket create` needs to know the agent can run, not its spec."""
        if not self._is_builtin(ref):
            check_agent_row(self._agent_of(ref))

    @staticmethod
    def _is_builtin(ref: str) -> bool:
        """Whether `ref` names a built-in agent; `NotFoundError` for a version of a
        built-in's name that is not the built-in's (a hand-written row's, say)."""
        name, version = split_ref(ref)
        builtin = BUILTIN_VERSIONS.get(name)
        if builtin is None:
            return False
        if version not in (None, builtin):
            raise NotFoundError(
                f"unknown agent {shown(ref)}: {name!r} is a built-in agent's name, whose only"
                f" version is {builtin}"
            )
        return True

    def has_agent(self, ref: str) -> bool:
        try:
            self.agent(ref)
        except NotFoundError:
            return False
        return True

    def agents(
        self,
        cursor: str | None = None,
        limit: int = PAGE_DEFINITIONS,
        *,
        specs: bool = True,
        flagged: bool = False,
    ) -> DefinitionPage:
        """A page of agents and versions (`registry/listing.py`: keyset, bounded in bytes),
        as `agent()` gives them: a built-in agent's row shows the code's spec (its `kind`,
        `description` and `spec` (without `specs`: None), `builtin` 1), whatever the row
        holds; a row of a built-in's name in another version (hand-written: no ticket can
        run it) is left out; any other row is shown as stored (decoded leniently),
        `builtin` 0 whatever its column says. `flagged`: each with `cannot_run`, why it
        cannot run or None (`registry/runnable.py`)."""
        from swarm_engine.registry.builtins import builtin_spec

        kinds = runnable.known_kinds() if flagged else frozenset()

        def shown(record: dict[str, Any]) -> dict[str, Any] | None:
            name = record.get("name")
            builtin = BUILTIN_VERSIONS.get(name) if isinstance(name, str) else None
            if builtin is not None:
                if record.get("version") != builtin:
                    return None
                spec = builtin_spec(name)
                record.update(
                    kind=spec.kind,
                    description=spec.description,
                    spec=spec.model_dump(mode="json") if specs else None,
                    builtin=1,
                )
                record.pop("defects", None)  # (of columns the code's spec replaced)
            else:
                record["builtin"] = 0
            if flagged:
                record["cannot_run"] = runnable.agent_problem(record, kinds)
            return record

        return listing.page(self.defs, "agents", cursor, limit, specs=specs, shown=shown)

    # -- workflows -------------------------------------------------------------------------
    def register_workflows(
        self,
        specs: list[tuple[WorkflowSpec, str]],
        *,
        force: bool = False,
        identical: set[str] | None = None,
    ) -> list[WorkflowSpec]:
        """Validate every workflow (source names the file), then write all or none. One
        registered already as it is (`_same_workflow`) is accepted without `force`: its
        row is left as it is (its `created_at` too, which cron schedules count from), and
        its ref added to `identical` when given. `ConflictError` for a name@version
        registered with another definition (unless `force`), or a trigger name another
        workflow owns; `ConfigError` / `WorkflowError` for an invalid definition."""
        same: set[str] = set()
        from swarm_engine.registry.workflows import check_shell_step_inputs, check_workflow

        names = [s.ref for s, _ in specs]
        for spec, source in specs:
            if names.count(spec.ref) > 1:
                raise ConfigError(f"{source}: workflow {spec.ref} is defined twice")
            check_workflow(spec, self.has_agent, source)
            check_shell_step_inputs(spec, self.agent, source)

        def register() -> None:  # store reads and writes only (run again if rolled back)
            same.clear()
            owners = trigger_owners(w for w, _ in self.latest_workflows())
            for spec, source in specs:
                for trigger in spec.triggers:  # a trigger's name is its address: one owner
                    others = sorted(set(owners.get(trigger.name, [])) - {spec.name})
                    if others:
                        raise ConflictError(
                            f"{source}: trigger {trigger.name!r} belongs to workflow {others[0]!r}"
                        )
                    owners[trigger.name] = [spec.name]
                row = self.defs.workflow(spec.name, spec.version)
                if row is not None and not force and _same_workflow(row, spec):
                    same.add(spec.ref)
                elif row is not None and not force:
                    raise ConflictError(
                        f"workflow {spec.ref} is already registered with another definition (bump"
                        f" its version, or replace it: {REPLACE}"
                    )
            self.defs.put_workflows(
                {
                    "name": spec.name,
                    "version": spec.version,
                    "description": spec.description,
                    "spec": spec.model_dump_json(),
                }
                for spec, _ in specs
                if spec.ref not in same
            )

        self.defs.registering(register)  # the owners read hold until the insert commits
        if identical is not None:
            identical.update(same)
        return [s for s, _ in specs]

    def workflow(self, ref: str) -> WorkflowSpec:
        name, version = split_ref(ref)
        version = self._latest("workflows", name) if version is None else version
        row = self.defs.workflow(name, version) if version is not None else None
        if row is None:
            raise NotFoundError(f"unknown workflow {shown(ref)} (see 'swarm-engine workflow list')")
        from swarm_engine.models import WorkflowSpec

        spec = decode_definition(WorkflowSpec, "workflow", row)
        self.check_stored_workflow(spec)
        return spec

    def check_stored_workflow(
        self, spec: WorkflowSpec, agent_exists: Callable[[str], bool] | None = None
    ) -> None:
        """`WorkflowError` (one line, `workflow x@1.0.0 in the registry: ...`) when a
        decoded registry row does not hold a workflow registration would accept
        (`check_workflow`): what `workflow()` (`workflow show`, every plan) checks, and
        what `latest_workflows` checks before a trigger may fire. `agent_exists`: a
        memoized `has_agent` (one lookup per agent, not per step)."""
        from swarm_engine.registry.workflows import check_workflow

        check_workflow(spec, agent_exists or self.has_agent, f"workflow {spec.ref} in the registry")

    def latest_workflows(self, skipped: list[str] | None = None) -> list[tuple[WorkflowSpec, str]]:
        """The latest version of every workflow that decodes, with when it was registered
        (its row's `created_at`); rows that do not decode are left out (each of their
        tickets fails with the reason), and why is appended to `skipped` when given (one
        line each: `workflow x@1.0.0 in the registry: spec.triggers: ...`). So is a
        workflow that declares triggers and fails `check_stored_workflow` (a cycle, a
        trigger with both `cron` and `webhook`, an unknown agent): a trigger fires only
        for a definition `workflow show` accepts, whose tickets can plan. (One without
        triggers is not checked here: nothing fires for it, and its tickets fail at plan.)"""
        from swarm_engine.models import WorkflowSpec

        rows: dict[str, Row] = {}
        for row in self.defs.workflows():
            name, version = row["name"], row["version"]
            if not isinstance(name, str) or not isinstance(version, str):
                if skipped is not None and (name is None or version is None):
                    try:  # not read (over its cap): no ticket can name it; said once
                        _oversized(_where("workflow", row), row)
                    except ConfigError as exc:
                        skipped.append(str(exc))
                continue
            best = rows.get(name)
            if best is None or latest_key(version) > latest_key(str(best["version"])):
                rows[name] = row
        out: list[tuple[WorkflowSpec, str]] = []
        decoded: dict[tuple[Any, ...], WorkflowSpec | str] = {}
        known: dict[str, bool] = {}  # agent ref -> has_agent, for this call
        for row in rows.values():
            key = tuple(_hashable(row[c]) for c in _WORKFLOW_COLUMNS)
            spec = self._decoded.get(key)
            if spec is None:
                try:
                    spec = decode_definition(WorkflowSpec, "workflow", row)
                except ConfigError as exc:
                    spec = str(exc)
            decoded[key] = spec
            problem = spec if isinstance(spec, str) else self._trigger_problem(spec, known)
            if problem is not None:
                if skipped is not None:
                    skipped.append(problem)
                continue
            assert not isinstance(spec, str)
            out.append((spec, str(row["created_at"])))
        self._decoded = decoded  # only the rows of this call: bounded by the registry's names
        return out

    def _trigger_problem(self, spec: WorkflowSpec, known: dict[str, bool]) -> str | None:
        """Why a decoded workflow's triggers may not fire (`check_stored_workflow`'s line),
        or None (always None for a workflow without triggers)."""
        if not spec.triggers:
            return None

        def agent_exists(ref: str) -> bool:
            if ref not in known:
                known[ref] = self.has_agent(ref)
            return known[ref]

        try:
            self.check_stored_workflow(spec, agent_exists)
        except ConfigError as exc:  # (WorkflowError; or an agent row that does not decode)
            return str(exc)
        return None

    def workflows(
        self,
        cursor: str | None = None,
        limit: int = PAGE_DEFINITIONS,
        *,
        specs: bool = True,
        flagged: bool = False,
    ) -> DefinitionPage:
        """A page of workflows and versions as stored (`registry/listing.py`); without
        `specs`, each with `steps` (how many its spec has; None: not readable) instead.
        `flagged`: each with `cannot_run`, why it cannot run or None, the agents its steps
        name read once for the page (`registry/runnable.py`)."""
        found = listing.page(self.defs, "workflows", cursor, limit, specs=specs)
        if flagged:
            refs = (r for d in found.items for r in runnable.step_agents(d) or ())
            named = self.defs.agents_named(sorted(runnable.names_of(refs)))
            agents = runnable.versions_of(named)
            kinds = runnable.known_kinds()
            for record in found.items:
                record["cannot_run"] = runnable.workflow_problem(record, agents, kinds)
        for record in found.items:
            record.pop("step_agents", None)  # (read for `cannot_run` only)
        return found

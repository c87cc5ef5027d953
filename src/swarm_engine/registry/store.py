"""The registry database: versioned agents and workflows (`name@version`, latest by default)."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from swarm_engine.errors import ConfigError, ConflictError, NotFoundError
from swarm_engine.models import AgentSpec, WorkflowSpec, split_ref
from swarm_engine.registry.builtins import builtin_agents
from swarm_engine.registry.workflows import check_workflow
from swarm_engine.store.sqlite import connect, transaction


def version_key(version: str) -> tuple[Any, ...]:
    """Order versions numerically where they are numbers: 1.10.0 > 1.9.0."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.+-]", version))


class Registry:
    def __init__(self, path: Path, packages_dir: Path) -> None:
        self.conn = connect(path, "registry")
        self.packages_dir = packages_dir
        self._seed()

    def close(self) -> None:
        self.conn.close()

    def _seed(self) -> None:
        specs = builtin_agents()
        have = {
            (r[0], r[1])
            for r in self.conn.execute("SELECT name, version FROM agents WHERE builtin")
        }
        if all((s.name, s.version) in have for s in specs):
            return
        with transaction(self.conn):
            for spec in specs:
                self.conn.execute(
                    "INSERT OR IGNORE INTO agents (name, version, kind, description, spec, builtin)"
                    " VALUES (?, ?, ?, ?, ?, 1)",
                    (spec.name, spec.version, spec.kind, spec.description, spec.model_dump_json()),
                )

    # -- agents ----------------------------------------------------------------------------
    def register_agents(self, specs: list[AgentSpec], *, force: bool = False) -> list[AgentSpec]:
        """Register all or none. Package files are copied under the home folder."""
        names = [s.ref for s in specs]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ConfigError(f"agent {sorted(dupes)[0]} is defined twice")
        stored: list[AgentSpec] = []
        for spec in specs:
            existing = self._agent_row(spec.name, spec.version)
            if existing is not None and existing["builtin"]:
                raise ConflictError(f"agent {spec.ref} is built in and cannot be replaced")
            if existing is not None and not force:
                raise ConflictError(
                    f"agent {spec.ref} is already registered (bump its version, or use --force)"
                )
            stored.append(
                spec.model_copy(update={"package_path": str(self._package_dir(spec))})
                if spec.package_path
                else spec
            )
        staged: list[tuple[Path, Path]] = []
        try:
            for spec, final in zip(specs, stored, strict=True):
                if spec.package_path:
                    tmp = Path(tempfile.mkdtemp(dir=self._ensure_packages_dir()))
                    shutil.copytree(spec.package_path, tmp / "pkg", symlinks=True)
                    staged.append((tmp, Path(str(final.package_path))))
            with transaction(self.conn):
                for spec in stored:
                    self.conn.execute(
                        "INSERT OR REPLACE INTO agents (name, version, kind, description, spec)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (
                            spec.name,
                            spec.version,
                            spec.kind,
                            spec.description,
                            spec.model_dump_json(),
                        ),
                    )
                for tmp, final_dir in staged:
                    if final_dir.exists():
                        shutil.rmtree(final_dir)
                    final_dir.parent.mkdir(parents=True, exist_ok=True)
                    (tmp / "pkg").rename(final_dir)
        finally:
            for tmp, _ in staged:
                shutil.rmtree(tmp, ignore_errors=True)
        return stored

    def _ensure_packages_dir(self) -> Path:
        self.packages_dir.mkdir(parents=True, exist_ok=True)
        return self.packages_dir

    def _package_dir(self, spec: AgentSpec) -> Path:
        return self.packages_dir / spec.name / spec.version

    def _agent_row(self, name: str, version: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(
            "SELECT * FROM agents WHERE name = ? AND version = ?", (name, version)
        ).fetchone()
        return row

    def _latest(self, table: str, name: str) -> str | None:
        rows = self.conn.execute(f"SELECT version FROM {table} WHERE name = ?", (name,)).fetchall()
        return max((r[0] for r in rows), key=version_key) if rows else None

    def agent(self, ref: str) -> AgentSpec:
        name, version = split_ref(ref)
        version = version or self._latest("agents", name)
        row = self._agent_row(name, version) if version else None
        if row is None:
            raise NotFoundError(f"unknown agent {ref!r} (see 'swarm-engine agent list')")
        return AgentSpec.model_validate_json(row["spec"])

    def has_agent(self, ref: str) -> bool:
        try:
            self.agent(ref)
        except NotFoundError:
            return False
        return True

    def agents(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM agents ORDER BY name, created_at").fetchall()
        return [dict(r) | {"spec": json.loads(r["spec"])} for r in rows]

    # -- workflows -------------------------------------------------------------------------
    def register_workflows(
        self, specs: list[tuple[WorkflowSpec, str]], *, force: bool = False
    ) -> list[WorkflowSpec]:
        """Validate every workflow (source names the file), then write all or none."""
        names = [s.ref for s, _ in specs]
        for spec, source in specs:
            if names.count(spec.ref) > 1:
                raise ConfigError(f"{source}: workflow {spec.ref} is defined twice")
            check_workflow(spec, self.has_agent, source)
            exists = self.conn.execute(
                "SELECT 1 FROM workflows WHERE name = ? AND version = ?", (spec.name, spec.version)
            ).fetchone()
            if exists and not force:
                raise ConflictError(
                    f"workflow {spec.ref} is already registered (bump its version, or use --force)"
                )
        with transaction(self.conn):
            for spec, _ in specs:
                self.conn.execute(
                    "INSERT OR REPLACE INTO workflows (name, version, description, spec)"
                    " VALUES (?, ?, ?, ?)",
                    (spec.name, spec.version, spec.description, spec.model_dump_json()),
                )
        return [s for s, _ in specs]

    def workflow(self, ref: str) -> WorkflowSpec:
        name, version = split_ref(ref)
        version = version or self._latest("workflows", name)
        row = (
            self.conn.execute(
                "SELECT spec FROM workflows WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
            if version
            else None
        )
        if row is None:
            raise NotFoundError(f"unknown workflow {ref!r} (see 'swarm-engine workflow list')")
        return WorkflowSpec.model_validate_json(row[0])

    def workflows(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM workflows ORDER BY name, created_at").fetchall()
        return [dict(r) | {"spec": json.loads(r["spec"])} for r in rows]

"""Writing agents with their packages: each package is copied into a staging folder of its
own first; then, in one store transaction, the agents' rows are written and each package
swapped in whole (`package_folders.install`).

A package folder is not part of the transaction: a try whose commit PostgreSQL rolls back
(a deadlock at the commit, `store/rerun.py`) comes after its swap, so the next try writes
the rows for it and swaps only what is left (docs/engine.md). When every try fails after
a swap, the folder holds the new package and the store the old rows (or none): the error
says so, and that registering again writes them (the same `agent register` swaps in a new
copy and writes its rows)."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from swarm_engine.errors import ConfigError, StoreBusyError, StoreError
from swarm_engine.store.definitions import DefinitionStore

if TYPE_CHECKING:
    from swarm_engine.models import AgentSpec


def write_agents(
    defs: DefinitionStore,
    packages_dir: Path,
    specs: list[AgentSpec],
    stored: list[AgentSpec],
    rows: list[dict[str, str]],
) -> None:
    """Write `rows` (the agents `stored`, each `specs`' agent with its package's final
    folder) and swap in the package of each one that has one, copied from `specs`'
    `package_path`, all in one transaction. `ConfigError` when a package cannot be copied
    (nothing written); a `StoreError` after a swap says which folders were swapped."""
    from swarm_engine.agents.files import SKIP_NAMES
    from swarm_engine.package_folders import install, staging

    staged: list[tuple[Path, AgentSpec]] = []
    held = contextlib.ExitStack()  # each staging folder held until the end (sweep)
    try:
        for spec, final in zip(specs, stored, strict=True):
            if spec.package_path:
                packages_dir.mkdir(parents=True, exist_ok=True)
                tmp = held.enter_context(staging(packages_dir))
                staged.append((tmp, final))
                try:
                    shutil.copytree(
                        spec.package_path,
                        tmp / "pkg",
                        symlinks=True,
                        ignore=shutil.ignore_patterns(*SKIP_NAMES),
                    )
                except (OSError, shutil.Error) as exc:
                    raise ConfigError(
                        f"{spec.package_path}: cannot copy the agent package: "
                        + first_copy_error(exc)
                    ) from exc
        installed: list[int] = []  # kept across tries: swapped once, not again

        def put() -> None:  # run again if PostgreSQL rolls it back (store/rerun.py)
            defs.put_agents(rows)
            for n, (tmp, final) in enumerate(staged):  # each swapped in whole
                if n not in installed:  # (package_folders.py)
                    install(
                        tmp / "pkg", packages_dir, final.name, final.version, final.package_digest
                    )
                    installed.append(n)

        try:
            defs.db.atomic(put)
        except StoreError as exc:
            if not installed:
                raise
            raise swapped_unwritten(exc, [staged[n][1] for n in installed]) from exc
    finally:
        for tmp, _ in staged:
            shutil.rmtree(tmp, ignore_errors=True)
        held.close()


def swapped_unwritten(error: StoreError, swapped: list[AgentSpec]) -> StoreError:
    """`error`, said of a registration that swapped in the package folders of `swapped`
    before its rows failed to be written (a busy store still: `StoreBusyError`)."""
    first = swapped[0]
    if len(swapped) == 1:
        what = f"agent {first.ref}: its package folder was swapped in ({first.package_path})"
        whose, them = "its rows were", "registering it again writes them"
    else:
        what = (
            f"agents {first.ref} and {len(swapped) - 1} more: their package folders were"
            f" swapped in ({first.package_path}, ...)"
        )
        whose, them = "their rows were", "registering them again writes them"
    said = f"{error}; {what} but {whose} not written: {them}"
    return StoreBusyError(said) if isinstance(error, StoreBusyError) else StoreError(said)


def first_copy_error(exc: OSError | shutil.Error) -> str:
    """One line from a copy failure (`shutil.Error` carries a list of them)."""
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list):
        problems = exc.args[0]
        if problems:
            source, _, why = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            return f"{source}: {why}{more}"
    return str(exc)

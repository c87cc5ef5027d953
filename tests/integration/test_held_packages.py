"""A run holds the package copy it was planned with (`agents.files.hold_package`) until it
ends: `agent register --force` with other files, and `cleanup`'s sweep, leave that copy
in place; the run's steps read it (`package_contents(..., held)`), found by its digest or
wherever the swap moved it, and once it is released a sweep removes it. Real folders,
real locks, real registrations."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from swarm_engine.agents.files import (
    folder_contents,
    hold_package,
    package_contents,
    package_digest,
)
from swarm_engine.engine.packages import MAX_HELD, RunPackages
from swarm_engine.engine.plan import Plan, PlannedStep
from swarm_engine.errors import AgentError
from swarm_engine.models import AgentSpec, RetryPolicy
from swarm_engine.package_folders import content_name, is_copy_of, sweep
from swarm_engine.registry.catalog import Registry
from swarm_engine.service.registry import register_agent_files

VERSION = "1.0.0"


def _package(folder: Path, letter: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "agent.yaml").write_text(
        f"name: held\nversion: {VERSION}\nkind: shell\ncommand: 'true'\n"
    )
    (folder / "which.txt").write_text(letter)
    return folder


def _which(files: list[tuple[str, bool, bytes]]) -> bytes:
    return dict((rel, data) for rel, _, data in files)["which.txt"]


def _copies(folder: Path) -> list[str]:
    return sorted(e for e in os.listdir(folder) if is_copy_of(e, VERSION))


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry.db", tmp_path / "packages")


def _register(registry: Registry, source: Path) -> AgentSpec:
    (spec,) = register_agent_files(registry, [source], force=True)
    return spec


def test_a_held_copy_outlives_a_registration_with_other_files_and_a_sweep(
    registry: Registry, tmp_path: Path
) -> None:
    packages, folder = registry.packages_dir, registry.packages_dir / "held"
    with contextlib.closing(registry):
        planned = _register(registry, _package(tmp_path / "X", "X"))
        assert os.readlink(folder / VERSION) == content_name(VERSION, planned.package_digest)
        held = hold_package(planned, packages)
        assert held is not None
        copy = held.where()
        newer = _register(registry, _package(tmp_path / "Y", "Y"))
    assert os.readlink(folder / VERSION) == content_name(VERSION, newer.package_digest)
    with pytest.raises(AgentError, match="differ from the ones this step was planned with"):
        package_contents(planned, packages)  # through the link: Y's files, not X's
    assert _which(package_contents(planned, packages, held)) == b"X"  # the run's copy
    assert _which(package_contents(newer, packages, held)) == b"Y"  # (another digest: the link's)
    assert sweep(packages) == []  # held: cleanup leaves it
    assert held.where() == copy and copy is not None and os.path.isdir(copy)
    held.release()
    held.release()  # (again: nothing)
    assert held.where() is None
    assert sweep(packages) == [f"held/{os.path.basename(copy)}"]
    assert _copies(folder) == [os.readlink(folder / VERSION)]


def test_a_run_planned_with_the_old_files_finds_their_copy_by_its_digest(
    registry: Registry, tmp_path: Path
) -> None:
    """Planned just before a registration with other files, held just after: the copy of
    its files another run still holds is found by their digest (not through the link)."""
    packages = registry.packages_dir
    with contextlib.closing(registry):
        planned = _register(registry, _package(tmp_path / "X", "X"))
        first = hold_package(planned, packages)
        _register(registry, _package(tmp_path / "Y", "Y"))
    assert first is not None
    second = hold_package(planned, packages)
    assert second is not None and second.where() == first.where()
    assert _which(package_contents(planned, packages, second)) == b"X"
    first.release()
    assert sweep(packages) == []  # the second run still holds it
    second.release()
    assert len(sweep(packages)) == 1


def test_the_same_files_registered_again_while_their_copy_is_held(
    registry: Registry, tmp_path: Path
) -> None:
    """X, then Y, then X again while a run holds X's first copy (its digest's name is
    taken): the new copy gets a random name, the link names it, and every copy unheld
    and unlinked is swept."""
    packages, folder = registry.packages_dir, registry.packages_dir / "held"
    sources = [_package(tmp_path / letter, letter) for letter in "XY"]
    with contextlib.closing(registry):
        planned = _register(registry, sources[0])
        held = hold_package(planned, packages)
        assert held is not None
        _register(registry, sources[1])
        _register(registry, sources[0])
    named = content_name(VERSION, planned.package_digest)
    linked = os.readlink(folder / VERSION)
    assert linked != named and is_copy_of(linked, VERSION)
    assert _copies(folder) == sorted([named, linked])
    assert _which(package_contents(planned, packages)) == b"X"  # the link's: X's files too
    assert _which(package_contents(planned, packages, held)) == b"X"
    held.release()
    assert sweep(packages) == [f"held/{named}"]
    assert _copies(folder) == [linked]


def test_a_held_folder_of_the_layout_before_copies_is_found_after_its_swap(
    registry: Registry, tmp_path: Path
) -> None:
    packages = registry.packages_dir
    old = _package(packages / "held" / VERSION, "X")  # a folder, as registered before copies
    digest = package_digest(folder_contents(str(old), "held"))
    spec = AgentSpec(
        name="held", kind="shell", command="true", package_path=str(old), package_digest=digest
    )
    held = hold_package(spec, packages)
    assert held is not None and held.where() == str(old)
    with contextlib.closing(registry):
        _register(registry, _package(tmp_path / "Y", "Y"))
    moved = held.where()
    assert moved is not None and moved != str(old) and os.path.isdir(moved)
    assert _which(package_contents(spec, packages, held)) == b"X"
    held.release()
    assert sweep(packages) == [f"held/{os.path.basename(moved)}"]


def test_a_run_holds_at_most_max_held_packages(tmp_path: Path) -> None:
    """Bounded: a plan of more distinct packages than `MAX_HELD` holds the first ones in
    its steps' order (one descriptor each); a step of a further one reads the link's."""
    packages = tmp_path / "packages"
    sources = []
    for n in range(MAX_HELD + 1):
        folder = tmp_path / f"src{n}"
        folder.mkdir()
        (folder / "agent.yaml").write_text(f"name: a{n}\nkind: shell\ncommand: 'true'\n")
        (folder / "which.txt").write_text(str(n))
        sources.append(folder)
    with contextlib.closing(Registry(tmp_path / "registry.db", packages)) as registry:
        specs = register_agent_files(registry, sources)
    steps = {
        f"s{n}": PlannedStep(f"s{n}", spec, {}, set(), 10.0, RetryPolicy())
        for n, spec in enumerate(specs)
    }
    held = RunPackages.hold(Plan(steps), packages)
    try:
        copies = [held.of(spec) for spec in specs]
        assert all(c is not None for c in copies[:MAX_HELD]) and copies[MAX_HELD] is None
        assert held.of(AgentSpec(name="a0", kind="shell", command="true")) is None  # no digest
        assert sweep(packages) == []
    finally:
        held.release()
    assert all(c is None or c.where() is None for c in copies)  # released

"""`agent register --force` swaps a package whole for the steps that read it: many
registrars re-register one agent, alternating two packages, while many readers read it as
a step does (`package_contents`); every read is one registration's package, complete,
never a mix and never an error (before, the old folder was deleted and only then the new
one renamed in: a step could find no package, `[Errno 2] No such file or directory`).
A package of the layout before copies (a folder at `<name>/<version>`) is swapped too."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
from tests.support.cli import swarm

from swarm_engine.agents.files import package_contents
from swarm_engine.errors import AgentError
from swarm_engine.models import AgentSpec
from swarm_engine.package_folders import (
    STAGING,
    STAGING_GRACE,
    TRASH,
    is_copy_of,
    reading,
    staging,
    sweep,
)
from swarm_engine.registry.catalog import Registry
from swarm_engine.service.registry import register_agent_files
from swarm_engine.store.errortext import MAX_ERROR_CHARS, bounded_error

REGISTRARS = 3
REGISTRATIONS = 15  # each registrar's
READERS = 4
FILE_BYTES = 200_000
FILES = ("a.txt", "b.txt", "sub/c.txt")


def _package(folder: Path, letter: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "agent.yaml").write_text(
        "name: racer\nversion: 1.0.0\nkind: shell\ncommand: 'true'\n"
    )
    for rel in FILES:
        (folder / rel).parent.mkdir(exist_ok=True)
        (folder / rel).write_bytes(letter.encode() * FILE_BYTES)
    return folder


def _letters(files: list[tuple[str, bool, bytes]]) -> set[bytes]:
    """The letters a read saw, after checking it holds every file whole."""
    got = {rel: data for rel, _, data in files}
    assert sorted(got) == sorted(["agent.yaml", *FILES]), sorted(got)
    seen = set()
    for rel in FILES:
        data = got[rel]
        assert len(data) == FILE_BYTES and data == data[:1] * FILE_BYTES, rel
        seen.add(data[:1])
    return seen


def test_reads_see_one_whole_package_while_it_is_re_registered(tmp_path: Path) -> None:
    packages_dir = tmp_path / "packages"
    target = tmp_path / "registry.db"
    sources = [_package(tmp_path / letter, letter) for letter in "XY"]
    with contextlib.closing(Registry(target, packages_dir)) as first:
        (planned,) = register_agent_files(first, [sources[0]])
    # a row without the digest reads whatever registration the link names (the digest of
    # a row planned before a registration with other files fails that step: below)
    spec = planned.model_copy(update={"package_digest": None})
    errors: list[BaseException] = []
    reads: list[set[bytes]] = []
    writing = threading.Event()
    writing.set()

    def registrar(n: int) -> None:
        try:
            with contextlib.closing(Registry(target, packages_dir, busy_timeout=60)) as registry:
                for i in range(REGISTRATIONS):
                    register_agent_files(registry, [sources[(n + i) % 2]], force=True)
        except BaseException as exc:  # reported below
            errors.append(exc)

    def reader() -> None:
        try:
            while writing.is_set():
                reads.append(_letters(package_contents(spec, packages_dir)))
        except BaseException as exc:
            errors.append(exc)

    registrars = [threading.Thread(target=registrar, args=(n,)) for n in range(REGISTRARS)]
    readers = [threading.Thread(target=reader) for _ in range(READERS)]
    for t in readers + registrars:
        t.start()
    for t in registrars:
        t.join()
    writing.clear()
    for t in readers:
        t.join()
    assert errors == [], errors[:3]
    assert reads and all(len(letters) == 1 for letters in reads)  # never a mix
    assert {b"X", b"Y"} <= set().union(*reads) or len(reads) < 10  # (both seen when many)
    with contextlib.closing(
        Registry(target, packages_dir)
    ) as last:  # nobody reads: every old copy goes
        register_agent_files(last, [sources[1]], force=True)
    folder = packages_dir / "racer"
    copies = [e for e in os.listdir(folder) if is_copy_of(e, "1.0.0")]
    assert len(copies) == 1 and os.readlink(folder / "1.0.0") == copies[0]
    assert os.listdir(packages_dir / TRASH) == []
    assert _letters(package_contents(spec, packages_dir)) == {b"Y"}
    with pytest.raises(
        AgentError, match=r"differ from the ones this step was planned with: either"
    ):
        package_contents(planned, packages_dir)  # X's digest: Y's files are not run as X's


def test_the_stale_copy_line_keeps_its_fixes_under_a_deep_home(tmp_path: Path) -> None:
    """A step planned with files another registration replaced fails with a line whose
    fixes survive the 500-character bound of a stored error however deep the home (the
    path came first, and a deep one pushed the fixes into the part left out)."""
    deep = tmp_path.joinpath(*(["a-folder-of-a-deep-home"] * 12))
    packages_dir = deep / "packages"
    sources = [_package(tmp_path / letter, letter) for letter in "XY"]
    with contextlib.closing(Registry(tmp_path / "registry.db", packages_dir)) as registry:
        (planned,) = register_agent_files(registry, [sources[0]])
        register_agent_files(registry, [sources[1]], force=True)
    with pytest.raises(AgentError) as failed:
        package_contents(planned, packages_dir)
    stored = bounded_error(f"step 'main' failed: {failed.value}")
    assert str(packages_dir) in stored or len(stored) <= MAX_ERROR_CHARS
    for fix in ("registering it on this host again fixes it", "swarm-engine agent register",
                "'swarm-engine ticket reopen' runs the ticket with the new files"):  # fmt: skip
        assert fix in stored, stored


def test_a_package_of_the_old_layout_is_swapped_for_a_link(tmp_path: Path) -> None:
    packages_dir = tmp_path / "packages"
    old = _package(packages_dir / "racer" / "1.0.0", "X")  # a folder, as registered before
    spec = AgentSpec(name="racer", kind="shell", command="true", package_path=str(old))
    assert _letters(package_contents(spec, packages_dir)) == {b"X"}
    with contextlib.closing(Registry(tmp_path / "registry.db", packages_dir)) as registry:
        register_agent_files(registry, [_package(tmp_path / "Y", "Y")], force=True)
    assert (packages_dir / "racer" / "1.0.0").is_symlink()
    assert _letters(package_contents(spec, packages_dir)) == {b"Y"}
    entries = os.listdir(packages_dir / "racer")
    assert sorted(e for e in entries if not e.startswith(".lock")) == sorted(
        ["1.0.0", os.readlink(packages_dir / "racer" / "1.0.0")]
    )


def test_cleanup_removes_the_old_copies_no_step_holds_any_more(tmp_path: Path) -> None:
    home = tmp_path / "home"
    packages_dir = home / "packages"
    folder = packages_dir / "racer"
    with contextlib.closing(Registry(tmp_path / "registry.db", packages_dir)) as registry:
        register_agent_files(registry, [_package(tmp_path / "X", "X")])
        held = folder / os.readlink(folder / "1.0.0")
        with reading(str(held)) as found:  # a step reads X's files while Y is registered
            assert found
            register_agent_files(registry, [_package(tmp_path / "Y", "Y")], force=True)
            assert held.is_dir()  # held: it stays
            assert sweep(packages_dir) == []  # still held: cleanup leaves it too
            assert held.is_dir()
    newest = os.readlink(folder / "1.0.0")
    assert sorted(e for e in os.listdir(folder) if is_copy_of(e, "1.0.0")) == sorted(
        [held.name, newest]
    )
    swarm(home, "status", "--init", check=True)  # (a home with its stores)
    done = swarm(home, "cleanup", "--json", check=True)
    assert json.loads(done.stdout)["packages"] == [f"racer/{held.name}"]
    assert not held.exists() and os.listdir(packages_dir / TRASH) == []
    assert [e for e in os.listdir(folder) if is_copy_of(e, "1.0.0")] == [newest]
    spec = AgentSpec(name="racer", kind="shell", command="true", package_path=str(folder / "1.0.0"))
    assert _letters(package_contents(spec, packages_dir)) == {b"Y"}  # the link's copy stays
    again = swarm(home, "cleanup", check=True)
    assert "0 old agent package copy(ies)" in again.stdout


def test_a_killed_registrations_staging_folder_is_swept_a_held_one_is_not(tmp_path: Path) -> None:
    packages_dir = tmp_path / "packages"
    packages_dir.mkdir()
    old = time.time() - STAGING_GRACE - 5
    with staging(packages_dir) as held:  # a registration still copying
        (held / "pkg").mkdir()
        os.utime(held, (old, old))
        left = packages_dir / f"{STAGING}killed"  # one whose registration was kill -9ed
        (left / "pkg").mkdir(parents=True)
        (left / "pkg" / "big.bin").write_bytes(b"x" * 1000)
        os.utime(left, (old, old))
        new = packages_dir / f"{STAGING}justmade"  # made a moment ago, not yet locked
        new.mkdir()
        assert sweep(packages_dir) == [left.name]
        assert held.is_dir() and new.is_dir() and not left.exists()
    assert sweep(packages_dir) == [held.name]  # no longer held (as if its process died)
    assert new.is_dir()  # still young

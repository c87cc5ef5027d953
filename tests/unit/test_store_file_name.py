"""What a store says about its database file's name after the file opened under it went:
the same answer whether the name was the file itself (one `lstat` per statement) or a
symlink to it (`stat` and `lstat`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swarm_engine.store.dbfile import file_identity, name_moved


def _db(folder: Path, through_link: bool) -> Path:
    real = folder / "tickets.db"
    real.write_bytes(b"x")
    if not through_link:
        return real
    link = folder / "link.db"
    link.symlink_to(real)
    return link


@pytest.mark.parametrize("through_link", [False, True])
def test_a_name_left_alone_is_not_moved(tmp_path: Path, through_link: bool) -> None:
    path = _db(tmp_path, through_link)
    assert name_moved(path, file_identity(path)) is None


@pytest.mark.parametrize("through_link", [False, True])
def test_a_deleted_name_is_deleted(tmp_path: Path, through_link: bool) -> None:
    path = _db(tmp_path, through_link)
    opened = file_identity(path)
    (tmp_path / "tickets.db").unlink()
    if through_link:
        path.unlink()
    assert name_moved(path, opened) == "deleted"


@pytest.mark.parametrize("through_link", [False, True])
def test_a_file_put_in_its_place_is_another_file(tmp_path: Path, through_link: bool) -> None:
    path = _db(tmp_path, through_link)
    opened = file_identity(path)
    other = tmp_path / "other.db"
    other.write_bytes(b"y")
    os.replace(other, tmp_path / "tickets.db")  # the file the name leads to
    assert name_moved(path, opened) == "replaced by another file"


def test_a_file_moved_and_linked_back_under_its_name_is_told(tmp_path: Path) -> None:
    path = _db(tmp_path, through_link=False)
    opened = file_identity(path)
    moved = tmp_path / "moved.db"
    path.rename(moved)
    path.symlink_to(moved)  # same file, but the name is now a link: a second -wal would be
    assert name_moved(path, opened) == "moved, its name now a link to it"


def test_a_link_repointed_to_another_file_is_another_file(tmp_path: Path) -> None:
    path = _db(tmp_path, through_link=True)
    opened = file_identity(path)
    other = tmp_path / "other.db"
    other.write_bytes(b"y")
    path.unlink()
    path.symlink_to(other)
    assert name_moved(path, opened) == "replaced by another file"

"""The on-disk snapshot template (vm/qemu/template.py): published whole, found by key,
checked before each restore, pruned when the image is rebuilt."""

from __future__ import annotations

import asyncio
import mmap
import os
import subprocess
import time
from pathlib import Path

from swarm_engine.vm.qemu import template as templates


def _saved(
    parent: Path, key: str, mode: templates.Mode = "mapped", built_at: str = "2026-12-01T00:00:00Z"
) -> templates.Template:
    tmp = templates.new_folder(parent, key)
    (tmp / "state").write_bytes(b"device state")
    if mode == "mapped":
        with (tmp / "ram").open("wb") as fh:
            fh.truncate(1 << 20)
    return templates.publish(tmp, key, mode, built_at)


def test_a_published_template_is_found_by_its_key_only(tmp_path: Path) -> None:
    key = templates.key_for("recipe-build", 512, 1, "tcg", "mapped")
    made = _saved(tmp_path, key)
    assert made.key == key and made.problem() is None and made.ram is not None
    assert not list(tmp_path.glob("*.tmp"))  # renamed whole, nothing half-made left
    assert templates.find(tmp_path, key) == made
    for other in (
        templates.key_for("recipe-build", 256, 1, "tcg", "mapped"),
        templates.key_for("recipe-build", 512, 2, "tcg", "mapped"),
        templates.key_for("recipe-build", 512, 1, "kvm", "mapped"),
        templates.key_for("recipe-build", 512, 1, "tcg", "copy"),
        templates.key_for("recipe-other", 512, 1, "tcg", "mapped"),
    ):
        assert templates.find(tmp_path, other) is None
    copy = _saved(tmp_path, templates.key_for("recipe-build", 512, 1, "tcg", "copy"), "copy")
    assert copy.ram is None and copy.problem() is None


def test_a_changed_or_missing_ram_file_is_not_restored(tmp_path: Path) -> None:
    made = _saved(tmp_path, templates.key_for("r-b", 512, 1, "tcg", "mapped"))
    assert made.ram is not None
    stat = made.ram.stat()
    os.utime(made.ram, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert made.problem() == "its RAM file changed after it was saved"
    made.ram.unlink()
    problem = made.problem()
    assert problem is not None and "gone" in problem
    (made.folder / "template.json").write_text("{not json")
    assert templates.load(made.folder) is None


NEW, OLD = "2026-12-01T00:00:00Z", "2026-11-01T00:00:00Z"


def test_prune_keeps_this_build_only(tmp_path: Path) -> None:
    keep = _saved(tmp_path, templates.key_for("new-build", 512, 1, "tcg", "mapped"))
    other_spec = _saved(tmp_path, templates.key_for("new-build", 256, 1, "tcg", "copy"), "copy")
    old = _saved(tmp_path, templates.key_for("old-build", 512, 1, "tcg", "mapped"), built_at=OLD)
    legacy = tmp_path / "new-build-512m-1c-tcg.state"  # the earlier one-file layout
    legacy.write_bytes(b"x")
    fresh_tmp = templates.new_folder(tmp_path, "new-build-512m-1c-tcg-mapped")
    stale_tmp = templates.new_folder(tmp_path, "new-build-512m-1c-tcg-mapped")
    long_ago = time.time() - 2 * templates.STALE_TMP
    os.utime(stale_tmp, (long_ago, long_ago))
    dead_tmp = tmp_path / f"new-build-512m-1c-tcg-mapped.{_dead_pid()}.0123abcd.tmp"
    dead_tmp.mkdir()
    templates.prune(tmp_path, "new-build", NEW)
    assert keep.folder.exists() and other_spec.folder.exists() and fresh_tmp.exists()
    assert not old.folder.exists() and not legacy.exists() and not stale_tmp.exists()
    assert not dead_tmp.exists()


def test_an_older_build_never_prunes_a_newer_builds_templates(tmp_path: Path) -> None:
    """Two engines sharing the snapshot folder, one still on the previous build: each save
    deletes only templates of builds not newer than its own."""
    new = _saved(tmp_path, templates.key_for("new-build", 512, 1, "tcg", "mapped"))
    old = _saved(tmp_path, templates.key_for("old-build", 512, 1, "tcg", "mapped"), built_at=OLD)
    templates.prune(tmp_path, "old-build", OLD)  # the old engine saved a template
    assert new.folder.exists() and old.folder.exists()
    templates.prune(tmp_path, "new-build", NEW)  # the new engine saved one
    assert new.folder.exists() and not old.folder.exists()


def test_prune_keeps_the_newest_of_duplicates_and_drops_unreadable_ones(tmp_path: Path) -> None:
    key = templates.key_for("b", 512, 1, "tcg", "mapped")
    first, second, third = (_saved(tmp_path, key) for _ in range(3))
    assert templates.find(tmp_path, key) == third  # every engine picks the same, newest one
    broken = _saved(tmp_path, templates.key_for("b", 256, 1, "tcg", "mapped"))
    (broken.folder / "template.json").write_text("{not json")
    templates.prune(tmp_path, "b", NEW)
    assert [p.name for p in tmp_path.iterdir()] == [third.folder.name]
    assert not first.folder.exists() and not second.folder.exists()


def test_a_deleted_ram_file_stays_readable_through_a_private_mapping(tmp_path: Path) -> None:
    """What makes deleting a template safe for its running clones: the mapping keeps the
    file's inode, so pages not yet read still come from it after the unlink."""
    made = _saved(tmp_path, templates.key_for("b", 512, 1, "tcg", "mapped"))
    assert made.ram is not None
    with made.ram.open("r+b") as fh:
        fh.seek(1 << 19)
        fh.write(b"guest page")
    with made.ram.open("rb") as fh:
        mapped = mmap.mmap(fh.fileno(), 0, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE)
    try:
        templates.discard(made.folder)
        assert not made.folder.exists()
        assert mapped[(1 << 19) : (1 << 19) + 10] == b"guest page"
        mapped[0:4] = b"mine"  # copy-on-write still works
        assert mapped[0:4] == b"mine"
    finally:
        mapped.close()


def test_a_template_is_not_made_where_a_guest_ram_cannot_fit(tmp_path: Path) -> None:
    assert templates.space_problem(tmp_path, 1) is None
    problem = templates.space_problem(tmp_path, 1 << 40)
    assert problem is not None and problem.startswith(f"no space left for a template in {tmp_path}")


async def test_one_engine_makes_a_key_while_the_others_wait(tmp_path: Path) -> None:
    """The per-key lock: many holders at once, never two inside (invariant at the end)."""
    inside, most, order = 0, 0, []

    async def holder(n: int) -> None:
        nonlocal inside, most
        async with templates.locked(tmp_path, "k"):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0)  # sleep-ok: a yield point, so other holders may try to enter
            order.append(n)
            inside -= 1

    await asyncio.gather(*(holder(n) for n in range(5)))
    assert most == 1 and sorted(order) == list(range(5))


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_local_folder_can_hold_a_mapped_ram_file(tmp_path: Path) -> None:
    assert templates.unmappable(tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # the probe file is gone
    assert templates.unmappable(tmp_path / "missing") is not None

"""The on-disk snapshot template (vm/qemu/template.py): published whole, found by key,
checked before each restore, pruned when the image is rebuilt."""

from __future__ import annotations

import os
import time
from pathlib import Path

from swarm_engine.vm.qemu import template as templates


def _saved(parent: Path, key: str, mode: templates.Mode = "mapped") -> templates.Template:
    tmp = templates.new_folder(parent, key)
    (tmp / "state").write_bytes(b"device state")
    if mode == "mapped":
        with (tmp / "ram").open("wb") as fh:
            fh.truncate(1 << 20)
    return templates.publish(tmp, key, mode)


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


def test_prune_keeps_this_build_only(tmp_path: Path) -> None:
    keep = _saved(tmp_path, templates.key_for("new-build", 512, 1, "tcg", "mapped"))
    other_spec = _saved(tmp_path, templates.key_for("new-build", 256, 1, "tcg", "copy"), "copy")
    old = _saved(tmp_path, templates.key_for("old-build", 512, 1, "tcg", "mapped"))
    legacy = tmp_path / "new-build-512m-1c-tcg.state"  # the earlier one-file layout
    legacy.write_bytes(b"x")
    fresh_tmp = templates.new_folder(tmp_path, "new-build-512m-1c-tcg-mapped")
    stale_tmp = templates.new_folder(tmp_path, "new-build-512m-1c-tcg-mapped")
    long_ago = time.time() - 2 * templates.STALE_TMP
    os.utime(stale_tmp, (long_ago, long_ago))
    templates.prune(tmp_path, "new-build")
    assert keep.folder.exists() and other_spec.folder.exists() and fresh_tmp.exists()
    assert not old.folder.exists() and not legacy.exists() and not stale_tmp.exists()


def test_a_local_folder_can_hold_a_mapped_ram_file(tmp_path: Path) -> None:
    assert templates.unmappable(tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # the probe file is gone
    assert templates.unmappable(tmp_path / "missing") is not None

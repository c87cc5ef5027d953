"""A workspace path is resolved as `os.path.realpath` resolves it, whatever links the step
left there, while looking only at the parts under the workspace (`resolve_inside`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_engine.vm.workspace import resolve_inside

NAMES = ["a", "b", "c"]
TARGETS = ["a", "b", "c", ".", "..", "../..", "a/b", "/", "/tmp", "../outside", "c/../a", "nope"]


def reference(root: str, relpath: str) -> str | None:
    real = os.path.realpath(os.path.join(root, relpath))
    return real if real == root or real.startswith(root + os.sep) else None


entries = st.lists(
    st.tuples(
        st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join),
        st.one_of(st.just("dir"), st.just("file"), st.sampled_from(TARGETS)),
    ),
    max_size=8,
)
relpaths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=4).map("/".join)


@settings(max_examples=300, deadline=None)
@given(entries, st.lists(relpaths, min_size=1, max_size=5))
def test_resolves_like_realpath(tree: list[tuple[str, str]], paths: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        outside = Path(tmp) / "outside"
        outside.mkdir()
        root = Path(tmp) / "vm" / "workspace"
        root.mkdir(parents=True)
        for name, kind in tree:  # dirs, files and links of every sort (some fail: fine)
            path = root / name
            try:
                if kind == "dir":
                    path.mkdir(parents=True)
                elif kind == "file":
                    path.write_text("x")
                else:
                    os.symlink(kind, path)
            except OSError:
                pass
        real_root = os.path.realpath(root)
        for relpath in [*paths, "."]:
            assert resolve_inside(real_root, relpath) == reference(real_root, relpath)


def test_a_link_out_of_the_workspace_is_outside(tmp_path: Path) -> None:
    root = tmp_path / "workspace"
    (root / "sub").mkdir(parents=True)
    os.symlink("/etc", root / "sub" / "etc")
    os.symlink("../..", root / "up")
    os.symlink("sub", root / "in")
    assert resolve_inside(str(root), "sub/etc/passwd") is None
    assert resolve_inside(str(root), "up/x") is None
    assert resolve_inside(str(root), "in/new.txt") == str(root / "sub" / "new.txt")
    assert resolve_inside(str(root), "missing/deeper") == str(root / "missing" / "deeper")

"""Where a VM's memory cgroup goes (`vm/memcap.py`: `find_hierarchy`), read from the
texts of `/proc/self/mountinfo` and `/proc/self/cgroup`: cgroup v1 (the only one the
machine this was built on has), v2 (unified, read from the kernel's documentation), both
mounted at once (v1's memory wins), and none."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarm_engine.vm.memcap import PARENT, Hierarchy, MemCapError, find_hierarchy

V1 = (
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "35 31 0:32 {root} /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
)
UNIFIED = "41 31 0:38 / {point} rw,relatime - cgroup2 cgroup2 rw\n"


def test_v1_the_memory_controllers_own_hierarchy() -> None:
    found = find_hierarchy(V1.format(root="/"), "4:memory:/process_api/d00d\n1:cpu:/\n0::/\n")
    assert found == Hierarchy(1, Path("/sys/fs/cgroup/memory/process_api/d00d"))


def test_v1_mounted_from_below_its_root_as_in_a_container() -> None:
    found = find_hierarchy(V1.format(root="/docker/abc"), "4:memory:/docker/abc/sub\n")
    assert found == Hierarchy(1, Path("/sys/fs/cgroup/memory/sub"))
    with pytest.raises(MemCapError, match="not below its mount's root"):
        find_hierarchy(V1.format(root="/docker/abc"), "4:memory:/elsewhere\n")


def test_v1_wins_over_an_empty_unified_hierarchy_beside_it(tmp_path: Path) -> None:
    mounts = V1.format(root="/") + UNIFIED.format(point=tmp_path)
    found = find_hierarchy(mounts, "4:memory:/a\n0::/a\n")
    assert found.version == 1


def test_v2_needs_the_memory_controller_in_the_engines_cgroup(tmp_path: Path) -> None:
    own = tmp_path / "user.slice" / "engine.scope"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text("cpu io memory pids\n")
    mounts = UNIFIED.format(point=tmp_path)
    assert find_hierarchy(mounts, "0::/user.slice/engine.scope\n") == Hierarchy(2, own)
    (own / "swarm-engine").mkdir()  # the leaf an engine alone in its cgroup moved into
    found = find_hierarchy(mounts, "0::/user.slice/engine.scope/swarm-engine\n")
    assert found == Hierarchy(2, own)
    (own / "cgroup.controllers").write_text("cpu pids\n")
    with pytest.raises(MemCapError, match="no memory controller for the engine's cgroup"):
        find_hierarchy(mounts, "0::/user.slice/engine.scope\n")


def test_no_memory_cgroup_at_all_is_one_line() -> None:
    with pytest.raises(MemCapError) as refused:
        find_hierarchy("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n", "0::/\n")
    assert str(refused.value) == (
        "this host has no memory cgroup (neither v1's memory controller nor v2)"
    )


def test_a_backends_folder_name_says_whose_it_is() -> None:
    found = PARENT.fullmatch("swarm-vms-4026531836-15110-7051502-95e7ad6d")
    assert found is not None and found.groups() == ("4026531836", "15110", "7051502")
    assert PARENT.fullmatch("swarm-vms-x-1-2-ab") is None
    assert PARENT.fullmatch("swarm-engine") is None

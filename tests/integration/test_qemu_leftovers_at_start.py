"""What a killed engine leaves of the QEMU backend with no `vms` row: its warm pool's VM
folders and the unfinished folder (`*.tmp`) of a template it was saving. They stayed
until a restarted engine first made its qemu backend, or until the next template was
saved; an engine's start (`engine.reaper.cleanup` without a store target) now removes
them, each judged by its recorded owner: never a live process's, nor one recorded in
another pid namespace (its pid means nothing here)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.integration.conftest import dead_pid

from swarm_engine.engine.reaper import cleanup
from swarm_engine.store import open_store
from swarm_engine.vm.owner import pid_namespace
from swarm_engine.vm.qemu import template as templates
from swarm_engine.vm.qemu.config import QemuOptions

KEY = "tiny-0123abcd-512m-1c-tcg-mapped"


def warm_folder(run: Path, name: str, owner: int, ns: str) -> Path:
    folder = run / name
    folder.mkdir(parents=True)
    (folder / "owner.pid").write_text(f"{owner} {ns}\n")
    (folder / "socket").write_text(f"{folder / 'agent.sock'}\n")
    (folder / "console.log").write_text("booted\n")
    return folder


def unfinished(parent: Path, owner: str, nonce: str) -> Path:
    folder = parent / f"{KEY}.{owner}.{nonce}.tmp"
    folder.mkdir(parents=True)
    (folder / "ram").write_bytes(b"\0" * 4096)
    return folder


def test_an_engine_s_start_removes_a_killed_engine_s_warm_and_template_folders(
    tmp_path: Path, live_engine: int
) -> None:
    home, run, snap = tmp_path / "home", tmp_path / "run", tmp_path / "snap"
    home.mkdir()
    dead, here = dead_pid(), pid_namespace()
    ns = "".join(c for c in here if c.isdigit())
    assert ns, "this test needs /proc/self/ns/pid"
    images = snap / "tiny"
    gone = {
        "warm": warm_folder(run, "warm-0123456789ab", dead, here),
        "tmp": unfinished(images, f"{dead}-{ns}", "0a0a0a0a"),
        "tmp_of_an_earlier_version": unfinished(images, str(dead), "0b0b0b0b"),
    }
    kept = {
        "live_warm": warm_folder(run, "warm-ba9876543210", live_engine, here),
        "other_namespace_warm": warm_folder(run, "warm-aaaaaaaaaaaa", dead, "pid:[1]"),
        "live_tmp": unfinished(images, f"{live_engine}-{ns}", "0c0c0c0c"),
        "other_namespace_tmp": unfinished(images, f"{dead}-1", "0d0d0d0d"),
        "this_process_tmp": templates.new_folder(images, KEY),
        "template": images / f"{KEY}.0e0e0e0e.template",
        "not_ours": images / "notes.tmp",
    }
    kept["template"].mkdir()
    kept["not_ours"].mkdir()
    link = images / f"{KEY}.{dead}-{ns}.0f0f0f0f.tmp"
    link.symlink_to(gone["tmp"])
    options = {"qemu": QemuOptions(run_dir=run, snapshot_dir=snap)}
    store = open_store(home / "tickets.db")
    try:
        report = cleanup(store, home, "here", options)
    finally:
        store.close()
    for what, folder in gone.items():
        assert not folder.exists(), what
    for what, folder in kept.items():
        assert folder.is_dir(), what
    assert link.is_symlink()
    assert sorted(report.folders) == sorted(
        [
            "warm-0123456789ab",
            f"tiny/{gone['tmp'].name}",
            f"tiny/{gone['tmp_of_an_earlier_version'].name}",
        ]
    )


def test_a_template_folder_names_its_owner_and_pid_namespace(tmp_path: Path) -> None:
    """Whose an unfinished folder is is known the moment it exists (in its name)."""
    folder = templates.new_folder(tmp_path / "snap" / "tiny", KEY)
    found = templates.TMP_NAME.fullmatch(folder.name)
    assert found is not None and found["key"] == KEY
    assert int(found["pid"]) == os.getpid()
    assert found["ns"] == "".join(c for c in pid_namespace() if c.isdigit())
    assert templates.sweep_unfinished(tmp_path / "snap") == []  # its owner runs: kept
    assert folder.is_dir()

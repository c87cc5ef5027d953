"""`cleanup` removes the `tmp*` staging folders an older version left in `<home>/packages`
when a registration was killed while it copied (`package_folders.LEGACY_STAGING`): only
those of that shape, unchanged for a day, and not the folder of an agent registered under
such a name. No registration of this version makes one."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.support.cli import swarm

from swarm_engine.package_folders import LEGACY_STAGING, LEGACY_STAGING_AGE

OLD = time.time() - LEGACY_STAGING_AGE - 600


def aged(*paths: Path) -> None:
    for path in paths:
        os.utime(path, (OLD, OLD), follow_symlinks=False)


def agent_folder(where: Path, name: str, *, package: bool) -> Path:
    where.mkdir(parents=True)
    (where / "agent.yaml").write_text(f"name: {name}\nkind: shell\ncommand: cat run.sh\n")
    if package:
        (where / "run.sh").write_text("echo hi\n")
    return where


def legacy(packages: Path, name: str, *, pkg: bool = True) -> Path:
    """A staging folder as an older version left it: `tmpXXXXXXXX/pkg/<the package>`."""
    folder = packages / name
    folder.mkdir()
    if pkg:
        (folder / "pkg").mkdir()
        (folder / "pkg" / "agent.yaml").write_text("name: x\n")
        (folder / "pkg" / "big.bin").write_bytes(b"x" * 100_000)
        aged(folder / "pkg")
    aged(folder)
    return folder


def test_cleanup_removes_an_older_versions_staging_folders_a_day_old(tmp_path: Path) -> None:
    home = tmp_path / "home"
    packages = home / "packages"
    swarm(home, "status", "--init", check=True)
    registered = agent_folder(tmp_path / "a", "tmpagent012", package=True)
    swarm(home, "agent", "register", str(registered), check=True)
    assert [e for e in os.listdir(packages) if LEGACY_STAGING.match(e)] == ["tmpagent012"]
    mine = sorted(os.listdir(packages / "tmpagent012"))  # this version's layout: a link
    killed = legacy(packages, "tmpab12cd_3")  # a registration killed while it copied
    early = legacy(packages, "tmpempty123", pkg=False)  # ... before it began to copy
    copying = legacy(packages, "tmpcopying1")  # one still copying: `pkg` changed just now
    (copying / "pkg" / "more.txt").write_text("just copied\n")
    young = packages / "tmpyoung123"  # made a moment ago
    (young / "pkg").mkdir(parents=True)
    other = legacy(packages, "tmpother1xx")  # not of that shape: something else beside it
    (other / "notes.txt").write_text("mine\n")
    aged(other / "notes.txt", other)
    named = legacy(packages, "tmpzz")  # not of that name
    link = packages / "tmplink1234"  # a link, not a folder: never followed
    link.symlink_to(named, target_is_directory=True)
    aged(link)
    # an agent of that name registered before copies: `<name>/<version>` is a folder,
    # its version may well be `pkg`: the registry says it is an agent's, it stays
    (packages / "tmpagent012" / "pkg").mkdir()
    (packages / "tmpagent012" / "pkg" / "run.sh").write_text("echo old layout\n")
    for entry in mine:
        os.rename(packages / "tmpagent012" / entry, tmp_path / entry)
    aged(packages / "tmpagent012" / "pkg", packages / "tmpagent012")

    done = swarm(home, "cleanup", "--json", check=True)
    assert sorted(json.loads(done.stdout)["packages"]) == ["tmpab12cd_3", "tmpempty123"]
    assert not killed.exists() and not early.exists()
    assert (copying / "pkg" / "more.txt").is_file() and (young / "pkg").is_dir()
    assert (other / "notes.txt").is_file() and (named / "pkg" / "big.bin").is_file()
    assert link.is_symlink()
    assert (packages / "tmpagent012" / "pkg" / "run.sh").is_file()

    again = swarm(home, "cleanup", check=True)  # the young ones stay as they are
    assert "0 old agent package copy(ies) or staging folder(s)" in again.stdout, again.stdout
    assert sorted(os.listdir(copying)) == ["pkg"] and sorted(os.listdir(young)) == ["pkg"]


def test_no_registration_of_this_version_leaves_a_tmp_folder(tmp_path: Path) -> None:
    """What `cleanup` takes for an older version's staging folder is never made now: a
    registration, a refused one (its package cannot be copied) and a re-registration
    leave no `tmp*` in `<home>/packages`."""
    home = tmp_path / "home"
    packages = home / "packages"
    swarm(home, "status", "--init", check=True)
    good = agent_folder(tmp_path / "good", "good", package=True)
    swarm(home, "agent", "register", str(good), check=True)
    (good / "run.sh").write_text("echo again\n")
    swarm(home, "agent", "register", "--force", str(good), check=True)
    bad = agent_folder(tmp_path / "bad", "bad", package=True)
    (bad / "unreadable.txt").write_text("secret\n")
    (bad / "unreadable.txt").chmod(0)
    refused = swarm(home, "agent", "register", str(bad))
    if os.geteuid() != 0:  # (root reads it anyway)
        assert refused.returncode != 0, refused
    assert [e for e in os.listdir(packages) if e.startswith("tmp")] == []

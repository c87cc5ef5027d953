"""What a step changed in its workspace: files added, modified and deleted.

The workspace is listed (SHA-256 of every regular file, `.swarm/` left out) before and after
the agent runs, by `find` and `sha256sum` in the VM; the listing goes through a file, so a
big workspace is not cut like a command's output. Changed files are copied into the step's
artifacts (`workspace/<path>`), each up to `MAX_COPY_BYTES`, together up to `MAX_COPY_TOTAL`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarm_engine.errors import VMError
from swarm_engine.vm.base import VM, safe_relpath

LISTING = ".swarm/files.sha256"
LIST_COMMAND = (
    "find . -path ./.swarm -prune -o -type f -print0 | "
    f"xargs -0 -r sha256sum -z -- > {LISTING}.tmp && mv {LISTING}.tmp {LISTING}"
)
MAX_LISTED = 1000
"""Each list in the outputs names at most this many paths (and says how many more)."""
MAX_COPY_BYTES = 1024 * 1024
MAX_COPY_TOTAL = 16 * 1024 * 1024


async def snapshot(vm: VM, timeout: float = 120.0) -> dict[str, str] | None:
    """{path: sha256} of the workspace's regular files, or None if it cannot be listed."""
    try:
        done = await vm.exec(LIST_COMMAND, timeout=timeout)
        if not done.ok:
            return None
        raw = await vm.get_file(LISTING)
    except VMError:
        return None
    files: dict[str, str] = {}
    for record in raw.split(b"\0"):
        digest, sep, name = record.partition(b"  ")
        if not sep:
            continue
        path = name.decode(errors="surrogateescape")
        files[path[2:] if path.startswith("./") else path] = digest.decode(errors="replace")
    return files


@dataclass
class Changes:
    added: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def as_outputs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("added", "modified", "deleted"):
            paths = sorted(getattr(self, name))
            out[name] = [_printable(p) for p in paths[:MAX_LISTED]]
            if len(paths) > MAX_LISTED:
                out[f"{name}_more"] = len(paths) - MAX_LISTED
        return out


def compare(before: dict[str, str], after: dict[str, str]) -> Changes:
    return Changes(
        added=[p for p in after if p not in before],
        modified=[p for p in after if p in before and before[p] != after[p]],
        deleted=[p for p in before if p not in after],
    )


async def copy_changed(vm: VM, changes: Changes, target: Path) -> list[str]:
    """Copy added and modified files into `target`; returns what was not copied, and why."""
    skipped: list[str] = []
    total = 0
    for path in sorted(changes.added + changes.modified):
        try:
            rel = safe_relpath(path)
            data = await vm.get_file(rel)
        except VMError as exc:
            skipped.append(f"{_printable(path)}: {exc}")
            continue
        if len(data) > MAX_COPY_BYTES or total + len(data) > MAX_COPY_TOTAL:
            skipped.append(f"{_printable(path)}: {len(data)} bytes, over the copy limit")
            continue
        total += len(data)
        dest = target / rel
        try:
            await asyncio.to_thread(_write, dest, data)
        except OSError as exc:
            skipped.append(f"{_printable(path)}: {exc.strerror}")
    return skipped


def _write(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)


def _printable(path: str) -> str:
    return path.encode(errors="surrogateescape").decode(errors="replace")

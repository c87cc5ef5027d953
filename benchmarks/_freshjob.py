"""The peers' job given what swarm-engine gives each ticket: a workspace and a memory
cgroup of its own, made before the job and removed after it (`peers.py --fresh`).

Stdlib only: huey's side imports it in its own venv. This is what a user of "huey plus my
own sandbox call" writes to give each job a fresh workspace and its own memory limit, as
swarm-engine does per ticket (a new VM per run: `vm/process_vm.py`, `vm/memcap.py`):

* the workspace: a new folder next to the recipe's VM folder (`tempfile.mkdtemp`), owned
  by the sandbox's host uid as the recipe's is, removed with `shutil.rmtree` after the
  job (a plain folder: swarm-engine's default also mounts a filesystem of its own there,
  kept mounted between VMs, `vm/spares.py`, which this does not);
* the memory cgroup: a new cgroup beside the recipe's VM cgroup (v1 memory controller, or
  v2), its limit the recipe's (`memory.limit_in_bytes` and `memory.memsw.limit_in_bytes`
  where swap is accounted; v2: `memory.max` and `memory.swap.max` 0), removed after the
  job once its last process is gone (`rmdir` is retried while the kernel says EBUSY).

The argv's workspace path and cgroup `tasks`/`cgroup.procs` path are replaced by the new
ones; the rest of the job is `peers.run_job`'s.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

RMDIR_SECONDS = 5.0
"""How long the cgroup's removal waits for its last process to be gone (EBUSY)."""


def _limit_files(group: Path) -> list[tuple[str, str | None]]:
    """The files a new cgroup's memory limit is written to, and a fixed value (None: the
    recipe's limit), for the hierarchy `group` is in."""
    if (group.parent / "memory.limit_in_bytes").exists():  # v1
        files: list[tuple[str, str | None]] = [("memory.limit_in_bytes", None)]
        if (group.parent / "memory.memsw.limit_in_bytes").exists():
            files.append(("memory.memsw.limit_in_bytes", None))
        return files
    return [("memory.max", None), ("memory.swap.max", "0")]


def fresh_parts(recipe: dict[str, Any]) -> tuple[str, str, str]:
    """`(workspace, cgroup join file, limit in bytes)` as the recipe's argv names them.

    Raises RuntimeError when the argv has no such paths (the backend changed shape)."""
    workspace = recipe["cwd"]
    joins = [a for a in recipe["argv"] if a.startswith("/sys/fs/cgroup/") and "/" in a]
    joins = [a for a in joins if a.endswith(("/tasks", "/cgroup.procs"))]
    if workspace not in recipe["argv"] or len(joins) != 1:
        raise RuntimeError("the job's argv does not name one workspace and one cgroup")
    group = Path(joins[0]).parent
    name = "memory.limit_in_bytes" if (group / "memory.limit_in_bytes").exists() else "memory.max"
    return workspace, joins[0], (group / name).read_text().strip()


def run_fresh_job(recipe: dict[str, Any], run_job: Any) -> tuple[float, float]:
    """`run_job(recipe)` in a new workspace and a new memory cgroup, both removed after;
    its (start, end) in Unix seconds from before the workspace is made to after both are
    gone."""
    start = time.time()
    workspace, join, limit = fresh_parts(recipe)
    made = Path(workspace)
    owner = made.stat()
    folder = Path(tempfile.mkdtemp(prefix="job-", dir=made.parent.parent))
    os.chown(folder, owner.st_uid, owner.st_gid)
    os.chmod(folder, owner.st_mode & 0o7777)
    join_file = Path(join)
    group = join_file.parent.parent / f"job-{uuid.uuid4().hex[:12]}"
    group.mkdir()
    try:
        for name, value in _limit_files(group):
            (group / name).write_text(limit if value is None else value)
        swap = {workspace: str(folder), join: str(group / join_file.name)}
        job = dict(recipe, argv=[swap.get(a, a) for a in recipe["argv"]], cwd=str(folder))
        run_job(job)
    finally:
        _remove_group(group)
        shutil.rmtree(folder)
    return start, time.time()


def _remove_group(group: Path) -> None:
    deadline = time.monotonic() + RMDIR_SECONDS
    while True:
        try:
            group.rmdir()
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
        time.sleep(0.001)  # its last process is still leaving

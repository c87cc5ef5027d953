"""What swarm-engine records and makes for a one-step ticket, as plain calls on one thread.

Shared by `peers.py --floor` (with the sandboxed job in the middle, on every slot thread)
and `records.py` (without a job, each record timed on its own). The records are made
through the store's own classes (`open_store`, `RunWrites`), in the order the engine
makes them: the claim; the run's start with its step row; the VM's boot record; the
artifacts folder and `output.log`; the VM folder with its workspace; the VM ready and the
step running; the inputs file; (the job, and its output in the log); the VM folder
removed; the run's end with the step's end and the VM destroyed, the final ticket and run
rows read back.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STAGES = (
    "claim",
    "run start",
    "VM boot row",
    "artifacts + log",
    "VM folder",
    "VM ready + step running",
    "inputs file",
    "job + log write",
    "VM folder removed",
    "run end",
)
"""The records of one ticket, in order; `one_ticket` calls `mark(stage)` after each."""


class _VM:
    """What `RunWrites.step_started` reads of a VM."""

    def __init__(self, vm_id: str, folder: Path) -> None:
        self.id, self.folder = vm_id, folder

    def info(self) -> Any:
        from swarm_engine.vm.base import VMInfo

        return VMInfo(workspace=str(self.folder / "workspace"), isolation="bwrap")


def register_engine(db: Path, engine_id: str, slots: int) -> None:
    """The engine row that every claim names (the claim's foreign key)."""
    from swarm_engine.store import open_store

    store = open_store(db)
    try:
        store.engines.register(
            engine_id, kind="daemon", host="floor", pid=os.getpid(), max_vms=slots,
            backend="process",
        )  # fmt: skip
    finally:
        store.close()


class TicketRecords:
    """One store connection (one thread) making the records of one ticket after another.

    `job()` is run between the inputs file and the folder's removal and returns the
    bytes the sandbox printed (written to the step's log); `mark(stage)` is called after
    each of `STAGES`. `one_ticket` returns False once no ticket is open."""

    def __init__(self, db: Path, home: Path, engine_id: str) -> None:
        from swarm_engine.engine.writes import RunWrites
        from swarm_engine.store import open_store

        self.store = open_store(db)
        self.writes = RunWrites(self.store)
        self.home = home
        self.engine_id = engine_id

    def close(self) -> None:
        self.store.close()

    def one_ticket(self, job: Callable[[], bytes], mark: Callable[[str], None]) -> bool:
        from swarm_engine.engine.writes import NewStep, StepEnd
        from swarm_engine.models import Usage
        from swarm_engine.vm.workspace import prepare_folder

        store, writes, home = self.store, self.writes, self.home
        claimed = store.tickets.claim_next(
            engine_id=self.engine_id, attempt_id=uuid.uuid4().hex, lease_ttl=30
        )
        if not claimed:
            return False
        ticket = claimed[0]
        mark("claim")
        step = NewStep("main", "echo", "1", "echo", dict(ticket.inputs or {}))
        run_id, exec_id = writes.start_run(
            ticket, engine_id=self.engine_id, workflow_name=None, workflow_version=None,
            first=step,
        )  # fmt: skip
        assert exec_id is not None
        mark("run start")
        vm = _VM(f"vm-{uuid.uuid4().hex[:12]}", home / "vms" / uuid.uuid4().hex[:12])
        store.vms.record_boot(
            vm.id, backend="process", host="floor", engine_id=self.engine_id,
            owner_pid=os.getpid(), memory_mb=512, vcpus=1,
        )  # fmt: skip
        mark("VM boot row")
        artifacts = home / "artifacts" / f"run-{run_id}" / "main.1"
        artifacts.mkdir(parents=True)
        with open(artifacts / "output.log", "ab") as log_file:
            mark("artifacts + log")
            prepare_folder(vm.folder, True, None)
            mark("VM folder")
            writes.step_started(exec_id, vm)
            mark("VM ready + step running")
            (vm.folder / "workspace" / "inputs.json").write_bytes(json.dumps(step.inputs).encode())
            mark("inputs file")
            log_file.write(job())
        mark("job + log write")
        shutil.rmtree(vm.folder)
        mark("VM folder removed")
        end = StepEnd(
            exec_id, [(vm.id, None, datetime.now(UTC))], None, status="done",
            outputs=step.inputs, exit_code=0, error=None, usage=Usage(),
            log_path=str(artifacts / "output.log"),
        )  # fmt: skip
        writes.close_run(
            run_id, ticket, status="done", outputs=step.inputs, outputs_in_steps=True,
            step_end=end,
        )  # fmt: skip
        mark("run end")
        return True

"""`live_work`: a VM's processes are a running engine's work when a process above them
runs swarm-engine, and only then (real processes, their real ancestry in /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support.cli import wait_until

from swarm_engine.vm.proctree import VM_TAG, _ppid, live_work, tagged

SPAWNER = """
import subprocess, sys
child = subprocess.Popen(["sleep", "300"], env={"PATH": "/usr/bin:/bin", sys.argv[2]: sys.argv[1]},
                         stdout=subprocess.DEVNULL)
print(child.pid, flush=True)
sys.stdin.read()
child.kill()
"""


def spawner(tmp_path: Path, vm_id: str, **env: str) -> tuple[subprocess.Popen[str], int]:
    """A process named `swarm-engine` (as the engine's script is) that starts one process
    tagged with `vm_id`; the pid of that one."""
    script = tmp_path / "swarm-engine"
    script.write_text(SPAWNER)
    proc = subprocess.Popen([sys.executable, str(script), vm_id, VM_TAG], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, **env})  # fmt: skip
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def test_the_vm_of_a_running_engine_is_its_live_work_and_then_no_ones(tmp_path: Path) -> None:
    vm_id = f"vm-{uuid.uuid4().hex[:12]}"
    engine, child = spawner(tmp_path, vm_id)
    try:
        wait_until(lambda: tagged(vm_id) == [child], 10, "the tagged process")
        assert (
            live_work([child]) == f"its processes are the live work of engine process {engine.pid}"
        )
    finally:
        engine.kill()
        engine.communicate()
    try:  # its engine killed (-9): the VM's process is re-parented, and no one's work
        wait_until(lambda: _ppid(child) != engine.pid, 10, "the orphan to be re-parented")
        assert live_work([child]) is None
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_vms_own_process_named_swarm_engine_makes_it_no_ones_work(tmp_path: Path) -> None:
    """A command of the VM may call itself anything: a process between two of its tagged
    ones is not looked at (else a sandbox could make itself unreapable)."""
    vm_id = f"vm-{uuid.uuid4().hex[:12]}"
    impostor, child = spawner(tmp_path, vm_id, **{VM_TAG: vm_id})
    try:
        both = sorted([impostor.pid, child])
        wait_until(lambda: sorted(tagged(vm_id)) == both, 10, "both to be tagged")
        assert live_work(tagged(vm_id)) is None
        assert live_work([child]) is not None  # (alone, it would have been judged live)
    finally:
        assert impostor.stdin is not None
        impostor.communicate("")
    assert live_work([child]) is None  # gone: nothing of it to judge

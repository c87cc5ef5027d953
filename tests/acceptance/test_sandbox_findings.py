"""What a security tester found a step or an agent definition could do, now refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent
from tests.support.cli import query, start_engine, swarm, swarm_inproc

from swarm_engine.agents.files import MAX_OUTPUTS_BYTES


def run_step(home: Path, tmp_path: Path, command: str) -> dict[str, object]:
    write_agent(tmp_path / "s", f"name: s\nkind: shell\ncommand: {json.dumps(command)}\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "s")).returncode == 0
    assert swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", "s").returncode == 0
    done = swarm(home, "run-ticket", "1", "--wait", "--json", timeout=60)
    return dict(json.loads(done.stdout), returncode=done.returncode)


def test_a_fifo_left_as_outputs_fails_the_step_instead_of_hanging_the_engine(
    home: Path, tmp_path: Path
) -> None:
    out = run_step(home, tmp_path, 'mkfifo "$SWARM_OUTPUTS"; echo made')
    assert out["returncode"] == 1 and out["status"] == "failed"
    assert "not a regular file" in str(out["error"])


def test_a_sparse_giant_outputs_file_is_refused_not_read(home: Path, tmp_path: Path) -> None:
    out = run_step(home, tmp_path, 'truncate -s 1500M "$SWARM_OUTPUTS"; echo made')
    assert out["returncode"] == 1 and out["status"] == "failed"
    assert "over the 67108864-byte limit" in str(out["error"])


def test_an_outputs_file_over_its_limit_fails_the_step_unread(home: Path, tmp_path: Path) -> None:
    """$SWARM_OUTPUTS is capped at 4 MiB (`MAX_OUTPUTS_BYTES`), far below the 64 MiB any
    file read back is: a tester's 60 MB object took an engine to 574 MB and was stored
    twice. One over the cap fails the step with its size and the cap, and is not stored."""
    size = MAX_OUTPUTS_BYTES + 1
    command = (
        """printf '{"x": "' > "$SWARM_OUTPUTS";"""
        f""" head -c {size - 9} /dev/zero | tr '\\0' y >> "$SWARM_OUTPUTS";"""
        """ printf '"}' >> "$SWARM_OUTPUTS"; wc -c < "$SWARM_OUTPUTS" """
    )
    out = run_step(home, tmp_path, command)
    assert out["returncode"] == 1 and out["status"] == "failed"
    assert f"$SWARM_OUTPUTS is {size:,} bytes, over its limit of 4 MiB" in str(out["error"])
    (stored,) = query(home / "tickets.db", "SELECT length(outputs) n FROM step_executions")
    assert stored["n"] < 10_000


@pytest.mark.parametrize(
    ("vm_block", "message"),
    [
        ("{backend: qemu, image: ../../../etc}", "vm.image: must be an image name"),
        ("{image: /abs/path}", "must be an image name"),
        ("{network: true, allowed_ports: [-1]}", "greater than or equal to 1"),
        ("{network: true, allowed_ports: [70000]}", "less than or equal to 65535"),
        ("{network: true, allowed_ports: [8080, 8080]}", "a port is listed twice"),
        ("{network: true, allowed_ports: [true]}", "valid integer"),
        ("{network: true, allowed_ports: ['8080']}", "valid integer"),
    ],
)
def test_vm_requirements_are_checked_at_registration(
    home: Path, tmp_path: Path, vm_block: str, message: str
) -> None:
    package = write_agent(
        tmp_path / "v", f"name: v\nkind: shell\ncommand: 'true'\nvm: {vm_block}\n"
    )
    done = swarm_inproc(home, "agent", "register", str(package))
    assert done.returncode == 5, done.stdout + done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert message.split(": ")[-1] in done.stderr, done.stderr


def test_a_burst_of_files_past_max_files_fails_every_step(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """A command that makes 200 empty files and exits, in less time than the workspace's
    periodic count, against `max_files = 10`: each of several tickets fails with the
    limit's note (the workspace is counted again as each command ends), none is done."""
    (home / "config.toml").write_text("[backend_options.process]\nmax_files = 10\n")
    burst = "i=0; while [ $i -lt 200 ]; do : > f$i; i=$((i+1)); done"
    write_agent(tmp_path / "burst", f"name: burst\nkind: shell\ncommand: {json.dumps(burst)}\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "burst")).returncode == 0
    tickets = 8
    for i in range(tickets):
        made = swarm_inproc(home, "ticket", "create", "--title", f"b{i}", "--agent", "burst")
        assert made.returncode == 0, made.stderr
    proc = start_engine(home, "--max-vms", "2", "--until-idle")
    engines.append(proc)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    rows = query(home / "tickets.db", "SELECT status, error FROM tickets ORDER BY id")
    assert len(rows) == tickets
    for row in rows:
        assert row["status"] == "failed", row
        assert row["error"].startswith("step 'main' failed: command exited with 137"), row
        assert "the workspace went over its disk limit of 2048 MiB or 10 files" in row["error"]


def test_a_file_past_disk_mb_fails_the_step_with_a_note_naming_the_limit(
    home: Path, tmp_path: Path
) -> None:
    """A shell step whose one file reaches `disk_mb` (the per-file limit, SIGXFSZ) while
    the workspace stays within its total: the step fails with exit code 153 and the error
    names the limit, where it said only `File size limit exceeded` (found by a tester)."""
    (home / "config.toml").write_text("[backend_options.process]\ndisk_mb = 8\n")
    out = run_step(home, tmp_path, "head -c 20M /dev/zero > /tmp/big")
    assert out["returncode"] == 1 and out["status"] == "failed"
    error = str(out["error"])
    assert error.startswith("step 'main' failed: command exited with 153"), error
    assert "swarm-engine: exit code 153 means a file reached the size limit of 8 MiB per file" in (
        error
    )
    # one line, its lines joined as every error line joins them (it showed `\x0a\x0a`)
    assert "\n" not in error and "exceeded / swarm-engine: exit code 153" in error, error
    shown = swarm_inproc(home, "ticket", "show", "1")
    assert "exceeded / swarm-engine: exit code 153" in shown.stdout, shown.stdout
    assert "\\x0a" not in shown.stdout, shown.stdout


def test_fallocate_past_disk_mb_is_refused_and_fails_the_step_naming_it(
    home: Path, tmp_path: Path
) -> None:
    """`fallocate` is instant: with the workspace measured every 50 ms, six 1 GiB files put
    6 GiB in a 2048 MiB workspace before the kill (found by a tester). The workspace is a
    filesystem of disk_mb now: the kernel refuses the allocation past it, and the step
    fails with one line naming the limit."""
    (home / "config.toml").write_text("[backend_options.process]\ndisk_mb = 8\n")
    out = run_step(home, tmp_path, "for i in 1 2 3 4 5 6; do fallocate -l 3M f$i; done")
    assert out["returncode"] == 1 and out["status"] == "failed"
    error = str(out["error"])
    assert error.startswith("step 'main' failed: command exited with 137: fallocate: "), error
    assert "No space left on device" in error
    over = "the workspace went over its disk limit of 8 MiB or 100000 files; "
    # found as the shell exits, or (a loaded host: the shell slow to) killed while it runs
    assert error.endswith((over + "found as the command ended; it fails with exit code 137",
                           over + "the command was killed")), error  # fmt: skip
    assert error.count("No space left on device") >= 3  # f4 to f6 at least: refused whole


def test_vm_doctor_says_whether_each_workspace_is_capped(home: Path) -> None:
    doctor = swarm(home, "vm", "doctor", "--json")
    check = next(c for c in json.loads(doctor.stdout) if c["name"] == "process disk cap")
    assert check == {
        "name": "process disk cap",
        "level": "ok",
        "message": "each workspace is a filesystem of its own of 2048 MiB and 100000 files:"
        " the kernel refuses writes past them",
    }
    (home / "config.toml").write_text('[backend_options.process]\ndisk_cap = "measured"\n')
    doctor = swarm(home, "vm", "doctor", "--json")
    check = next(c for c in json.loads(doctor.stdout) if c["name"] == "process disk cap")
    assert check["level"] == "warn" and "overshoots disk_mb" in check["message"]


PRELOAD_C = r"""
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void loaded(void) {
    FILE *f = fopen("MARKER", "a");
    if (f) { fprintf(f, "uid %d\n", (int)getuid()); fclose(f); }
}
"""


def test_an_agents_env_never_reaches_a_host_program(home: Path, tmp_path: Path) -> None:
    """`env: {LD_PRELOAD: <a library the host could load>}` made the host's setpriv (root)
    load it, and `env: {PATH: ...}` broke the host's exec: now both reach the command only."""
    if subprocess.run(["sh", "-c", "command -v gcc"], capture_output=True).returncode != 0:
        pytest.skip("gcc is not installed")
    shared = Path(tempfile.mkdtemp(prefix="swarm-preload-", dir="/tmp"))
    try:
        shared.chmod(0o777)  # any uid (a root engine's sandbox uid too) may load and write
        marker = shared / "marker"
        (shared / "evil.c").write_text(PRELOAD_C.replace("MARKER", str(marker)))
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(shared / "evil.so"),
                        str(shared / "evil.c")], check=True)  # fmt: skip
        (shared / "evil.so").chmod(0o755)
        env = {"LD_PRELOAD": str(shared / "evil.so"), "PATH": "/usr/bin:/nonexist"}
        command = 'echo "preload=$LD_PRELOAD path=$PATH secret=$INPUT_SECRET"'
        write_agent(tmp_path / "s", f"name: s\nkind: shell\ncommand: {json.dumps(command)}\n"
                    f"env: {json.dumps(env)}\n")  # fmt: skip
        assert swarm_inproc(home, "agent", "register", str(tmp_path / "s")).returncode == 0
        made = swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", "s",
                            "--input", "secret=s3cr3t")  # fmt: skip
        assert made.returncode == 0, made.stderr
        done = swarm(home, "run-ticket", "1", "--wait", "--json", timeout=60)
        assert done.returncode == 0, (done.stdout, done.stderr)
        result = json.loads(done.stdout)
        assert not marker.exists(), f"a host program loaded the agent's LD_PRELOAD: {result}"
        expected = f"preload={shared / 'evil.so'} path=/usr/bin:/nonexist secret=s3cr3t"
        assert expected in json.dumps(result), result
    finally:
        shutil.rmtree(shared, ignore_errors=True)

"""The README's shell blocks, run as a new user pastes them: from the repository's folder,
in a temporary SWARM_HOME, on a real engine. Every line must succeed, in order.

Two exceptions, each skipped with its reason: `bash scripts/test.sh` (it runs this very
suite), and the microVM block when no current QEMU image is at hand (building one needs
root and minutes; CI builds it first)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.cli import REPO, env_for, swarm

from swarm_engine.vm.qemu.doctor import unavailable
from swarm_engine.vm.qemu.folders import images_dir_for
from swarm_engine.vm.qemu.image import list_images

README = REPO / "README.md"
FAILED = "README-LINE-FAILED"


def blocks() -> list[list[str]]:
    """Each ```bash block of the README as its commands (a `\\` line joined to the next)."""
    found = []
    for body in re.findall(r"^```bash\n(.*?)^```", README.read_text(), re.S | re.M):
        commands, pending = [], ""
        for line in body.splitlines():
            pending += line + "\n"
            if not line.rstrip().endswith("\\"):
                if pending.strip():
                    commands.append(pending.rstrip("\n"))
                pending = ""
        found.append(commands)
    return found


def block_with(marker: str) -> list[str]:
    matching = [b for b in blocks() if any(marker in c for c in b)]
    assert len(matching) == 1, f"one README block should hold {marker!r}"
    return matching[0]


def run_lines(commands: list[str], home: Path, timeout: float = 600) -> str:
    """Run `commands` in one bash session (so `source` and `export` carry over), stopping
    at the first that fails; returns stdout + stderr."""
    script = ["set -o pipefail"]
    for i, command in enumerate(commands):
        script.append(command)
        script.append(f'_rc=$?; if [ $_rc -ne 0 ]; then echo "{FAILED} {i} $_rc" >&2; exit 97; fi')
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=REPO,
        env=env_for(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = done.stdout + done.stderr
    failed = re.search(rf"{FAILED} (\d+) (\d+)", done.stderr)
    if failed:
        line = commands[int(failed.group(1))]
        pytest.fail(f"README line failed (exit {failed.group(2)}):\n  {line}\n\n{output}")
    assert done.returncode == 0, output
    return output


@pytest.fixture(scope="module")
def used_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("readme") / "home"  # does not exist yet: a fresh home
    yield home
    if (home / "tickets.db").exists():  # an engine the README started, should a line fail
        swarm(home, "stop", "--now", "--timeout", "60")


def test_the_use_it_block_works_line_by_line(used_home: Path) -> None:
    output = run_lines(block_with("swarm-engine start"), used_home)
    assert "registered workflow text-report" in output
    assert "ticket 1 done" in output
    assert re.search(r"ticket 2: hi\b", output), output  # `ticket show 2`: the sqlite3 row
    assert "stopped" in output


def test_the_microvm_block_works_line_by_line(used_home: Path) -> None:
    images = images_dir_for(used_home)
    reason = unavailable(images) or unavailable(images, "cloud")
    if reason is None and any(i.name == "cloud" and i.stale for i in list_images(images)):
        reason = f"the cloud image in {images} is stale; scripts/build-images.sh rebuilds it"
    if reason is not None:
        pytest.skip(f"no current QEMU image, so the README's microVM lines are not run: {reason}")
    # pasted into the same terminal as the "Use it" block, whose first line activated the
    # venv: carry that over (and only that)
    activate = [c for c in block_with("swarm-engine start") if "source .venv/bin/activate" in c]
    assert activate, "the Use it block activates the venv"
    output = run_lines(["source .venv/bin/activate", *block_with("--backend qemu")], used_home)
    assert "ticket 3 done" in output


def test_the_demo_runs_and_its_last_hint_can_be_pasted(tmp_path: Path) -> None:
    first = block_with("scripts/demo.sh")
    assert [c.split("#")[0].strip() for c in first] == [
        "bash scripts/demo.sh",
        "bash scripts/test.sh",
    ]
    home = tmp_path / "demo-home"
    output = run_lines([first[0]], home)  # not scripts/test.sh: it runs this very suite
    assert _servers_of(home) == [], "the demo left its dashboard server running"
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    hint = plain.split("to look closer, paste:\n", 1)
    assert len(hint) == 2, plain
    pasted = [line.strip() for line in hint[1].splitlines() if line.startswith("  ")]
    assert pasted[0] == f"export SWARM_HOME={home}"
    shown = run_lines(pasted, tmp_path / "elsewhere")  # the hint names the demo's home itself
    assert re.search(r"ticket \d+: report", shown) and "count_first" in shown
    assert "something went wrong" in shown  # `logs` of the failing ticket
    assert not (tmp_path / "elsewhere").exists()


def test_the_demos_output_redirected_to_a_file_is_whole(tmp_path: Path) -> None:
    """`bash scripts/demo.sh > demo.log 2>&1`: each `ticket create` line went through
    `tee /dev/stderr`, which opened the log again and truncated it, leaving NUL bytes
    where its first part was."""
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        done = subprocess.run(
            ["bash", "scripts/demo.sh"], cwd=REPO, env=env_for(tmp_path / "demo-home"),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=600,
        )  # fmt: skip
    text = log.read_bytes()
    assert done.returncode == 0, text.decode(errors="replace")
    assert b"\0" not in text, text[:300]
    assert b"registering example agents" in text
    assert b"ticket 1 created" in text and b"ticket 7 created" in text, text[:300]


def test_a_demo_that_fails_midway_stops_its_dashboard_too(tmp_path: Path) -> None:
    """Another engine already runs on the demo's home, so the demo's own `start` fails
    (exit 4): the demo exits with it and leaves no dashboard server behind."""
    home = tmp_path / "demo-home"
    run_lines(["bash scripts/setup.sh", ".venv/bin/swarm-engine status --init"], home)
    engine = subprocess.Popen(
        [str(REPO / ".venv/bin/swarm-engine"), "start", "--foreground", "--max-vms", "1"],
        cwd=REPO, env=env_for(home), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        done = subprocess.run(
            ["bash", "scripts/demo.sh"], cwd=REPO, env=env_for(home), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 4, done.stdout + done.stderr
        assert "already running" in done.stderr, done.stderr
        assert _servers_of(home) == [], "the failed demo left its dashboard server running"
    finally:
        os.killpg(engine.pid, signal.SIGKILL)
        engine.wait()


def _servers_of(home: Path) -> list[int]:
    """Pids of `swarm-engine serve` processes running with `home` as their SWARM_HOME."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and f"SWARM_HOME={home}".encode() in environ:
            found.append(int(proc.name))
    return found

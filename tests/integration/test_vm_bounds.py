"""Contract: what a command may do to the engine through its VM (issue 8, items 5 and 7).

- Output is bounded: each stream keeps a head and a tail with a `[... N bytes cut ...]`
  line between them, and the true byte count; `on_output` still sees every byte.
- Processes never outlive their command or their VM: a background job that keeps stdout
  open does not hold the command (it ends when its own process exits, with its own exit
  code), and nothing it started survives, not even `setsid` + `env -i` descendants; not
  when the VM is destroyed mid-command, and not when the engine itself is killed.

Run over the process backend without and with bubblewrap (`isolation = "none"` /
`"bwrap"`), and over qemu where its image is built (skipped with the reason otherwise).
Survivors are looked for with `pgrep -f` on a marker unique to each test.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from swarm_engine.config import load_settings
from swarm_engine.vm.backends import create_backend
from swarm_engine.vm.base import VM, VMBackend, VMSpec
from swarm_engine.vm.output import SLACK
from swarm_engine.vm.process import bwrap_works
from swarm_engine.vm.qemu.doctor import unavailable
from swarm_engine.vm.qemu.folders import images_dir_for

VARIANTS = ["process-none", "process-bwrap", "qemu"]
CUT = re.compile(rb"\n\[\.\.\. (\d+) bytes cut \.\.\.\]\n")


def options(variant: str) -> tuple[str, dict[str, object]]:
    if variant == "qemu":
        return "qemu", {"images_dir": str(images_dir_for(load_settings().home))}
    return "process", {"isolation": variant.removeprefix("process-")}


def skip_reason(variant: str) -> str | None:
    if variant == "qemu":
        return unavailable(images_dir_for(load_settings().home))
    if variant == "process-bwrap" and not bwrap_works():
        return "bubblewrap does not work on this host"
    return None


@pytest.fixture(params=VARIANTS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VMBackend]:
    reason = skip_reason(request.param)
    if reason is not None:
        pytest.skip(reason)
    name, opts = options(request.param)
    created = create_backend(name, tmp_path / "home", opts)
    await created.start()
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture(params=["process-none", "process-bwrap"])
async def process_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[VMBackend]:
    """The process backend without and with bubblewrap: its processes are host processes,
    so survivors can be looked for on the host (a microVM's die with the VM)."""
    reason = skip_reason(request.param)
    if reason is not None:
        pytest.skip(reason)
    name, opts = options(request.param)
    created = create_backend(name, tmp_path / "home", opts)
    await created.start()
    try:
        yield created
    finally:
        await created.close()


async def boot(backend: VMBackend, **spec: object) -> VM:
    return await backend.boot(f"vm-{uuid.uuid4().hex[:12]}", VMSpec(**spec))  # type: ignore[arg-type]


def survivors(marker: str) -> list[str]:
    """Host processes whose command line holds `marker` (`pgrep -af`)."""
    done = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()


def started(tag: str) -> bool:
    """Whether `sh -c 'sleep 300; true <tag>'` runs (its own command line, not its parent's)."""
    done = subprocess.run(
        ["pgrep", "-f", f" -c sleep 300; true {tag}$"], capture_output=True, check=False
    )
    return done.returncode == 0


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `predicate` (every 10 ms) until it is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.01)  # sleep-ok: polling a condition


def marker() -> str:
    return f"swarm-bounds-{uuid.uuid4().hex}"


# -- bounded output -----------------------------------------------------------------------


async def test_long_output_keeps_head_tail_marker_and_true_count(backend: VMBackend) -> None:
    vm = await boot(backend, output_keep_bytes=4096)
    try:
        # 1 MB between a recognisable first line and a last line, on both streams
        script = (
            "for s in 1 2; do"
            "  { echo FIRST-LINE; head -c 1000000 /dev/zero | tr '\\0' x; echo; echo error: boom;"
            "  } >&$s; done"
        )
        streamed: dict[str, int] = {"stdout": 0, "stderr": 0}

        def count(stream: str, chunk: bytes) -> None:
            streamed[stream] += len(chunk)

        res = await vm.exec(script, timeout=60, on_output=count)
    finally:
        await vm.destroy()
    total = len("FIRST-LINE\n") + 1_000_000 + len("\nerror: boom\n")
    for data, size, cut in (
        (res.stdout, res.stdout_bytes, res.stdout_cut),
        (res.stderr, res.stderr_bytes, res.stderr_cut),
    ):
        assert size == total and cut
        assert data.startswith(b"FIRST-LINE\nxxx")
        assert data.endswith(b"xxx\nerror: boom\n")  # the end, where errors are, is kept
        found = CUT.search(data)
        assert found is not None
        head, tail = data[: found.start()], data[found.end() :]
        assert len(head) == len(tail) == 4096
        assert int(found.group(1)) == total - len(head) - len(tail)
    assert streamed == {"stdout": total, "stderr": total}  # the live stream is not cut


async def test_output_that_fits_is_whole_and_one_byte_more_is_cut(backend: VMBackend) -> None:
    keep = 1024
    vm = await boot(backend, output_keep_bytes=keep)
    try:
        fits = 2 * keep + SLACK
        res = await vm.exec(f"head -c {fits} /dev/zero | tr '\\0' a")
        assert res.stdout == b"a" * fits and res.stdout_bytes == fits and not res.stdout_cut
        res = await vm.exec(f"head -c {fits + 1} /dev/zero | tr '\\0' a")
        assert res.stdout_cut and res.stdout_bytes == fits + 1
        assert res.stdout == b"a" * keep + b"\n[... 33 bytes cut ...]\n" + b"a" * keep
        assert res.stderr == b"" and res.stderr_bytes == 0 and not res.stderr_cut
    finally:
        await vm.destroy()


async def test_a_cut_never_splits_a_utf8_character(backend: VMBackend) -> None:
    vm = await boot(backend, output_keep_bytes=1001)  # odd: the cut falls inside a character
    try:
        res = await vm.exec("i=0; while [ $i -lt 2000 ]; do printf 'é€'; i=$((i+1)); done")
    finally:
        await vm.destroy()
    assert res.stdout_bytes == 2000 * 5 and res.stdout_cut
    text = res.stdout.decode("utf-8")  # strict: no half character at either side of the cut
    head, _, tail = re.split(r"\n\[\.\.\. (\d+) bytes cut \.\.\.\]\n", text)
    assert set(head) == set(tail) == {"é", "€"}


async def test_200_mb_of_output_is_bounded(backend: VMBackend) -> None:
    size = 20_000_000 if backend.name == "qemu" else 200_000_000  # TCG: keep it short
    vm = await boot(backend)  # the default: 64 KiB of head and of tail
    try:
        res = await vm.exec(
            f"head -c {size} /dev/zero | tr '\\0' x; echo; echo tail-marker; exit 3", timeout=300
        )
    finally:
        await vm.destroy()
    assert res.exit_code == 3
    assert res.stdout_bytes == size + len("\ntail-marker\n")
    assert len(res.stdout) < 2 * 64 * 1024 + 64
    assert res.stdout.endswith(b"x\ntail-marker\n")
    found = CUT.search(res.stdout)
    assert found is not None and int(found.group(1)) == res.stdout_bytes - 2 * 64 * 1024


# -- processes: a command ends with its own process, and takes everything with it -------


async def test_a_background_job_holding_stdout_does_not_hold_the_command(
    backend: VMBackend,
) -> None:
    tag = marker()
    vm = await boot(backend)
    try:
        # nohup keeps stdout (a pipe, not a terminal): the job holds the pipe open
        res = await vm.exec(f"nohup sh -c 'sleep 300; true {tag}' & echo started", timeout=20)
        assert not res.timed_out
        assert (res.exit_code, res.stdout) == (0, b"started\n")
        assert survivors(tag) == []  # the leftovers went with the command
        res = await vm.exec(f"sh -c 'sleep 300; true {tag}' & exit 7", timeout=20)
        assert (res.exit_code, res.timed_out) == (7, False)  # the command's own exit code
        assert survivors(tag) == []
        # the VM is still usable
        assert (await vm.exec("echo still here")).stdout == b"still here\n"
    finally:
        await vm.destroy()


async def test_setsid_env_i_descendants_end_with_the_command(
    process_backend: VMBackend,
) -> None:
    tag = marker()
    vm = await boot(process_backend)
    try:
        script = (
            f"setsid env -i /bin/sh -c 'sleep 300; true {tag}' </dev/null >/dev/null 2>&1 &"
            f" (setsid sh -c 'sleep 300; true {tag}' &) ; echo started"
        )
        res = await vm.exec(script, timeout=20)
        assert (res.exit_code, res.stdout, res.timed_out) == (0, b"started\n", False)
        assert survivors(tag) == []
    finally:
        await vm.destroy()


async def test_timeout_kills_setsid_env_i_descendants(process_backend: VMBackend) -> None:
    tag = marker()
    vm = await boot(process_backend)
    try:
        script = (
            f"setsid env -i /bin/sh -c 'sleep 300; true {tag}' </dev/null >/dev/null 2>&1 &"
            f" sleep 300; true {tag}"
        )
        res = await vm.exec(script, timeout=1)
        assert res.timed_out and res.exit_code == 124
        assert survivors(tag) == []
    finally:
        await vm.destroy()


async def test_destroy_kills_everything_a_running_command_started(
    process_backend: VMBackend,
) -> None:
    tag = marker()
    vm = await boot(process_backend)
    script = (
        f"setsid env -i /bin/sh -c 'sleep 300; true {tag}-daemon' </dev/null >/dev/null 2>&1 &"
        f" sh -c 'sleep 300; true {tag}-main'"
    )
    task = asyncio.create_task(vm.exec(script, timeout=120))
    try:
        await asyncio.to_thread(wait_for, lambda: started(f"{tag}-daemon"), 20, "the daemon")
    finally:
        await vm.destroy()
    await asyncio.gather(task, return_exceptions=True)  # ended by the destroy, one way or another
    assert survivors(tag) == []


@pytest.mark.parametrize("isolation", ["none", "bwrap"])
def test_killing_the_engine_kills_the_tree(tmp_path: Path, isolation: str) -> None:
    """The engine dies with SIGKILL mid-command: nothing the command started survives."""
    if isolation == "bwrap" and not bwrap_works():
        pytest.skip("bubblewrap does not work on this host")
    tag = marker()
    engine = textwrap.dedent(
        f"""
        import asyncio
        from pathlib import Path
        from swarm_engine.vm.backends import create_backend
        from swarm_engine.vm.base import VMSpec

        async def main():
            backend = create_backend("process", Path({str(tmp_path)!r}), {{"isolation": {isolation!r}}})
            vm = await backend.boot("vm-enginedies", VMSpec())
            await vm.exec(
                "setsid env -i /bin/sh -c 'sleep 300; true {tag}-d' </dev/null >/dev/null 2>&1 &"
                " nohup sh -c 'sleep 300; true {tag}-b' & sh -c 'sleep 300; true {tag}-m'",
                timeout=300,
            )

        asyncio.run(main())
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", engine], start_new_session=True)
    try:
        for part in ("d", "b", "m"):
            wait_for(functools.partial(started, f"{tag}-{part}"), 30, f"process {part}")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    wait_for(lambda: survivors(tag) == [], 10, "every process of the dead engine's VM to end")


async def test_an_on_output_error_ends_the_command_at_once(process_backend: VMBackend) -> None:
    """A failing output consumer (say, a full disk under the step log) is raised at once and
    the command is killed, rather than the command blocking on a pipe nobody reads."""
    tag = marker()
    vm = await boot(process_backend)

    def explode(stream: str, chunk: bytes) -> None:
        raise OSError("no space left on device")

    try:
        with pytest.raises(OSError, match="no space left"):
            await vm.exec(f"echo hello; sh -c 'sleep 300; true {tag}'", on_output=explode)
        assert survivors(tag) == []
        assert (await vm.exec("echo still here")).stdout == b"still here\n"
    finally:
        await vm.destroy()

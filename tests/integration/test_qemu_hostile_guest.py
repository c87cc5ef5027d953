"""A hostile guest cannot hurt the host (issue 9, item 6): the host side of the qemu
protocol (`Channel`, `QemuVM`) against a fake guest on a real socketpair that writes
whatever it likes. A real process (`sleep`, in its own session like QEMU) stands in for
QEMU, so "the VM is ended" means that process was killed and reaped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import tracemalloc
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarm_engine.errors import VMError
from swarm_engine.vm.base import ExecResult, VMSpec
from swarm_engine.vm.qemu.builder import compile_agent
from swarm_engine.vm.qemu.protocol import (
    HEADER,
    MAX_CHUNK,
    QUEUE_FRAMES,
    Channel,
    encode,
    read_frame,
)
from swarm_engine.vm.qemu.vm import QemuVM

MiB = 1024 * 1024


@dataclass
class FakeGuest:
    vm: QemuVM
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def requests(self, count: int) -> list[dict[str, Any]]:
        """Read the host's next `count` requests (so their ids are issued)."""
        got = []
        for _ in range(count):
            frame = await read_frame(self.reader, 1 << 30)
            assert frame is not None
            got.append(frame[0])
        return got

    async def send(self, raw: bytes) -> None:
        with contextlib.suppress(OSError):  # the host may have hung up already
            self.writer.write(raw)
            await self.writer.drain()

    async def hang_up(self) -> None:
        with contextlib.suppress(OSError):
            self.writer.write_eof()


async def start_fake(folder: Path) -> FakeGuest:
    """A QemuVM whose guest is this test: the host end of a socketpair goes to the
    Channel (routing started, as for a restored guest), the other end is returned."""
    host_end, guest_end = socket.socketpair()
    stand_in = await asyncio.create_subprocess_exec("sleep", "300", start_new_session=True)
    reader, writer = await asyncio.open_unix_connection(sock=host_end)
    channel = Channel(reader, writer)
    channel.start()
    vm = QemuVM(
        "vm-hostile", spec=VMSpec(timeout_seconds=20), proc=stand_in, channel=channel,
        folder=folder, socket_path=folder / "none.sock", kill_grace=5, accel="none",
        booted_ms=0,
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    g_reader, g_writer = await asyncio.open_unix_connection(sock=guest_end)
    return FakeGuest(vm, g_reader, g_writer)


@contextlib.asynccontextmanager
async def fake_guest(folder: Path) -> AsyncIterator[FakeGuest]:
    guest = await start_fake(folder)
    try:
        yield guest
    finally:
        await guest.vm.destroy()
        guest.writer.close()
        with contextlib.suppress(OSError):
            await guest.writer.wait_closed()


async def ended_by_host(guest: FakeGuest) -> None:
    """The stand-in for QEMU was killed (SIGKILL) by the host, not by the test."""
    code = await asyncio.wait_for(guest.vm._proc.wait(), 10)
    assert code == -9


def frame(header: object, payload: bytes = b"", *, jlen: int | None = None,
          plen: int | None = None) -> bytes:  # fmt: skip
    raw = json.dumps(header).encode()
    return HEADER.pack(len(raw) if jlen is None else jlen,
                       len(payload) if plen is None else plen) + raw + payload  # fmt: skip


BAD_FRAMES = {
    "header length 4 GiB": HEADER.pack(0xFFFFFFFF, 0),
    "payload length 2 GiB": HEADER.pack(2, 2**31) + b"{}",
    "garbage": b"\x00\x00\x00\x05\x00\x00\x00\x00\xff\xfe\x00garbage",
    "not an object": frame([1, 2, 3]),
    "deeply nested": HEADER.pack(60000, 0) + b"[" * 60000,
    "huge number": frame({"t": "exit", "id": 1, "code": 10**30}),
    "id as text": frame({"t": "exit", "id": "1", "code": 0}),
    "id as float": frame({"t": "exit", "id": 1.0, "code": 0}),
    "id as boolean": frame({"t": "exit", "id": True, "code": 0}),
    "id as list": frame({"t": "out", "id": [1], "stream": "stdout"}, b"x"),
    "no id": frame({"t": "exit", "code": 0}),
    "id never issued": frame({"t": "exit", "id": 99, "code": 0}),
    "unknown type": frame({"t": "boom", "id": 1}),
    "code as text": frame({"t": "exit", "id": 1, "code": "0"}),
    "stream missing": frame({"t": "out", "id": 1}, b"x"),
    "message as object": frame({"t": "error", "id": 1, "message": {"a": 1}}),
    "out chunk over the cap": frame({"t": "out", "id": 1, "stream": "stdout"}, plen=MAX_CHUNK + 1),
    "ok in reply to exec": frame({"t": "ok", "id": 1}),
}


@pytest.mark.parametrize("name", sorted(BAD_FRAMES))
async def test_a_malformed_frame_ends_that_vm(name: str, tmp_path: Path) -> None:
    async with fake_guest(tmp_path / "run") as guest:
        running = asyncio.ensure_future(guest.vm.exec(["true"]))
        await guest.requests(1)
        await guest.send(BAD_FRAMES[name])
        with pytest.raises(VMError, match="broke the protocol"):
            await running
        await ended_by_host(guest)
        assert not await guest.vm.is_alive()
        with pytest.raises(VMError, match="was ended"):
            await guest.vm.ping()
    assert not (tmp_path / "run").exists()


async def test_a_reply_after_the_end_ends_the_vm(tmp_path: Path) -> None:
    async with fake_guest(tmp_path / "run") as guest:
        running = asyncio.ensure_future(guest.vm.exec(["true"]))
        await guest.requests(1)
        await guest.send(frame({"t": "exit", "id": 1, "code": 3}))
        assert (await running).exit_code == 3
        await guest.send(frame({"t": "exit", "id": 1, "code": 0}))
        await ended_by_host(guest)
        assert guest.vm._channel.violation == "exit frame for id 1, which is not waiting"


async def test_one_hostile_vm_does_not_stop_another(tmp_path: Path) -> None:
    """A real guest agent (C) on its own socketpair keeps working while a fake guest next
    to it floods garbage and is ended."""
    agent = tmp_path / "swarm-agent"
    problem = compile_agent(agent)
    if problem is not None:
        pytest.skip(f"cannot build the C guest agent: {problem}")
    host_end, guest_end = socket.socketpair()
    proc = await asyncio.create_subprocess_exec(
        str(agent), "--fd", str(guest_end.fileno()), "--workspace", str(tmp_path / "ws"),
        "--cgroup-root", "none", pass_fds=[guest_end.fileno()], start_new_session=True,
    )  # fmt: skip
    guest_end.close()
    reader, writer = await asyncio.open_unix_connection(sock=host_end)
    channel = Channel(reader, writer)
    await channel.handshake(30)
    good = QemuVM(
        "vm-good", spec=VMSpec(timeout_seconds=30), proc=proc, channel=channel,
        folder=tmp_path / "good", socket_path=tmp_path / "none.sock", kill_grace=5,
        accel="none", booted_ms=0,
    )  # fmt: skip
    try:
        async with fake_guest(tmp_path / "bad") as bad:
            running = asyncio.ensure_future(bad.vm.exec(["true"]))
            await bad.requests(1)
            flood = asyncio.ensure_future(bad.send(b"\xff" * (4 * MiB)))
            result = await good.exec("echo still here")
            assert result.stdout == b"still here\n"
            with pytest.raises(VMError, match="broke the protocol"):
                await running
            await ended_by_host(bad)
            assert (await good.exec(["cat"], stdin=b"ok")).stdout == b"ok"
        await flood  # its writes fail once the host hung up
    finally:
        await good.destroy()


async def test_an_output_flood_is_held_back_not_buffered(tmp_path: Path) -> None:
    """The guest writes 64 MiB of output as fast as it can to a host that reads slowly:
    the host buffers at most QUEUE_FRAMES chunks (the guest's writes block meanwhile)."""
    chunk = encode({"t": "out", "id": 1, "stream": "stdout"}, b"x" * (64 * 1024))
    frames = 1024
    seen = 0
    most_waiting = 0

    async with fake_guest(tmp_path / "run") as guest:

        async def slow_reader(stream: str, data: bytes) -> None:
            nonlocal seen, most_waiting
            seen += 1
            replies = next(iter(guest.vm._channel._pending.values()))
            most_waiting = max(most_waiting, replies._frames.qsize())
            if seen % 64 == 0:
                await asyncio.sleep(0.01)  # sleep-ok: a slow log writer is the input

        tracemalloc.start()
        try:
            running = asyncio.ensure_future(guest.vm.exec(["yes"], on_output=slow_reader))
            await guest.requests(1)
            for _ in range(frames):
                await guest.send(chunk)
            await guest.send(encode({"t": "exit", "id": 1, "code": 0}))
            result = await running
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.exit_code == 0 and result.stdout_bytes == frames * 64 * 1024
    assert most_waiting <= QUEUE_FRAMES
    assert peak < 16 * MiB, f"host buffered {peak / MiB:.1f} MiB"


async def test_huge_declared_lengths_allocate_nothing(tmp_path: Path) -> None:
    async with fake_guest(tmp_path / "run") as guest:
        tracemalloc.start()
        try:
            running = asyncio.ensure_future(guest.vm.get_file("big"))
            await guest.requests(1)
            # within the file cap, but the guest sends only a few bytes and hangs up
            await guest.send(frame({"t": "ok", "id": 1}, b"abc", plen=60 * MiB))
            await guest.hang_up()
            with pytest.raises(VMError):
                await running
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 4 * MiB


async def test_files_over_the_cap_are_refused_on_the_host(tmp_path: Path) -> None:
    async with fake_guest(tmp_path / "run") as guest:
        with pytest.raises(VMError, match="at most"):
            await guest.vm.put_file("big", b"\0" * (64 * MiB + 1))
        assert await guest.vm.is_alive()


async def test_a_guest_that_never_answers_is_ended(tmp_path: Path) -> None:
    async with fake_guest(tmp_path / "run") as guest:
        guest.vm.spec = VMSpec(timeout_seconds=0.2)
        guest.vm._kill_grace = 0.1
        with pytest.raises(VMError, match="no answer to ping"):
            await guest.vm.ping()
        assert guest.vm._proc.returncode == -9


# -- fuzzing --------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
IDS = st.sampled_from([0, 1, 2, 3, -1]) | JSON
HEADERS = st.fixed_dictionaries(
    {"t": st.sampled_from(["ok", "error", "out", "exit", "ready"]) | st.text(max_size=6)},
    optional={
        "id": IDS,
        "stream": st.sampled_from(["stdout", "stderr"]) | JSON,
        "code": st.integers(-(2**40), 2**40) | JSON,
        "timed_out": st.booleans() | JSON,
        "message": st.text(max_size=50) | JSON,
    },
)
LENGTHS = st.none() | st.sampled_from([0, 1, 2**31, 2**32 - 1, MAX_CHUNK, MAX_CHUNK + 1])


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["frame", "frame", "frame", "lying", "raw"]))
    if kind == "raw":
        return draw(st.binary(max_size=64))
    payload = draw(st.binary(max_size=256))
    if kind == "frame":
        return encode(draw(HEADERS), payload)
    return frame(draw(HEADERS), payload, jlen=draw(LENGTHS), plen=draw(LENGTHS))


async def _fuzz_once(folder: Path, stream: list[bytes]) -> None:
    async with fake_guest(folder) as guest:
        ops: list[Awaitable[ExecResult | bytes]] = [
            guest.vm.exec(["true"], timeout=5), guest.vm.get_file("f"),
        ]  # fmt: skip
        running = [asyncio.ensure_future(op) for op in ops]
        await guest.requests(2)
        for raw in stream:
            await guest.send(raw)
        await guest.hang_up()
        for task in running:
            # VMError is what a bad guest gets; anything else escaping fails the test
            with contextlib.suppress(VMError):
                await asyncio.wait_for(task, 30)
        channel = guest.vm._channel
        await asyncio.wait_for(channel.closed.wait(), 10)
        if channel.violation is not None:
            await ended_by_host(guest)
        assert not channel._pending  # every request let go of its replies
    assert guest.vm._proc.returncode is not None and not folder.exists()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=st.lists(frames(), max_size=12))
def test_fuzz_arbitrary_frames_from_the_guest(
    stream: list[bytes], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No exception but VMError escapes, memory stays bounded, the VM ends cleanly."""
    folder = tmp_path_factory.mktemp("fuzz") / "run"
    tracemalloc.start()
    try:
        asyncio.run(_fuzz_once(folder, stream))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, f"{peak / MiB:.1f} MiB"

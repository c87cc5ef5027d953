"""The port relay (vm/qemu/relay.py) as QEMU runs it, without a VM: its connection to
"QEMU" a loopback TCP pair (as libslirp makes it), its VM's QEMU a process named like one
(`exec -a qemu-system-x86_64`), its host server a listener that holds every connection."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarm_engine.engine.reaper import ReapReport, reap_relays
from swarm_engine.vm.qemu.forwards import relay_command, relays_of


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        one = socket.create_connection(server.getsockname())
        return one, server.accept()[0]


@pytest.fixture
def qemu(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A stand-in QEMU of the VM folder `tmp_path/vm-...`, named in its `qemu.pid`."""
    proc = subprocess.Popen(["bash", "-c", "exec -a qemu-system-x86_64 sleep 600"])
    folder = tmp_path / "vm-0123456789ab"
    folder.mkdir()
    (folder / "qemu.pid").write_text(f"{proc.pid}\n")
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


class Relays:
    """Relays started as QEMU starts them, each with its "QEMU" end held here."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        self.procs: list[subprocess.Popen[bytes]] = []
        self.guest_ends: list[socket.socket] = []

    def start(self) -> subprocess.Popen[bytes]:
        guest, relay_end = tcp_pair()
        argv = shlex.split(relay_command(self.port, self.folder).replace(",,", ","))
        proc = subprocess.Popen(argv, stdin=relay_end.fileno(), stdout=relay_end.fileno())
        relay_end.close()
        self.procs.append(proc)
        self.guest_ends.append(guest)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        for end in self.guest_ends:
            end.close()


@pytest.fixture
def host() -> Iterator[socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    listener.settimeout(10)
    yield listener
    listener.close()


def test_relay_copies_both_ways_and_passes_a_half_close_on(
    qemu: subprocess.Popen[bytes], tmp_path: Path, host: socket.socket
) -> None:
    relays = Relays(tmp_path / "vm-0123456789ab", host.getsockname()[1])
    try:
        relays.start()
        guest = relays.guest_ends[0]
        served = host.accept()[0]
        guest.sendall(b"question")
        guest.shutdown(socket.SHUT_WR)  # the guest's half close
        got = b""
        served.settimeout(10)
        while chunk := served.recv(100):
            got += chunk
        assert got == b"question"
        served.sendall(b"answer")
        served.close()
        guest.settimeout(10)
        assert guest.recv(100) == b"answer" and guest.recv(100) == b""
        assert relays.procs[0].wait(10) == 0
    finally:
        relays.close()


def test_relays_past_the_limit_are_refused_and_none_outlives_its_qemu(
    qemu: subprocess.Popen[bytes], tmp_path: Path, host: socket.socket
) -> None:
    """Three slots, five connections: two relays end at once; killing "QEMU" ends the
    other three though the host server holds their connections and the guest ends stay."""
    folder = tmp_path / "vm-0123456789ab"
    relays = Relays(folder, host.getsockname()[1])
    assert relay_command(1, folder).endswith(" 16")  # the limit QEMU passes
    held: list[socket.socket] = []
    try:
        for _ in range(5):
            guest, relay_end = tcp_pair()
            argv = [*shlex.split(relay_command(relays.port, folder))[:-1], "3"]  # 3 slots
            proc = subprocess.Popen(argv, stdin=relay_end.fileno(), stdout=relay_end.fileno())
            relay_end.close()
            relays.procs.append(proc)
            relays.guest_ends.append(guest)
            if len(relays.procs) <= 3:
                held.append(host.accept()[0])  # (in order: each has its slot before the next)
        assert [p.wait(10) for p in relays.procs[3:]] == [1, 1]  # refused at once
        assert sorted(relays_of(folder)) == sorted(p.pid for p in relays.procs[:3])
        qemu.kill()
        started = time.monotonic()
        assert [p.wait(10) for p in relays.procs[:3]] == [0, 0, 0]
        assert time.monotonic() - started < 5 and not relays_of(folder)
    finally:
        relays.close()
        for conn in held:
            conn.close()


def test_a_relay_without_a_running_qemu_is_refused(tmp_path: Path, host: socket.socket) -> None:
    folder = tmp_path / "vm-0123456789ab"
    folder.mkdir()
    (folder / "qemu.pid").write_text(f"{os.getpid()}\n")  # running, but not a QEMU
    relays = Relays(folder, host.getsockname()[1])
    try:
        assert relays.start().wait(10) == 1  # and nothing reached the host
        host.settimeout(0.5)
        with pytest.raises(TimeoutError):
            host.accept()
    finally:
        relays.close()


def test_cleanup_stops_the_relays_of_gone_vms_only(tmp_path: Path, host: socket.socket) -> None:
    """`cleanup`'s reaper kills a relay still running (stopped here) whose VM folder is gone
    and spares the relay of a VM whose QEMU runs; the pid is named in `helpers`."""
    run_dir = tmp_path / "home" / "run" / "qemu"
    live_qemu = subprocess.Popen(["bash", "-c", "exec -a qemu-system-x86_64 sleep 600"])
    gone, live = Relays(run_dir / "vm-00000000000a", 0), Relays(run_dir / "vm-00000000000b", 0)
    try:
        for relays in (gone, live):
            relays.port = host.getsockname()[1]
            relays.folder.mkdir(parents=True)
            (relays.folder / "qemu.pid").write_text(f"{live_qemu.pid}\n")
            relays.start()
            relays.guest_ends.append(host.accept()[0])  # it runs: held by the host
        os.kill(gone.procs[0].pid, signal.SIGSTOP)  # one that has not ended by itself
        for name in ("qemu.pid", "relays.lock"):
            (gone.folder / name).unlink()
        gone.folder.rmdir()  # its VM destroyed by an engine since killed
        report = ReapReport()
        reap_relays(tmp_path / "home", report, {})
        assert report.helpers == [gone.procs[0].pid]
        assert gone.procs[0].wait(5) == -signal.SIGKILL and live.procs[0].poll() is None
    finally:
        gone.close()
        live.close()
        live_qemu.kill()
        live_qemu.wait()

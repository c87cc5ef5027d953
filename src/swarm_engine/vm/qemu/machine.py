"""The QEMU process of one microVM: its command line, its start, its end.

QEMU runs in its own session (so one `killpg` ends it and anything it spawned) and gets
SIGKILL if the engine process dies (`PR_SET_PDEATHSIG`), so a crashed engine leaves no
running guest; `reap` handles the rest (sockets, logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shlex
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path

from swarm_engine.errors import VMError
from swarm_engine.vm.qemu import mounts
from swarm_engine.vm.qemu.accel import AccelChoice
from swarm_engine.vm.qemu.forwards import relay_command
from swarm_engine.vm.qemu.image import Image
from swarm_engine.vm.qemu.mounts import Disk

PORT_NAME = "swarm.0"
GUEST_FORWARD_IP = "10.0.2.100"
"""With `network`, the guest reaches host port P (if allowed) at 10.0.2.100:P."""
MAX_SOCKET_PATH = 100
PR_SET_PDEATHSIG = 1


def host_tsc_khz() -> int | None:
    """The host TSC in kHz, from /proc/cpuinfo. Passing it as `tsc_early_khz` spares the
    guest a PIT calibration that sometimes hangs under TCG."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("cpu MHz"):
                    return int(float(line.split(":")[1]) * 1000)
    except (OSError, ValueError):
        return None
    return None


@dataclass(frozen=True)
class MachineSpec:
    image: Image
    accel: AccelChoice
    qemu_binary: str
    socket_path: Path
    memory_mb: int = 512
    vcpus: int = 1
    network: bool = False
    allowed_ports: tuple[int, ...] = ()
    console_log: Path | None = None
    tsc_khz: int | None = field(default_factory=host_tsc_khz)
    qmp_socket: Path | None = None
    """Where QEMU listens for QMP (only the snapshot template needs it)."""
    incoming: Path | None = None
    """Restore this saved state instead of booting the kernel."""
    drives: tuple[Disk, ...] = ()
    """Host folders packed as squashfs images, attached read-only (vm/qemu/mounts.py)."""
    tcg_cpu: str | None = None
    """`-cpu` under TCG (default: QEMU's `qemu64`); KVM always passes the host's CPU."""
    ram_file: Path | None = None
    """Guest RAM is this file (a snapshot template's, docs/qemu.md "Snapshot restore"):
    written through by the template (`ram_shared`), mapped copy-on-write by its clones."""
    ram_shared: bool = False
    incoming_qmp: Path | None = None
    """Restore later (`-incoming defer`): QEMU connects its QMP monitor to this socket (the
    host listens), where the host sets `x-ignore-shared` and starts the restore."""
    folder: Path | None = None
    """The VM's folder, named to each relay of its allowed ports (their slots are in it,
    and `destroy` / `cleanup` find them by it: vm/qemu/forwards.py); default: the agent
    socket's folder."""

    def cmdline(self) -> str:
        parts = [self.image.cmdline_extra or "console=ttyS0 quiet panic=-1 rdinit=/init"]
        if self.tsc_khz:
            parts.append(f"tsc_early_khz={self.tsc_khz}")
        if self.accel.mode == "tcg":
            # TCG (QEMU 7.2) keys translated code on virtual addresses: with ASLR every
            # new process maps its libraries elsewhere and is translated again (~15 ms
            # per exec of a dynamic binary). Inside a guest the step owns anyway, ASLR
            # protects nothing from the host's point of view (docs/qemu.md, "Exec").
            # TCG's TSC follows the host's clock; the PIT ticks it is checked against
            # arrive late on a busy host, so the watchdog would often swap it for
            # jiffies (4 ms steps, no high-resolution timers) in the saved template.
            parts.append("norandmaps tsc=reliable")
        if self.network:
            parts.append("swarm.net=1")
        return " ".join(parts)

    def argv(self) -> list[str]:
        machine = "microvm,pit=off,pic=off,isa-serial=on,x-option-roms=off"
        if self.image.machine_extra:
            machine += "," + self.image.machine_extra
        if self.ram_file is not None:
            machine += ",memory-backend=ram"
        argv = [
            self.qemu_binary,
            "-machine", machine,
            *self.accel.qemu_args(),
            "-m", str(self.memory_mb),
            "-smp", str(self.vcpus),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(self.image.kernel),
            "-initrd", str(self.image.initramfs),
            "-append", self.cmdline(),
            # The console goes to QEMU's standard output, a pipe the engine reads into a
            # bounded console.log (vm/qemu/console.py); `file:` would grow without bound.
            "-serial", "stdio" if self.console_log else "null",
            "-monitor", "none",
            "-drive", f"id=root,file={self.image.rootfs},format=raw,if=none,readonly=on",
            "-device", "virtio-blk-device,drive=root",
            "-device", "virtio-serial-device,max_ports=2",
            "-chardev", f"socket,id=agent,path={self.socket_path}",
            "-device", f"virtserialport,chardev=agent,name={PORT_NAME}",
        ]  # fmt: skip
        argv += mounts.qemu_args(self.drives)
        if self.tcg_cpu is not None and self.accel.mode == "tcg":
            argv += ["-cpu", self.tcg_cpu]
        if self.ram_file is not None:
            argv += ["-object", ram_backend(self.ram_file, self.memory_mb, self.ram_shared)]
        if self.incoming_qmp is not None:
            argv += ["-chardev", f"socket,id=qmp,path={self.incoming_qmp}"]
            argv += ["-mon", "chardev=qmp,mode=control", "-incoming", "defer"]
        if self.qmp_socket is not None:
            argv += ["-qmp", f"unix:{self.qmp_socket},server=on,wait=off"]
        if self.incoming is not None:
            argv += ["-incoming", f"exec:cat {shlex.quote(str(self.incoming))}"]
        if self.network:
            netdev = "user,id=net0,restrict=on"
            folder = self.folder or self.socket_path.parent
            for port in self.allowed_ports:  # one relay process per guest connection, bounded
                relay = relay_command(port, folder)
                netdev += f",guestfwd=tcp:{GUEST_FORWARD_IP}:{int(port)}-cmd:{relay}"
            argv += ["-netdev", netdev, "-device", "virtio-net-device,netdev=net0"]
        return argv


def ram_backend(path: Path, memory_mb: int, shared: bool) -> str:
    """Guest RAM from a file: `share=on` writes through to it (the template only);
    `share=off` is a private copy-on-write mapping, so a clone's writes never reach it."""
    mem_path = str(path).replace(",", ",,")  # QEMU's escape for a comma in an option
    share = "on" if shared else "off"
    return f"memory-backend-file,id=ram,size={memory_mb}M,mem-path={mem_path},share={share}"


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL this QEMU when the engine process goes away."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def listen_socket(path: Path) -> socket.socket:
    """The unix socket QEMU connects its agent port to (we listen, so there is no race)."""
    if len(str(path)) > MAX_SOCKET_PATH:
        raise VMError(f"socket path too long for a unix socket: {path}")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        sock.listen(1)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def qemu_environment() -> dict[str, str]:
    """QEMU's environment, built from scratch: nothing of the engine's (an API key, the
    user's variables) is in the process that runs the guest."""
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LANG": "C.UTF-8"}
    if "TMPDIR" in os.environ:
        env["TMPDIR"] = os.environ["TMPDIR"]
    return env


async def start_qemu(spec: MachineSpec, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as stderr:
        try:
            return await asyncio.create_subprocess_exec(
                *spec.argv(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if spec.console_log else stderr,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                env=qemu_environment(),
            )
        except OSError as exc:
            raise VMError(f"cannot start {spec.qemu_binary}: {exc.strerror}") from exc


def kill_group(pid: int) -> None:
    """SIGKILL the process group `pid` leads (QEMU's own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def is_our_qemu(pid: int, socket_path: str | None) -> bool:
    """True if `pid` is still a QEMU started for `socket_path` (guards against pid reuse)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if not os.path.basename(argv[0]).startswith(b"qemu-system-"):
        return False  # not QEMU (a command line that merely mentions it)
    if socket_path is None:
        return True
    return f"socket,id=agent,path={socket_path}".encode() in argv  # the whole argument


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


TAIL_CHARS = 300


def log_line(path: Path, lines: int = 3) -> str:
    """The last `lines` non-blank lines of a log as one line (`; ` between them), at most
    `TAIL_CHARS` characters, control characters dropped: for an error that is one line.
    A guest kernel's panic line, when the log's end holds one, is said instead."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(fh.seek(0, os.SEEK_END) - 64 * 1024, 0))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return text_line(text, lines)


def text_line(text: str, lines: int = 3) -> str:
    """`log_line` of a log's end already read (`text`)."""
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # what ended the guest, when a line says so: the kernel's panic, else the guest init's
    # word on how its agent ended (guest/init.c), not the power-off line after it
    ends = [ln for ln in kept if "Kernel panic" in ln] or [
        ln for ln in kept if ln.startswith("swarm-init: the guest agent ")
    ]
    kept = ends[-1:] or kept[-lines:]
    joined = "; ".join("".join(c for c in ln if c.isprintable()) for ln in kept)
    return joined if len(joined) <= TAIL_CHARS else "..." + joined[-TAIL_CHARS:]

"""swarm-engine guest agent: runs inside the microVM and serves the host over virtio-serial.

Self-contained (standard library only, Python 3.11, started with `python3 -S`), so it
cannot import swarm_engine; the framing below mirrors `swarm_engine.vm.qemu.protocol`.

Frame: 8-byte header `>II` (json length, payload length), a JSON object, then the raw
payload. Requests carry an `id`; every reply carries the same `id`. The agent opens the
port once, read-write, and announces itself with a `ready` frame.

Each exec runs in its own session/process group and, when cgroup v2 is mounted, its own
cgroup, so a timeout kills the whole tree (`cgroup.kill`, then `killpg`).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import Any

PROTOCOL_VERSION = 1
HEADER = struct.Struct(">II")
MAX_JSON = 16 * 1024 * 1024
MAX_PAYLOAD = 2 * 1024 * 1024 * 1024
CHUNK = 64 * 1024
PORT_NAME = "swarm.0"
RLIMITS = {"nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC}
RNDADDENTROPY = 0x40085203
RNDRESEEDCRNG = 0x5207
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Channel:
    """One fd, opened once read-write; reads from the main thread, writes under a lock."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.buf = bytearray()

    def _read_exact(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            chunk = os.read(self.fd, max(CHUNK, n - len(self.buf)))
            if not chunk:
                return None
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read(self) -> tuple[dict[str, Any], bytes] | None:
        head = self._read_exact(HEADER.size)
        if head is None:
            return None
        jlen, plen = HEADER.unpack(head)
        if jlen > MAX_JSON or plen > MAX_PAYLOAD:
            raise ValueError(f"frame too large ({jlen}, {plen})")
        body = self._read_exact(jlen + plen)
        if body is None:
            return None
        return json.loads(body[:jlen]), body[jlen:]

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        raw = json.dumps(header, separators=(",", ":")).encode()
        data = memoryview(HEADER.pack(len(raw), len(payload)) + raw + payload)
        with self.lock:
            while data:
                n = os.write(self.fd, data)
                data = data[n:]


class Agent:
    def __init__(self, channel: Channel, workspace: str, cgroup_root: str | None) -> None:
        self.ch = channel
        self.workspace = os.path.realpath(workspace)
        self.cgroup_root = cgroup_root
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    # -- paths -----------------------------------------------------------------------
    def resolve(self, path: str, *, must_exist: bool = False) -> str:
        if "\x00" in path:
            raise PermissionError(f"invalid path {path!r}")
        full = os.path.realpath(os.path.join(self.workspace, path))
        if full != self.workspace and not full.startswith(self.workspace + os.sep):
            raise PermissionError(f"path {path!r} is outside the workspace")
        if must_exist and not os.path.exists(full):
            raise FileNotFoundError(f"no such file: {path}")
        return full

    # -- requests --------------------------------------------------------------------
    def serve(self) -> None:
        self.ch.send({"t": "ready", "version": PROTOCOL_VERSION, "pid": os.getpid()})
        while True:
            frame = self.ch.read()
            if frame is None:
                return
            header, payload = frame
            kind = header.get("t")
            rid = int(header.get("id", 0))
            if kind == "exec":
                threading.Thread(target=self.guard, args=(rid, self.exec, header, payload)).start()
            elif kind in ("put", "get", "ping", "kill", "restored"):
                self.guard(rid, getattr(self, "do_" + kind), header, payload)
            elif kind == "shutdown":
                self.ch.send({"t": "ok", "id": rid})
                return
            else:
                self.ch.send({"t": "error", "id": rid, "kind": "protocol", "message": f"{kind}?"})

    def guard(self, rid: int, fn: Any, header: dict[str, Any], payload: bytes) -> None:
        try:
            fn(rid, header, payload)
        except FileNotFoundError as exc:
            self.ch.send({"t": "error", "id": rid, "kind": "not_found", "message": str(exc)})
        except PermissionError as exc:
            self.ch.send({"t": "error", "id": rid, "kind": "denied", "message": str(exc)})
        except Exception as exc:
            self.ch.send({"t": "error", "id": rid, "kind": "failed", "message": repr(exc)})

    def do_ping(self, rid: int, header: dict[str, Any], payload: bytes) -> None:
        self.ch.send({"t": "ok", "id": rid}, payload)

    def do_restored(self, rid: int, header: dict[str, Any], payload: bytes) -> None:
        """This guest was restored from a snapshot: it is a clone, so mix fresh host
        randomness into the kernel pool and set the clock to the host's."""
        if payload:
            import fcntl

            fd = os.open("/dev/urandom", os.O_WRONLY)
            try:  # credit the seed, then force the CRNG to reseed from it
                entropy = struct.pack("ii", len(payload) * 8, len(payload)) + payload
                fcntl.ioctl(fd, RNDADDENTROPY, entropy)
                fcntl.ioctl(fd, RNDRESEEDCRNG)
            except OSError:
                os.write(fd, payload)
            finally:
                os.close(fd)
        if "time" in header:
            with contextlib.suppress(OSError):
                time.clock_settime(time.CLOCK_REALTIME, float(header["time"]))
        self.ch.send({"t": "ok", "id": rid})

    def do_put(self, rid: int, header: dict[str, Any], payload: bytes) -> None:
        full = self.resolve(str(header["path"]))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        tmp = f"{full}.swarm-tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.chmod(tmp, int(header.get("mode", 0o644)))
        os.replace(tmp, full)
        self.ch.send({"t": "ok", "id": rid})

    def do_get(self, rid: int, header: dict[str, Any], payload: bytes) -> None:
        full = self.resolve(str(header["path"]), must_exist=True)
        if os.path.isdir(full):
            raise IsADirectoryError(f"{header['path']} is a directory")
        with open(full, "rb") as f:
            data = f.read()
        self.ch.send({"t": "ok", "id": rid}, data)

    def do_kill(self, rid: int, header: dict[str, Any], payload: bytes) -> None:
        proc = self.procs.get(int(header["target"]))
        if proc is not None:
            self.kill_tree(proc, self.cgroup_for(int(header["target"])))
        self.ch.send({"t": "ok", "id": rid})

    # -- exec ------------------------------------------------------------------------
    def cgroup_for(self, rid: int) -> str | None:
        if self.cgroup_root is None:
            return None
        return os.path.join(self.cgroup_root, f"exec-{rid}")

    def kill_tree(self, proc: subprocess.Popen[bytes], cgroup: str | None) -> None:
        if cgroup is not None:
            try:
                with open(os.path.join(cgroup, "cgroup.kill"), "w") as f:
                    f.write("1")
            except OSError:
                pass
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)

    def exec(self, rid: int, header: dict[str, Any], payload: bytes) -> None:
        argv = [str(a) for a in header["argv"]]
        env = {str(k): str(v) for k, v in (header.get("env") or {}).items()}
        env.setdefault("PATH", GUEST_PATH)
        env.setdefault("HOME", "/root")
        cwd = self.resolve(str(header.get("cwd") or "."))
        if not os.path.isdir(cwd):
            raise FileNotFoundError(
                f"working folder {header.get('cwd')!r} does not exist in the VM"
            )
        timeout = header.get("timeout")
        cgroup = self.cgroup_for(rid)
        if cgroup is not None:
            try:
                os.mkdir(cgroup)
            except OSError:
                cgroup = None

        limits = header.get("limits") or {}

        def enter_cgroup() -> None:
            for name, value in limits.items():
                which = RLIMITS.get(name)
                if which is None:
                    continue
                hard = resource.getrlimit(which)[1]
                wanted = int(value) if hard == resource.RLIM_INFINITY else min(int(value), hard)
                with contextlib.suppress(ValueError, OSError):
                    resource.setrlimit(which, (wanted, wanted))
            if cgroup is not None:
                fd = os.open(os.path.join(cgroup, "cgroup.procs"), os.O_WRONLY)
                os.write(fd, b"0")
                os.close(fd)

        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if header.get("stdin") else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=enter_cgroup,
            )
        except OSError as exc:
            self.remove_cgroup(cgroup)
            msg = f"{argv[0]}: {exc.strerror}\n".encode()
            self.ch.send({"t": "out", "id": rid, "stream": "stderr"}, msg)
            code = 126 if isinstance(exc, PermissionError) else 127
            self.ch.send({"t": "exit", "id": rid, "code": code, "timed_out": False})
            return
        self.procs[rid] = proc
        pumps = [
            threading.Thread(target=self.pump, args=(rid, "stdout", proc.stdout)),
            threading.Thread(target=self.pump, args=(rid, "stderr", proc.stderr)),
        ]
        if proc.stdin is not None:
            pumps.append(threading.Thread(target=self.feed, args=(proc.stdin, payload)))
        for t in pumps:
            t.start()
        timed_out = threading.Event()
        deadline = None if timeout is None else started + float(timeout)

        def watchdog() -> None:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                proc.wait(remaining)
            except subprocess.TimeoutExpired:
                timed_out.set()
                self.kill_tree(proc, cgroup)

        dog = threading.Thread(target=watchdog)
        dog.start()
        for t in pumps:
            if deadline is None:
                t.join()
            else:
                t.join(max(0.0, deadline - time.monotonic()))
                if t.is_alive():
                    # Output still open past the deadline (e.g. a background child).
                    timed_out.set()
                    self.kill_tree(proc, cgroup)
                    t.join()
        code = proc.wait()
        dog.join()
        self.procs.pop(rid, None)
        self.remove_cgroup(cgroup)
        if code < 0:
            code = 128 - code
        if timed_out.is_set():
            code = 124
        self.ch.send(
            {
                "t": "exit",
                "id": rid,
                "code": code,
                "timed_out": timed_out.is_set(),
                "duration_ms": int((time.monotonic() - started) * 1000),
            }
        )

    def pump(self, rid: int, stream: str, pipe: Any) -> None:
        fd = pipe.fileno()
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                break
            self.ch.send({"t": "out", "id": rid, "stream": stream}, chunk)
        pipe.close()

    def feed(self, pipe: Any, data: bytes) -> None:
        try:
            pipe.write(data)
        except (BrokenPipeError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError):
                pipe.close()

    def remove_cgroup(self, cgroup: str | None) -> None:
        if cgroup is None:
            return
        for _ in range(100):
            try:
                os.rmdir(cgroup)
                return
            except OSError:
                time.sleep(0.01)


def find_port(name: str) -> str:
    base = "/sys/class/virtio-ports"
    for _ in range(500):
        if os.path.isdir(base):
            for entry in sorted(os.listdir(base)):
                try:
                    with open(os.path.join(base, entry, "name")) as f:
                        if f.read().strip() == name:
                            return "/dev/" + entry
                except OSError:
                    continue
        time.sleep(0.01)
    raise SystemExit(f"swarm-agent: no virtio port named {name}")


def main(argv: list[str]) -> None:
    args = dict(zip(argv[1::2], argv[2::2], strict=False))
    workspace = args.get("--workspace", "/workspace")
    cgroup_root: str | None = args.get("--cgroup-root", "/sys/fs/cgroup")
    if cgroup_root == "none" or not os.path.exists(f"{cgroup_root}/cgroup.controllers"):
        cgroup_root = None
    if "--fd" in args:
        fd = int(args["--fd"])
    else:
        fd = os.open(args.get("--port") or find_port(PORT_NAME), os.O_RDWR)
    os.makedirs(workspace, exist_ok=True)
    Agent(Channel(fd), workspace, cgroup_root).serve()


if __name__ == "__main__":
    main(sys.argv)

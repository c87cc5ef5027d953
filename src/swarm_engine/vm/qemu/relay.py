"""One guest connection to an allowed port, relayed to the host's loopback.

QEMU's user-mode network runs this for each TCP connection the guest opens to
10.0.2.100:PORT (`guestfwd=tcp:10.0.2.100:PORT-cmd:...`, vm/qemu/machine.py): the
connection is this process's stdin and stdout (one socket QEMU holds the other end of),
and it copies both ways to 127.0.0.1:PORT. A `-tcp:` chardev instead would be one host
connection opened when QEMU starts, so only the guest's first connection would ever work.

Bounded: at most LIMIT relays of one VM run at once (all its ports together). Each holds
one of LIMIT one-byte locks of FOLDER/relays.lock (POSIX record locks: the kernel drops
them when the process ends, however it ends); one that finds none free exits at once, so
the guest sees that connection closed. The guest cannot get around it: this runs on the
host, started by QEMU for every connection.

Ends with its VM, whatever the host server does: it watches the QEMU named in
FOLDER/qemu.pid (a pidfd: QEMU starts it in a session of its own through a double fork,
so it is not QEMU's child, and libslirp's end of the connection is a loopback TCP socket,
whose close looks like the guest's half close) and ends the moment that QEMU does, or
when QEMU's end of the connection is reset, or when the host closes its side (or, after
the guest's half close, stops sending). Nothing in it blocks. `destroy` and `cleanup`
kill any left all the same (found by FOLDER in this command line, vm/qemu/forwards.py).
No QEMU to watch (no pid file, or not a QEMU): the connection is refused.

Usage (QEMU runs it; standalone, no imports from the package):
    python3 -I -S relay.py PORT FOLDER LIMIT
"""

import contextlib
import fcntl
import os
import select
import socket
import sys

CHUNK = 65536
GUEST_IN, GUEST_OUT = 0, 1
GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL


def take_slot(folder: str, limit: int) -> int | None:
    """A descriptor holding one of `limit` slots of the VM of `folder`, or None."""
    try:
        fd = os.open(
            os.path.join(folder, "relays.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600
        )
    except OSError:
        return None  # the VM's folder is gone: so is the VM
    for slot in range(limit):
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, slot)
        except OSError:
            continue
        return fd
    os.close(fd)
    return None


def watch_qemu(folder: str) -> int | None:
    """A pidfd of the VM's QEMU (readable once it has ended), or None."""
    try:
        with open(os.path.join(folder, "qemu.pid")) as fh:
            pid = int(fh.read().strip())
        pidfd = os.pidfd_open(pid)
    except (OSError, ValueError):
        return None
    try:  # checked after the pidfd is open: it holds this very process, not a reused pid
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            program = fh.read().split(b"\0")[0]
    except OSError:
        program = b""
    if not os.path.basename(program).startswith(b"qemu-system-"):
        os.close(pidfd)
        return None
    return pidfd


def relay(sock: socket.socket, qemu: int) -> None:
    """Copy both ways until QEMU's side hangs up or the host closes its side. Nothing
    blocks: a host server that stops reading cannot keep this past the VM's end."""
    for fd in (GUEST_IN, GUEST_OUT):
        os.set_blocking(fd, False)
    sock.setblocking(False)
    to_host, to_guest = b"", b""
    guest_done = False  # the guest closed its sending side (a half close)
    poll = select.poll()
    poll.register(qemu, select.POLLIN)
    while True:
        poll.register(GUEST_IN, 0 if guest_done or to_host else select.POLLIN)
        poll.register(GUEST_OUT, select.POLLOUT if to_guest else 0)
        host_events = (0 if to_guest else select.POLLIN) | (select.POLLOUT if to_host else 0)
        if host_events:
            poll.register(sock, host_events)
        else:  # (a hang-up is said even for no events: no spinning on it meanwhile)
            with contextlib.suppress(KeyError):
                poll.unregister(sock)
        for fd, events in poll.poll():
            if fd == qemu:
                return  # the VM is gone
            if fd in (GUEST_IN, GUEST_OUT) and events & GONE and not events & select.POLLIN:
                return  # QEMU's end is closed: the VM or this connection is gone
            if fd == GUEST_IN and events & select.POLLIN and not guest_done:
                data = os.read(GUEST_IN, CHUNK)
                if data:
                    to_host = data
                else:
                    guest_done = True
                    if not to_host:
                        sock.shutdown(socket.SHUT_WR)
            elif fd == GUEST_OUT and events & select.POLLOUT and to_guest:
                to_guest = to_guest[os.write(GUEST_OUT, to_guest) :]
            elif fd == sock.fileno():
                if events & select.POLLOUT and to_host:
                    to_host = to_host[sock.send(to_host) :]
                    if not to_host and guest_done:
                        sock.shutdown(socket.SHUT_WR)
                if events & (select.POLLIN | GONE) and not to_guest:
                    data = sock.recv(CHUNK)
                    if not data:
                        return  # the host closed its side
                    to_guest = data


def main() -> int:
    port, folder, limit = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    if take_slot(folder, limit) is None:
        return 1  # past the VM's limit of forwarded connections: closed at once
    qemu = watch_qemu(folder)
    if qemu is None:
        return 1  # no VM to tie it to: refused (fail closed)
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        return 1  # the guest sees its connection closed: nothing listens there
    with contextlib.suppress(OSError), sock:
        relay(sock, qemu)
    return 0


if __name__ == "__main__":
    sys.exit(main())

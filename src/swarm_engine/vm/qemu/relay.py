"""One guest connection to an allowed port, relayed to the host's loopback.

QEMU's user-mode network runs this for each TCP connection the guest opens to
10.0.2.100:PORT (`guestfwd=tcp:10.0.2.100:PORT-cmd:...`, vm/qemu/machine.py): the
connection is this process's stdin and stdout, and it copies both ways to 127.0.0.1:PORT.
A `-tcp:` chardev instead would be one host connection opened when QEMU starts, so only
the guest's first connection would ever work.

Usage (QEMU runs it; standalone, no imports from the package):
    python3 -I -S relay.py PORT
"""

import contextlib
import os
import socket
import sys
import threading

CHUNK = 65536


def _to_host(sock: socket.socket) -> None:
    """Guest -> host: stdin to the socket, until the guest closes its side."""
    try:
        while data := os.read(0, CHUNK):
            sock.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


def main() -> int:
    port = int(sys.argv[1])
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        return 1  # the guest sees its connection closed: nothing listens there
    sock.settimeout(None)
    threading.Thread(target=_to_host, args=(sock,), daemon=True).start()
    try:  # host -> guest: the socket to stdout, until the host closes its side
        while data := sock.recv(CHUNK):
            view = memoryview(data)
            while view:
                view = view[os.write(1, view) :]
    except OSError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The guest's serial console, kept in `console.log` with a bounded size.

QEMU writes the serial port to its standard output (`-serial stdio`), a pipe only the
engine reads: its start goes to the file (the boot, which is what the console is read
for: the reason a guest did not come up), at most `CONSOLE_LOG_MAX` bytes with the line
that says the rest was left out, and the rest is read and dropped. Its last `END_KEPT` bytes are kept in
memory too, for the error of a guest that dies (a panic after a flood of output). The guest cannot get around it: it
only ever reaches the pipe, never the file (`-serial file:` grew without bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from pathlib import Path

CONSOLE_LOG_MAX = 1024 * 1024
"""The most bytes `console.log` ever holds: the console's start and, when the console
went on past it, the line saying so (`ConsoleSink.marker`)."""
READ_CHUNK = 64 * 1024
END_KEPT = 16 * 1024
"""The console's last bytes kept in memory (`ConsoleSink.end`)."""
FLUSH_WAIT = 1.0
"""How long a boot failure waits for the console's last bytes before its tail is read."""
HALTED = re.compile(rb"reboot: (?:System halted|Power down)")
"""The kernel's last line when the guest halts or powers off (`kernel_halt`,
`kernel_power_off`): a kernel without ACPI (the tiny image's) then only stops its CPUs,
and QEMU runs on with nothing left in it."""
HALT_LINE_MAX = 32
"""More bytes than the longest text `HALTED` matches."""


class ConsoleSink:
    """Reads QEMU's standard output to its end, keeping its start in a file."""

    def __init__(self, stream: asyncio.StreamReader, path: Path, limit: int | None = None):
        self.path = path
        self.limit = CONSOLE_LOG_MAX if limit is None else limit
        self.end = b""
        """The console's last `END_KEPT` bytes, wherever they went (kept or dropped): what
        a guest said as it died after more than `limit` bytes (a panic after a flood)."""
        self.on_halt: Callable[[str], None] | None = None
        """Called once, with the line, when the console says the guest halted (`HALTED`)."""
        self._halt_seen = False
        self._task = asyncio.ensure_future(self._drain(stream))

    def _keep_end(self, chunk: bytes) -> None:
        self.end = (self.end + chunk)[-END_KEPT:]
        if self._halt_seen or self.on_halt is None:
            return
        # the line may come in pieces (the serial port's bytes as QEMU's reads took them):
        # the search starts far enough back to take in a line begun in an earlier read
        found = HALTED.search(self.end, max(0, len(self.end) - len(chunk) - HALT_LINE_MAX))
        if found is not None:
            self._halt_seen = True
            self.on_halt(found.group().decode())

    def marker(self) -> bytes:
        """The line ending a `console.log` whose console went on past `limit` bytes (cut
        to `limit` bytes when the limit is smaller than the line)."""
        return f"\n[console.log ends at {self.limit} bytes]\n".encode()[: self.limit]

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        """Write the console's start to the file, never more than `limit` bytes in all,
        the marker included: up to `limit` bytes of console when that is all there is,
        else its first `limit - len(marker)` bytes and the marker. The last bytes that
        may be the marker's room are held until the console ends or goes past `limit`."""
        marker = self.marker()
        room = self.limit - len(marker)
        kept = 0
        held = b""
        dropped = False
        try:
            with self.path.open("ab", buffering=0) as out:
                try:
                    while chunk := await stream.read(READ_CHUNK):
                        self._keep_end(chunk)
                        if dropped:
                            continue
                        part = chunk[: max(room - kept, 0)]
                        if part:
                            out.write(part)
                            kept += len(part)
                        held += chunk[len(part) :]
                        if kept + len(held) > self.limit:  # more than fits: the rest goes
                            out.write(marker)
                            held, dropped = b"", True
                finally:  # the console ended (or the sink was closed) within the limit
                    if held:
                        out.write(held)
        except OSError:  # the folder is gone or the disk is full: drop the rest
            pass
        while chunk := await stream.read(READ_CHUNK):  # never let QEMU block on a full pipe
            self._keep_end(chunk)

    async def flushed(self, timeout: float = FLUSH_WAIT) -> None:
        """Wait (at most `timeout` s) until everything QEMU wrote is read (it exited)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), timeout)

    def close(self) -> None:
        self._task.cancel()

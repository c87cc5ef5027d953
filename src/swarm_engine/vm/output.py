"""Bounded capture of a command's output: a head, a tail and the true byte count.

A command may print gigabytes; the engine keeps at most `keep` bytes of the start of each
stream and `keep` bytes of its end (where errors usually are), and counts every byte. The
text handed back has an explicit marker where the middle was cut:

    <first `keep` bytes>\n[... 199868928 bytes cut ...]\n<last `keep` bytes>

Every backend feeds its streams through `BoundedOutput`, so the rule is the same
everywhere. Memory per stream: at most 2 x `keep` plus one chunk.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable

DEFAULT_KEEP = 64 * 1024
"""Bytes of the head, and as many of the tail, kept of each stream by default."""

SLACK = 32
"""Extra tail bytes buffered, so that a cut always leaves out more than the marker adds:
a stream up to 2 x keep + SLACK bytes is kept whole, and a cut value is always shorter
than the stream (`ExecResult.stdout_cut` relies on it)."""

CUT_MARKER = re.compile(rb"\[\.\.\. (\d+) bytes cut \.\.\.\]")
"""Matches the marker (bytes); group 1 is the number of bytes left out."""


def cut_marker(count: int) -> bytes:
    """The line put where `count` bytes were left out (with a newline on each side)."""
    return b"\n[... %d bytes cut ...]\n" % count


class BoundedOutput:
    """One output stream, captured with a bounded head and tail.

    `add(chunk)` as bytes arrive; `total` is every byte seen; `value()` is the whole
    stream when it fits in 2 x `keep` (+ `SLACK`) bytes, else head + `cut_marker(n)` +
    tail, shorter than the stream. The cut is moved by up to 3 bytes so it does not split
    a UTF-8 character.
    """

    def __init__(self, keep: int = DEFAULT_KEEP) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1 byte")
        self.keep = keep
        self.total = 0
        self._head = bytearray()
        self._tail: deque[bytes] = deque()
        self._tail_len = 0

    def add(self, chunk: bytes) -> None:
        """Take the next `chunk` of the stream (any size)."""
        self.total += len(chunk)
        room = self.keep - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        limit = self.keep + SLACK
        if len(chunk) >= limit:
            self._tail.clear()
            self._tail.append(bytes(chunk[-limit:]))
            self._tail_len = limit
            return
        self._tail.append(bytes(chunk))
        self._tail_len += len(chunk)
        while self._tail_len - len(self._tail[0]) >= limit:
            self._tail_len -= len(self._tail.popleft())

    def value(self, marker: Callable[[int], bytes] = cut_marker) -> bytes:
        """The captured stream: whole, or head + `marker(bytes left out)` + tail (a marker
        longer than `cut_marker`'s may make a cut value longer than the stream)."""
        tail = b"".join(self._tail)
        if self.total == len(self._head) + len(tail):
            return bytes(self._head) + tail
        tail = tail[-self.keep :]
        head = bytes(self._head)
        back = unfinished_char(head)
        head = head[: len(head) - back]
        skip = continuation_bytes(tail)
        tail = tail[skip:]
        return head + marker(self.total - len(head) - len(tail)) + tail


def unfinished_char(data: bytes) -> int:
    """How many bytes at the end of `data` are an unfinished UTF-8 character (0-3)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return 0
        if byte >= 0xC0:  # a lead byte: is its character complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return back if back < need else 0
    return 0


def continuation_bytes(data: bytes) -> int:
    """How many UTF-8 continuation bytes `data` starts with (0-3)."""
    count = 0
    while count < min(3, len(data)) and 0x80 <= data[count] < 0xC0:
        count += 1
    return count

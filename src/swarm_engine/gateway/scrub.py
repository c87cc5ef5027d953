"""Redaction of a streamed response body: the host's key, then anything shaped like an
Anthropic key, replaced however the stream is cut into chunks (a bounded tail is held
back between chunks)."""

from __future__ import annotations

import re
import string

from swarm_engine.agents.claude.redact import KEY_PATTERN, REDACTED

KEY_BYTES = re.compile(KEY_PATTERN.pattern.encode())
KEY_START = b"sk-ant-"
KEY_CHARS = string.ascii_letters.encode() + string.digits.encode() + b"_-"
KEY_ALPHABET = re.compile(rb"[A-Za-z0-9_\-]*")
KEY_SHORTEST = len(KEY_START) + 8
"""A key-shaped string (`KEY_PATTERN`) is `sk-ant-` and at least 8 of its alphabet."""


class StreamScrubber:
    """Replaces `secret`, then anything shaped like an Anthropic key, in a byte stream, as
    `Redactor.text` does in a string: whatever the stream's cuts, what comes out is the
    same. Holds back only a tail that could be the start of either (fewer bytes than
    `secret` plus `KEY_SHORTEST`)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = _SecretScrubber(secret)
        self._keys = _KeyScrubber()

    def feed(self, chunk: bytes) -> bytes:
        return self._keys.feed(self._secret.feed(chunk))

    def flush(self) -> bytes:
        return self._keys.feed(self._secret.flush()) + self._keys.flush()


class _SecretScrubber:
    """Replaces `secret` in a byte stream, holding back only a tail that could be its start."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._buf = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self._secret:
            return chunk
        buf = (self._buf + chunk).replace(self._secret, REDACTED.encode())
        hold = _partial_tail(buf, self._secret)
        self._buf = buf[len(buf) - hold :] if hold else b""
        return buf[: len(buf) - hold]

    def flush(self) -> bytes:
        out, self._buf = self._buf, b""
        return out


class _KeyScrubber:
    """Replaces each key-shaped string of a byte stream (`KEY_PATTERN`, which runs as long
    as its alphabet does) by REDACTED. A match that reaches the end of what came so far is
    replaced at once, and the rest of its run dropped as it comes; only a tail that could
    become a match is held back (under `KEY_SHORTEST` bytes)."""

    def __init__(self) -> None:
        self._tail = b""
        self._inside = False
        """A match reached the end of the last chunk: its run may go on in the next."""

    def feed(self, chunk: bytes) -> bytes:
        buf, self._tail = self._tail + chunk, b""
        pos = 0
        if self._inside:
            pos = len(buf) - len(buf.lstrip(KEY_CHARS))
            if pos == len(buf):
                return b""
            self._inside = False
        out = bytearray()
        while (found := KEY_BYTES.search(buf, pos)) is not None:
            out += buf[pos : found.start()] + REDACTED.encode()
            pos = found.end()
            if pos == len(buf):
                self._inside = True
                return bytes(out)
        hold = _key_start(buf, pos)
        self._tail = buf[hold:]
        out += buf[pos:hold]
        return bytes(out)

    def flush(self) -> bytes:
        out, self._tail, self._inside = self._tail, b"", False
        return out


def _key_start(buf: bytes, pos: int) -> int:
    """Where the end of `buf` (from `pos` on, holding no whole match) could start a match
    as more comes; `len(buf)` if nowhere."""
    for at in range(max(pos, len(buf) - KEY_SHORTEST + 1), len(buf)):
        end = buf[at:]
        if KEY_START.startswith(end) or (
            end.startswith(KEY_START) and KEY_ALPHABET.fullmatch(end, len(KEY_START))
        ):
            return at
    return len(buf)


def _partial_tail(buf: bytes, secret: bytes) -> int:
    """The length of the longest end of `buf` that is a proper start of `secret`."""
    first = secret[:1]
    start = max(0, len(buf) - len(secret) + 1)
    at = buf.find(first, start)
    while at >= 0:
        if secret.startswith(buf[at:]):
            return len(buf) - at
        at = buf.find(first, at + 1)
    return 0

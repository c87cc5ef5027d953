"""Scrub secrets from anything the agent writes: transcripts, logs, outputs, errors."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"
KEY_PATTERN = re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}")
MIN_SECRET_LEN = 6


class Redactor:
    """Replaces each known secret, and anything shaped like an Anthropic key, by REDACTED."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted(
            {s for s in secrets if s and len(s) >= MIN_SECRET_LEN}, key=len, reverse=True
        )

    def text(self, value: str) -> str:
        for secret in self._secrets:
            value = value.replace(secret, REDACTED)
        return KEY_PATTERN.sub(REDACTED, value)

    def data(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string (keys too) redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.data(k): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value


_LINE_BREAKS = str.maketrans({"\n": "\\n", "\r": "\\r", "\x0b": "\\x0b", "\x0c": "\\x0c",
                              "\x1c": "\\x1c", "\x1d": "\\x1d", "\x1e": "\\x1e",
                              "\x85": "\\x85", "\u2028": "\\u2028", "\u2029": "\\u2029"})  # fmt: skip


def one_line_of(text: str) -> str:
    """`text` with every character `str.splitlines` breaks a line at written as its escape
    (`\\n`, `\\u2028`): a line of a log that another writer's text cannot split in two."""
    return text.translate(_LINE_BREAKS)

"""The request log of one step's gateway (`requests_log` in `model_api.json`), bounded in
size whatever the VM sends: each text in a record is cut to `MAX_TEXT` characters, and once
the records take `max_bytes` (as JSON) further requests are only counted (`dropped`).
Requests without the step's token are never recorded, only counted by the gateway."""

from __future__ import annotations

import json
from typing import Any

MAX_TEXT = 200
MAX_LOG_BYTES = 1024 * 1024


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """`text`, cut to `limit` characters (saying how long it was)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} chars)"


class RequestLog:
    def __init__(self, max_bytes: int = MAX_LOG_BYTES) -> None:
        self.records: list[dict[str, Any]] = []
        self.dropped = 0
        """Records not kept because the log was full."""
        self._max_bytes = max_bytes
        self._bytes = 0

    def add(self, record: dict[str, Any]) -> None:
        kept = {k: clip(v) if isinstance(v, str) else v for k, v in record.items()}
        size = len(json.dumps(kept, default=str)) + 2
        if self._bytes + size > self._max_bytes:
            self.dropped += 1
            return
        self._bytes += size
        self.records.append(kept)

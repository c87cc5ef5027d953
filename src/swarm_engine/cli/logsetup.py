"""Log output for the CLI: human lines by default, JSON lines with `SWARM_LOG_FORMAT=json`.

Only the CLI installs handlers; library modules just log, with structured fields passed as
`extra={"ticket_id": ..., "run_id": ..., "vm_id": ...}`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from swarm_engine.cli.text import visible, visible_lines

FIELDS = ("ticket_id", "run_id", "step_id", "vm_id", "engine_id")


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in FIELDS:
            if hasattr(record, field):
                data[field] = getattr(record, field)
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    """One line per record: control and bidi characters in the message (which may carry
    text from a stored row) are shown as `\\xNN` (`visible`), so no message can forge a
    line or drive a terminal; a message is cut at `MAX_MESSAGE` characters. A traceback
    keeps its lines, its control characters escaped too (an exception's message may be
    a row's text)."""

    MAX_MESSAGE = 2000

    def formatException(self, ei: Any) -> str:
        return visible_lines(super().formatException(ei))

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = visible(record.message)
        if len(message) > self.MAX_MESSAGE:
            message = message[: self.MAX_MESSAGE] + f"… ({len(message)} characters)"
        record.message = message
        return super().formatMessage(record)


def setup_logging(level: str) -> None:
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("SWARM_LOG_FORMAT", "").lower() == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())

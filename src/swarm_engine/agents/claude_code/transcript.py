"""Claude Code's `--output-format stream-json` as it arrives: one JSON event per line.

Every line is kept (redacted) in `transcript.jsonl` in the step's artifacts folder, a short
human line per event is handed back for the step's log, and the last `result` event (the
final answer, turns, cost and usage as Claude Code saw them) is remembered.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import IO, Any

from swarm_engine.agents.claude.redact import Redactor, one_line_of

log = logging.getLogger(__name__)

TRANSCRIPT_NAME = "transcript.jsonl"
MAX_TRANSCRIPT_BYTES = 64 * 1024 * 1024
MAX_LINE_BYTES = 16 * 1024 * 1024
"""A longer line is written as it is (cut) and not read."""
SHORT = 200


class StreamTranscript:
    def __init__(self, path: Path | None, redactor: Redactor) -> None:
        self._redactor = redactor
        self._said: list[str] = []
        self._partial = b""
        self._written = 0
        self._file: IO[bytes] | None = None
        self.result: dict[str, Any] | None = None
        self.init: dict[str, Any] | None = None
        self.lines = 0
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._file = path.open("wb")
            except OSError as exc:
                log.warning("cannot write %s: %s", path, exc)

    def feed(self, chunk: bytes) -> list[str]:
        """Take a piece of stdout; returns the log lines of the events it completed."""
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            self._line(line)
        if len(self._partial) > MAX_LINE_BYTES:
            self._keep(self._partial[:MAX_LINE_BYTES] + b" [... line cut ...]")
            self._partial = b""
        said, self._said = self._said, []
        return said

    def close(self) -> list[str]:
        if self._partial.strip():
            self._line(self._partial)
        self._partial = b""
        if self._file is not None:
            self._file.close()
            self._file = None
        said, self._said = self._said, []
        return said

    def _line(self, raw: bytes) -> None:
        if not raw.strip():
            return
        self.lines += 1
        self._keep(raw)
        try:
            event = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            self._tell(raw.decode(errors="replace")[:SHORT])
            return
        if isinstance(event, dict):
            self._event(event)

    def _keep(self, raw: bytes) -> None:
        if self._file is None or self._written > MAX_TRANSCRIPT_BYTES:
            return
        text = self._redactor.text(raw.decode(errors="replace")) + "\n"
        data = text.encode()
        if self._written + len(data) > MAX_TRANSCRIPT_BYTES:
            data = b'{"type": "swarm", "note": "transcript cut at its size limit"}\n'
        self._file.write(data)
        self._file.flush()
        self._written += len(data)

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "system" and event.get("subtype") == "init":
            self.init = event
            self._tell(
                f"Claude Code {event.get('claude_code_version', '')} started: model "
                f"{event.get('model')}, {len(event.get('tools') or [])} tools".replace("  ", " ")
            )
        elif kind == "assistant":
            message = event.get("message")
            for block in message.get("content") or [] if isinstance(message, dict) else []:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "text" and str(block.get("text", "")).strip():
                    self._tell("claude: " + _short(str(block["text"])))
                elif block.get("type") == "tool_use":
                    args = json.dumps(block.get("input"), default=str)
                    self._tell(f"tool {block.get('name')} {_short(args)}")
        elif kind == "result":
            self.result = event
            self._tell(
                f"finished: {event.get('subtype')} after {event.get('num_turns')} turns"
                + (" (error)" if event.get("is_error") else "")
            )

    def _tell(self, text: str) -> None:
        self._said.append(one_line_of(self._redactor.text(text)))


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SHORT else text[: SHORT - 3] + "..."

"""A step's output streams as the lines of its log (`output.log` and its live copy).

Commands write stdout and stderr in chunks that fall anywhere: mid-line, several lines at
once. `LogLines` writes stdout as it came and every line of another stream prefixed with
its name (`[stderr] `). A line is closed with a newline of the log's own only when another
stream writes before its end, or when the step ends: the bytes of one stream are kept
exactly, however its chunks fell.
"""

from __future__ import annotations

from collections.abc import Callable


class LogLines:
    """Feed `(stream, text)` chunks in the order they arrived; `write` gets log text."""

    def __init__(self, write: Callable[[str], object]) -> None:
        self._write = write
        self._open: str | None = None
        """The stream whose last line is written without its end (None: at a line start)."""

    def feed(self, stream: str, text: str) -> None:
        if not text:
            return
        out: list[str] = []
        if self._open is not None and self._open != stream:
            out.append("\n")  # another stream's line is cut here
            self._open = None
        prefix = "" if stream == "stdout" else f"[{stream}] "
        *whole, tail = text.split("\n")
        for line in whole:
            out.append(line if self._open is not None else prefix + line)
            out.append("\n")
            self._open = None
        if tail:
            out.append(tail if self._open is not None else prefix + tail)
            self._open = stream
        self._write("".join(out))

    def close(self) -> None:
        """The step is over: a line left open gets its end."""
        if self._open is not None:
            self._open = None
            self._write("\n")

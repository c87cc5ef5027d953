"""The tools Claude may call; each one acts inside the step's VM through the `VM` protocol.

Every path goes through `safe_relpath`, so no tool reads or writes outside the workspace.
A failing tool (bad path, missing file, non-unique edit, timeout) becomes a `tool_result`
with `is_error` set so the model can recover; it does not fail the step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from swarm_engine.agents.claude.settings import ToolName
from swarm_engine.errors import VMError
from swarm_engine.vm.base import VM, safe_relpath

TOOL_SPECS: dict[ToolName, dict[str, Any]] = {
    "bash": {
        "name": "bash",
        "description": (
            "Run a shell command (sh -c) in the workspace folder of the VM and return its "
            "stdout, stderr and exit code. Each call starts a fresh shell."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The command line to run."},
                "timeout": {"type": "number", "description": "Seconds before it is killed."},
            },
            "required": ["command"],
        },
    },
    "read_file": {
        "name": "read_file",
        "description": "Read a text file from the workspace, optionally a range of lines.",
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "Path relative to the workspace."},
                "offset": {"type": "integer", "description": "First line to return (1-based)."},
                "limit": {"type": "integer", "description": "How many lines to return."},
            },
            "required": ["path"],
        },
    },
    "write_file": {
        "name": "write_file",
        "description": "Create or overwrite a file in the workspace (parent folders are made).",
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "Path relative to the workspace."},
                "content": {"type": "string", "description": "The whole new file content."},
            },
            "required": ["path", "content"],
        },
    },
    "edit_file": {
        "name": "edit_file",
        "description": (
            "Replace one exact occurrence of old_text by new_text in a workspace file. "
            "old_text must appear exactly once; include surrounding lines to make it unique."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "old_text": {"type": "string"},
                "new_text": {"type": "string"},
            },
            "required": ["path", "old_text", "new_text"],
        },
    },
    "list_dir": {
        "name": "list_dir",
        "description": "List a folder of the workspace (names, sizes, types).",
        "input_schema": {
            "type": "object",
            "properties": {"path": {"type": "string", "description": "Defaults to '.'"}},
        },
    },
}


class ToolFailure(Exception):
    """A tool call that the model should hear about as an error result."""


@dataclass(frozen=True)
class ToolResult:
    content: str
    is_error: bool = False


class ToolBox:
    """Runs tool calls in one VM. `deadline` (monotonic) bounds every command."""

    def __init__(
        self,
        vm: VM,
        allowed: Sequence[ToolName],
        *,
        env: Mapping[str, str] | None = None,
        command_timeout: float = 300.0,
        max_output: int = 30_000,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.vm = vm
        self.allowed = tuple(allowed)
        self.env = dict(env or {})
        self.command_timeout = command_timeout
        self.max_output = max_output
        self.deadline = deadline
        self._clock = clock

    def specs(self) -> list[dict[str, Any]]:
        return [TOOL_SPECS[name] for name in self.allowed]

    async def call(self, name: str, args: Mapping[str, Any]) -> ToolResult:
        if name not in self.allowed:
            return ToolResult(f"unknown tool {name!r}; available: {', '.join(self.allowed)}", True)
        try:
            if name == "bash":
                return await self._bash(args)
            if name == "read_file":
                return ToolResult(await self._read(args))
            if name == "write_file":
                return ToolResult(await self._write(args))
            if name == "edit_file":
                return ToolResult(await self._edit(args))
            return await self._list(args)
        except (ToolFailure, VMError) as exc:
            return ToolResult(self._clip(str(exc)), True)

    # -- the tools ---------------------------------------------------------------------

    async def _bash(self, args: Mapping[str, Any]) -> ToolResult:
        command = _str_arg(args, "command")
        timeout = self.command_timeout
        asked = args.get("timeout")
        if isinstance(asked, int | float) and not isinstance(asked, bool) and asked > 0:
            timeout = min(timeout, float(asked))
        if self.deadline is not None:
            timeout = min(timeout, max(1.0, self.deadline - self._clock()))
        result = await self.vm.exec(command, env=self.env or None, timeout=timeout)
        parts = [result.stdout.decode("utf-8", "replace")]
        if result.stderr:
            parts.append("[stderr]\n" + result.stderr.decode("utf-8", "replace"))
        if result.timed_out:
            parts.append(f"[timed out after {timeout:g}s and was killed]")
        parts.append(f"[exit code: {result.exit_code}]")
        text = "\n".join(p.rstrip("\n") for p in parts if p)
        return ToolResult(self._clip(text), result.timed_out)

    async def _read(self, args: Mapping[str, Any]) -> str:
        path = safe_relpath(_str_arg(args, "path"))
        data = await self.vm.get_file(path)
        if b"\x00" in data[:8192]:
            return f"{path} is a binary file of {len(data)} bytes"
        text = data.decode("utf-8", "replace")
        offset, limit = args.get("offset"), args.get("limit")
        if isinstance(offset, int) or isinstance(limit, int):
            lines = text.splitlines(keepends=True)
            start = max(1, offset if isinstance(offset, int) else 1)
            stop = start - 1 + limit if isinstance(limit, int) and limit > 0 else len(lines)
            text = "".join(lines[start - 1 : stop])
        return self._clip(text)

    async def _write(self, args: Mapping[str, Any]) -> str:
        path = safe_relpath(_str_arg(args, "path"))
        if path == ".":
            raise ToolFailure("path must name a file")
        data = _str_arg(args, "content", allow_empty=True).encode()
        await self.vm.put_file(path, data)
        return f"wrote {len(data)} bytes to {path}"

    async def _edit(self, args: Mapping[str, Any]) -> str:
        path = safe_relpath(_str_arg(args, "path"))
        old = _str_arg(args, "old_text")
        new = _str_arg(args, "new_text", allow_empty=True)
        text = (await self.vm.get_file(path)).decode("utf-8", "replace")
        count = text.count(old)
        if count != 1:
            where = "not found" if count == 0 else f"found {count} times"
            raise ToolFailure(f"old_text {where} in {path}; it must match exactly once")
        # keep the file's executable bit (an edited script must still run)
        probe = await self.vm.exec(["test", "-x", path], timeout=30)
        mode = 0o755 if probe.exit_code == 0 else 0o644
        await self.vm.put_file(path, text.replace(old, new, 1).encode(), mode)
        return f"edited {path}"

    async def _list(self, args: Mapping[str, Any]) -> ToolResult:
        raw = args.get("path") or "."
        path = safe_relpath(raw if isinstance(raw, str) else ".")
        result = await self.vm.exec(["ls", "-la", "--", path], timeout=60)
        out = (result.stdout + result.stderr).decode("utf-8", "replace")
        return ToolResult(self._clip(out.rstrip("\n")), not result.ok)

    def _clip(self, text: str) -> str:
        if len(text) <= self.max_output:
            return text
        half = self.max_output // 2
        cut = len(text) - 2 * half
        return f"{text[:half]}\n[... {cut} characters cut ...]\n{text[-half:]}"


def _str_arg(args: Mapping[str, Any], name: str, *, allow_empty: bool = False) -> str:
    value = args.get(name)
    if not isinstance(value, str) or (not value and not allow_empty):
        raise ToolFailure(f"argument {name!r} must be a non-empty string")
    return value

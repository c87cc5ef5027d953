"""The task an LLM agent is given: the ticket's title and description, the step's inputs
and the files it must leave behind. Shared by `claude` and `claude-code`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from swarm_engine.agents.files import INPUTS_FILE


def task_prompt(
    ticket: Mapping[str, Any], inputs: Mapping[str, Any] | None, output_files: Sequence[str]
) -> str:
    title = str(ticket.get("title") or "").strip()
    description = str(ticket.get("description") or "").strip()
    given = inputs or ticket.get("inputs") or {}
    parts = [f"# Task: {title}" if title else "# Task"]
    if description:
        parts.append(description)
    if given:
        rendered = json.dumps(given, indent=2, sort_keys=True, default=str)
        parts.append(f"## Inputs (also in {INPUTS_FILE})\n```json\n{rendered}\n```")
    if output_files:
        parts.append(
            f"## Output files\nBefore you finish, write these files: {', '.join(output_files)}"
        )
    return "\n\n".join(parts)

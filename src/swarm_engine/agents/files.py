"""Helpers agents share: moving inputs, outputs and package files in and out of a VM."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from swarm_engine.errors import AgentError, VMError
from swarm_engine.vm.base import VM

SWARM_DIR = ".swarm"
INPUTS_FILE = f"{SWARM_DIR}/inputs.json"
OUTPUTS_FILE = f"{SWARM_DIR}/outputs.json"
SKIP_NAMES = {".git", "__pycache__", ".venv", "node_modules"}

ENV_PRELUDE = (
    'SWARM_INPUTS="$SWARM_WORKSPACE/.swarm/inputs.json"; '
    'SWARM_OUTPUTS="$SWARM_WORKSPACE/.swarm/outputs.json"; '
    "export SWARM_INPUTS SWARM_OUTPUTS; "
)


async def put_inputs(vm: VM, inputs: dict[str, Any]) -> None:
    await vm.put_file(INPUTS_FILE, json.dumps(inputs, default=str).encode())


async def read_outputs_file(vm: VM) -> dict[str, Any] | None:
    """The JSON object an agent wrote to $SWARM_OUTPUTS, or None if it wrote none."""
    try:
        raw = await vm.get_file(OUTPUTS_FILE)
    except VMError:
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise AgentError(f"$SWARM_OUTPUTS is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise AgentError("$SWARM_OUTPUTS must hold a JSON object")
    return data


async def upload_package(vm: VM, package: Path) -> int:
    """Copy an agent's package folder into the workspace; returns the file count."""
    count = 0
    for folder, dirs, files in os.walk(package):
        dirs[:] = [d for d in dirs if d not in SKIP_NAMES]
        for name in files:
            full = Path(folder) / name
            if full.is_symlink():
                continue
            rel = full.relative_to(package).as_posix()
            mode = 0o755 if os.access(full, os.X_OK) else 0o644
            await vm.put_file(rel, full.read_bytes(), mode)
            count += 1
    return count


def tail(text: bytes | str, lines: int = 5, limit: int = 500) -> str:
    s = text.decode(errors="replace") if isinstance(text, bytes) else text
    out = "\n".join(s.strip().splitlines()[-lines:])
    return out[-limit:]

"""Helpers agents share: moving inputs, outputs and package files in and out of a VM."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from pathlib import Path
from typing import Any

from swarm_engine.errors import AgentError, VMError
from swarm_engine.records import readable_json
from swarm_engine.vm.base import VM
from swarm_engine.vm.shortage import patiently

SWARM_DIR = ".swarm"
INPUTS_FILE = f"{SWARM_DIR}/inputs.json"
OUTPUTS_FILE = f"{SWARM_DIR}/outputs.json"
SKIP_NAMES = {".git", "__pycache__", ".venv", "node_modules"}

# How inputs reach a command. The inputs file ($SWARM_INPUTS) always holds all of them; a
# scalar input is also an environment variable INPUT_<KEY> when its value is at most
# INPUT_ENV_MAX_BYTES, while the INPUT_* variables stay within INPUT_ENV_TOTAL_BYTES in all
# (keys in sorted order). Linux refuses to exec with any one argument or environment string
# over MAX_ARG_STRLEN (128 KiB, counting its NUL), so no single value may ever get there.
INPUT_ENV_MAX_BYTES = 32 * 1024
INPUT_ENV_TOTAL_BYTES = 256 * 1024
MAX_ARG_BYTES = 128 * 1024 - 1
"""The longest one argv or environment string (`KEY=value`) may be, in bytes."""

ENV_PRELUDE = (
    'SWARM_INPUTS="$SWARM_WORKSPACE/.swarm/inputs.json"; '
    'SWARM_OUTPUTS="$SWARM_WORKSPACE/.swarm/outputs.json"; '
    "export SWARM_INPUTS SWARM_OUTPUTS; "
)


async def put_inputs(vm: VM, inputs: dict[str, Any]) -> None:
    """Write all of `inputs`, as JSON, to the inputs file ($SWARM_INPUTS); no size limit
    beyond the VM's disk."""
    await vm.put_file(INPUTS_FILE, json.dumps(inputs, default=str).encode())


def input_env(inputs: dict[str, Any]) -> dict[str, str]:
    """The `INPUT_<KEY>` environment variables for `inputs`: one per scalar input whose key
    is an identifier and whose value is at most `INPUT_ENV_MAX_BYTES` (UTF-8), in sorted
    key order while they total at most `INPUT_ENV_TOTAL_BYTES`. Larger values, and values
    no environment can hold (a NUL character, unpaired surrogates), are only in the
    inputs file."""
    env: dict[str, str] = {}
    total = 0
    for key in sorted(inputs):
        value = inputs[key]
        if not (isinstance(value, str | int | float | bool) and key.isidentifier()):
            continue
        text = str(value)
        try:
            size = len(text.encode())
        except UnicodeEncodeError:
            continue
        if "\0" in text or size > INPUT_ENV_MAX_BYTES or total + size > INPUT_ENV_TOTAL_BYTES:
            continue
        env[f"INPUT_{key.upper()}"] = text
        total += size
    return env


async def read_outputs_file(vm: VM) -> dict[str, Any] | None:
    """The JSON object an agent wrote to $SWARM_OUTPUTS, or None if it wrote none."""
    try:
        raw = await vm.get_file(OUTPUTS_FILE)
    except VMError as exc:
        if "no such file" in str(exc).lower():  # it wrote none (every backend says so)
            return None
        raise AgentError(f"$SWARM_OUTPUTS cannot be read: {exc}") from exc
    try:
        data = readable_json(raw)  # what the store's readers can write out again
    except ValueError as exc:
        raise AgentError(f"$SWARM_OUTPUTS is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise AgentError("$SWARM_OUTPUTS must hold a JSON object")
    return data


async def upload_package(vm: VM, package: Path, *, timeout: float) -> int:
    """Copy an agent's package folder into the workspace; returns the file count. The
    package is listed and read off the event loop; a host short of descriptors or memory
    is waited out up to `timeout` seconds (`vm/shortage.py`), and a folder that cannot be
    listed fails the step (it is never uploaded in part)."""
    deadline = time.monotonic() + timeout
    names = await patiently(
        lambda: asyncio.to_thread(_package_files, package), deadline=deadline,
        doing=f"list the agent package {package}", vm_id=vm.id,
    )  # fmt: skip
    for rel, executable in names:
        data = await patiently(
            functools.partial(asyncio.to_thread, (package / rel).read_bytes), deadline=deadline,
            doing=f"read {rel!r} of the agent package", vm_id=vm.id,
        )  # fmt: skip
        await vm.put_file(rel, data, 0o755 if executable else 0o644)
    return len(names)


def _package_files(package: Path) -> list[tuple[str, bool]]:
    """Each file of the package (relative path, executable), symlinks and SKIP_NAMES
    left out; an error listing a folder is raised."""

    def fail(exc: OSError) -> None:
        raise exc

    out: list[tuple[str, bool]] = []
    for folder, dirs, files in os.walk(package, onerror=fail):
        dirs[:] = [d for d in dirs if d not in SKIP_NAMES]
        for name in files:
            full = Path(folder) / name
            if full.is_symlink():
                continue
            out.append((full.relative_to(package).as_posix(), os.access(full, os.X_OK)))
    return out


def tail(text: bytes | str, lines: int = 5, limit: int = 500) -> str:
    s = text.decode(errors="replace") if isinstance(text, bytes) else text
    out = "\n".join(s.strip().splitlines()[-lines:])
    return out[-limit:]

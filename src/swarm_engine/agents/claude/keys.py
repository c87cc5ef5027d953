"""Where the API key comes from, and where it goes: the host says both, never the VM.

Order: `ANTHROPIC_API_KEY` in the host environment, then the host's `api_key_file`, then
its `api_key_command` (its stdout, stripped). The key is only ever handed to the SDK client;
callers redact it from everything they write.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path

from swarm_engine.agents.claude.settings import HostConfig
from swarm_engine.errors import AgentError

KEY_ENV = "ANTHROPIC_API_KEY"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"
DEFAULT_ENDPOINT = "https://api.anthropic.com"
COMMAND_TIMEOUT = 30.0

MISSING_KEY = (
    f"{KEY_ENV} is not set: export it on the host, or set api_key_file or api_key_command "
    "under [agents.claude] in config.toml"
)


def resolve_api_key(host: HostConfig, environ: Mapping[str, str]) -> str:
    """Return the key or raise `AgentError` with one clear line (never containing the key)."""
    key = environ.get(KEY_ENV, "").strip()
    if key:
        return key
    if host.api_key_file:
        path = Path(host.api_key_file).expanduser()
        try:
            key = path.read_text().strip()
        except OSError as exc:
            raise AgentError(f"api_key_file {path}: {exc.strerror or exc}") from None
        if not key:
            raise AgentError(f"api_key_file {path} is empty")
        return key
    if host.api_key_command:
        return _run_key_command(host.api_key_command)
    raise AgentError(MISSING_KEY)


def resolve_endpoint(host: HostConfig, environ: Mapping[str, str]) -> str:
    """Where the key goes: `ANTHROPIC_BASE_URL` of the host, else the host's `base_url`,
    else the public API. Never an agent definition's choice."""
    return environ.get(BASE_URL_ENV) or host.base_url or DEFAULT_ENDPOINT


def _run_key_command(command: str | list[str]) -> str:
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    shown = argv[0] if argv else "''"
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise AgentError(f"api_key_command {shown} could not run: {exc}") from None
    if proc.returncode != 0:
        raise AgentError(f"api_key_command {shown} exited with {proc.returncode}")
    key = proc.stdout.decode("utf-8", "replace").strip()
    if not key:
        raise AgentError(f"api_key_command {shown} printed nothing")
    return key

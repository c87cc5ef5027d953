"""Settings of the `claude-code` kind: the agent's `config:` block and `[agents.claude-code]`.

The agent definition says what Claude Code does (model, turns, tools, prompts, budget); the
host says which Claude Code runs and where it is kept (version, cache folder, whether the
engine may install it with npm). The key and the endpoint are the Claude kind's host
settings (`[agents.claude]`), used by the gateway; an agent definition can set none of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from platformdirs import user_cache_dir
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from swarm_engine.agents.claude.settings import DEFAULT_MODEL, MODEL_RE, Budget, Price
from swarm_engine.errors import ConfigError
from swarm_engine.models import first_error

DEFAULT_VERSION = "2.1.332"
"""The Claude Code release the engine installs and runs unless the host says otherwise."""
VERSION_RE = r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?$"
HOST_ONLY_KEYS = frozenset(
    {"version", "cache_dir", "install", "npm", "base_url", "api_key_file", "api_key_command"}
)
"""Keys an agent's `config:` may not hold: which program the host installs and runs, and
where the key comes from or goes."""
PermissionMode = Literal["bypassPermissions", "dontAsk", "acceptEdits", "plan"]

DEFAULT_CONFIG: dict[str, Any] = {
    "model": DEFAULT_MODEL,
    "max_turns": 40,
    "budget": {"max_usd": 5.0},
}
"""What the registry's `_template:claude-code` and ready agent `claude-code` carry."""


def default_cache_dir() -> Path:
    """`/var/cache/swarm-engine/claude-code` for a root engine, else the user's cache."""
    if os.geteuid() == 0:
        return Path("/var/cache/swarm-engine/claude-code")
    return Path(user_cache_dir("swarm-engine", appauthor=False)) / "claude-code"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClaudeCodeConfig(_Strict):
    """The `config:` block of an agent of kind `claude-code`."""

    model: str = Field(default=DEFAULT_MODEL, pattern=MODEL_RE)
    """Passed to Claude Code as `--model`: a name, never an option or a second line."""
    max_turns: int = Field(default=40, strict=True, ge=1, le=10_000)
    allowed_tools: tuple[str, ...] | None = None
    """`--allowedTools`: the tools that run without asking (e.g. `Bash(git *)`, `Edit`).
    Given, the permission mode defaults to `dontAsk` (anything else is denied)."""
    disallowed_tools: tuple[str, ...] = ()
    permission_mode: PermissionMode | None = None
    """Default: `bypassPermissions` (the sandbox is the boundary), or `dontAsk` with
    `allowed_tools`."""
    system_prompt: str | None = Field(default=None, max_length=64 * 1024)
    """Replaces Claude Code's system prompt (`--system-prompt`)."""
    append_system_prompt: str | None = Field(default=None, max_length=64 * 1024)
    budget: Budget = Field(default_factory=Budget)
    prices: dict[str, Price] = Field(default_factory=dict)

    @field_validator("allowed_tools", "disallowed_tools")
    @classmethod
    def _tools(cls, tools: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for tool in tools or ():
            if not tool.strip() or "\0" in tool or "\n" in tool:
                raise ValueError(f"bad tool name {tool!r}")
        return tools

    @property
    def permissions(self) -> PermissionMode:
        if self.permission_mode is not None:
            return self.permission_mode
        return "dontAsk" if self.allowed_tools is not None else "bypassPermissions"


class HostSettings(_Strict):
    """`[agents.claude-code]` in config.toml."""

    version: str = Field(default=DEFAULT_VERSION, pattern=VERSION_RE)
    cache_dir: Path = Field(default_factory=default_cache_dir)
    """Installed releases, one folder per version: `<cache_dir>/<version>`."""
    install: bool = True
    """Install a missing release from the npm registry (with `npm`) when a step needs it."""
    npm: str = "npm"


def parse_config(config: Mapping[str, Any], agent_name: str = "claude-code") -> ClaudeCodeConfig:
    bad = sorted(HOST_ONLY_KEYS & set(config))
    if bad:
        raise ConfigError(
            f"agent {agent_name!r}: {bad[0]} can only be set on the host "
            "([agents.claude-code] or [agents.claude] in config.toml), not in agent.yaml"
        )
    try:
        return ClaudeCodeConfig.model_validate(dict(config))
    except ValidationError as exc:
        raise ConfigError(f"agent {agent_name!r} config {first_error(exc)}") from exc


def parse_host_settings(config: Mapping[str, Any] | None) -> HostSettings:
    from swarm_engine.typecheck import type_problem

    problem = type_problem(HostSettings, dict(config or {}), "setting agents.claude-code")
    if problem:  # TOML and JSON values are typed: `install = "no"` is not a switch
        raise ConfigError(problem)
    try:
        return HostSettings.model_validate(dict(config or {}))
    except ValidationError as exc:
        raise ConfigError(f"setting {first_error(exc, 'agents.claude-code')}") from exc

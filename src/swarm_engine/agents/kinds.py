"""Agent kinds by name, imported lazily (the Claude kind pulls in the anthropic SDK)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from swarm_engine.agents.base import Agent
from swarm_engine.errors import ConfigError
from swarm_engine.models import AgentSpec, first_error

AGENT_KINDS: dict[str, str] = {
    "echo": "swarm_engine.agents.echo:EchoAgent",
    "shell": "swarm_engine.agents.shell:ShellAgent",
    "claude": "swarm_engine.agents.claude.agent:ClaudeAgent",
    "claude-code": "swarm_engine.agents.claude_code.agent:ClaudeCodeAgent",
}
COMMAND_KINDS = frozenset({"shell"})
"""The kinds that run an agent's `command`."""
MIN_CLAUDE_CODE_MB = 1024
"""Below this address-space bound (+256 MiB) Claude Code's runtime crashes."""
MODEL_API_KINDS = frozenset({"shell"})
"""The kinds whose definition may declare `model_api:` (`claude-code` always has the
gateway; `claude` calls the API from the host)."""


def check_definition(agent: AgentSpec) -> None:
    """Kind-specific checks of a definition, with nothing of the host's (no API key is
    needed): `config` must suit the kind (only `claude` and `claude-code` take settings), only
    a kind in `COMMAND_KINDS` takes a `command` and only one in `MODEL_API_KINDS` declares
    `model_api`. Raises `ConfigError` naming the field."""
    if agent.command is not None and agent.kind not in COMMAND_KINDS:
        raise ConfigError(f"command: kind {agent.kind!r} runs no command")
    if agent.model_api_spec is not None and agent.kind not in MODEL_API_KINDS:
        raise ConfigError(
            f"model_api: kind {agent.kind!r} does not take it (only shell agents declare it: "
            "claude-code always has the gateway, claude calls the API from the host)"
        )
    if agent.kind == "claude":
        from swarm_engine.agents.claude.settings import (
            HOST_ONLY_KEYS,
            ClaudeConfig,
            host_only_error,
        )

        host_only = sorted(HOST_ONLY_KEYS & set(agent.config))
        if host_only:
            raise ConfigError(f"config.{host_only[0]}: {host_only_error(host_only[0])}")
        try:
            ClaudeConfig.model_validate(agent.config)
        except ValidationError as exc:
            raise ConfigError(first_error(exc, "config")) from exc
    elif agent.kind == "claude-code":
        from swarm_engine.agents.claude_code.settings import HOST_ONLY_KEYS as CODE_HOST_ONLY
        from swarm_engine.agents.claude_code.settings import ClaudeCodeConfig

        host_only = sorted(CODE_HOST_ONLY & set(agent.config))
        if host_only:
            raise ConfigError(
                f"config.{host_only[0]}: can only be set on the host ([agents.claude-code] "
                "or [agents.claude] in config.toml), not in agent.yaml"
            )
        try:
            ClaudeCodeConfig.model_validate(agent.config)
        except ValidationError as exc:
            raise ConfigError(first_error(exc, "config")) from exc
        memory = agent.vm.memory_mb or agent.memory_mb
        if memory < MIN_CLAUDE_CODE_MB:
            raise ConfigError(
                f"memory_mb: claude-code needs at least {MIN_CLAUDE_CODE_MB} (it is {memory}): "
                "Claude Code reserves much address space, which the process sandbox bounds"
            )
    elif agent.config:
        raise ConfigError(
            f"config.{sorted(agent.config)[0]}: kind {agent.kind!r} takes no config settings"
        )


LIGHT_KINDS = ("echo", "shell")
"""The kinds a daemon imports as it starts (a few ms): importing one later, on a host out
of file descriptors, would fail (the Claude kinds, heavy, stay imported on first use)."""


def load_kinds(kinds: tuple[str, ...] = LIGHT_KINDS) -> None:
    """Import the modules of `kinds` now. Raises `ImportError` as an import would."""
    for kind in kinds:
        importlib.import_module(AGENT_KINDS[kind].partition(":")[0])


def get_agent(kind: str, host_config: Mapping[str, Any] | None = None) -> Agent:
    """An agent of `kind`, given its host-side settings (`Settings.agents[kind]`)."""
    target = AGENT_KINDS.get(kind)
    if target is None:
        raise ConfigError(f"unknown agent kind {kind!r} (known: {', '.join(sorted(AGENT_KINDS))})")
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise ConfigError(f"agent kind {kind!r} is not available: {exc}") from exc
    agent: Agent = cls(host_config)
    return agent

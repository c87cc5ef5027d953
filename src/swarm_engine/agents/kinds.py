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
}
COMMAND_KINDS = frozenset({"shell"})
"""The kinds that run an agent's `command`."""


def check_definition(agent: AgentSpec) -> None:
    """Kind-specific checks of a definition, with nothing of the host's (no API key is
    needed): `config` must suit the kind (only `claude` takes settings) and only a kind in
    `COMMAND_KINDS` takes a `command`. Raises `ConfigError` naming the field."""
    if agent.command is not None and agent.kind not in COMMAND_KINDS:
        raise ConfigError(f"command: kind {agent.kind!r} runs no command")
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
            raise ConfigError(f"config.{first_error(exc)}") from exc
    elif agent.config:
        raise ConfigError(
            f"config.{sorted(agent.config)[0]}: kind {agent.kind!r} takes no config settings"
        )


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

"""Agent kinds by name, imported lazily (the Claude kind pulls in the anthropic SDK)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from swarm_engine.agents.base import Agent
from swarm_engine.errors import ConfigError

AGENT_KINDS: dict[str, str] = {
    "echo": "swarm_engine.agents.echo:EchoAgent",
    "shell": "swarm_engine.agents.shell:ShellAgent",
    "claude": "swarm_engine.agents.claude.agent:ClaudeAgent",
}


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

"""Agents every registry has from the start."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from swarm_engine.models import AgentSpec

BUILTIN_REFS = frozenset(
    (name, "1.0.0")
    for name in (
        "echo", "shell", "_template:claude-agent", "claude", "_template:claude-code",
        "claude-code",
    )
)  # fmt: skip
"""(name, version) of every built-in agent: a registry that holds them all needs no seeding,
so opening one does not build the specs (a test checks this is `builtin_agents()`)."""
BUILTIN_VERSIONS = dict(BUILTIN_REFS)
"""A built-in agent's name -> its one version. These names are the code's: no other
version can be registered, and the engine runs the built-in spec, whatever a registry row
of that name holds (a row is any writer's)."""


def builtin_agents() -> list[AgentSpec]:
    from swarm_engine.agents.claude.settings import DEFAULT_CONFIG
    from swarm_engine.agents.claude_code.settings import DEFAULT_CONFIG as CLAUDE_CODE_CONFIG
    from swarm_engine.models import AgentSpec

    claude_config = dict(DEFAULT_CONFIG)  # the Claude kind owns its defaults
    return [
        AgentSpec(
            name="echo",
            version="1.0.0",
            kind="echo",
            description="Returns its inputs as its outputs (round trip through the VM).",
            timeout_seconds=60,
            memory_mb=256,
        ),
        AgentSpec(
            name="shell",
            version="1.0.0",
            kind="shell",
            description=(
                "Runs inputs.command with sh in the VM; outputs stdout, stderr, exit_code and "
                "any JSON written to $SWARM_OUTPUTS."
            ),
            inputs={
                "type": "object",
                "required": ["command"],
                "properties": {"command": {"type": "string"}},
            },
            timeout_seconds=600,
        ),
        AgentSpec(
            name="_template:claude-agent",
            version="1.0.0",
            kind="claude",
            description="Template for Claude coding agents: copy it into an agent.yaml.",
            config=claude_config,
            timeout_seconds=1800,
            memory_mb=1024,
        ),
        AgentSpec(
            name="claude",
            version="1.0.0",
            kind="claude",
            description="Claude coding agent: works on the ticket inside its VM with shell and file tools.",
            config=claude_config,
            timeout_seconds=1800,
            memory_mb=1024,
        ),
        AgentSpec(
            name="_template:claude-code",
            version="1.0.0",
            kind="claude-code",
            description="Template for Claude Code agents: copy it into an agent.yaml.",
            config=dict(CLAUDE_CODE_CONFIG),
            timeout_seconds=1800,
            memory_mb=2048,
        ),
        AgentSpec(
            name="claude-code",
            version="1.0.0",
            kind="claude-code",
            description="Claude Code, headless in the VM; the key stays on the host (metered gateway).",
            config=dict(CLAUDE_CODE_CONFIG),
            timeout_seconds=1800,
            memory_mb=2048,
        ),
    ]


@functools.cache
def builtin_spec(name: str) -> AgentSpec:
    """The built-in agent `name`'s spec, as the code defines it (`KeyError` for no such)."""
    return {spec.name: spec for spec in builtin_agents()}[name]

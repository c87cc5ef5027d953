"""The agent contract: an agent kind runs one step inside a VM it is handed.

Agent kinds (`echo`, `shell`, `claude`, ...) are chosen by name from
`swarm_engine.agents.kinds.AGENT_KINDS`. The engine owns the VM's life; the agent only
uses it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from swarm_engine.models import AgentSpec, Usage
from swarm_engine.vm.base import VM

LogCallback = Callable[[str, str], Awaitable[None] | None]
"""(stream, text): stream is 'stdout', 'stderr' or 'agent'."""


@dataclass
class StepContext:
    """Everything a step needs; built by the engine for each step attempt."""

    vm: VM
    agent: AgentSpec
    inputs: dict[str, Any]
    ticket: Mapping[str, Any]
    step_id: str
    run_id: int
    artifacts_dir: Path
    timeout_seconds: float
    log: LogCallback | None = None
    host_env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class StepOutcome:
    """What an agent returns. `error` set means the step failed."""

    outputs: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    error: str | None = None
    usage: Usage = field(default_factory=Usage)

    @property
    def ok(self) -> bool:
        return self.error is None


class Agent(Protocol):
    """One agent kind. Constructed as `Kind(host_config)` with the host-side settings
    `Settings.agents[kind]` (never sent to the VM). `run` must not raise for ordinary
    step failures: it returns a `StepOutcome` with `error` set (and the usage so far)."""

    kind: str

    def preflight(self, agent: AgentSpec) -> None:
        """Check host-side needs (API keys, ...) before any VM boots; raise `AgentError`."""
        ...

    async def run(self, ctx: StepContext) -> StepOutcome: ...

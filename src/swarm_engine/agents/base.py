"""The agent contract: an agent kind runs one step inside a VM it is handed.

Agent kinds (`echo`, `shell`, `claude`, ...) are chosen by name from
`swarm_engine.agents.kinds.AGENT_KINDS`. The engine owns the VM's life; the agent only
uses it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, runtime_checkable

from swarm_engine.models import AgentSpec, Usage
from swarm_engine.vm.base import VM

if TYPE_CHECKING:
    from swarm_engine.agents.claude.settings import Price
    from swarm_engine.package_folders import HeldCopy

LogCallback = Callable[[str, str], Awaitable[None] | None]
"""(stream, text): stream is 'stdout', 'stderr' or 'agent'."""


@dataclass(frozen=True)
class ModelApiNeeds:
    """What a step asks of the model API gateway: its budget (stop once this many tokens,
    all four kinds, or this many USD are used) and price overrides (USD per million tokens,
    per model) that come before the host's and the built-in table."""

    max_tokens: int | None = None
    max_usd: float | None = None
    prices: Mapping[str, Price] = field(default_factory=dict)
    model: str | None = None
    """The model the agent will ask for, when it is known before the step runs: a USD
    budget on a model without a price is then refused before any VM boots."""


class ModelApi(Protocol):
    """The step's gateway, as an agent sees it (`StepContext.model_api`)."""

    env: Mapping[str, str]
    """For the VM: `ANTHROPIC_BASE_URL` (the gateway, as the VM reaches it) and
    `ANTHROPIC_API_KEY` (the step's token, never the key)."""

    def usage(self) -> Usage:
        """What the step's requests used so far, as the gateway counted it."""
        ...


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
    packages_dir: Path | None = None
    """Where `agent register` copies packages (`<home>/packages`): an agent's package is
    read only from `<packages_dir>/<name>/<version>` (`agents.files.package_root`); None:
    an agent with a package fails."""
    package: HeldCopy | None = None
    """The copy of the agent's package the step's run holds (the files it was planned
    with, `agents.files.hold_package`): read before the link. None: the link's."""
    log: LogCallback | None = None
    host_env: Mapping[str, str] = field(default_factory=dict)
    model_api: ModelApi | None = None
    """The step's model API gateway, when its agent calls the API from the VM."""
    inputs_json: str | None = None
    """`inputs` as JSON, as the step's row holds them (measured against their cap when
    they were rendered): what `agents.files.put_inputs` writes, not serialized again.
    None: `inputs` is written out afresh."""
    on_usage: Callable[[Usage], None] | None = None
    """Told, by an agent that counts its usage itself (`claude`), the usage billed so far
    when its run is cancelled (a step stopped from outside: its ticket's timeout, a
    cancel, the engine's abort), before the cancel goes on: its `cancelled` row keeps it."""


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


@runtime_checkable
class UsesModelApi(Protocol):
    """An agent kind whose code in the VM may call the model API: the engine then opens a
    gateway for each of its steps (`swarm_engine.gateway`)."""

    def model_api(self, agent: AgentSpec) -> ModelApiNeeds | None:
        """What the step needs of the gateway, or None when this agent makes no calls."""
        ...


@runtime_checkable
class UsesHostTools(Protocol):
    """An agent kind that runs a tool the engine installs on the host (Claude Code)."""

    async def prepare(
        self, agent: AgentSpec, log: LogCallback | None
    ) -> tuple[tuple[str, str], ...]:
        """Make sure the tool is there (installing it if the host allows), before the VM
        boots; return the read-only host folders to show in the VM (`VMSpec.mounts`).
        Raises `AgentError` (one line) when it cannot."""
        ...


_IMPLEMENTS: dict[tuple[type, str], bool] = {}
"""(agent class, Protocol's name) -> whether the class implements it (a few entries)."""


def _implements(agent: object, protocol: Any) -> bool:
    """`isinstance(agent, protocol)` for a runtime-checkable Protocol of methods only,
    answered once per agent class (`issubclass`): an agent kind's methods are its
    class's, and the Protocol's own check looks up every member each time (~10 us of the
    event loop per step)."""
    key = (type(agent), protocol.__name__)
    known = _IMPLEMENTS.get(key)
    if known is None:
        known = _IMPLEMENTS[key] = issubclass(key[0], protocol)
    return known


def uses_model_api(agent: object) -> TypeGuard[UsesModelApi]:
    return _implements(agent, UsesModelApi)


def uses_host_tools(agent: object) -> TypeGuard[UsesHostTools]:
    return _implements(agent, UsesHostTools)

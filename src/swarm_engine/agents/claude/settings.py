"""Settings of the Claude agent kind: the agent's `config:` block and the host-side block.

Two places configure a Claude step:

* the agent definition (`agent.yaml`, `config:`), parsed into `ClaudeConfig`;
* the host (`Settings.agents["claude"]`, i.e. `[agents.claude]` in config.toml), parsed into
  `HostConfig`. Only the host may say where the API key comes from and where it goes (the
  endpoint, `base_url`); an agent definition may come from someone else's package and must
  not make the host run a command or send its key to another server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from swarm_engine.errors import ConfigError
from swarm_engine.models import first_error
from swarm_engine.records import MAX_STEP_COST_USD, MAX_STEP_TOKENS

ToolName = Literal["bash", "read_file", "write_file", "edit_file", "list_dir"]
ALL_TOOLS: tuple[ToolName, ...] = ("bash", "read_file", "write_file", "edit_file", "list_dir")

DEFAULT_MODEL = "claude-sonnet-4-6"
MODEL_RE = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$"
"""A model name or alias (`claude-sonnet-4-6`, `opus`, `us.anthropic.claude-...:0`): never
empty, an option (`-p`) or a second line. Both Claude kinds hold `model` to it."""

DEFAULT_SYSTEM = (
    "You are a careful software engineer working alone inside an isolated Linux VM. "
    "Your working folder is /workspace; every path you use is relative to it and must stay "
    "inside it. Use the tools to inspect, create, edit and run files there. Work step by "
    "step, check your work by running it, and when the task is done reply with a short "
    "final answer that states what you did and the result."
)

MAX_TRANSCRIPT_BYTES = 8 * 1024 * 1024
"""`max_transcript_bytes` unless the agent says otherwise: more than any model's context
window holds as text (1M tokens are about 4 MB), under the API's 32 MB request limit."""

DEFAULT_CONFIG: dict[str, Any] = {
    "model": DEFAULT_MODEL,
    "max_tokens": 8192,
    "max_turns": 40,
    "tools": list(ALL_TOOLS),
    "budget": {"max_usd": 5.0},
}
"""What the registry's `_template:claude-agent` and ready agent `claude` carry as `config`."""

HOST_ONLY_KEYS = frozenset({"api_key_file", "api_key_command", "base_url", "allow_unisolated"})
"""Keys of `HostConfig` that an agent's `config:` may not hold: where the key comes from
(a file, a command the host would run) and where it is sent (the endpoint)."""


def host_only_error(key: str) -> str:
    """Why `key` is refused in an agent's `config:`, to follow the key's name."""
    if key == "base_url":
        return (
            "can only be set on the host (base_url under [agents.claude] in config.toml, or "
            "ANTHROPIC_BASE_URL): the endpoint receives the host's API key"
        )
    return "can only be set on the host ([agents.claude] in config.toml), not in agent.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PRICE_MAX = MAX_STEP_COST_USD
"""The most a price may be, in USD per million tokens: beyond it no cost is believable
(`records.MAX_STEP_COST_USD`), and a step's cost stays finite."""


class Price(_Strict):
    """USD per million tokens. Cache prices default to 1.25x (write) and 0.1x (read) input."""

    input: float = Field(strict=True, allow_inf_nan=False, ge=0, le=PRICE_MAX)
    output: float = Field(strict=True, allow_inf_nan=False, ge=0, le=PRICE_MAX)
    cache_write: float | None = Field(
        default=None, strict=True, allow_inf_nan=False, ge=0, le=PRICE_MAX
    )
    cache_read: float | None = Field(
        default=None, strict=True, allow_inf_nan=False, ge=0, le=PRICE_MAX
    )


class Budget(_Strict):
    """Stop the loop once the step has used this much (checked between turns): a whole
    number of tokens and a finite amount (no budget is no `budget:`, never `.inf`), at most
    what a step is believed to use (`records.MAX_STEP_TOKENS`, `MAX_STEP_COST_USD`)."""

    max_tokens: int | None = Field(default=None, strict=True, gt=0, le=MAX_STEP_TOKENS)
    max_usd: float | None = Field(
        default=None, strict=True, allow_inf_nan=False, gt=0, le=MAX_STEP_COST_USD
    )


class RetrySettings(_Strict):
    """Retries of one API request: 408/409/429/5xx/529, timeouts, connection errors and
    malformed responses. Backoff is `backoff_seconds * backoff_factor**n`, capped; a
    `retry-after` header from the server is honoured up to the cap."""

    max_retries: int = Field(default=4, strict=True, ge=0, le=20)
    backoff_seconds: float = Field(default=1.0, strict=True, ge=0, le=600)
    backoff_factor: float = Field(default=2.0, strict=True, ge=1, le=10)
    max_backoff_seconds: float = Field(default=30.0, strict=True, ge=0, le=3600)


class ClaudeConfig(_Strict):
    """The `config:` block of an agent of kind `claude`. Numbers are strict, as in the
    agent definition (models.py): an integer, a bool, a number, never text."""

    model: str = Field(default=DEFAULT_MODEL, pattern=MODEL_RE)
    """The API's `model`: a name (as for `claude-code`), never empty or a second line."""
    system: str | None = None
    max_tokens: int = Field(default=8192, strict=True, ge=1, le=1_000_000)
    max_turns: int = Field(default=40, strict=True, ge=1, le=10_000)
    temperature: float | None = Field(default=None, strict=True, ge=0, le=1)
    tools: tuple[ToolName, ...] = ALL_TOOLS
    budget: Budget = Field(default_factory=Budget)
    prices: dict[str, Price] = Field(default_factory=dict)
    request_timeout: float = Field(default=600.0, strict=True, gt=0, le=3600)
    tool_timeout: float = Field(default=300.0, strict=True, gt=0, le=7 * 24 * 3600)
    max_tool_output: int = Field(default=30_000, strict=True, ge=256, le=1_000_000)
    max_transcript_bytes: int = Field(
        default=MAX_TRANSCRIPT_BYTES, strict=True, ge=64 * 1024, le=32 * 1024 * 1024
    )
    """The most the conversation sent back to the model each turn (`messages`, as compact
    UTF-8 JSON) may hold: the step fails before a request that would carry more (at most
    32 MiB, the Messages API's request limit)."""
    retry: RetrySettings = Field(default_factory=RetrySettings)

    @property
    def system_prompt(self) -> str:
        return self.system if self.system is not None else DEFAULT_SYSTEM


class HostConfig(_Strict):
    """`Settings.agents["claude"]`: host-side settings that agent definitions cannot set.
    `base_url` is the endpoint that receives the key (after `ANTHROPIC_BASE_URL` on the host;
    default https://api.anthropic.com)."""

    api_key_file: str | None = None
    api_key_command: str | list[str] | None = None
    base_url: str | None = None
    prices: dict[str, Price] = Field(default_factory=dict)
    retry: RetrySettings | None = None
    allow_unisolated: bool = False
    """Issue 9: run Claude steps even in a VM without isolation (the process backend with
    `isolation = "none"`), where the model's commands run on the host. Off: refused."""


def parse_config(config: Mapping[str, Any], agent_name: str = "claude") -> ClaudeConfig:
    """Validate an agent's `config:` block; `ConfigError` names the first bad key."""
    bad = sorted(HOST_ONLY_KEYS & set(config))
    if bad:
        raise ConfigError(f"agent {agent_name!r}: {bad[0]} {host_only_error(bad[0])}")
    try:
        return ClaudeConfig.model_validate(dict(config))
    except ValidationError as exc:
        raise ConfigError(f"agent {agent_name!r} config {first_error(exc)}") from exc


def parse_host_config(config: Mapping[str, Any] | None) -> HostConfig:
    from swarm_engine.typecheck import type_problem

    problem = type_problem(HostConfig, dict(config or {}), "setting agents.claude")
    if problem:  # TOML and JSON values are typed: `install = "no"` is not a switch
        raise ConfigError(problem)
    try:
        return HostConfig.model_validate(dict(config or {}))
    except ValidationError as exc:
        raise ConfigError(f"setting {first_error(exc, 'agents.claude')}") from exc

"""The `claude` agent kind: Claude works on the ticket with tools that act inside the VM."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from swarm_engine.agents.base import StepContext, StepOutcome
from swarm_engine.agents.claude.keys import check_key_source, resolve_api_key_async
from swarm_engine.agents.claude.pricing import price_for
from swarm_engine.agents.claude.session import Session
from swarm_engine.agents.claude.settings import (
    ClaudeConfig,
    HostConfig,
    Price,
    RetrySettings,
    parse_config,
    parse_host_config,
)
from swarm_engine.errors import ConfigError, SwarmError
from swarm_engine.models import AgentSpec, Usage

BASE_URL_ENV = "ANTHROPIC_BASE_URL"


UNISOLATED = (
    'claude refuses a VM without isolation (process backend, isolation = "none"): the '
    "model's commands would run on the host; use bubblewrap or the qemu backend, or set "
    "allow_unisolated = true under [agents.claude]"
)


class ClaudeAgent:
    """Agent kind `claude`.

    `host_config` is `Settings.agents["claude"]`; when not given it is read from the
    settings (`load_settings()`) the first time it is needed. `environ` is the host
    environment (default: `os.environ`); a step's `ctx.host_env` is layered on top.
    """

    kind = "claude"

    def __init__(
        self,
        host_config: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._host_raw = host_config
        self._host: HostConfig | None = None
        self._environ = environ

    def configure(self, host_config: Mapping[str, Any] | None) -> None:
        """Set the host-side settings (the engine calls this with `Settings.agents['claude']`)."""
        self._host_raw = dict(host_config or {})
        self._host = None

    def preflight(self, agent: AgentSpec) -> None:
        config = parse_config(agent.config, agent.name)
        host = self.host_config()
        check_key_source(host, self._env())  # (no file read, no command run: the claim's)
        if config.budget.max_usd is not None and self._price(config, host) is None:
            raise ConfigError(
                f"agent {agent.name!r}: budget.max_usd needs a price for model "
                f"{config.model!r}; add it under config.prices"
            )

    async def run(self, ctx: StepContext) -> StepOutcome:
        env = self._env(ctx.host_env)
        try:
            config = parse_config(ctx.agent.config, ctx.agent.name)
            host = self.host_config()
            api_key = await resolve_api_key_async(host, env)
        except SwarmError as exc:
            return StepOutcome(exit_code=1, error=str(exc), usage=Usage(stop_reason="error"))
        if ctx.vm.info().isolation == "none" and not host.allow_unisolated:  # issue 9
            return StepOutcome(exit_code=1, error=UNISOLATED, usage=Usage(stop_reason="error"))
        session = Session(
            ctx,
            config,
            api_key=api_key,
            # where the key goes is the host's to say: never the agent definition's
            base_url=env.get(BASE_URL_ENV) or host.base_url,
            price=self._price(config, host),
            retry=self._retry(ctx.agent, config, host),
        )
        try:
            return await session.run()
        except asyncio.CancelledError:  # stopped from outside: the usage billed so far
            if ctx.on_usage is not None:
                ctx.on_usage(session.usage)
            raise

    def host_config(self) -> HostConfig:
        if self._host is None:
            raw = self._host_raw
            if raw is None:
                from swarm_engine.config import load_settings

                raw = load_settings().agents.get("claude", {})
            self._host = parse_host_config(raw)
        return self._host

    def _env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if self._environ is None else self._environ)
        env.update(extra or {})
        return env

    @staticmethod
    def _price(config: ClaudeConfig, host: HostConfig) -> Price | None:
        return price_for(config.model, host.prices, config.prices)

    @staticmethod
    def _retry(agent: AgentSpec, config: ClaudeConfig, host: HostConfig) -> RetrySettings:
        if "retry" not in agent.config and host.retry is not None:
            return host.retry
        return config.retry

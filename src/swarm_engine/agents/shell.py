"""`shell`: runs a command in the VM.

The command comes from the agent definition (`command:` in agent.yaml, where
`${inputs.*}` and `${ticket.*}` are substituted) or, for the built-in `shell` agent,
from `inputs.command`. The agent's package files are copied into the workspace first.
Outputs: stdout, stderr, exit_code, plus the keys of any JSON object the command wrote
to `$SWARM_OUTPUTS`. A non-zero exit or a timeout fails the step.
"""

from __future__ import annotations

import inspect
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from swarm_engine.agents.base import StepContext, StepOutcome
from swarm_engine.agents.files import (
    ENV_PRELUDE,
    put_inputs,
    read_outputs_file,
    tail,
    upload_package,
)
from swarm_engine.errors import AgentError
from swarm_engine.models import AgentSpec
from swarm_engine.templating import render
from swarm_engine.vm.base import Stream


class ShellAgent:
    kind = "shell"

    def __init__(self, host_config: Mapping[str, Any] | None = None) -> None:
        self.host_config = dict(host_config or {})

    def preflight(self, agent: AgentSpec) -> None:
        return None

    def command(self, ctx: StepContext) -> str:
        spec: Any = (
            ctx.agent.command if ctx.agent.command is not None else ctx.inputs.get("command")
        )
        if spec is None:
            raise AgentError(f"agent {ctx.agent.ref} has no command and inputs.command is missing")
        spec = render(spec, {"inputs": ctx.inputs, "ticket": dict(ctx.ticket)})
        if isinstance(spec, list):
            return " ".join(shlex.quote(str(a)) for a in spec)
        if not isinstance(spec, str) or not spec.strip():
            raise AgentError("command must be a non-empty string or list")
        return spec

    async def run(self, ctx: StepContext) -> StepOutcome:
        try:
            command = self.command(ctx)
        except AgentError as exc:
            return StepOutcome(error=str(exc))
        if ctx.agent.package_path and Path(ctx.agent.package_path).is_dir():
            await upload_package(ctx.vm, Path(ctx.agent.package_path))
        await put_inputs(ctx.vm, ctx.inputs)
        env = {k: str(v) for k, v in ctx.agent.env.items()}
        for key, value in ctx.inputs.items():
            if isinstance(value, str | int | float | bool) and key.isidentifier():
                env[f"INPUT_{key.upper()}"] = str(value)

        async def stream(name: Stream, chunk: bytes) -> None:
            if ctx.log is not None:
                maybe = ctx.log(name, chunk.decode(errors="replace"))
                if inspect.isawaitable(maybe):
                    await maybe

        result = await ctx.vm.exec(
            ENV_PRELUDE + command, env=env, timeout=ctx.timeout_seconds, on_output=stream
        )
        outputs: dict[str, Any] = {
            "stdout": result.stdout.decode(errors="replace"),
            "stderr": result.stderr.decode(errors="replace"),
            "exit_code": result.exit_code,
        }
        if result.timed_out:
            return StepOutcome(
                outputs=outputs,
                exit_code=result.exit_code,
                error=f"timed out after {ctx.timeout_seconds:g}s; process tree killed",
            )
        try:
            written = await read_outputs_file(ctx.vm)
        except AgentError as exc:
            return StepOutcome(outputs=outputs, exit_code=result.exit_code, error=str(exc))
        if written:
            outputs.update(written)
        if result.exit_code != 0:
            detail = tail(result.stderr) or tail(result.stdout)
            return StepOutcome(
                outputs=outputs,
                exit_code=result.exit_code,
                error=f"command exited with {result.exit_code}" + (f": {detail}" if detail else ""),
            )
        return StepOutcome(outputs=outputs, exit_code=0)

"""`echo`: returns its inputs as its outputs, by a round trip through the VM: their JSON
goes to `cat` on its standard input and comes back on its standard output (no file is
written into the VM), at most `MAX_FILE_BYTES` of it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from swarm_engine.agents.base import StepContext, StepOutcome
from swarm_engine.agents.files import tail
from swarm_engine.models import AgentSpec
from swarm_engine.records import readable_json
from swarm_engine.vm.base import MAX_FILE_BYTES


class EchoAgent:
    kind = "echo"

    def __init__(self, host_config: Mapping[str, Any] | None = None) -> None:
        self.host_config = dict(host_config or {})

    def preflight(self, agent: AgentSpec) -> None:
        return None

    async def run(self, ctx: StepContext) -> StepOutcome:
        sent = (ctx.inputs_json or json.dumps(ctx.inputs, default=str)).encode()
        if len(sent) > MAX_FILE_BYTES:  # what one round trip moves on every backend
            return StepOutcome(
                exit_code=1,
                error=f"echo failed: inputs of {len(sent)} bytes as JSON, more than the "
                f"{MAX_FILE_BYTES} it sends through a VM",
            )
        result = await ctx.vm.exec(["cat"], stdin=sent, timeout=ctx.timeout_seconds)
        if result.timed_out:
            return StepOutcome(
                exit_code=result.exit_code,
                error=f"echo timed out after {ctx.timeout_seconds:g}s",
            )
        if not result.ok:
            why = tail(result.stderr) or f"exit code {result.exit_code}"
            return StepOutcome(exit_code=result.exit_code, error=f"echo failed: {why}")
        if result.stdout_bytes != len(sent):
            return StepOutcome(
                exit_code=1,
                error=f"echo failed: {len(sent)} bytes sent, {result.stdout_bytes} came back",
            )
        # stdout is kept bounded (head and tail): a large round trip, whole in length (above),
        # is read from what was sent
        try:  # (the engine sends no inputs its readers refuse: `engine.bounds`)
            outputs = readable_json(sent if result.stdout_cut else result.stdout)
        except ValueError as exc:
            return StepOutcome(
                exit_code=1, error=f"echo failed: what came back is not readable JSON ({exc})"
            )
        if ctx.log:
            maybe = ctx.log("stdout", result.stdout.decode())
            if maybe is not None:
                await maybe
        return StepOutcome(outputs=outputs, exit_code=0)

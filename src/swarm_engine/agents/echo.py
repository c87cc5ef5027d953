"""`echo`: returns its inputs as its outputs, by a round trip through the VM."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from swarm_engine.agents.base import StepContext, StepOutcome
from swarm_engine.agents.files import INPUTS_FILE, put_inputs, tail
from swarm_engine.models import AgentSpec
from swarm_engine.records import readable_json


class EchoAgent:
    kind = "echo"

    def __init__(self, host_config: Mapping[str, Any] | None = None) -> None:
        self.host_config = dict(host_config or {})

    def preflight(self, agent: AgentSpec) -> None:
        return None

    async def run(self, ctx: StepContext) -> StepOutcome:
        await put_inputs(ctx.vm, ctx.inputs)
        result = await ctx.vm.exec(["cat", INPUTS_FILE], timeout=ctx.timeout_seconds)
        if not result.ok:
            return StepOutcome(
                exit_code=result.exit_code, error=f"echo failed: {tail(result.stderr)}"
            )
        # stdout is bounded (head and tail): a large round trip is read back as a file
        raw = await ctx.vm.get_file(INPUTS_FILE) if result.stdout_cut else result.stdout
        outputs = readable_json(raw)
        if ctx.log:
            maybe = ctx.log("stdout", result.stdout.decode())
            if maybe is not None:
                await maybe
        return StepOutcome(outputs=outputs, exit_code=0)

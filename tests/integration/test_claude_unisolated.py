"""The `claude` kind refuses a VM without isolation unless the host allows it (issue 9).

A real process VM with `isolation = "none"`; the API endpoint is a listener on 127.0.0.1
that must see no connection when the step is refused.
"""

from __future__ import annotations

import socket
from pathlib import Path

from swarm_engine.agents.base import StepContext
from swarm_engine.agents.claude.agent import UNISOLATED, ClaudeAgent
from swarm_engine.models import AgentSpec
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.process import ProcessBackend, ProcessConfig


async def test_claude_refuses_an_unisolated_vm(tmp_path: Path) -> None:
    endpoint = socket.create_server(("127.0.0.1", 0))
    endpoint.setblocking(False)
    port = endpoint.getsockname()[1]
    backend = ProcessBackend(tmp_path / "home", ProcessConfig(isolation="none"))
    vm = await backend.boot("vm-claude0001", VMSpec(timeout_seconds=10))
    try:
        assert vm.info().isolation == "none"
        agent = ClaudeAgent({}, {"ANTHROPIC_API_KEY": "sk-ant-test-0000",
                                 "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}"})  # fmt: skip
        ctx = StepContext(vm=vm, agent=AgentSpec(name="c", kind="claude", config={}),
                          inputs={"task": "x"}, ticket={"id": 1}, step_id="main", run_id=1,
                          artifacts_dir=tmp_path / "art", timeout_seconds=10)  # fmt: skip
        outcome = await agent.run(ctx)
        assert outcome.error == UNISOLATED and outcome.exit_code == 1
        try:
            endpoint.accept()
            raise AssertionError("the endpoint was contacted")
        except BlockingIOError:
            pass  # nothing connected
    finally:
        await vm.destroy()
        endpoint.close()

"""Two steps at once, each with its own gateway and its own process sandbox: a step's
token works only through its own gateway, and no sandbox can reach another's gateway (its
port is forwarded into its own VM only). Real sandboxes (bubblewrap + pasta), real
listeners, the local Messages API server; the client in the VMs is Python's urllib."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from tests.support.messages_server import MessagesServer, text, usage

from swarm_engine.agents.base import ModelApiNeeds
from swarm_engine.agents.claude.settings import HostConfig
from swarm_engine.gateway.proxy import StepGateway
from swarm_engine.gateway.settings import GatewaySettings
from swarm_engine.gateway.step import open_step_gateway
from swarm_engine.vm.backends import create_backend
from swarm_engine.vm.base import VM, VMSpec
from swarm_engine.vm.process import bwrap_works, pasta_problem

KEY = "sk-ant-api03-two-vms-KEY-0000SECRET9999"
pytestmark = pytest.mark.skipif(
    not bwrap_works() or pasta_problem() is not None, reason="needs bubblewrap and pasta"
)

CALL = """
import json, sys, urllib.error, urllib.request
url, token = sys.argv[1], sys.argv[2]
body = json.dumps({"model": "claude-sonnet-4-6", "max_tokens": 5,
                   "messages": [{"role": "user", "content": "x"}]}).encode()
request = urllib.request.Request(url + "/v1/messages", data=body, method="POST", headers={
    "x-api-key": token, "anthropic-version": "2023-06-01", "content-type": "application/json"})
try:
    with urllib.request.urlopen(request, timeout=30) as answer:
        print(answer.status)
except urllib.error.HTTPError as exc:
    print(exc.code, json.loads(exc.read())["error"]["message"])
except OSError as exc:
    print("unreachable")
"""


async def call(vm: VM, url: str, token: str) -> str:
    done = await vm.exec(["python3", "call.py", url, token], timeout=60)
    assert done.exit_code == 0, done.stderr
    return done.stdout.decode().strip()


@pytest.fixture(scope="module")
def server() -> Iterator[MessagesServer]:
    with MessagesServer(api_key=KEY, fallback=text("ok", used=usage(3, 2))) as srv:
        yield srv


@pytest.fixture
async def two(
    tmp_path: Path, server: MessagesServer
) -> AsyncIterator[tuple[tuple[VM, StepGateway], tuple[VM, StepGateway]]]:
    backend = create_backend("process", tmp_path / "home", {})
    async with AsyncExitStack() as stack:
        pairs = []
        for name in ("a", "b"):
            gw = await stack.enter_async_context(
                open_step_gateway(
                    settings=GatewaySettings(),
                    host=HostConfig(),
                    environ={"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url},
                    needs=ModelApiNeeds(),
                )
            )
            vm = await backend.boot(f"vm-{name}", VMSpec(network=True, allowed_ports=(gw.port,)))
            stack.push_async_callback(vm.destroy)
            await vm.put_file("call.py", CALL.encode())
            pairs.append((vm, gw))
        yield pairs[0], pairs[1]
    await backend.close()


async def test_a_token_works_only_on_its_own_gateway_from_its_own_vm(
    two: tuple[tuple[VM, StepGateway], tuple[VM, StepGateway]],
) -> None:
    (vm_a, gw_a), (vm_b, gw_b) = two
    url_a, token_a = gw_a.vm_env("127.0.0.1").values()
    url_b, token_b = gw_b.vm_env("127.0.0.1").values()
    assert url_a != url_b and token_a != token_b

    assert await call(vm_a, url_a, token_a) == "200"
    assert await call(vm_b, url_b, token_b) == "200"
    # B holds A's token (say a step leaked it): B's gateway refuses it...
    refused = await call(vm_b, url_b, token_a)
    assert refused.startswith("401 ") and "only the token of its own step" in refused
    # ...and A's gateway cannot be reached from B at all (only B's port is forwarded)
    assert await call(vm_b, url_a, token_a) == "unreachable"
    assert gw_a.usage().turns == 1 and gw_b.usage().turns == 1
    assert gw_a.meter.refused == 0 and gw_b.usage().input_tokens == 3

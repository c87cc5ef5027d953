"""Any command can use the model API without the key (issue 14): a shell agent that
declares `model_api` runs the real `anthropic` Python SDK inside its sandbox, through the
engine's gateway, against the local Messages API server. Everything goes through the real
`swarm-engine` command. What is checked: the step's recorded tokens equal the server's
sums; the key is nowhere in the VM (environment, files, processes), the store or the logs;
a step's token is refused once the step is over and from another VM; a budget stops a
runaway script with a clear reason; the gateway's ports are the engine's alone."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent, write_workflow
from tests.support.cli import query, swarm
from tests.support.messages_server import MessagesServer, text, usage
from tests.support.sdk_bundle import RUN, sdk_tarball, usable

from swarm_engine.config import load_settings
from swarm_engine.vm.qemu.doctor import unavailable
from swarm_engine.vm.qemu.folders import images_dir_for

KEY = "sk-ant-api03-gateway-acceptance-KEY-0000SECRET"
pytestmark = pytest.mark.skipif(usable() is not None, reason=f"SDK bundle: {usable()}")

SDK_CALLS = """
import hashlib, json, os, sys
import anthropic

client = anthropic.Anthropic(max_retries=0)   # ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY
one = client.messages.create(model="claude-sonnet-4-6", max_tokens=50,
                             messages=[{"role": "user", "content": "first"}])
with client.messages.stream(model="claude-sonnet-4-6", max_tokens=50,
                            messages=[{"role": "user", "content": "second"}]) as stream:
    two = stream.get_final_text()
answers = [one.content[0].text, two]
"""
# The same two calls with nothing but the standard library (for a guest without the SDK)
PLAIN_CALLS = """
import hashlib, json, os, urllib.request

def call(stream):
    body = json.dumps({"model": "claude-sonnet-4-6", "max_tokens": 50, "stream": stream,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(
        os.environ["ANTHROPIC_BASE_URL"] + "/v1/messages", data=body, method="POST",
        headers={"x-api-key": os.environ["ANTHROPIC_API_KEY"], "content-type": "application/json",
                 "anthropic-version": "2023-06-01"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        raw = answer.read().decode()
    if not stream:
        return json.loads(raw)["content"][0]["text"]
    events = [json.loads(line[5:]) for line in raw.splitlines() if line.startswith("data:")]
    return "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")

answers = [call(False), call(True)]
"""
SCAN = """
given = json.load(open(os.environ["SWARM_INPUTS"]))
wanted, size = given["key_sha256"], given["key_length"]

def holds(data, digest, length):
    # any run of characters of that length whose hash is the secret's
    for word in data.replace(b"\\0", b" ").replace(b"=", b" ").split():
        if len(word) == length and hashlib.sha256(word).hexdigest() == digest:
            return True
    return False

def holds_key(data):
    return holds(data, wanted, size)

# the search works: it finds this step's token where it is (the process's environment)
token = os.environ["ANTHROPIC_API_KEY"].encode()
assert holds(open("/proc/self/environ", "rb").read(), hashlib.sha256(token).hexdigest(), len(token))

found = []
for name, value in os.environ.items():
    if holds_key(value.encode()):
        found.append("env " + name)
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for part in ("environ", "cmdline"):
            try:
                if holds_key(open(f"/proc/{pid}/{part}", "rb").read()):
                    found.append(f"/proc/{pid}/{part}")
            except OSError:
                pass
for top in ("/workspace", "/tmp", "/etc", "/dev/shm", "/opt"):
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) != "/tmp/sdk"]
        for f in files:
            try:
                if holds_key(open(os.path.join(folder, f), "rb").read()):
                    found.append(os.path.join(folder, f))
            except OSError:
                pass
json.dump({"answers": answers, "found": found,
           "token_shaped": os.environ["ANTHROPIC_API_KEY"].startswith("sk-swarm-"),
           "base_url": os.environ["ANTHROPIC_BASE_URL"]},
          open(os.environ["SWARM_OUTPUTS"], "w"))
"""
# Runs inside the sandbox: two calls (one streamed), then a search for the key everywhere
# the sandbox can look. It knows the key only to look for it (the test writes it into the
# inputs as a hash, so the key itself never enters the VM).
CALL = SDK_CALLS + SCAN

AGENT = f"""
name: sdk-script
kind: shell
model_api: true
memory_mb: 1024
timeout_seconds: 120
command: {RUN} call.py
"""


def package(folder: Path, agent_yaml: str, files: dict[str, str]) -> Path:
    write_agent(folder, agent_yaml, files)
    shutil.copy(sdk_tarball(), folder / "sdk.tar.gz")
    return folder


def engine_env(server: MessagesServer) -> dict[str, str]:
    return {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}


def metered_run(
    home: Path, folder: Path, agent_yaml: str, script: str, *run_args: str, **env: str
) -> tuple[dict[str, object], dict[str, int]]:
    """Register the agent, run one ticket for it; check what every such run must show;
    return the step row and the server's usage sums."""
    with MessagesServer(api_key=KEY) as server:
        server.push(
            text("hello", used=usage(120, 30, 40, 10)), text("again", used=usage(80, 20, 0, 900))
        )
        write_agent(folder, agent_yaml, {"call.py": script})
        if "sdk.tar.gz" in agent_yaml:
            shutil.copy(sdk_tarball(), folder / "sdk.tar.gz")
        swarm(home, "agent", "register", str(folder), check=True)
        swarm(home, "ticket", "create", "--title", "sdk", "--agent", "sdk-script",
              "--input", f"key_sha256={hashlib.sha256(KEY.encode()).hexdigest()}",
              "--input", f"key_length={len(KEY)}", check=True)  # fmt: skip
        done = swarm(home, "run-ticket", "1", "--wait", *run_args, timeout=300,
                     **engine_env(server), **env)  # fmt: skip
        reported = server.reported_usage()
        seen_keys = {r.api_key for r in server.requests}
    assert done.returncode == 0, done.stdout + done.stderr
    assert seen_keys == {KEY}  # the gateway put the key in; the endpoint saw nothing else

    db = home / "tickets.db"
    step = query(db, "SELECT * FROM step_executions")[0]
    outputs = json.loads(step["outputs"])
    assert outputs["answers"] == ["hello", "again"]
    assert outputs["found"] == [] and outputs["token_shaped"] is True
    run = query(db, "SELECT * FROM workflow_runs")[0]
    for key, value in reported.items():  # the step's tokens are the server's sums
        assert step[key] == value and run[key] == value, key
    assert step["turns"] == 2
    assert step["cost_usd"] == pytest.approx((200 * 3 + 50 * 15 + 40 * 3.75 + 910 * 0.3) / 1e6)

    record = json.loads((Path(step["log_path"]).parent / "model_api.json").read_text())
    assert record["requests"] == 2 and record["rate_limited"] == record["server_errors"] == 0
    log_text = Path(step["log_path"]).read_text()
    assert "model API: claude-sonnet-4-6 in=120 out=30" in log_text
    # the key is nowhere under the home folder: databases (WAL too), logs, artifacts
    leaks = [p for p in home.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert leaks == []
    return {**step, "outputs": outputs}, reported


def test_an_sdk_script_in_the_sandbox_is_metered_and_never_sees_the_key(
    home: Path, tmp_path: Path
) -> None:
    step, _ = metered_run(home, tmp_path / "pkg", AGENT, CALL)
    assert str(step["outputs"]["base_url"]).startswith("http://127.0.0.1:29")  # type: ignore[index]


@pytest.mark.qemu
def test_a_script_in_a_microvm_is_metered_and_never_sees_the_key(
    home: Path, tmp_path: Path
) -> None:
    """The same through QEMU: the guest reaches its gateway at 10.0.2.100 (a `guestfwd` of
    the user-mode network); a plain-Python client, as the guest image has no SDK."""
    reason = unavailable(images_dir_for(load_settings().home))
    if reason is not None:
        pytest.skip(reason)
    agent = AGENT.replace(f"command: {RUN} call.py", "command: python3 call.py")
    step, _ = metered_run(home, tmp_path / "pkg", agent, PLAIN_CALLS + SCAN, "--backend", "qemu")
    assert str(step["outputs"]["base_url"]).startswith("http://10.0.2.100:29")  # type: ignore[index]


RUNAWAY = """
import anthropic
client = anthropic.Anthropic(max_retries=0)
while True:  # a runaway: whatever the API says, it asks again
    try:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=50,
                               messages=[{"role": "user", "content": "more"}])
        print("answered", flush=True)
    except anthropic.APIStatusError as exc:
        print("refused", exc.status_code, flush=True)
"""


def test_a_budget_stops_a_runaway_script_with_a_clear_reason(home: Path, tmp_path: Path) -> None:
    agent = AGENT.replace("model_api: true", "model_api: {budget: {max_tokens: 400}}").replace(
        "name: sdk-script", "name: runaway"
    )
    agent += "retry: {attempts: 3, backoff_seconds: 0}\n"  # a budget stop is final
    with MessagesServer(api_key=KEY, fallback=text("more", used=usage(100, 50))) as server:
        package(tmp_path / "pkg", agent, {"call.py": RUNAWAY})
        swarm(home, "agent", "register", str(tmp_path / "pkg"), check=True)
        swarm(home, "ticket", "create", "--title", "loop", "--agent", "runaway", check=True)
        done = swarm(home, "run-ticket", "1", "--wait", **engine_env(server))
        reported = server.reported_usage()
        answered = len(server.message_requests())
    assert done.returncode == 1, done.stdout + done.stderr
    steps = query(home / "tickets.db", "SELECT * FROM step_executions")
    assert len(steps) == 1  # not retried with a fresh budget
    step = steps[0]
    assert step["status"] == "failed" and step["stop_reason"] == "budget_exceeded"
    assert step["error"] == (
        "model API budget exceeded: token budget exceeded: 450 of 400 tokens used; "
        "the gateway refused the next request and the step was stopped"
    )
    assert answered == 3  # 150, 300, 450 tokens; the fourth request never left the host
    assert step["input_tokens"] == reported["input_tokens"] == 300
    assert step["output_tokens"] == reported["output_tokens"] == 150
    ticket = query(home / "tickets.db", "SELECT * FROM tickets")[0]
    assert "model API budget exceeded" in ticket["error"]


LEAK = """
name: leak-token
kind: shell
model_api: true
command: |
  printf '{"url": "%s", "token": "%s"}' "$ANTHROPIC_BASE_URL" "$ANTHROPIC_API_KEY" > "$SWARM_OUTPUTS"
"""
TRY = """
name: try-token
kind: shell
model_api: true
inputs: {type: object, properties: {url: {type: string}, token: {type: string}}}
command: python3 try.py
"""
TRY_PY = """
import json, os, urllib.error, urllib.request

given = json.load(open(os.environ["SWARM_INPUTS"]))

def call(url, token):
    body = json.dumps({"model": "claude-sonnet-4-6", "max_tokens": 5,
                       "messages": [{"role": "user", "content": "x"}]}).encode()
    request = urllib.request.Request(url + "/v1/messages", data=body, method="POST", headers={
        "x-api-key": token, "anthropic-version": "2023-06-01", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:
        return "unreachable"

json.dump({
    "old_token_old_gateway": call(given["url"], given["token"]),
    "old_token_this_gateway": call(os.environ["ANTHROPIC_BASE_URL"], given["token"]),
    "own_token": call(os.environ["ANTHROPIC_BASE_URL"], os.environ["ANTHROPIC_API_KEY"]),
    "leaked_is_other": given["token"] != os.environ["ANTHROPIC_API_KEY"],
}, open(os.environ["SWARM_OUTPUTS"], "w"))
"""
WORKFLOW = """
name: token-pass
steps:
  - id: first
    agent: leak-token
  - id: second
    agent: try-token
    inputs: {url: "${steps.first.outputs.url}", token: "${steps.first.outputs.token}"}
"""


def test_a_token_is_refused_once_its_step_is_over_and_from_another_vm(
    home: Path, tmp_path: Path
) -> None:
    """The first step hands its token and gateway URL on (as a compromised step could);
    the second step, in another VM, tries them."""
    with MessagesServer(api_key=KEY, fallback=text("ok", used=usage(5, 5))) as server:
        write_agent(tmp_path / "leak", LEAK)
        write_agent(tmp_path / "try", TRY, {"try.py": TRY_PY})
        write_workflow(tmp_path / "wf", WORKFLOW)
        swarm(home, "agent", "register", str(tmp_path / "leak"), check=True)
        swarm(home, "agent", "register", str(tmp_path / "try"), check=True)
        swarm(home, "workflow", "register", str(tmp_path / "wf"), check=True)
        swarm(home, "ticket", "create", "--title", "t", "--workflow", "token-pass", check=True)
        done = swarm(home, "run-ticket", "1", "--wait", **engine_env(server))
        reported = server.reported_usage()
    assert done.returncode == 0, done.stdout + done.stderr
    steps = {r["step_id"]: r for r in query(home / "tickets.db", "SELECT * FROM step_executions")}
    tried = json.loads(steps["second"]["outputs"])
    tried = {k: v for k, v in tried.items() if k not in ("stdout", "stderr", "exit_code")}
    assert tried == {
        "old_token_old_gateway": "unreachable",  # its gateway closed with its step
        "old_token_this_gateway": 401,  # a token is good on its own step's gateway only
        "own_token": 200,
        "leaked_is_other": True,
    }
    assert steps["second"]["input_tokens"] == reported["input_tokens"] == 5  # one call got through
    assert steps["first"]["input_tokens"] == 0


def test_the_gateway_ports_are_the_engines_alone(home: Path, tmp_path: Path) -> None:
    write_agent(
        tmp_path / "grab",
        "name: grab\nkind: shell\ncommand: 'true'\nvm: {network: true, allowed_ports: [29500]}\n",
    )
    swarm(home, "agent", "register", str(tmp_path / "grab"), check=True)
    swarm(home, "ticket", "create", "--title", "g", "--agent", "grab", check=True)
    done = swarm(home, "run-ticket", "1", "--wait")
    assert done.returncode == 1
    step = query(home / "tickets.db", "SELECT * FROM step_executions")[0]
    assert step["error"] == (
        "vm.allowed_ports: port 29500 is reserved for the model API gateway "
        "(29000-29999, [gateway] ports); declare model_api instead"
    )
    assert query(home / "tickets.db", "SELECT count(*) AS n FROM vms")[0]["n"] == 0


def test_an_unisolated_vm_gets_no_gateway_unless_the_host_allows_it(
    home: Path, tmp_path: Path
) -> None:
    write_agent(tmp_path / "leak", LEAK)
    swarm(home, "agent", "register", str(tmp_path / "leak"), check=True)
    swarm(home, "ticket", "create", "--title", "t", "--agent", "leak-token", check=True)
    unisolated = {
        "SWARM_BACKEND_OPTIONS": '{"process": {"isolation": "none"}}',
        "ANTHROPIC_API_KEY": KEY,
    }
    done = swarm(home, "run-ticket", "1", "--wait", **unisolated)
    assert done.returncode == 1
    step = query(home / "tickets.db", "SELECT * FROM step_executions")[0]
    assert step["error"].startswith("the model API gateway is not given to a VM without isolation")


def test_without_a_key_a_model_api_step_is_refused_before_any_vm_boots(
    home: Path, tmp_path: Path
) -> None:
    write_agent(tmp_path / "leak", LEAK)
    swarm(home, "agent", "register", str(tmp_path / "leak"), check=True)
    swarm(home, "ticket", "create", "--title", "t", "--agent", "leak-token", check=True)
    done = swarm(home, "run-ticket", "1", "--wait")
    assert done.returncode == 8, done.stdout + done.stderr
    assert done.stderr.startswith("error: ANTHROPIC_API_KEY is not set")
    assert query(home / "tickets.db", "SELECT count(*) AS n FROM vms")[0]["n"] == 0

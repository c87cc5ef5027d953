"""`kind: claude-code` through the whole engine: the real Claude Code CLI, headless in a
process sandbox and in a QEMU microVM, against the local Messages API server through the
step's gateway.

Claude Code is installed once per host (`/var/cache/swarm-engine/claude-code/<version>`
for root, else the user's cache), by the engine or by `python -m
swarm_engine.agents.claude_code.install`; these tests install it the same way when it is
missing, and are skipped, saying why, when that is impossible (no npm, no registry)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent
from tests.support.cli import query, swarm
from tests.support.messages_server import MessagesServer, Recorded, message, text, usage

from swarm_engine.agents.claude_code import install
from swarm_engine.agents.claude_code.settings import DEFAULT_VERSION, default_cache_dir
from swarm_engine.config import load_settings
from swarm_engine.errors import AgentError
from swarm_engine.vm.qemu.doctor import unavailable
from swarm_engine.vm.qemu.folders import images_dir_for

KEY = "sk-ant-api03-claude-code-KEY-0000SECRET9999"
AGENT = """
name: coder
kind: claude-code
memory_mb: 2048
timeout_seconds: 300
config:
  model: claude-sonnet-4-6
  max_turns: 5
  budget: {max_tokens: 100000}
"""


@pytest.fixture(scope="module")
def claude_code() -> Path:
    try:
        return install.ensure(default_cache_dir(), DEFAULT_VERSION)
    except AgentError as exc:
        pytest.skip(f"Claude Code {DEFAULT_VERSION} cannot be installed here: {exc}")


def write_call(path: str, content: str, used: dict[str, int]) -> dict[str, object]:
    block = {"type": "tool_use", "id": "toolu_w1", "name": "Write",
             "input": {"file_path": path, "content": content}}  # fmt: skip
    return message([block], "tool_use", used=used)


def test_claude_code_writes_a_file_in_its_sandbox_and_is_metered(
    claude_code: Path, home: Path, tmp_path: Path
) -> None:
    seen: list[Recorded] = []

    def answer(req: Recorded) -> dict[str, object]:
        seen.append(req)
        results = req.tool_results()
        assert results and "hello.txt" in str(results[0].get("content")), results
        return text("Wrote hello.txt.", used=usage(900, 12, 0, 700))

    with MessagesServer(api_key=KEY) as server:
        server.push(
            write_call("/workspace/hello.txt", "hello from claude code\n", usage(800, 40, 300, 0)),
            answer,
        )
        write_agent(tmp_path / "coder", AGENT)
        swarm(home, "agent", "register", str(tmp_path / "coder"), check=True)
        swarm(home, "ticket", "create", "--title", "Greet", "--description", "Write hello.txt",
              "--agent", "coder", check=True)  # fmt: skip
        done = swarm(home, "run-ticket", "1", "--wait", timeout=300,
                     ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=server.url)  # fmt: skip
        reported = server.reported_usage()
        requests = list(server.requests)
        errors = list(server.errors)
    assert done.returncode == 0, done.stdout + done.stderr
    assert errors == [] and len(seen) == 1
    assert {r.api_key for r in requests} == {KEY}
    first = requests[0]
    assert first.path.startswith("/v1/messages") and "Greet" in json.dumps(first.body)
    assert first.headers["user-agent"].startswith("claude-cli/")

    db = home / "tickets.db"
    step = query(db, "SELECT * FROM step_executions")[0]
    outputs = json.loads(step["outputs"])
    assert outputs["result"] == "Wrote hello.txt." and outputs["subtype"] == "success"
    assert outputs["changes"]["added"] == ["hello.txt"]
    for key, value in reported.items():  # recorded tokens are the server's sums...
        assert step[key] == value, key
    assert step["turns"] == 2 and step["stop_reason"] == "end_turn"
    assert outputs["usage_check"]["agree"] is True  # ...and what Claude Code says it used
    assert outputs["claude_code_usage"]["input_tokens"] == reported["input_tokens"]

    artifacts = Path(step["log_path"]).parent
    assert (artifacts / "workspace" / "hello.txt").read_text() == "hello from claude code\n"
    transcript = (artifacts / "transcript.jsonl").read_text().splitlines()
    assert json.loads(transcript[-1])["type"] == "result"
    assert "tool Write" in Path(step["log_path"]).read_text()
    leaks = [p for p in home.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert leaks == []


@pytest.mark.timeout(600)  # Claude Code under TCG: 41 s alone, minutes on a loaded host
@pytest.mark.parametrize("backend", ["process", pytest.param("qemu", marks=pytest.mark.qemu)])
def test_a_budget_stops_claude_code_mid_run(
    claude_code: Path, home: Path, tmp_path: Path, backend: str
) -> None:
    if backend == "qemu" and (reason := unavailable(images_dir_for(load_settings().home))):
        pytest.skip(reason)

    def busy(req: Recorded) -> dict[str, object]:
        block = {"type": "tool_use", "id": f"toolu_{len(req.messages)}", "name": "Bash",
                 "input": {"command": "echo working", "description": "work"}}  # fmt: skip
        return message([block], "tool_use", used=usage(500, 100))

    agent = AGENT.replace("max_tokens: 100000", "max_tokens: 1000").replace(
        "max_turns: 5", "max_turns: 50"
    )
    with MessagesServer(api_key=KEY, fallback=busy) as server:
        write_agent(tmp_path / "coder", agent)
        swarm(home, "agent", "register", str(tmp_path / "coder"), check=True)
        swarm(home, "ticket", "create", "--title", "Loop", "--agent", "coder", check=True)
        done = swarm(home, "run-ticket", "1", "--wait", "--backend", backend, timeout=600,
                     ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=server.url)  # fmt: skip
        reported = server.reported_usage()
        answered = len(server.message_requests())
    assert done.returncode == 1, done.stdout + done.stderr
    step = query(home / "tickets.db", "SELECT * FROM step_executions")[0]
    assert step["stop_reason"] == "budget_exceeded"
    assert step["error"].startswith(
        "model API budget exceeded: token budget exceeded: 1200 of 1000 tokens used"
    )
    assert answered == 2
    assert step["input_tokens"] == reported["input_tokens"] == 1000


# Run by Claude Code's Bash tool in the microVM: looks for the key (known here only by its
# hash) in every process's environment and command line and in the guest's files; the
# release's read-only drive (/opt/claude-code, 400 MB) is checked on the host instead.
SCAN = """
import hashlib, json, os
given = json.load(open(os.environ.get("SWARM_INPUTS") or ".swarm/inputs.json"))
wanted, size = given["key_sha256"], given["key_length"]

def holds_key(data):
    for word in data.replace(b"\\0", b" ").replace(b"=", b" ").split():
        if len(word) == size and hashlib.sha256(word).hexdigest() == wanted:
            return True
    return False

found, tokens, base_urls = [], set(), set()
for pid in filter(str.isdigit, os.listdir("/proc")):
    for part in ("environ", "cmdline"):
        try:
            data = open(f"/proc/{pid}/{part}", "rb").read()
        except OSError:
            continue
        if holds_key(data):
            found.append(f"/proc/{pid}/{part}")
        for entry in data.split(b"\\0"):
            if entry.startswith(b"ANTHROPIC_API_KEY="):
                tokens.add(entry.split(b"=", 1)[1].decode()[:9])
            if entry.startswith(b"ANTHROPIC_BASE_URL="):
                base_urls.add(entry.split(b"=", 1)[1].decode().split(":")[1])  # the host
for top in ("/workspace", "/tmp", "/etc", "/dev/shm", "/opt", "/run", "/var/tmp", "/root"):
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) != "/opt/claude-code"]
        for name in files:
            try:
                if holds_key(open(os.path.join(folder, name), "rb").read()):
                    found.append(os.path.join(folder, name))
            except OSError:
                pass
mounted = [line for line in open("/proc/mounts") if " /opt/claude-code " in line]
report = {"found": found, "tokens": sorted(tokens), "base_urls": sorted(base_urls),
          "mount": mounted}
json.dump(report, open("scan.json", "w"))
print("scanned", len(found))
"""


def bash_call(command: str, used: dict[str, int]) -> dict[str, object]:
    block = {"type": "tool_use", "id": "toolu_b1", "name": "Bash",
             "input": {"command": command, "description": "scan"}}  # fmt: skip
    return message([block], "tool_use", used=used)


@pytest.mark.qemu
@pytest.mark.timeout(900)  # as its run-ticket: Claude Code under TCG on a loaded host
def test_claude_code_runs_a_ticket_in_a_microvm_and_is_metered(
    claude_code: Path, home: Path, tmp_path: Path
) -> None:
    """The same CLI in a QEMU microVM: the release reaches the guest as a squashfs image on
    a read-only drive, mounted at /opt/claude-code; the gateway at 10.0.2.100."""
    reason = unavailable(images_dir_for(load_settings().home))
    if reason is not None:
        pytest.skip(reason)
    seen: list[Recorded] = []

    def after_scan(req: Recorded) -> dict[str, object]:
        seen.append(req)
        results = req.tool_results()
        assert results and "scanned" in str(results[0].get("content")), results
        return write_call("/workspace/hello.txt", "hello from a microVM\n", usage(700, 30, 0, 400))

    def answer(req: Recorded) -> dict[str, object]:
        seen.append(req)
        results = req.tool_results()
        assert results and "hello.txt" in str(results[0].get("content")), results
        return text("Wrote hello.txt.", used=usage(900, 12, 0, 700))

    agent = AGENT.replace("timeout_seconds: 300", "timeout_seconds: 600") + (
        "output_files: [scan.json]\n"
    )
    with MessagesServer(api_key=KEY) as server:
        server.push(bash_call("python3 scan.py", usage(800, 40, 300, 0)), after_scan, answer)
        write_agent(tmp_path / "coder", agent, {"scan.py": SCAN})
        swarm(home, "agent", "register", str(tmp_path / "coder"), check=True)
        swarm(home, "ticket", "create", "--title", "Greet", "--description", "Write hello.txt",
              "--agent", "coder", "--input", f"key_sha256={hashlib.sha256(KEY.encode()).hexdigest()}",
              "--input", f"key_length={len(KEY)}", check=True)  # fmt: skip
        done = swarm(home, "run-ticket", "1", "--wait", "--backend", "qemu", timeout=900,
                     ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=server.url)  # fmt: skip
        reported = server.reported_usage()
        requests = list(server.requests)
        errors = list(server.errors)
    assert done.returncode == 0, done.stdout + done.stderr
    assert errors == [] and len(seen) == 2
    assert {r.api_key for r in requests} == {KEY}
    assert requests[0].headers["user-agent"].startswith("claude-cli/")

    db = home / "tickets.db"
    assert query(db, "SELECT status FROM tickets WHERE id = 1")[0]["status"] == "done"
    step = query(db, "SELECT * FROM step_executions")[0]
    outputs = json.loads(step["outputs"])
    assert outputs["result"] == "Wrote hello.txt." and outputs["subtype"] == "success"
    assert outputs["changes"]["added"] == ["hello.txt", "scan.json"]
    for key, value in reported.items():  # recorded tokens are the server's sums...
        assert step[key] == value, key
    assert step["turns"] == 3 and step["stop_reason"] == "end_turn"
    assert outputs["usage_check"]["agree"] is True  # ...and what Claude Code says it used

    scan = json.loads(outputs["files"]["scan.json"])
    assert scan["found"] == []  # the key: in no process, environment or file of the guest
    assert scan["tokens"] == ["sk-swarm-"]  # what Claude Code holds: the step's token
    assert scan["base_urls"] == ["//10.0.2.100"]  # the gateway, through QEMU's guestfwd
    (line,) = scan["mount"]  # the release: a read-only squashfs drive
    device, _, kind, options = line.split()[:4]
    assert device.startswith("/dev/vd") and kind == "squashfs"
    assert {"ro", "nodev", "nosuid"} <= set(options.split(","))

    artifacts = Path(step["log_path"]).parent
    assert (artifacts / "workspace" / "hello.txt").read_text() == "hello from a microVM\n"
    assert "tool Write" in Path(step["log_path"]).read_text()
    leaks = [p for p in home.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert leaks == []
    cached = (images_dir_for(load_settings().home) / ".mounts", home / "run" / "qemu-mounts")
    drives = [image for folder in cached for image in folder.glob("*.squashfs")]
    assert drives and all(KEY.encode() not in d.read_bytes() for d in drives)


@pytest.mark.qemu
@pytest.mark.timeout(300)
def test_without_its_drive_claude_code_does_not_run_in_a_microvm(
    claude_code: Path, home: Path, tmp_path: Path
) -> None:
    """Fail closed: when the release cannot be packed for the guest, the step fails with
    one line and Claude Code never runs (nothing reaches the endpoint)."""
    reason = unavailable(images_dir_for(load_settings().home))
    if reason is not None:
        pytest.skip(reason)
    (home / "config.toml").write_text('[backend_options.qemu]\nmounts_dir = "/dev/null/cache"\n')
    with MessagesServer(api_key=KEY) as server:
        write_agent(tmp_path / "coder", AGENT)
        swarm(home, "agent", "register", str(tmp_path / "coder"), check=True)
        swarm(home, "ticket", "create", "--title", "Greet", "--agent", "coder", check=True)
        done = swarm(home, "run-ticket", "1", "--wait", "--backend", "qemu", timeout=300,
                     ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=server.url)  # fmt: skip
        requests = list(server.requests)
    assert done.returncode == 1, done.stdout + done.stderr
    assert requests == []
    step = query(home / "tickets.db", "SELECT * FROM step_executions")[0]
    assert step["status"] == "failed"
    assert step["error"] == (
        f"cannot show {claude_code} in a microVM: cannot create /dev/null/cache: Not a directory"
    )


def test_claude_code_that_leaves_a_background_task_ends_with_its_result(
    claude_code: Path, home: Path, tmp_path: Path
) -> None:
    """Claude Code waits for the background tasks it started (`run_in_background`, or a
    command it moved there past its own 2 minutes) before it exits, after printing its
    result: the step was held to its timeout and failed (exit 124) though it succeeded.
    It is now stopped `RESULT_GRACE` seconds after its result, which stands."""
    background = {"type": "tool_use", "id": "toolu_bg1", "name": "Bash",
                  "input": {"command": "sleep 300", "run_in_background": True,
                            "description": "a task that outlives the answer"}}  # fmt: skip
    with MessagesServer(api_key=KEY) as server:
        server.push(
            message([background], "tool_use", used=usage(800, 40, 0, 0)),
            text("Started it; done.", used=usage(900, 12, 0, 0)),
        )
        server.fallback = text("Still done.", used=usage(10, 2, 0, 0))
        write_agent(
            tmp_path / "coder", AGENT.replace("timeout_seconds: 300", "timeout_seconds: 90")
        )
        swarm(home, "agent", "register", str(tmp_path / "coder"), check=True)
        swarm(home, "ticket", "create", "--title", "bg", "--agent", "coder", check=True)
        done = swarm(home, "run-ticket", "1", "--wait", timeout=300,
                     ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=server.url)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    step = query(home / "tickets.db", "SELECT * FROM step_executions")[0]
    assert step["status"] == "done" and step["exit_code"] == 0, step
    assert json.loads(step["outputs"])["result"] == "Started it; done."
    said = Path(step["log_path"]).read_text()
    assert "claude printed its result but had not exited" in said, said[-2000:]

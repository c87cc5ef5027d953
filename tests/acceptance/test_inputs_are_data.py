"""Ticket inputs are data: they reach the agent byte for byte, whatever they contain and
however large; only agent and workflow definitions are templates."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from tests.acceptance.conftest import write_agent, write_workflow
from tests.support.cli import query, swarm

TEMPLATE_LOOKALIKES = {
    "snippet": "const s = `hi ${name}`;",
    "title": "${ticket.title}",
    "escape": "$${inputs.x} and $${",
    "unclosed": "${",
    "shell": "${HOME:-x} $(id) `id` '\"",
    "nested": {"list": ["${steps.a.outputs.x}", "$$${inputs.y}", 3, None]},
    "unicode": "ü \u2028 \U0001f600",
}
BIG = "".join(f"line {n} ${{inputs.x}} $${{ ${{ticket.title}} ü\n" for n in range(9000))
assert len(BIG.encode()) > 300 * 1024


def open_ticket(home: Path, inputs: dict[str, Any], agent: str, title: str = "t") -> int:
    """Insert an open ticket as any SQLite client would (its inputs may be far larger than a
    command line can carry)."""
    conn = sqlite3.connect(home / "tickets.db", timeout=30)
    try:
        with conn:
            cur = conn.execute(
                "INSERT INTO tickets (title, status, agent_id, inputs) VALUES (?, 'open', ?, ?)",
                (title, agent, json.dumps(inputs)),
            )
        assert cur.lastrowid is not None
        return cur.lastrowid
    finally:
        conn.close()


def run(home: Path, ticket: int) -> dict[str, Any]:
    done = swarm(home, "run-ticket", str(ticket), "--wait", "--json")
    out: dict[str, Any] = json.loads(done.stdout)
    out["exit"], out["stderr"] = done.returncode, done.stderr
    return out


def test_inputs_that_look_like_templates_reach_the_echo_agent_unchanged(home: Path) -> None:
    inputs = {**TEMPLATE_LOOKALIKES, "big": BIG}
    ticket = open_ticket(home, inputs, "echo", title="T")
    out = run(home, ticket)
    assert (out["exit"], out["status"]) == (0, "done"), out["stderr"]
    assert out["result"] == inputs
    step = query(home / "tickets.db", "SELECT inputs FROM step_executions")[0]
    assert json.loads(step["inputs"]) == inputs


READER = """
import hashlib, json, os
with open(os.environ["SWARM_INPUTS"], encoding="utf-8") as f:
    inputs = json.load(f)
out = {
    "digests": {
        k: hashlib.sha256(v.encode()).hexdigest() for k, v in inputs.items() if isinstance(v, str)
    },
    "env": sorted(k for k in os.environ if k.startswith("INPUT_")),
    "small": os.environ.get("INPUT_SMALL"),
}
with open(os.environ["SWARM_OUTPUTS"], "w") as f:
    json.dump(out, f)
"""


def test_a_shell_agent_reads_a_large_input_from_the_inputs_file(home: Path, tmp_path: Path) -> None:
    folder = write_agent(
        tmp_path / "reader",
        "name: reader\nkind: shell\ncommand: python3 reader.py\n",
        {"reader.py": READER},
    )
    swarm(home, "agent", "register", str(folder), check=True)
    small = "${ticket.title} $${x} " + TEMPLATE_LOOKALIKES["shell"]
    inputs = {"big": BIG, "small": small, "doc": "word " * 60000, "n": 3.5}
    out = run(home, open_ticket(home, inputs, "reader"))
    assert (out["exit"], out["status"]) == (0, "done"), out["stderr"]
    digests = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in inputs.items() if k != "n"}
    assert out["result"]["digests"] == digests
    assert out["result"]["env"] == ["INPUT_N", "INPUT_SMALL"]  # the big ones: file only
    assert out["result"]["small"] == small


def test_inputs_whose_env_names_collide_are_not_exported(home: Path) -> None:
    """`{"A": "1", "a": "2"}` would both be `$INPUT_A`: neither is exported (fail closed),
    both stay in `$SWARM_INPUTS`."""
    command = 'printf "%s|%s|" "${INPUT_A-unset}" "$INPUT_B"; cat "$SWARM_INPUTS"'
    inputs = {"command": command, "A": "1", "a": "2", "b": "3"}
    out = run(home, open_ticket(home, inputs, "shell"))
    assert (out["exit"], out["status"]) == (0, "done"), out["stderr"]
    shown, got, rest = out["result"]["stdout"].split("|", 2)
    assert (shown, got) == ("unset", "3")
    assert json.loads(rest) == inputs


def test_a_command_over_the_kernel_limit_fails_the_step_with_one_clear_line(
    home: Path, tmp_path: Path
) -> None:
    folder = write_agent(
        tmp_path / "inline",
        "name: inline\nkind: shell\ncommand: printf %s '${inputs.text}' | wc -c\n",
    )
    swarm(home, "agent", "register", str(folder), check=True)
    fits = run(home, open_ticket(home, {"text": "x" * 100_000}, "inline"))
    assert (fits["exit"], fits["result"]["stdout"].strip()) == (0, "100000"), fits["stderr"]

    out = run(home, open_ticket(home, {"text": "x" * 200_000}, "inline"))
    assert (out["exit"], out["status"]) == (1, "failed")
    error = out["run"]["steps"][0]["error"]
    assert "\n" not in error
    assert error.startswith("the command after substitution is 200")
    assert "over the kernel's limit of 128 KiB for one argument" in error
    assert error.endswith(
        "read large inputs from the inputs file ($SWARM_INPUTS) instead of ${inputs.<key>}"
    )
    assert "Argument list too long" not in out["stderr"]


def test_a_definition_is_substituted_once_and_its_escape_is_literal(
    home: Path, tmp_path: Path
) -> None:
    folder = write_agent(
        tmp_path / "show",
        """
        name: show
        kind: shell
        command: printf '%s|%s|%s' '${inputs.word}' "$${HOME:+home-set}" '${ticket.title}'
        inputs: {properties: {word: {type: string}}}
        """,
    )
    swarm(home, "agent", "register", str(folder), check=True)
    ticket = open_ticket(home, {"word": "${ticket.title}"}, "show", title="T ${inputs.word} $${")
    out = run(home, ticket)
    assert out["exit"] == 0, out["stderr"]
    assert out["result"]["stdout"] == "${ticket.title}|home-set|T ${inputs.word} $${"


def test_the_builtin_shell_agent_runs_inputs_command_as_given(home: Path) -> None:
    command = "printf '%s' '${inputs.x} $${y}'"
    out = run(home, open_ticket(home, {"command": command, "x": "no"}, "shell"))
    assert out["exit"] == 0, out["stderr"]
    assert out["result"]["stdout"] == "${inputs.x} $${y}"


def test_workflow_steps_get_ticket_inputs_verbatim(home: Path, tmp_path: Path) -> None:
    write_workflow(
        tmp_path / "wf",
        """
        name: relay
        steps:
          - id: a
            agent: echo
            inputs: {text: "${inputs.doc}", label: "$${literal} ${ticket.title}"}
        """,
    )
    swarm(home, "workflow", "register", str(tmp_path / "wf"), check=True)
    doc = "${ticket.title} $${ " + BIG
    swarm(home, "ticket", "create", "--title", "${inputs.doc}", "--workflow", "relay",
          "--inputs-json", json.dumps({"doc": doc[:1000]}), check=True)  # fmt: skip
    out = run(home, 1)
    assert out["exit"] == 0, out["stderr"]
    assert out["result"] == {"a": {"text": doc[:1000], "label": "${literal} ${inputs.doc}"}}


def test_inputs_up_to_the_documented_limit_run_and_a_bigger_row_fails_alone(
    home: Path, tmp_path: Path
) -> None:
    """A ticket's inputs may hold up to `MAX_INPUTS_BYTES` of JSON (8 MiB, far above a
    document to summarise): such a ticket runs. A row holding more fails at once with one
    line saying the size and the limit (it had taken the engine 47 s and 1.1 GB for 60 MB,
    each change of its row rewriting it under the write lock every engine waits for), and
    the tickets next to it run as ever."""
    from swarm_engine.records import MAX_INPUTS_BYTES

    folder = write_agent(
        tmp_path / "reader",
        "name: reader\nkind: shell\ncommand: python3 reader.py\n",
        {"reader.py": READER},
    )
    swarm(home, "agent", "register", str(folder), check=True)
    doc = "word " * ((MAX_INPUTS_BYTES - 100) // 5)
    fits = open_ticket(home, {"doc": doc}, "reader")
    over = open_ticket(home, {"doc": doc + "x" * 200}, "echo")
    after = open_ticket(home, {"n": 1}, "echo")
    done = swarm(home, "start", "--foreground", "--until-idle", "--max-vms", "2", timeout=300)
    assert done.returncode == 0, done.stderr
    rows = {r["id"]: r for r in query(home / "tickets.db", "SELECT id, status, error FROM tickets")}
    assert rows[fits]["status"] == "done", rows[fits]
    assert rows[after]["status"] == "done", rows[after]
    assert rows[over]["status"] == "failed"
    size = len(json.dumps({"doc": doc + "x" * 200}))
    assert rows[over]["error"] == (
        f"ticket {over} row is malformed: inputs: {size:,} bytes of JSON, more than the 8 MiB"
        " a ticket's inputs may hold (hand larger data in as a file or a URL)"
    )
    (result,) = query(home / "tickets.db", "SELECT result FROM tickets WHERE id = ?", fits)
    assert (
        json.loads(result["result"])["digests"]["doc"] == hashlib.sha256(doc.encode()).hexdigest()
    )


def test_titles_and_descriptions_up_to_their_limits_run_and_bigger_rows_fail_alone(
    home: Path,
) -> None:
    """A title may hold up to `MAX_TITLE_BYTES` (64 KiB) and a description up to
    `MAX_DESCRIPTION_BYTES` (1 MiB) of UTF-8 text, as `inputs` has its 8 MiB: a row
    another client wrote with more (a 60 MB title cost each lease renewal 0.2 s under
    the write lock, and memory in every reader) fails at its claim with one line saying
    the size and the limit; the tickets next to it run, and `ticket list` shows it
    briefly."""
    from swarm_engine.records import MAX_DESCRIPTION_BYTES, MAX_TITLE_BYTES

    title = "é" * (MAX_TITLE_BYTES // 2)  # exactly the limit, in two-byte characters
    description = "d" * MAX_DESCRIPTION_BYTES
    rows = [(title, description), (title + "x", ""), ("t", description + "é"),
            ("t" * 3_000_000, "")]  # fmt: skip
    conn = sqlite3.connect(home / "tickets.db", timeout=30)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO tickets (title, description, status, agent_id)"
                " VALUES (?, ?, 'open', 'echo')",
                rows,
            )
    finally:
        conn.close()
    done = swarm(home, "start", "--foreground", "--until-idle", "--max-vms", "2", timeout=300)
    assert done.returncode == 0, done.stderr
    got = {r["id"]: r for r in query(home / "tickets.db", "SELECT id, status, error FROM tickets")}
    assert got[1]["status"] == "done", got[1]
    assert [got[i]["status"] for i in (2, 3, 4)] == ["failed"] * 3
    assert got[2]["error"] == (
        f"ticket 2 row is malformed: title: {MAX_TITLE_BYTES + 1:,} bytes of text, more than"
        " the 64 KiB it may hold"
    )
    assert got[3]["error"] == (
        f"ticket 3 row is malformed: description: {MAX_DESCRIPTION_BYTES + 2:,} bytes of"
        " text, more than the 1 MiB it may hold"
    )
    assert got[4]["error"] == (
        "ticket 4 row is malformed: title: 3,000,000 bytes of text, more than the 64 KiB it"
        " may hold"
    )
    shown = swarm(home, "ticket", "show", "4")
    assert shown.returncode == 0, shown.stderr
    assert "3,000,000 bytes of text" in shown.stdout and len(shown.stdout) < 5000
    listed = swarm(home, "ticket", "list", "--json")  # no reader loads more than the start
    assert listed.returncode == 0, listed.stderr
    (four,) = [t for t in json.loads(listed.stdout) if t["id"] == 4]
    assert four["title"] == "t" * 200 and len(listed.stdout) < 2 * MAX_DESCRIPTION_BYTES


def test_titles_and_descriptions_over_their_limits_are_refused_at_creation(home: Path) -> None:
    """`ticket create` and `POST /v1/tickets` refuse a title over 64 KiB or a description
    over 1 MiB (UTF-8) with one line, nothing written; up to the limits is fine."""
    from tests.support.api import start_api
    from tests.support.cli import swarm_inproc

    from swarm_engine.records import MAX_DESCRIPTION_BYTES, MAX_TITLE_BYTES

    fits = "é" * (MAX_TITLE_BYTES // 2)
    made = swarm_inproc(home, "ticket", "create", "--title", fits, "--agent", "echo")
    assert made.returncode == 0, made.stderr
    over = swarm_inproc(home, "ticket", "create", "--title", fits + "x", "--agent", "echo")
    assert over.returncode == 2, over.stderr
    assert over.stderr == (
        f"error: title: {MAX_TITLE_BYTES + 1:,} bytes of text, more than the 64 KiB it may hold\n"
    )
    api = start_api(home)
    try:
        answer = api.post("/v1/tickets", json={"title": "t", "agent": "echo",
                                               "description": "d" * (MAX_DESCRIPTION_BYTES + 1)})  # fmt: skip
        assert answer.status_code == 400, answer.text
        assert answer.json()["message"] == (
            f"description: {MAX_DESCRIPTION_BYTES + 1:,} bytes of text, more than the 1 MiB it"
            " may hold"
        )
        answer = api.post("/v1/tickets", json={"title": "t", "agent": "echo",
                                               "description": "d" * MAX_DESCRIPTION_BYTES})  # fmt: skip
        assert answer.status_code == 201, answer.text
        answer = api.post("/v1/tickets", json={"title": fits, "agent": "echo"})  # 32,768 chars
        assert answer.status_code == 201, answer.text
        answer = api.post("/v1/tickets", json={"title": fits + "x", "agent": "echo"})
        assert answer.status_code == 400, answer.text
        assert answer.json()["message"] == (
            f"title: {MAX_TITLE_BYTES + 1:,} bytes of text, more than the 64 KiB it may hold"
        )
    finally:
        api.stop()
    assert [r["id"] for r in query(home / "tickets.db", "SELECT id FROM tickets")] == [1, 2, 3]

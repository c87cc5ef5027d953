"""Cron triggers declared in workflow.yaml: exactly one ticket per slot, however many
engines evaluate them and however often they restart; bad triggers refused at registration."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.conftest import Target
from tests.support.cli import sqlite_shell, start_engine, swarm_inproc, wait_until

from swarm_engine.models import MAX_TRIGGERS

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.5"}


def workflow(folder: Path, name: str, triggers: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "workflow.yaml").write_text(
        textwrap.dedent(f"""\
        name: {name}
        version: 1.0.0
        steps:
          - id: hello
            agent: echo
            inputs:
              said: ${{ticket.title}}
        triggers:
        """)
        + textwrap.indent(textwrap.dedent(triggers), "  ")
    )
    return folder


def register(home: Path, target: Target, folder: Path) -> subprocess.CompletedProcess[str]:
    return swarm_inproc(home, "workflow", "register", str(folder), **target.env)


@pytest.fixture
def home(store_target: Target, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init", **store_target.env).returncode == 0
    return home


def test_two_engines_make_exactly_one_ticket_per_slot(
    home: Path, store_target: Target, tmp_path: Path
) -> None:
    folder = workflow(tmp_path / "tick", "tick", """\
        - name: every-second
          cron: "* * * * * *"
          sub_minute: true
          inputs: {said: "tick"}
        """)  # fmt: skip
    done = register(home, store_target, folder)
    assert done.returncode == 0, done.stderr
    procs = [
        start_engine(home, "--max-vms", "2", "--another", **store_target.env, **FAST)
        for _ in range(2)
    ]
    try:

        def slots() -> int:
            return len(store_target.rows("SELECT key FROM trigger_firings"))

        wait_until(lambda: slots() >= 4, 60, "four slots to fire")
        os.killpg(procs[0].pid, signal.SIGKILL)  # one engine dies; the other goes on
        procs[0].wait()
        first = slots()
        wait_until(lambda: slots() >= first + 2, 30, "two more slots")
        procs.append(start_engine(home, "--max-vms", "2", "--another", **store_target.env,
                                  **FAST))  # fmt: skip
        wait_until(lambda: slots() >= first + 4, 30, "two more, with a restarted engine")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.communicate(timeout=60)
    firings = store_target.rows("SELECT key, ticket_id FROM trigger_firings ORDER BY key")
    keys = [f["key"] for f in firings]
    tickets = store_target.rows("SELECT id, title, inputs, workflow_id FROM tickets ORDER BY id")
    # one ticket per slot, each slot once, and the slots follow each other second by second
    assert len(tickets) == len(firings) == len(set(keys))
    assert sorted(f["ticket_id"] for f in firings) == [t["id"] for t in tickets]
    seconds = [
        datetime.strptime(k[-20:], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        for k in keys
    ]
    assert all(b - a == 1 for a, b in itertools.pairwise(seconds)), keys
    assert {t["workflow_id"] for t in tickets} == {"tick@1.0.0"}
    assert all("tick" in str(t["inputs"]) for t in tickets)


@pytest.mark.parametrize(
    ("triggers", "message"),
    [
        ('- name: x\n  cron: "every day"\n', "is not a cron schedule"),
        ('- name: x\n  cron: "0 0 31 2 *"\n', "never matches a time"),
        ("- name: x\n", "needs exactly one of cron or webhook"),
        ('- name: x\n  cron: "* * * * *"\n  webhook: true\n', "needs exactly one of cron"),
        ('- name: x\n  cron: "* * * * *"\n- name: x\n  webhook: true\n', "defined twice"),
        ("- name: X Y\n  webhook: true\n", "lowercase letters"),
    ],
)
def test_bad_triggers_are_refused_at_registration(
    home: Path, store_target: Target, tmp_path: Path, triggers: str, message: str
) -> None:
    done = register(home, store_target, workflow(tmp_path / "bad", "bad", triggers))
    assert done.returncode != 0 and message in done.stderr, done.stderr
    assert "\n" not in done.stderr.strip()
    assert swarm_inproc(home, "workflow", "list", **store_target.env).stdout.count("bad") == 0


def test_a_workflow_has_at_most_max_triggers(
    home: Path, store_target: Target, tmp_path: Path
) -> None:
    one = '- name: t{}\n  cron: "0 0 29 2 1#5"\n'
    many = "".join(one.format(i) for i in range(MAX_TRIGGERS + 1))
    done = register(home, store_target, workflow(tmp_path / "many", "many", many))
    assert done.returncode == 5, done.stderr
    assert done.stderr == (
        f"error: {tmp_path / 'many' / 'workflow.yaml'}: triggers: at most {MAX_TRIGGERS}"
        f" triggers per workflow, not {MAX_TRIGGERS + 1}\n"
    )
    few = "".join(one.format(i) for i in range(MAX_TRIGGERS))
    assert register(home, store_target, workflow(tmp_path / "few", "few", few)).returncode == 0


def test_a_trigger_name_belongs_to_one_workflow(
    home: Path, store_target: Target, tmp_path: Path
) -> None:
    hook = "- name: shared\n  webhook: true\n"
    assert register(home, store_target, workflow(tmp_path / "a", "first", hook)).returncode == 0
    done = register(home, store_target, workflow(tmp_path / "b", "second", hook))
    assert done.returncode != 0 and "belongs to workflow 'first'" in done.stderr


def registry_sql(home: Path, target: Target, statement: str) -> None:
    """Write to the registry as another client would (PostgreSQL: the store's database)."""
    if target.dialect == "sqlite":
        sqlite_shell(home / "registry.db", statement)
    else:
        target.sql(statement)


def test_a_cron_name_two_rows_declare_fires_for_none_and_a_deleted_one_stops(
    home: Path, store_target: Target, tmp_path: Path
) -> None:
    """A registry row written by another client declares `tick`'s cron trigger's name
    too: it fires for neither (one warning line), while `other` fires. Once both `evil`
    and `other` are deleted, `tick` fires again and `other` stops at its next slot (not
    at the next full read of the registry, up to 10 s later)."""
    for name, trigger in (("tick", "every-second"), ("other", "other-second")):
        folder = workflow(
            tmp_path / name, name, f'- name: {trigger}\n  cron: "* * * * * *"\n  sub_minute: true\n'
        )
        assert register(home, store_target, folder).returncode == 0
    evil = (
        '{"name": "evil", "version": "1.0.0", "steps": [{"id": "a", "agent": "echo"}],'
        ' "triggers": [{"name": "every-second", "cron": "* * * * * *", "sub_minute": true}]}'
    )
    registry_sql(home, store_target, f"INSERT INTO workflows (name, version, spec)"
                                     f" VALUES ('evil', '1.0.0', '{evil}')")  # fmt: skip

    def fired(trigger: str) -> list[str]:
        rows = store_target.rows(
            "SELECT key FROM trigger_firings WHERE trigger = %(t)s ORDER BY key", t=trigger
        )
        return [r["key"] for r in rows]

    proc = start_engine(home, "--max-vms", "2", **store_target.env, **FAST)
    try:
        wait_until(lambda: len(fired("other-second")) >= 3, 60, "three slots of other")
        assert fired("every-second") == []
        registry_sql(home, store_target, "DELETE FROM workflows WHERE name IN ('evil', 'other')")
        deleted = datetime.now(UTC).timestamp()
        wait_until(lambda: len(fired("every-second")) >= 2, 30, "tick to fire again")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    late = [
        k for k in fired("other-second")
        if datetime.strptime(k, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        > deleted + 1
    ]  # fmt: skip
    assert late == [], (late, deleted)
    assert out.count("declared by more than one workflow (evil, tick)") == 1, out
    tickets = store_target.rows("SELECT workflow_id FROM tickets")
    assert {t["workflow_id"] for t in tickets} == {"tick@1.0.0", "other@1.0.0"}


INVALID_ROWS = {
    # workflow name -> (its steps, its trigger, the line `workflow show` refuses it with)
    "both": (
        [{"id": "a", "agent": "echo"}],
        {"name": "both-ways", "cron": "* * * * * *", "webhook": True},
        "trigger 'both-ways' needs exactly one of cron or webhook: true",
    ),
    "looped": (
        [
            {"id": "a", "agent": "echo", "needs": ["b"]},
            {"id": "b", "agent": "echo", "needs": ["a"]},
        ],
        {"name": "looped-second", "cron": "* * * * * *"},
        "dependency cycle: ",
    ),
    "ghostly": (
        [{"id": "a", "agent": "ghost" * 1000}],
        {"name": "ghostly-second", "cron": "* * * * * *"},
        "step 'a': unknown agent 'ghostghost",
    ),
}


def insert_invalid_rows(home: Path, target: Target) -> None:
    """The rows of `INVALID_ROWS`, as another client writes them: each decodes, and each
    fails the checks `workflow show` makes."""
    for name, (steps, trigger, _) in INVALID_ROWS.items():
        spec = json.dumps({"name": name, "version": "1.0.0", "steps": steps, "triggers": [trigger]})
        registry_sql(home, target, f"INSERT INTO workflows (name, version, spec)"
                                   f" VALUES ('{name}', '1.0.0', '{spec}')")  # fmt: skip


def test_a_row_that_fails_validation_fires_no_cron_trigger(
    home: Path, store_target: Target, tmp_path: Path
) -> None:
    """Rows that decode but fail `workflow show`'s checks (a trigger both cron and webhook,
    a dependency cycle, an unknown agent) fire nothing, each skipped with one warning line
    however many times the registry is read, while a valid workflow beside them fires."""
    folder = workflow(
        tmp_path / "tick",
        "tick",
        '- name: every-second\n  cron: "* * * * * *"\n  sub_minute: true\n',
    )
    assert register(home, store_target, folder).returncode == 0
    insert_invalid_rows(home, store_target)
    for name, (_, _, line) in INVALID_ROWS.items():
        shown = swarm_inproc(home, "workflow", "show", name, **store_target.env)
        assert shown.returncode == 5 and line in shown.stderr, shown.stderr

    def fired(trigger: str) -> int:
        rows = store_target.rows("SELECT key FROM trigger_firings WHERE trigger = %(t)s", t=trigger)
        return len(rows)

    proc = start_engine(home, "--max-vms", "2", **store_target.env, **FAST)
    try:  # the registry is read whole every 10 s (SCHEDULES_EVERY): past a second read
        wait_until(lambda: fired("every-second") >= 13, 90, "13 slots of tick")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert [fired(trigger["name"]) for _, trigger, _ in INVALID_ROWS.values()] == [0, 0, 0]
    tickets = store_target.rows("SELECT workflow_id FROM tickets")
    assert {t["workflow_id"] for t in tickets} == {"tick@1.0.0"}
    for name, (_, _, line) in INVALID_ROWS.items():
        warned = [w for w in out.splitlines() if f"workflow {name}@1.0.0 in the registry" in w]
        assert len(warned) == 1 and line in warned[0], out
        assert warned[0].endswith("its triggers are skipped") and len(warned[0]) < 500, warned

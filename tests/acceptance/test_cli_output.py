"""What a person reads: tables that fit 80 and 120 columns (one line per row, through the
real command with COLUMNS), attempts counted from 1 everywhere, human times, help with an
example and a description for every option, and a second `start` that says what runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from tests.acceptance.conftest import write_agent
from tests.support.cli import (
    EXAMPLES,
    env_for,
    query,
    sqlite_shell,
    start_engine,
    swarm,
    swarm_inproc,
    wait_until,
)

from swarm_engine.cli.main import cli
from swarm_engine.config import hostname
from swarm_engine.engine.hostlock import hold_engine_lock

LONG_TITLE = "a rather long title that says more than any table column at 80 has room for"
MARKUP_TITLE = "[b]x[/b] [red]y :warning: \\[z\\"  # markup, an emoji code, backslashes
STEP_IDS = ("count_first", "count_second", "report")


@pytest.fixture(scope="module")
def shown(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home with the kinds of rows people look at: a workflow, a failure with a long
    error, a step retried, results with times, and markup in a title."""
    tmp = tmp_path_factory.mktemp("shown")
    home = tmp / "home"
    flaky = write_agent(
        tmp / "flaky",
        """
        name: a-flaky-agent-with-a-long-name
        kind: shell
        command: echo "this command fails every time it is tried, with a long message" >&2; exit 2
        retry: {attempts: 2, backoff_seconds: 0}
        """,
    )
    for args in (
        ("agent", "register", "--all", str(EXAMPLES / "agents")),
        ("agent", "register", str(flaky)),
        ("workflow", "register", str(EXAMPLES / "workflows" / "text-report")),
        ("ticket", "create", "--title", LONG_TITLE, "--agent", "sleeper", "--input", "seconds=0.1"),
        ("ticket", "create", "--title", "report", "--workflow", "text-report",
         "--description", "tickets in, isolated agent runs out, every step recorded"),
        ("ticket", "create", "--title", "flaky", "--agent", "a-flaky-agent-with-a-long-name"),
        ("ticket", "create", "--title", MARKUP_TITLE, "--agent", "echo", "--priority", "5"),
        ("ticket", "create", "--title", "never run", "--agent", "echo", "--draft"),
    ):  # fmt: skip
        done = swarm_inproc(home, *args)
        assert done.returncode == 0, (args, done.stderr)
    for tid in (1, 2, 3, 4):
        swarm_inproc(home, "run-ticket", str(tid), "--wait")
    yield home


def rows_after_header(out: str, header: str, count: int, row: str) -> list[str]:
    """The `count` rows of the table whose header line starts with `header`; each must
    match `row`, and the line after them must not (a wrapped row would continue there)."""
    lines = out.splitlines()
    at = next((i for i, line in enumerate(lines) if line.startswith(header)), None)
    assert at is not None, f"no table headed {header!r} in:\n{out}"
    assert set(lines[at + 1].strip()) == {"─"}, out
    rows = lines[at + 2 : at + 2 + count]
    assert len(rows) == count and all(re.match(row, r) for r in rows), out
    after = lines[at + 2 + count : at + 3 + count]
    assert not after or not re.match(row, after[0]), out
    return rows


def run_at(home: Path, width: int, *args: str) -> str:
    done = swarm(home, *args, COLUMNS=str(width))
    assert done.returncode == 0, done.stderr
    too_wide = [line for line in done.stdout.splitlines() if len(line) > width]
    assert too_wide == [], f"lines wider than {width}:\n" + "\n".join(too_wide)
    # as on a terminal (COLUMNS given): nothing after a line's last character (tester
    # h-198: `ticket show`'s fields were padded to the terminal's width)
    padded = [line for line in done.stdout.splitlines() if line != line.rstrip()]
    assert padded == [], "lines padded with spaces:\n" + "\n".join(map(repr, padded))
    return done.stdout


@pytest.mark.parametrize("width", [80, 120])
def test_ticket_list_is_one_line_per_ticket(shown: Path, width: int) -> None:
    out = run_at(shown, width, "ticket", "list")
    header = next(line for line in out.splitlines() if line.startswith("id"))
    prio = ["prio"] if width >= 100 else []  # a detail column, from 100 columns on
    assert header.split() == ["id", "status", "title", "agent", "/", "workflow", *prio,
                              "attempts", "updated", "result", "/", "error"]  # fmt: skip
    rows = rows_after_header(out, "id", 5, r"^\s*\d+  ")
    by_id = {int(r.split()[0]): r for r in rows}
    assert "workflow:text-report" in by_id[2]  # names are never split across lines
    assert "[b]x[/b]" in by_id[4]  # stored text is printed literally
    assert "a-flaky-agent-with-" in by_id[3]
    assert "1/3" in by_id[1] and "0/3" in by_id[5]
    if width == 80:
        assert "…" in by_id[1] and LONG_TITLE not in out  # cut, whole in `ticket show`
    for row in rows:
        assert not re.search(r"\d{10}\.\d", row), row  # no epoch floats


@pytest.mark.parametrize("width", [80, 120])
def test_ticket_show_has_whole_values_and_one_line_per_step(shown: Path, width: int) -> None:
    out = run_at(shown, width, "ticket", "show", "2")
    rows = rows_after_header(out, "step ", 3, r"^(count_|report)")
    assert [r.split()[0] for r in rows] == list(STEP_IDS)
    assert all(r.split()[1] == "1" for r in rows)  # attempt 1: counted from 1
    assert ("vm-" in rows[0]) == (width >= 100)
    # the run's heading names the workflow it ran (its row's; the ticket's may change)
    assert re.search(r"^run \d+ \(ticket attempt 1, workflow text-report@\S+\): ", out, re.M)
    flaky = run_at(shown, width, "ticket", "show", "3")
    assert re.search(r"^run \d+ \(ticket attempt 1\): ", flaky, re.M), flaky  # one agent
    rows = rows_after_header(flaky, "step ", 2, r"^main ")
    assert [r.split()[1] for r in rows] == ["1", "2"]
    sleeper = run_at(shown, width, "ticket", "show", "1")
    flat = " ".join(sleeper.split())  # the whole title and result, however they wrap
    assert " ".join(LONG_TITLE.split()) in flat
    assert re.search(r'"started": "20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"', flat), sleeper
    # a stored title is text: its markup, emoji code and backslashes shown as they are
    assert (
        run_at(shown, width, "ticket", "show", "4").splitlines()[0] == f"ticket 4: {MARKUP_TITLE}"
    )


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize(
    ("args", "header", "count", "row"),
    [
        (("status",), "run ", 4, r"^\s+\d+\s+\d+  "),
        (("agent", "list"), "name ", 12, r"^[_a-z]"),  # 6 built in (2 claude-code), 6 here
        (("workflow", "list"), "name ", 1, r"^text-report "),
        (("workflow", "runs", "text-report"), "run ", 1, r"^\s+\d+\s+2  "),
    ],
)
def test_other_tables_fit(
    shown: Path, width: int, args: tuple[str, ...], header: str, count: int, row: str
) -> None:
    rows_after_header(run_at(shown, width, *args), header, count, row)


def test_attempts_are_counted_from_one_in_logs_and_json(shown: Path) -> None:
    logs = swarm_inproc(shown, "logs", "3")
    assert logs.returncode == 0
    assert re.findall(r"step main · attempt (\d) · failed", logs.stdout) == ["1", "2"]
    data = json.loads(swarm_inproc(shown, "ticket", "show", "3", "--json").stdout)
    steps = data["runs"][0]["steps"]
    assert [(s["attempt"], s["retry_count"]) for s in steps] == [(1, 0), (2, 1)]
    assert data["runs"][0]["attempt"] == 1 and data["attempts"] == 1


def test_a_ticket_that_has_not_run_has_no_logs_yet(shown: Path) -> None:
    done = swarm_inproc(shown, "logs", "5")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "ticket 5 has not run yet (it is draft)\n"
    missing = swarm_inproc(shown, "logs", "2", "--step", "nope")
    assert missing.returncode == 3
    assert missing.stderr == (
        "error: run 2 has no step 'nope' (its steps: count_first, count_second, report)\n"
    )


def test_an_unknown_status_names_the_valid_ones(shown: Path) -> None:
    done = swarm_inproc(shown, "ticket", "list", "--status", "bogus")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "error: unknown status 'bogus' (one of: draft, open, claimed, running, done, failed,"
        " cancelled)\n"
    )


def subcommand(group: click.Group, name: str) -> click.Command:
    """`group`'s command `name` (the top group imports its commands when asked: cli/lazy.py)."""
    command = group.get_command(click.Context(group), name)
    assert command is not None, name
    return command


def commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name in group.list_commands(click.Context(group)):
        command = subcommand(group, name)
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name)


def command_at(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = subcommand(command, name)
    return command


ALL = list(commands(cli))
PLACEHOLDERS = {"DIR", "PATH", "FILE", "N", "NAME", "SECONDS", "STATUS", "URL", "LEVEL", "JSON"}


@pytest.mark.parametrize("path", ALL, ids=[" ".join(p) or "swarm-engine" for p in ALL])
def test_help_describes_every_option_and_shows_an_example(
    tmp_path: Path, path: tuple[str, ...]
) -> None:
    done = swarm_inproc(tmp_path / "unused", *path, "--help")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    example = done.stdout.split("Example:\n", 1)
    assert len(example) == 2, done.stdout
    assert " ".join(("swarm-engine", *path)) in example[1]
    for param in command_at(path).params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        assert param.help, f"{param.opts[0]} has no description"
        if param.is_flag:
            continue
        metavar = param.metavar or ""
        named = set(re.findall(r"\b[A-Z]+\b", param.help)) & PLACEHOLDERS
        assert named <= {metavar}, f"{param.opts[0]} {metavar}: its help names {named}"
    assert not (tmp_path / "unused").exists()


def test_a_second_start_says_an_engine_runs(home: Path) -> None:
    started = swarm_inproc(home, "start", "--max-vms", "1")
    assert started.returncode == 0, started.stderr
    pid = int(re.search(r"\(pid (\d+)\)", started.stdout).group(1))  # type: ignore[union-attr]
    try:
        for args in (("start",), ("start", "--foreground")):
            again = swarm_inproc(home, *args)
            assert (again.returncode, again.stdout) == (4, ""), again.stderr
            assert again.stderr.count("\n") == 1 and again.stderr.startswith("error: engine ")
            assert f"is already running on this host with this store (pid {pid})" in again.stderr
            assert "'swarm-engine start --another' starts a second one" in again.stderr
        second = swarm_inproc(home, "start", "--another", "--max-vms", "1")
        assert second.returncode == 0 and "started (pid" in second.stdout, second.stderr
    finally:
        stopped = swarm_inproc(home, "stop")
    assert stopped.returncode == 0 and "draining 2 engine(s)" in stopped.stdout, stopped.stdout


def test_starts_at_the_same_moment_run_one_engine_and_the_others_say_why(home: Path) -> None:
    """Reading the engines' rows and registering are two steps: six `start`s at once
    could all read "none" and all run. One runs; each other exits 4 with one line."""
    engines = [start_engine(home, "--max-vms", "1") for _ in range(6)]
    try:
        wait_until(lambda: sum(e.poll() is not None for e in engines) == 5, 60, "five to exit")
        (running,) = [e for e in engines if e.poll() is None]
        rows = query(home / "tickets.db", "SELECT pid FROM engines WHERE state = 'running'")
        assert [r["pid"] for r in rows] == [running.pid]
        for refused in (e for e in engines if e is not running):
            out, _ = refused.communicate()
            assert refused.returncode == 4, out
            errors = [line for line in out.splitlines() if line.startswith("error: ")]
            assert len(errors) == 1 and "already running on this host" in errors[0], out
    finally:
        for e in engines:
            if e.poll() is None:
                e.terminate()
            e.communicate(timeout=60)


def test_one_engine_per_store_whatever_home_or_path_names_it(home: Path, tmp_path: Path) -> None:
    """Another home naming the same store file, through a symlink or `..`: still one
    engine (each home used to lock its own run folder), and the `stop` the refusal
    names stops it from that home too (it said "no engine is running on this host")."""
    first = start_engine(home, "--max-vms", "1")
    try:
        wait_until(
            lambda: query(home / "tickets.db", "SELECT 1 FROM engines WHERE state = 'running'"),
            30, "the first engine to register",
        )  # fmt: skip
        (tmp_path / "link").symlink_to(home)
        for store in (tmp_path / "link" / "tickets.db", home / "run" / ".." / "tickets.db"):
            other = tmp_path / f"home-{len(store.parts)}"
            done = swarm_inproc(other, "start", "--foreground", SWARM_TICKETS_DB=str(store))
            assert done.returncode == 4, (done.stdout, done.stderr)
            assert f"already running on this host with this store (pid {first.pid})" in done.stderr
            assert "'swarm-engine stop' stops it" in done.stderr
        stopped = swarm(other, "stop", SWARM_TICKETS_DB=str(store))
        assert stopped.returncode == 0, stopped.stderr
        assert f"draining 1 engine(s): [{first.pid}]" in stopped.stdout, stopped.stdout
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.terminate()
        first.communicate(timeout=60)


def test_stop_from_another_home_leaves_an_engine_of_another_store_alone(
    home: Path, tmp_path: Path
) -> None:
    """`stop` signals an engine of another home only when the kernel says it holds this
    store's lock: a row naming the pid of an engine of another store is not enough."""
    first = start_engine(home, "--max-vms", "1")
    try:
        wait_until(
            lambda: query(home / "tickets.db", "SELECT 1 FROM engines WHERE state = 'running'"),
            30, "the first engine to register",
        )  # fmt: skip
        other = tmp_path / "other"
        assert swarm_inproc(other, "status", "--init").returncode == 0
        sqlite_shell(other / "tickets.db",
                     "INSERT INTO engines (id, host, pid, max_vms, backend)"
                     f" VALUES ('forged', '{hostname()}', {first.pid}, 1, 'process')")  # fmt: skip
        stopped = swarm(other, "stop", "--no-wait")
        assert stopped.stdout == "no engine is running on this host\n", stopped.stdout
        assert first.poll() is None
    finally:
        first.terminate()
        first.communicate(timeout=60)


USING = {
    "tickets.db": [("ticket", "list"), ("start", "--foreground"), ("run-ticket", "1")],
    "registry.db": [("agent", "list"), ("ticket", "create", "--title", "t", "--agent", "echo")],
}
TWO_NAMES = ": SQLite keeps a write-ahead log per name, so writers through two names lose data;"


@pytest.mark.parametrize("db", ["tickets.db", "registry.db"])
def test_a_store_file_with_a_hard_link_is_refused_by_every_command(
    home: Path, tmp_path: Path, db: str
) -> None:
    """SQLite keeps a WAL per name: through a hard link in another folder, two engines ran
    one ticket twice and rows were lost at a checkpoint. Whichever name is used, every
    command refuses the file in one line (exit 6, as for any store error)."""
    (tmp_path / "elsewhere").mkdir()
    os.link(home / db, tmp_path / "elsewhere" / db)
    before = sorted(p.name for p in home.iterdir())
    for named in (home / db, tmp_path / "elsewhere" / db):
        env = {"SWARM_TICKETS_DB" if db == "tickets.db" else "SWARM_REGISTRY_DB": str(named)}
        for args in USING[db]:
            done = swarm_inproc(home, *args, **env)
            assert (done.returncode, done.stdout) == (6, ""), (args, done.stdout, done.stderr)
            assert done.stderr == (
                f"error: database {named} has 2 hard links{TWO_NAMES}"
                " use one name (a symlink is fine)\n"
            ), args
    assert sorted(p.name for p in home.iterdir()) == before
    os.unlink(tmp_path / "elsewhere" / db)
    assert swarm_inproc(home, "ticket", "list").returncode == 0


@pytest.mark.parametrize("db", ["tickets.db", "registry.db"])
@pytest.mark.parametrize("kind", ["a directory", "a named pipe (FIFO)"])
def test_a_store_name_that_is_not_a_file_is_refused_as_what_it_is(
    tmp_path: Path, db: str, kind: str
) -> None:
    """A `tickets.db` that is a directory was refused as having "2 hard links" (a
    directory's own `.` is a second link). A name that is not a file is one line saying
    what it is (exit 6), left as it is."""
    home = tmp_path / "home"
    home.mkdir()
    named = home / db
    if kind == "a directory":
        named.mkdir()
    else:
        os.mkfifo(named)
    env = {"SWARM_TICKETS_DB" if db == "tickets.db" else "SWARM_REGISTRY_DB": str(named)}
    for args in (("status", "--init"), *USING[db]):
        done = swarm_inproc(home, *args, **env)
        assert (done.returncode, done.stdout) == (6, ""), (args, done.stdout, done.stderr)
        assert done.stderr == f"error: database {named} is {kind}, not a database file\n", args
    assert named.is_dir() if kind == "a directory" else named.is_fifo()
    assert not (home / f"{db}-wal").exists()


def test_a_store_file_bind_mounted_alone_is_refused(home: Path, tmp_path: Path) -> None:
    """A bind mount of the file alone is a second name too (its WAL is next to the
    mount): refused through that name, in a mount namespace of the command's own."""
    if shutil.which("unshare") is None or os.getuid() != 0:
        pytest.skip("a bind mount needs root and unshare")
    mounted = tmp_path / "mounted.db"
    mounted.touch()
    script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
            str(home / "tickets.db"), str(mounted), sys.executable, "-m", "swarm_engine",
            "ticket", "list"]  # fmt: skip
    done = subprocess.run(
        argv,
        env=env_for(home, SWARM_TICKETS_DB=str(mounted)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (6, ""), done.stderr
    assert done.stderr == (
        f"error: database {mounted} is a bind mount of the file alone{TWO_NAMES}"
        " mount its folder instead\n"
    )


def test_a_start_that_cannot_write_its_run_folder_says_so_in_one_line(home: Path) -> None:
    (home / "run").write_text("not a folder\n")
    done = swarm_inproc(home, "start", "--max-vms", "1")
    assert (done.returncode, done.stdout) == (1, ""), done.stderr
    assert done.stderr == f"error: cannot start an engine: {home / 'run'}: File exists\n"
    assert not query(home / "tickets.db", "SELECT 1 FROM engines")


def test_a_start_whose_engine_is_refused_says_the_engines_line(home: Path) -> None:
    """An engine that `start` spawned and that then found another holding the lock (it
    started between the two): `start` prints that engine's own line, exit 4, and leaves
    no pid file of it."""
    settings_run = home / "run"
    settings_run.mkdir(parents=True, exist_ok=True)
    held = hold_engine_lock(home / "tickets.db", hostname())  # this process: no engine
    try:
        done = swarm_inproc(home, "start", "--max-vms", "1")
    finally:
        os.close(held)
    assert done.returncode == 4, (done.stdout, done.stderr)
    assert done.stderr == (
        "error: another process holds this store's engine lock on this host, not an engine"
        " of this user (another user's engine is stopped by that user's 'swarm-engine stop');"
        " 'swarm-engine start --another' starts a second engine\n"
    )
    assert not list(settings_run.glob("engine-*.pid"))


def test_the_foreground_engine_prints_one_plain_line_per_ticket_that_fits(home: Path) -> None:
    """Each finished ticket is one line, cut to COLUMNS (140 when piped without it), with
    stored text shown literally: no markup, no control characters."""
    long = {"text": "word " * 200}
    for title, inputs in ((MARKUP_TITLE, long), ("bell\x07and\x1b[2Jclear", long)):
        swarm(home, "ticket", "create", "--title", title, "--agent", "echo",
              "--inputs-json", json.dumps(inputs), check=True)  # fmt: skip
    for columns, width in (("100", 100), ("", 140)):
        swarm(home, "ticket", "create", "--title", "again", "--agent", "echo",
              "--inputs-json", json.dumps(long), check=True)  # fmt: skip
        done = swarm(home, "start", "--foreground", "--until-idle", COLUMNS=columns, check=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("ticket ")]
        assert lines and all(re.match(r"ticket \d+ done in ", line) for line in lines), lines
        assert all(len(line) <= width for line in lines), (width, lines)
        assert max(len(line) for line in lines) > width - 10  # the room is used
        assert "\x07" not in done.stdout and "\x1b" not in done.stdout
        if columns:  # the first run: the titles as they were written, shown literally
            assert any(MARKUP_TITLE in line for line in lines), lines
            assert any("bell\\x07and\\x1b[2Jclear" in line for line in lines), lines


def test_a_forged_run_duration_is_shown_as_data(home: Path) -> None:
    """`workflow_runs.duration_ms` is any writer's: text with control characters, or a
    number too big to be a duration (it crashed the line's printer), is read as no
    duration (the store decodes number columns once), and the line leaves it out."""
    for title in ("text", "huge"):
        swarm(home, "ticket", "create", "--title", title, "--agent", "echo", check=True)
    sqlite_shell(home / "tickets.db",
                 "CREATE TRIGGER forge AFTER UPDATE OF status ON workflow_runs"
                 " WHEN NEW.status = 'done' BEGIN UPDATE workflow_runs SET duration_ms ="
                 " CASE (SELECT title FROM tickets WHERE id = NEW.ticket_id)"
                 " WHEN 'text' THEN char(27) || '[31m' || char(10) || 'forged' ELSE 9e999 END"
                 " WHERE id = NEW.id; END;")  # fmt: skip
    done = swarm(home, "start", "--foreground", "--until-idle", check=True)
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("ticket ")]
    assert len(lines) == 2 and not any(line.startswith("forged") for line in
                                       done.stdout.splitlines()), done.stdout  # fmt: skip
    assert sorted(re.sub(r"^ticket \d+ ", "", line) for line in lines) == [
        "done (huge): ",
        "done (text): ",
    ], lines


def test_run_ticket_says_a_long_error_on_one_line_in_a_pipe(tmp_path: Path) -> None:
    """`run-ticket --wait`'s step line and its `error:` line are one line each, however
    long, also when its output is a pipe (rich broke them at 140 columns: a script that
    reads the `error:` line got its start only). `ticket show` and `ticket list`, piped:
    nothing pads a line after its last character (a table's title and last column did),
    and a field's tab stays a tab (Rich expanded it to spaces)."""
    home = tmp_path / "home"
    words = " ".join(f"w{i}" for i in range(80))
    command = f"echo {words} >&2; exit 3"
    made = swarm(home, "ticket", "create", "--agent", "shell", "--title", "long " * 36,
                 "--description", "\nsecond\n\nfourth   ",
                 "--input", f"command={command}")  # fmt: skip
    assert made.returncode == 0, made.stderr
    done = swarm(home, "run-ticket", "1", "--wait")
    assert done.returncode != 0
    lines = done.stdout.splitlines()
    error = [ln for ln in lines if ln.startswith("error: ")]
    step = [ln for ln in lines if ln.startswith("step main failed")]
    assert len(error) == 1 and len(step) == 1, done.stdout
    assert error[0].endswith("w79") and step[0].endswith("w79"), done.stdout
    assert not any(ln.startswith("w") for ln in lines), done.stdout
    # `ticket show`'s fields, piped: the error whole on its line, nothing padded after it
    shown = swarm(home, "ticket", "show", "1")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    # one line too, its title's last space left out (no line ends in spaces)
    assert lines[0] == "ticket 1: " + ("long " * 36).rstrip(), lines[:2]
    runs = next(i for i, ln in enumerate(lines) if ln.startswith("run 1 "))
    fields = lines[1 : runs - 1]  # (before the blank line and the runs' tables)
    error = [ln for ln in fields if ln.startswith("error ")]
    assert len(error) == 1 and error[0].endswith("w79"), shown.stdout
    assert error[0].split()[1:6] == ["step", "'main'", "failed:", "command", "exited"]
    assert all(ln == ln.rstrip() for ln in fields), shown.stdout  # (blank lines: empty)
    at = fields.index("description")  # its first line blank: the name alone
    tabbed = swarm(home, "ticket", "create", "--title", "t", "--agent", "echo",
                   "--description", "a\tb\n\tc")  # fmt: skip
    assert tabbed.returncode == 0, tabbed.stderr
    shown_tabs = swarm(home, "ticket", "show", "2").stdout.splitlines()
    at_tabs = next(i for i, ln in enumerate(shown_tabs) if ln.startswith("description"))
    assert shown_tabs[at_tabs : at_tabs + 2] == ["description  a\tb", " " * 13 + "\tc"]
    assert fields[at + 1 : at + 4] == [" " * 13 + "second", "", " " * 13 + "fourth"], fields
    assert all(ln.startswith(" " * 13) for ln in fields if ln[:1] == " "), shown.stdout
    # its run table and `ticket list`'s: no line padded to the table's width either
    listed = swarm(home, "ticket", "list")
    assert listed.returncode == 0, listed.stderr
    for out in (lines[runs:], listed.stdout.splitlines()):
        assert out and all(ln == ln.rstrip() for ln in out), out


@pytest.mark.parametrize(
    "args", [("--version",), ("status",), ("ticket", "list"), ("ticket", "list", "--json")]
)
def test_output_to_a_full_disk_is_one_line_and_a_failure(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """`> file` on a full disk (here /dev/full, whose every write fails with ENOSPC): one
    `error:` line on stderr and exit 1, not a traceback (nor `Exception ignored` as the
    interpreter flushes the output again at exit)."""
    home = tmp_path / "home"
    swarm(home, "status", "--init", check=True)
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "swarm_engine", *args], env=env_for(home), stdout=full,
            stderr=subprocess.PIPE, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr == "error: cannot write the output: No space left on device\n"


def test_a_start_whose_line_meets_a_full_disk_says_its_engine_runs(tmp_path: Path) -> None:
    """`start > file` on a full disk: the engine started before its line was written, so
    the one `error:` line says so and how to stop it (tester h-198: it said only that
    the output could not be written, exit 1, as if nothing had started)."""
    home = tmp_path / "home"
    swarm(home, "status", "--init", check=True)
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "swarm_engine", "start", "--max-vms", "1"],
            env=env_for(home), stdout=full, stderr=subprocess.PIPE, text=True, timeout=60,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        assert done.returncode == 1, done.stderr
        [line] = done.stderr.splitlines()
        [pid] = query(home / "tickets.db", "SELECT pid FROM engines WHERE state = 'running'")
        assert line == (
            "error: cannot write the output: No space left on device;"
            f" engine (pid {pid['pid']}) started all the same: 'swarm-engine stop' stops it"
        )
    finally:
        assert swarm(home, "stop").returncode == 0


def test_output_that_fails_mid_run_never_touches_the_run(tmp_path: Path) -> None:
    """`run-ticket --wait` whose output cannot be written (a full disk behind `>`; a pipe
    whose reader quit) and a foreground engine whose reader quit after its first line:
    the runs go on and end as they would (the tickets `done`, run once), the output is
    dropped, and only a full disk is an error, said once at the end. A foreground engine
    whose first line cannot be written still does its work. (A printing failure
    inside the run failed its step as an internal error or left the ticket `running`; a
    closed pipe recorded it interrupted, as if by Ctrl-C, with a traceback.)"""
    home = tmp_path / "home"
    for n in range(5):
        made = swarm(home, "ticket", "create", "--title", f"t{n}", "--agent", "shell",
                     "--input", "command=sleep 0.2; echo hi")  # fmt: skip
        assert made.returncode == 0, made.stderr
    argv = [sys.executable, "-m", "swarm_engine"]
    with open("/dev/full", "w") as full:
        done = subprocess.run([*argv, "run-ticket", "1", "--wait"], env=env_for(home),
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)  # fmt: skip
    assert (done.returncode, done.stderr) == (
        1,
        "error: cannot write the output: No space left on device\n",
    )
    closed = subprocess.Popen([*argv, "run-ticket", "2", "--wait"], env=env_for(home),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert closed.stdout is not None
    closed.stdout.close()  # its reader is gone before the run prints anything
    _, err = closed.communicate(timeout=120)
    assert (closed.returncode, err) == (0, ""), err
    foreground = [*argv, "start", "--foreground", "--until-idle"]

    def engine_after(lines: int) -> subprocess.Popen[str]:
        """A foreground engine whose reader quits after its first `lines` lines."""
        engine = subprocess.Popen(foreground, env=env_for(home), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert engine.stdout is not None
        for _ in range(lines):
            assert engine.stdout.readline().startswith("engine starting")
        engine.stdout.close()
        return engine

    for lines in (0, 1):  # (0: before its first line; 1: `| head -1`)
        engine = engine_after(lines)
        _, err = engine.communicate(timeout=120)
        assert engine.returncode == 0 and "Traceback" not in err and "crashed" not in err, err
        swarm(home, "ticket", "create", "--title", "more", "--agent", "shell",
              "--input", "command=echo hi", check=True)  # fmt: skip
    with open("/dev/full", "w") as full:
        done = subprocess.run(foreground, env=env_for(home), stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1, done.stderr  # its work done, then the error said
    assert done.stderr.endswith("error: cannot write the output: No space left on device\n")
    rows = query(home / "tickets.db", "SELECT status, attempts FROM tickets ORDER BY id")
    assert [(r["status"], r["attempts"]) for r in rows] == [("done", 1)] * 7


@pytest.mark.parametrize(
    "args", [("status", "--json"), ("ticket", "list", "--json"), ("logs", "1")]
)
def test_a_closed_stdout_drops_the_output_without_a_traceback(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Standard output closed as the command starts (`>&-`): Python makes it None, and a
    write to it was an `AttributeError` traceback; what goes there is dropped, as `print`
    drops it."""
    home = tmp_path / "home"
    swarm(home, "ticket", "create", "--title", "t", "--agent", "echo", check=True)
    done = subprocess.run(
        [sys.executable, "-m", "swarm_engine", *args], env=env_for(home), stderr=subprocess.PIPE,
        text=True, timeout=60, stdin=subprocess.DEVNULL, preexec_fn=lambda: os.close(1),
    )  # fmt: skip
    assert "Traceback" not in done.stderr and done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("ticket", "list"),
        ("ticket", "list", "--json"),
        ("ticket", "show", "1"),
        ("agent", "list"),
        ("logs", "1"),
        ("--help",),
    ],
)
def test_a_reader_that_quits_ends_any_command_quietly(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """`swarm-engine ... | head -1`, its reader gone before the first write: exit 0 and
    nothing on stderr, for every command (click's own handling of a closed pipe ended
    them with 1)."""
    home = tmp_path / "home"
    swarm(home, "ticket", "create", "--title", "t", "--agent", "echo", check=True)
    reader_gone = subprocess.Popen(
        [sys.executable, "-m", "swarm_engine", *args], env=env_for(home),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert reader_gone.stdout is not None
    reader_gone.stdout.close()
    _, err = reader_gone.communicate(timeout=60)
    assert (reader_gone.returncode, err) == (0, "")

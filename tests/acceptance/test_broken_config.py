"""A config file broken while an engine runs: `stop`, `status` and `cleanup` still work
(reading only where the store is and this host's id from it, with a one-line warning);
`start` and every other command refuse it (fail closed)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import Target
from tests.support.cli import swarm

from swarm_engine.config import hostname

BREAKAGES = {
    "wrong-type": 'max_vms = "lots"\n',
    "out-of-range": "max_vms = 5000\n",
    "not-a-choice": 'log_level = "none"\n',
    "unknown-key": "max_vm = 2\n",
}


@pytest.fixture
def engine_home(store_target: Target, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A home whose config.toml says where its store is (a PostgreSQL URL, or a SQLite
    file that is not the home's default), with an engine started from it. Yields the home
    and the good config text; the engine is stopped at the end whatever happened."""
    home = tmp_path / "home"
    home.mkdir()
    if store_target.dialect == "postgresql":
        good = f'database_url = "{store_target.target}"\n'
    else:
        good = f'tickets_db = "{home / "elsewhere.db"}"\n'
    (home / "config.toml").write_text(good)
    swarm(home, "status", "--init", check=True)
    started = swarm(home, "start", "--max-vms", "1")
    assert started.returncode == 0, started.stderr
    try:
        yield home, good
    finally:
        (home / "config.toml").write_text(good)
        with contextlib.suppress(Exception):
            swarm(home, "stop", "--now")


def test_stop_status_and_cleanup_go_on_past_a_broken_config_start_does_not(
    engine_home: tuple[Path, str],
) -> None:
    home, good = engine_home
    config = home / "config.toml"
    for name, broken in BREAKAGES.items():
        config.write_text(good + broken)
        for command in ("status", "cleanup"):
            done = swarm(home, command)
            assert done.returncode == 0, (name, command, done.stderr)
            warned = [line for line in done.stderr.splitlines() if str(config) in line]
            assert len(warned) == 1 and warned[0].startswith("warning: "), (name, done.stderr)
            assert "goes on" in warned[0], (name, warned)
        status = swarm(home, "status")
        assert "elsewhere.db" in status.stdout or "postgresql" in status.stdout, status.stdout
        assert "running" in status.stdout  # the engine started from the good file
        for refused in (("start", "--max-vms", "1"), ("ticket", "list")):
            done = swarm(home, *refused)
            assert done.returncode == 5, (name, refused, done.stdout, done.stderr)
            assert done.stderr.startswith("error: ") and str(config) in done.stderr, done.stderr
            assert len(done.stderr.splitlines()) == 1
    stopped = swarm(home, "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
    assert stopped.stderr.startswith("warning: ") and str(config) in stopped.stderr
    assert "no engine is running" in swarm(home, "stop").stdout


@pytest.mark.parametrize("store_target", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "broken",
    [
        'tickets_db = "/no/closing/quote\n',  # the store's line itself is broken
        "tickets_db = 5\n",  # the store's value is of the wrong type
        'x = """\ntickets_db = "/hidden/in/a/string"\n',  # cannot tell what is a setting
        'tickets_db = "/a.db"\ntickets_db = "/b.db"\n',  # set twice
        'x = [\n  [1],\n]\ntickets_db = "/a.db"\ny = [\n',  # after what may start a table
        '[gateway]\ntickets_db = "/a.db"\ny = [\n',  # in a table, or misplaced
    ],
    ids=["broken-line", "wrong-type", "multiline-string", "twice", "after-a-bracket", "in-a-table"],
)
def test_a_config_whose_store_location_cannot_be_read_stops_nothing(
    engine_home: tuple[Path, str], broken: str
) -> None:
    """Fail closed: `stop` refuses when the file's own store setting is unreadable (it
    cannot know which store's engines to stop), and leaves the engine running."""
    home, good = engine_home
    config = home / "config.toml"
    config.write_text(good + broken)
    for command in ("stop", "status"):
        done = swarm(home, command)
        assert done.returncode == 5, (command, done.stdout, done.stderr)
        assert done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1
    config.write_text(good)
    assert "running" in swarm(home, "status", check=True).stdout


def test_cleanup_refuses_a_broken_config_whose_backend_options_it_cannot_read(
    tmp_path: Path,
) -> None:
    """`cleanup` reaps VMs by their backend's options: a broken `[backend_options]` table
    is one it needs, so it refuses; `stop` does not need it and goes on."""
    home = tmp_path / "home"
    swarm(home, "status", "--init", check=True)
    (home / "config.toml").write_text("[backend_options.process]\nisolation = \n")
    refused = swarm(home, "cleanup")
    assert refused.returncode == 5 and refused.stderr.startswith("error: config file ")
    went_on = swarm(home, "stop")
    assert went_on.returncode == 0 and went_on.stderr.startswith("warning: config file ")


NOT_TOML_NAMING_A_STORE = {
    # each is not TOML; a line-by-line reading took another store than TOML would
    "bom": "\ufeff{good}",
    "escaped-key": '"tickets\\u005fdb" = "/other.db"\n{good}x = [\n',
    "table-header-with-accent": '{good}["\u00e9"]\ntickets_db = "/other.db"\nx = [\n',
    "empty-table-header": '{good}[""]\ntickets_db = "/other.db"\nx = [\n',
    "line-separator-in-a-string": "{good}note = \"x\u2028tickets_db = '/other.db' #\"\nx = [\n",
    "next-line-in-a-string": "{good}note = \"x\u0085tickets_db = '/other.db' #\"\nx = [\n",
    "a-bad-line": "{good}max_vms = [\n",
}


@pytest.mark.parametrize("store_target", ["sqlite"], indirect=True)
@pytest.mark.parametrize("broken", NOT_TOML_NAMING_A_STORE.values(), ids=NOT_TOML_NAMING_A_STORE)
def test_a_config_that_is_not_toml_and_may_name_the_store_stops_nothing(
    engine_home: tuple[Path, str], broken: str
) -> None:
    """A file that is not TOML is not read line by line (such a reading may disagree with
    TOML's and act on another store): when its text may set a setting the command needs,
    the command refuses, naming the file, its TOML error and the setting; given that
    setting by its variable, it goes on."""
    home, good = engine_home
    config = home / "config.toml"
    config.write_text(broken.format(good=good), encoding="utf-8")
    for command in ("stop", "status", "cleanup"):
        done = swarm(home, command)
        assert done.returncode == 5, (command, done.stdout, done.stderr)
        assert done.stderr.startswith(f"error: config file {config}: "), done.stderr
        assert "may set" in done.stderr and "tickets_db" in done.stderr, done.stderr
        assert len(done.stderr.splitlines()) == 1
    env = {
        f"SWARM_{name.upper()}": value
        for name, value in {
            "tickets_db": str(home / "elsewhere.db"), "registry_db": str(home / "registry.db"),
            "database_url": f"sqlite:///{home / 'elsewhere.db'}",  # (an empty one: refused)
            "registry_url": f"sqlite:///{home / 'registry.db'}", "host_id": hostname(),
        }.items()
    }  # fmt: skip
    stopped = swarm(home, "stop", **env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
    assert stopped.stderr.startswith("warning: ") and "goes on" in stopped.stderr


def test_a_config_that_is_not_toml_and_names_no_needed_setting_is_gone_past(
    tmp_path: Path,
) -> None:
    """A file that is not TOML and holds no needed setting's name (nor a backslash) cannot
    have said where the store is: `stop` goes on with the defaults and stops the engine."""
    home = tmp_path / "home"
    swarm(home, "status", "--init", check=True)
    config = home / "config.toml"
    config.write_text("max_vms = 1\n")
    assert swarm(home, "start", "--max-vms", "1").returncode == 0
    try:
        config.write_text("max_vms = [\n")
        assert swarm(home, "ticket", "list").returncode == 5
        stopped = swarm(home, "stop")
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
        assert stopped.stderr.startswith("warning: ") and "goes on" in stopped.stderr
        config.write_text('max_vms = [\nnote = "a\\tb"\n')  # a backslash: it may spell one
        refused = swarm(home, "stop")
        assert refused.returncode == 5 and "may set" in refused.stderr, refused.stderr
    finally:
        config.write_text("")
        with contextlib.suppress(Exception):
            swarm(home, "stop", "--now")

"""Every setting from config.toml (or JSON in a SWARM_* variable) is held to its declared
type: `disk_mb = true`, `disk_mb = "64"`, `tmp_mb = 64.0` and `poll_interval = nan` were
taken without a word (a bool is an int in Python; pydantic's lax mode converts text)."""

import json
import math
import os
import subprocess
import sys
import tempfile
import types
import typing
from pathlib import Path, PurePath
from typing import Any, Literal, Union, get_args, get_origin

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarm_engine.agents.claude.settings import HostConfig, parse_host_config
from swarm_engine.agents.claude_code.settings import HostSettings, parse_host_settings
from swarm_engine.config import load_settings
from swarm_engine.config_model import SettingsModel, TriggerHostSettings
from swarm_engine.errors import ConfigError
from swarm_engine.gateway.settings import GatewaySettings
from swarm_engine.vm.options import ProcessOptions
from swarm_engine.vm.qemu.config import QemuOptions


def kind_of(annotation: Any) -> str | None:
    """int, float, bool, text or list: the kind a field needs (None: a table, or any)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        kinds = {kind_of(a) for a in args if a is not type(None)}
        return kinds.pop() if len(kinds) == 1 else None
    if origin is Literal:
        return "text" if all(isinstance(a, str) for a in args) else None
    if annotation in (int, float, bool):
        return annotation.__name__
    if annotation is str or (isinstance(annotation, type) and issubclass(annotation, PurePath)):
        return "text"
    if origin is tuple:
        return "list"
    return None


TABLES: dict[str, type[Any]] = {
    "": SettingsModel,
    "backend_options.process": ProcessOptions,
    "backend_options.qemu": QemuOptions,
    "gateway": GatewaySettings,
    "triggers.t": TriggerHostSettings,
    "agents.claude": HostConfig,
    "agents.claude-code": HostSettings,
}
KEYS = [
    (table, name, kind)
    for table, model in TABLES.items()
    for name, field in model.model_fields.items()
    if name not in ("home", "backend") or table == ""
    if (table, name) != ("", "home")  # never read from a file, whatever its type
    if (kind := kind_of(field.annotation)) is not None
]
TEXT = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=5)
WRONG: dict[str, st.SearchStrategy[Any]] = {
    "int": st.one_of(
        st.booleans(),
        st.integers(-5, 10**6).map(str),
        st.integers(1, 10**6).map(float),
        st.floats(allow_nan=True, allow_infinity=True),
        TEXT,
    ),
    "float": st.one_of(
        st.booleans(),
        st.sampled_from([math.nan, math.inf, -math.inf]),
        st.floats(0, 100).map(str),
        TEXT,
    ),
    "bool": st.one_of(
        st.integers(0, 1), st.sampled_from(["true", "false", "yes"]), st.floats(0, 1)
    ),
    "text": st.one_of(st.booleans(), st.integers(-5, 99), st.floats(0, 9)),
    "list": st.one_of(st.booleans(), st.integers(0, 99), TEXT),
}


def toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def test_every_key_of_every_section_is_covered() -> None:
    tables = {table for table, _, _ in KEYS}
    assert tables == set(TABLES)
    assert ("backend_options.process", "disk_mb", "int") in KEYS
    assert ("", "poll_interval", "float") in KEYS
    assert ("backend_options.qemu", "snapshot", "bool") in KEYS
    assert ("gateway", "ports", "list") in KEYS


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_wrong_typed_value_anywhere_is_refused_naming_key_value_and_type(
    data: st.DataObject,
) -> None:
    table, name, kind = data.draw(st.sampled_from(KEYS))
    value = data.draw(WRONG[kind])
    home = Path(tempfile.mkdtemp())
    head = f"[{table}]\n" if table else ""
    (home / "config.toml").write_text(f"{head}{name} = {toml(value)}\n")
    with pytest.MonkeyPatch.context() as env:
        for var in [v for v in os.environ if v.startswith("SWARM_")]:
            env.delenv(var)
        env.setenv("SWARM_HOME", str(home))
        with pytest.raises(ConfigError) as caught:
            load_settings()
    line = str(caught.value)
    key = f"{table}.{name}" if table else name
    assert line.startswith(f"setting {key}: "), line
    assert "\n" not in line and "expected" in line and str(home) in line
    shown = toml(value) if not isinstance(value, str) else repr(value)
    assert shown in line, line


def shape(tp: Any) -> Any:
    """A type as comparable structure: a model (or `typecheck.table`) as its fields'."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is typing.Annotated:
        return shape(args[0])
    if origin in (Union, types.UnionType):
        return frozenset(shape(a) for a in args)
    if origin is not None:
        return (origin, tuple(shape(a) for a in args))
    if isinstance(tp, type) and hasattr(tp, "model_fields"):
        return tuple(sorted((n, shape(f.annotation)) for n, f in tp.model_fields.items()))
    return tp


def test_the_agent_host_types_checked_at_load_are_the_models_own() -> None:
    """config.py checks `[agents.<kind>]` at load without importing the kinds' models:
    its copy of their types must be theirs."""
    from swarm_engine.config import AGENT_HOST_TYPES

    assert shape(AGENT_HOST_TYPES["claude"]) == shape(HostConfig)
    assert shape(AGENT_HOST_TYPES["claude-code"]) == shape(HostSettings)


def test_the_json_of_a_variable_is_held_to_the_same_types(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWARM_HOME", str(tmp_path))
    monkeypatch.delenv("SWARM_CONFIG", raising=False)
    monkeypatch.setenv("SWARM_BACKEND_OPTIONS", '{"process": {"disk_mb": "64"}}')
    with pytest.raises(ConfigError, match=r"disk_mb: '64' is text, expected an integer"):
        load_settings()
    monkeypatch.setenv("SWARM_BACKEND_OPTIONS", '{"process": {"disk_mb": 64, "tmp_mb": 8}}')
    monkeypatch.setenv("SWARM_MAX_VMS", "8")  # a plain variable is text by nature
    loaded = load_settings()
    assert loaded.max_vms == 8 and loaded.backend_options["process"].disk_mb == 64


def test_right_typed_values_still_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_HOME", str(tmp_path))
    monkeypatch.delenv("SWARM_CONFIG", raising=False)
    monkeypatch.delenv("SWARM_BACKEND_OPTIONS", raising=False)
    (tmp_path / "config.toml").write_text(
        "lease_ttl = 30\npoll_interval = 0.5\n[backend_options.qemu]\nboot_timeout = 30\n"
        'snapshot = false\n[gateway]\nports = [29000, 29100]\n[triggers.t]\nsecret_env = "S"\n'
    )
    loaded = load_settings()
    assert (loaded.lease_ttl, loaded.poll_interval, loaded.gateway.ports) == (
        30.0,
        0.5,
        (29000, 29100),
    )


@pytest.mark.parametrize(
    ("parse", "model", "where"),
    [
        (parse_host_config, HostConfig, "agents.claude"),
        (parse_host_settings, HostSettings, "agents.claude-code"),
    ],
)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_agent_host_settings_are_held_to_their_types(
    parse: typing.Callable[[Any], object], model: type[Any], where: str, data: st.DataObject
) -> None:
    keys = [(n, k) for n, f in model.model_fields.items() if (k := kind_of(f.annotation))]
    name, kind = data.draw(st.sampled_from(keys))
    value = data.draw(WRONG[kind])
    with pytest.raises(ConfigError, match=f"^setting {where}.{name}: .* expected "):
        parse({name: value})


def test_the_cli_says_one_line_and_exits_5(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[backend_options.process]\ndisk_mb = true\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_")}
    env["SWARM_HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "swarm_engine", "ticket", "list"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 5, done.stderr
    assert done.stderr.splitlines() == [
        "error: setting backend_options.process.disk_mb: true is a boolean, expected an"
        f" integer (in config file {tmp_path / 'config.toml'})"
    ]


def test_a_list_or_table_is_named_once() -> None:
    """`memory_cap = ["cgroup"]` said "a list is a list": the kind is said once."""
    from swarm_engine.typecheck import problem_line

    assert problem_line("setting x", ["cgroup"], "text") == "setting x: a list given, expected text"
    assert problem_line("setting x", {"a": 1}, "text") == "setting x: a table given, expected text"
    assert problem_line("setting x", "64", "an integer") == (
        "setting x: '64' is text, expected an integer"
    )

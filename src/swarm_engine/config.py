"""Settings: flags > environment (SWARM_*) > config file (<home>/config.toml) > defaults.

Environment values are strings (`SWARM_MAX_VMS=8`); mapping settings take JSON
(`SWARM_BACKEND_OPTIONS='{"qemu": {"warm": 2}}'`). Read by hand rather than through
pydantic-settings: it costs a tenth of a second at every command's start.

Every setting's rules are the pydantic model in config_model.py. Most commands start with
plain values only (numbers, paths, names; no backend options, triggers or gateway table):
those a quick check here accepts by itself, giving exactly what the model would, so a short
command does not import pydantic (about 90 ms; docs/benchmarks.md, "CLI start-up").
Anything the quick check does not vouch for, a bad value included, goes to the model,
which makes the settings or the error.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from types import GenericAlias
from typing import TYPE_CHECKING, Any, Literal, get_args

from swarm_engine.config_file import default_home, locate_config
from swarm_engine.errors import ConfigError
from swarm_engine.records import HOST_ID_RE, strict_json
from swarm_engine.typecheck import scalar_problem, table, type_problem

if TYPE_CHECKING:
    from swarm_engine.config_model import TriggerHostSettings
    from swarm_engine.gateway.settings import GatewaySettings
    from swarm_engine.vm.options import BackendOptions

HEARTBEATS_PER_LEASE = 3
"""A lease must outlast this many heartbeat intervals (renewals retry in between)."""
DATABASE_SCHEMES = ("postgresql://", "postgres://", "sqlite:///")

FIELDS = (
    "home", "tickets_db", "registry_db", "database_url", "registry_url", "host_id",
    "backend", "max_vms", "poll_interval", "lease_ttl", "heartbeat_interval", "busy_timeout",
    "log_level", "backend_options", "agents", "triggers", "gateway", "output_keep_bytes",
    "max_log_bytes", "max_run_stored_bytes", "stream_stall_timeout", "request_head_timeout", "request_body_timeout",
    "api_max_connections", "api_max_connections_per_address",
)  # fmt: skip
"""Every setting, in the order of `SettingsModel`'s fields (a test checks they agree)."""
JSON_FIELDS = frozenset({"backend_options", "agents", "triggers", "gateway"})
"""The mapping settings: their environment variables hold JSON."""

# The quick check's copy of the model's defaults and bounds for scalar settings (a test
# checks them against config_model.py): name -> (default, least, most).
INTS: dict[str, tuple[int, int, int]] = {
    "max_vms": (4, 1, 1024),
    "output_keep_bytes": (64 * 1024, 1024, 64 * 1024 * 1024),
    "max_log_bytes": (10 * 1024 * 1024, 4096, 2**30),
    "max_run_stored_bytes": (64 * 1024 * 1024, 1024 * 1024, 2**40),
    "api_max_connections": (1024, 1, 1_000_000),
    "api_max_connections_per_address": (64, 0, 1_000_000),
}
FLOATS: dict[str, tuple[float, float, float]] = {
    "poll_interval": (1.0, 0.01, 3600),
    "lease_ttl": (30.0, 0.3, 7 * 86400),
    "heartbeat_interval": (5.0, 0.05, 86400),
    "busy_timeout": (10.0, 0, 3600),
    "stream_stall_timeout": (30.0, 0.1, 3600),
    "request_head_timeout": (10.0, 0.1, 3600),
    "request_body_timeout": (30.0, 0.1, 3600),
}
TEXTS = tuple(n for n in FIELDS if n not in INTS and n not in FLOATS and n not in JSON_FIELDS)
"""The settings that are text (a path, a URL, a name): a number or a bool is refused."""
_PRICE = table({"input": float, "output": float, "cache_write": float | None,
                "cache_read": float | None})  # fmt: skip
_RETRY = table({"max_retries": int, "backoff_seconds": float, "backoff_factor": float,
                "max_backoff_seconds": float})  # fmt: skip
AGENT_HOST_TYPES: dict[str, type] = {
    "claude": table({
        "api_key_file": str | None, "api_key_command": str | list[str] | None,
        "base_url": str | None, "prices": GenericAlias(dict, (str, _PRICE)), "retry": _RETRY | None,
        "allow_unisolated": bool,
    }),
    "claude-code": table({"version": str, "cache_dir": Path, "install": bool, "npm": str}),
}  # fmt: skip
"""The types of the agent kinds' host settings (`[agents.claude]`: `HostConfig`,
`[agents.claude-code]`: `HostSettings`), checked strictly at load without importing
their models (a test checks that they agree)."""
BackendName = Literal["process", "qemu"]
BACKEND_NAMES: tuple[str, ...] = get_args(BackendName)
"""The VM backends' names, for checking `backend` when settings load without importing
vm/ (a test checks they are `vm.backends.BACKENDS`'s)."""
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)
LOG_FORMATS = ("text", "json")
"""`SWARM_LOG_FORMAT`'s choices (cli/logsetup.py), in any letter case."""
_DIGITS = re.compile(r"[0-9]{1,18}")
_DECIMAL = re.compile(r"[0-9]{1,15}(\.[0-9]{1,15})?")
_ENV_WHOLE = re.compile(r"-?[0-9]+", re.ASCII)
_ENV_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
"""How a number setting's `SWARM_*` variable is written: ASCII digits (a `.` for seconds),
an optional `-` (its range says no); nothing `int()`/`float()` would also take (` 8`, `+8`,
`8_0`, `'٨'`, `1e3`)."""


def sqlite_url_problem(url: str) -> str | None:
    """Why a `sqlite:///` URL is not a plain file path, or None: the store opens its path
    as a file, so a query (`?mode=ro`), a fragment, `:memory:` or a NUL would name a
    file no one meant (`/:memory:`, `x.db?mode=ro`)."""
    path = url.removeprefix("sqlite:///")
    if any(c in path for c in "?#\0") or path.strip("/") in ("", ":memory:"):
        return "a sqlite:/// URL names a database file: no query, fragment or :memory:"
    return None


def _target(url: str | None) -> str | Path | None:
    """A database URL as `open_store` takes it: a `sqlite:///` URL is a file path (so
    commands that only read treat it like the home's file: never made by mistake)."""
    if url is not None and url.startswith("sqlite:///"):
        return Path("/" + url.removeprefix("sqlite://").lstrip("/"))  # sqlite:////x too
    return url


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same real path (symlinks and `..` resolved),
    or, when both exist, one file under two names (a hard link)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # either is missing (or unreadable): not one file yet
        return False


def hostname() -> str:
    """The machine's name: `gethostname()`, which on POSIX is the `uname` node name (read
    from os.uname: importing socket costs a short command 2-3 ms)."""
    if hasattr(os, "uname"):
        name = os.uname().nodename
    else:  # pragma: no cover (Windows)
        import socket

        name = socket.gethostname()
    return name or "localhost"


class Settings:
    """Engine-wide settings, validated when made: `Settings(home=..., max_vms=8)` takes
    the fields of `SettingsModel` (config_model.py, where each one's rules are) and raises
    pydantic's `ValidationError` for a bad value; `load_settings` reads them from flags,
    the environment and the config file."""

    home: Path
    tickets_db: Path | None
    registry_db: Path | None
    database_url: str | None
    registry_url: str | None
    host_id: str
    backend: str
    max_vms: int
    poll_interval: float
    lease_ttl: float
    heartbeat_interval: float
    busy_timeout: float
    log_level: LogLevel
    backend_options: dict[str, BackendOptions]
    agents: dict[str, dict[str, Any]]
    triggers: dict[str, TriggerHostSettings]
    output_keep_bytes: int
    max_log_bytes: int
    max_run_stored_bytes: int
    stream_stall_timeout: float
    request_head_timeout: float
    request_body_timeout: float
    api_max_connections: int
    api_max_connections_per_address: int

    def __init__(self, **values: Any) -> None:
        checked = _quick_check(values)
        if checked is None:
            from swarm_engine.config_model import SettingsModel

            checked = SettingsModel(**values).fields()
        self._set(checked)

    @classmethod
    def _of(cls, checked: dict[str, Any]) -> Settings:
        """Settings of values already checked (`_quick_check` or the model)."""
        settings = cls.__new__(cls)
        settings._set(checked)
        return settings

    def _set(self, checked: dict[str, Any]) -> None:
        values = dict(checked)
        self._gateway: GatewaySettings | None = values.pop("gateway")
        vars(self).update(values)
        problem = self._one_file_problem()
        if problem:
            raise ConfigError(problem)

    def _one_file_problem(self) -> str | None:
        """Why the ticket store and the registry would be one SQLite file (by real path:
        symlinks and `..` resolved, or one file under two names), or None. Each holds its
        own schema, so one file read as the other gave a misleading schema-version error."""
        tickets, registry = self.tickets_target, self.registry_target
        if not (isinstance(tickets, Path) and isinstance(registry, Path)):
            return None  # a PostgreSQL registry has its own schema in a shared database
        if not _same_file(tickets, registry):
            return None
        if _target(self.registry_url) is not None:
            said = f"setting registry_url: names the ticket store's file {tickets}"
        elif _target(self.database_url) is not None:
            said = f"setting database_url: names the registry's file {registry}"
        elif self.registry_db is not None:
            said = f"setting registry_db: names the ticket store's file {tickets}"
        else:
            said = f"the ticket store {tickets} and the registry {registry} are one file"
        return f"{said}; the registry and the ticket store must be different databases"

    @property
    def gateway(self) -> GatewaySettings:
        """`[gateway]`: the model API gateway's port range and limits (docs/agents.md);
        its defaults are made when first asked for."""
        if self._gateway is None:
            from swarm_engine.gateway.settings import GatewaySettings

            self._gateway = GatewaySettings()
        return self._gateway

    def _values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Settings):
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the model it mirrors

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in self._values().items())})"

    @property
    def tickets_path(self) -> Path:
        return self.tickets_db or self.home / "tickets.db"

    @property
    def tickets_target(self) -> str | Path:
        """The ticket store to open: `database_url` (a `sqlite:///` one as its path), or
        the SQLite file in the home."""
        return _target(self.database_url) or self.tickets_path

    @property
    def registry_target(self) -> str | Path:
        """The registry to open: `registry_url`, else a PostgreSQL `database_url` (its own
        schema in that database), else the SQLite file (`registry_db`): a `sqlite:///`
        `database_url` names the ticket store's file, which holds no second schema."""
        shared = self.database_url if _target(self.database_url) == self.database_url else None
        return _target(self.registry_url) or shared or self.registry_path

    @property
    def registry_path(self) -> Path:
        return self.registry_db or self.home / "registry.db"

    @property
    def vms_dir(self) -> Path:
        return self.home / "vms"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def packages_dir(self) -> Path:
        return self.home / "packages"

    @property
    def images_dir(self) -> Path:
        return self.home / "images"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"


def _quick_check(values: Mapping[str, Any]) -> dict[str, Any] | None:
    """The settings exactly as `SettingsModel(**values)` makes them, when every value is
    one it surely accepts and converts the same way: numbers as numbers or plain decimal
    text within bounds, non-empty text for paths and names, no mapping setting but
    `agents` (and empty ones). `gateway` is None: its defaults, made when first used.
    None for anything else, valid or not: the model decides."""
    if not values.keys() <= set(FIELDS):
        return None  # an unknown setting
    out: dict[str, Any] = {"gateway": None, "backend_options": {}, "triggers": {}}
    for name in ("backend_options", "triggers", "gateway"):
        if name in values and values[name] != {}:
            return None
    for name, (int_default, least, most) in INTS.items():
        number = _plain_number(values.get(name, int_default), int)
        if number is None or not least <= number <= most:
            return None
        out[name] = number
    for name, (default, low, high) in FLOATS.items():
        real = _plain_number(values.get(name, default), float)
        if real is None or not low <= real <= high:
            return None
        out[name] = real
    if out["heartbeat_interval"] * HEARTBEATS_PER_LEASE > out["lease_ttl"]:
        return None
    paths = {"home": values["home"] if "home" in values else default_home()}
    paths.update((name, values.get(name)) for name in ("tickets_db", "registry_db"))
    for name, path in paths.items():
        if isinstance(path, str) and path.strip():  # a blank one: the model refuses it
            path = Path(path)
        if not isinstance(path, Path) and (path is not None or name == "home"):
            return None
        out[name] = path
    for name in ("database_url", "registry_url"):
        url = values.get(name)
        if not (url is None or (isinstance(url, str) and url.startswith(DATABASE_SCHEMES))):
            return None
        if url is not None and url.startswith("sqlite:///") and sqlite_url_problem(url):
            return None  # the model says why
        out[name] = url
    host_id = values["host_id"] if "host_id" in values else hostname()
    backend = values.get("backend", "process")
    level = values.get("log_level", "WARNING")
    level = level.upper() if isinstance(level, str) else level
    if not (isinstance(host_id, str) and HOST_ID_RE.fullmatch(host_id)):
        return None  # the model says why
    if backend not in BACKEND_NAMES or level not in LOG_LEVELS:
        return None
    out.update(host_id=host_id, backend=backend, log_level=level)
    agents = values.get("agents", {})
    if not (isinstance(agents, dict) and all(_text_keys(a) for a in (agents, *agents.values()))):
        return None
    out["agents"] = {name: dict(table) for name, table in agents.items()}
    return out


def _plain_number(value: Any, kind: type[int] | type[float]) -> int | float | None:
    """`value` as an int (`kind` int) or float when it is plainly one: a number (an int for
    int settings; never a bool) or decimal digits as text; None otherwise."""
    if type(value) is int or (kind is float and type(value) is float and math.isfinite(value)):
        return kind(value)
    if isinstance(value, str) and (_DIGITS if kind is int else _DECIMAL).fullmatch(value):
        return kind(value)
    return None


def _text_keys(table: Any) -> bool:
    return isinstance(table, dict) and all(isinstance(key, str) for key in table)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings. `overrides` are command-line flags (None means 'not given').
    `ConfigError` for a config file named by `config_file` (--config) or `SWARM_CONFIG`
    that is missing, for one that is not a regular file of at most 1 MiB
    (`<home>/config.toml` may be missing: nothing at its path), or that is not TOML, or
    for a bad value; a bad value's line names where it came from (the config
    file, `SWARM_<NAME>` or the flag)."""
    flags = {k: v for k, v in overrides.items() if v is not None}
    home, path, text = locate_config(config_file, flags)
    return _settings(home, path, _parsed(path, text), flags)


def load_settings_tolerant(
    keep: Collection[str], config_file: Path | None = None, **overrides: Any
) -> tuple[Settings, str | None]:
    """`load_settings` for a command that needs only the settings `keep` (where the home
    and the store are, this host's id) from the config file, such as `stop`: it must stop
    an engine started before the file was broken. The second item is then a one-line
    warning naming the file and its first problem.

    A file that is TOML but holds a bad value gives its `keep` keys as parsed (`ConfigError`
    when one of them is bad). A file that is not TOML gives nothing: the command goes on
    with the defaults, the environment and the flags only when its text cannot have set
    any of `keep` (`_may_set`), or when each one it may set is given by the environment or
    a flag; otherwise `ConfigError` naming the file, its TOML error and the key. A bad
    environment variable or flag is refused as `load_settings` refuses it."""
    flags = {k: v for k, v in overrides.items() if v is not None}
    home, path, text = locate_config(config_file, flags)
    import tomllib

    try:
        values = _toml(text) if text is not None else {}
    except tomllib.TOMLDecodeError as exc:
        if not keep:
            raise ConfigError(f"config file {path}: {exc}") from exc
        problem = ConfigError(f"config file {path}: {exc}")
        unset = [name for name in _may_set(text or "", keep) if not _given(name, flags)]
        if unset:
            raise ConfigError(f"{problem}; {_unset_line(unset)}") from None
        settings = _settings(home, path, {}, flags)
        said = ", ".join(sorted(keep))
        return settings, (
            f"{problem}; this command needs only {said}, which the file cannot have set (or "
            "the environment or a flag gives), and goes on without the file"
        )
    try:
        return _settings(home, path, values, flags), None
    except ConfigError as exc:
        if text is None or not keep:
            raise  # no file (nothing broken to read around), or nothing to keep
        problem = exc
    try:
        settings = _settings(home, path, {k: v for k, v in values.items() if k in keep}, flags)
    except ConfigError:
        raise problem from None  # the file's first problem, as a command that reads it all says
    said = ", ".join(sorted(keep))
    return settings, f"{problem}; this command reads only {said} from {path} and goes on"


def _may_set(text: str, keep: Collection[str]) -> list[str]:
    """The settings of `keep` that a config file's text (not TOML) may have been meant to
    set, sorted: each whose name it holds anywhere, and every one when it holds a
    backslash (a quoted key's escape can spell a name: `"tickets\\u005fdb"`). What TOML
    cannot read is not read line by line: a reading that may disagree with TOML's (a BOM,
    a table header, a line break inside a string) could act on another store."""
    if "\\" in text:
        return sorted(keep)
    return sorted(name for name in keep if name in text)


def _given(name: str, flags: Mapping[str, Any]) -> bool:
    """Whether the environment or a flag sets `name` whole, whatever the file says (a
    mapping setting's variable is merged with the file's table: it does not)."""
    if name in JSON_FIELDS:
        return False
    return name in flags or os.environ.get(f"SWARM_{name.upper()}") is not None


def _unset_line(names: list[str]) -> str:
    """What the file may set that the command needs, and how to go on: fix the file, or
    give each such setting by its variable (or flag), where that sets it whole."""
    ways = [
        f"SWARM_{name.upper()}" + (f" or --{name.replace('_', '-')}" if name in FLAGGED else "")
        for name in names
        if name not in JSON_FIELDS
    ]
    said = f"it may set {', '.join(names)}, which this command needs: fix the file"
    if len(ways) < len(names):
        return said  # a mapping setting's variable is merged with the file's table
    return f"{said}, or give {'it' if len(names) == 1 else 'them'} by {', '.join(ways)}"


FLAGGED = frozenset({"tickets_db", "registry_db"})
"""The settings a global flag of the command line gives (`--tickets-db`, `--registry-db`)."""


def _log_format_problem() -> str | None:
    """Why `SWARM_LOG_FORMAT` is not one of `LOG_FORMATS` (any letter case), or None (it
    is, or it is unset): a typo would give text lines where JSON ones were meant."""
    raw = os.environ.get("SWARM_LOG_FORMAT")
    if raw is None or raw.lower() in LOG_FORMATS:
        return None
    from swarm_engine.records import shown

    return (
        f"setting log_format: {shown(raw, 40)} is not one of {', '.join(LOG_FORMATS)}"
        " (in SWARM_LOG_FORMAT)"
    )


def _parsed(path: Path, text: str | None) -> dict[str, Any]:
    """The config file's values; `ConfigError` when it is not TOML."""
    if text is None:
        return {}
    import tomllib

    try:
        return _toml(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc


def _toml(text: str) -> dict[str, Any]:
    """`tomllib.loads(text)`; `tomllib.TOMLDecodeError` (never RecursionError) for arrays
    or inline tables nested deeper than its reader goes."""
    import tomllib

    try:
        return tomllib.loads(text)
    except RecursionError:
        raise tomllib.TOMLDecodeError("nested too deep to read") from None


def _settings(
    home: Path, path: Path, file_values: dict[str, Any], flags: dict[str, Any]
) -> Settings:
    """Settings of the config file's values, the environment and the flags."""
    if "home" in file_values:  # (the file is found through the home: never read there)
        raise ConfigError(
            f"setting home: not read from a config file; the home is set by SWARM_HOME or"
            f" --home (in config file {path})"
        )
    problem = _log_format_problem()
    if problem:
        raise ConfigError(problem)
    _check_types(file_values, f"config file {path}")
    from_environment = _from_environment()
    for name in JSON_FIELDS & from_environment.keys():
        _check_types({name: from_environment[name]}, f"SWARM_{name.upper()}")
    merged = dict(file_values)
    merged.update(from_environment)
    both = "backend_options" in file_values and "backend_options" in from_environment
    if both:
        merged["backend_options"] = _merged_options(
            file_values["backend_options"], from_environment["backend_options"]
        )
    merged.update(flags)
    merged["home"] = home
    checked = _quick_check(merged)
    if checked is None:
        from swarm_engine.config_model import checked_settings

        sources = {name: f"config file {path}" for name in file_values}
        sources.update((name, f"SWARM_{name.upper()}") for name in from_environment)
        if both:
            sources["backend_options"] = f"config file {path} or SWARM_BACKEND_OPTIONS"
        sources.update((name, f"--{name.replace('_', '-')}") for name in flags)
        checked = checked_settings(merged, sources)  # ConfigError for a bad value
    return Settings._of(checked)


def _merged_options(from_file: Any, from_environment: Any) -> Any:
    """`backend_options` of the file and of `SWARM_BACKEND_OPTIONS`, merged per backend
    and per option, the environment's winning: a variable that sets `tmp_mb` keeps the
    file's `disk_mb` (a limit is never dropped because another one was given). Both are
    of their type already (`_check_types`): a table of tables."""
    merged = {name: dict(options) for name, options in from_file.items()}
    for name, options in from_environment.items():
        merged[name] = {**merged.get(name, {}), **options}
    return merged


def _check_types(values: Mapping[str, Any], source: str) -> None:
    """`ConfigError` for a value of a typed source (TOML, JSON) that is not strictly of its
    setting's type (typecheck.py): `disk_mb = true`, `max_vms = "8"`, `tmp_mb = 64.0`,
    `poll_interval = nan`. One line: the key, the value, the type it needs, the source."""
    nested: dict[str, Any] = {}
    for name, value in values.items():
        where = f"setting {name}"
        if name in INTS:
            problem = scalar_problem(int, value, where)
        elif name in FLOATS:
            problem = scalar_problem(float, value, where)
        elif name in TEXTS:
            problem = scalar_problem(str, value, where)
        elif name == "agents":  # each known kind's table by its types, the rest by the kind
            problem = type_problem(dict[str, dict[str, Any]], value, where) or next(
                filter(None, (
                    type_problem(AGENT_HOST_TYPES[kind], host, f"{where}.{kind}")
                    for kind, host in value.items() if kind in AGENT_HOST_TYPES
                )), None,
            )  # fmt: skip
        elif name in JSON_FIELDS:
            nested[name] = value
            continue
        else:
            continue  # an unknown setting: the model says so
        if problem:
            raise ConfigError(f"{problem} (in {source})")
    if nested:
        from swarm_engine.config_model import typed_problem

        problem = typed_problem(nested)
        if problem:
            raise ConfigError(f"{problem} (in {source})")


def _from_environment() -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in FIELDS:
        raw = os.environ.get(f"SWARM_{name.upper()}")
        if raw is None or name == "home":
            continue
        if name in JSON_FIELDS:
            try:  # (no NaN, no key twice, `TooDeep` past a reader's depth)
                values[name] = strict_json(raw, unique_keys=True)
            except ValueError as exc:
                why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                raise ConfigError(f"SWARM_{name.upper()} is not valid JSON: {why}") from exc
        else:
            values[name] = _plain_text(name, raw)
    return values


def _plain_text(name: str, raw: str) -> str:
    """`raw`, the value of `SWARM_<NAME>`; `ConfigError` when `name` is a number setting
    and `raw` is not written as `_ENV_WHOLE` or `_ENV_DECIMAL` say, naming the variable."""
    if name in INTS and not _ENV_WHOLE.fullmatch(raw):
        what = "a whole number in ASCII digits"
    elif name in FLOATS and not _ENV_DECIMAL.fullmatch(raw):
        what = "a number of seconds in plain decimal (ASCII digits, at most one '.')"
    else:
        return raw
    from swarm_engine.records import shown

    raise ConfigError(f"setting {name}: {shown(raw, 40)} is not {what} (in SWARM_{name.upper()})")

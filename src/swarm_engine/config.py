"""Settings: flags > environment (SWARM_*) > config file (<home>/config.toml) > defaults.

Environment values are strings (`SWARM_MAX_VMS=8`); mapping settings take JSON
(`SWARM_BACKEND_OPTIONS='{"qemu": {"warm": 2}}'`). Read by hand rather than through
pydantic-settings: it costs a tenth of a second at every command's start.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from platformdirs import user_data_dir
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from swarm_engine.errors import ConfigError
from swarm_engine.gateway.settings import GatewaySettings
from swarm_engine.models import first_error
from swarm_engine.vm.options import BackendOptions, check_names, tag_by_name

HEARTBEATS_PER_LEASE = 3
"""A lease must outlast this many heartbeat intervals (renewals retry in between)."""


def _target(url: str | None) -> str | Path | None:
    """A database URL as `open_store` takes it: a `sqlite:///` URL is a file path (so
    commands that only read treat it like the home's file: never made by mistake)."""
    if url is not None and url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite://"))
    return url


def _hostname() -> str:
    import socket

    return socket.gethostname() or "localhost"


def default_home() -> Path:
    return Path(user_data_dir("swarm-engine", appauthor=False))


class TriggerHostSettings(BaseModel):
    """`[triggers.<name>]`: a webhook trigger's secret, on the host only (never in a
    definition). `secret`, or `secret_env`: the environment variable that holds it."""

    model_config = ConfigDict(extra="forbid")

    secret: str | None = Field(default=None, min_length=16)
    secret_env: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_source(self) -> TriggerHostSettings:
        if (self.secret is None) == (self.secret_env is None):
            raise ValueError("give exactly one of secret or secret_env")
        return self

    def resolve(self) -> str | None:
        """The secret, or None when `secret_env` names an unset or empty variable."""
        if self.secret is not None:
            return self.secret
        return os.environ.get(str(self.secret_env)) or None


class Settings(BaseModel):
    """Engine-wide settings. Every field can be set as SWARM_<FIELD> in the environment."""

    model_config = ConfigDict(extra="forbid")

    home: Path = Field(default_factory=default_home)
    tickets_db: Path | None = None
    registry_db: Path | None = None
    database_url: str | None = None
    """`postgresql://user@host/db`: the ticket store (and the registry, unless
    `registry_url` says otherwise) in PostgreSQL, shared by several engine hosts
    (docs/scale-out.md). Unset: SQLite files in the home folder."""
    registry_url: str | None = None
    host_id: str = Field(default_factory=lambda: _hostname(), min_length=1, max_length=253)
    """This engine's host, as recorded with its engines and VMs: each host reaps only its
    own VMs. Default: the machine's hostname."""
    backend: str = "process"
    max_vms: int = Field(default=4, ge=1, le=1024)
    poll_interval: float = Field(default=1.0, ge=0.01, le=3600, allow_inf_nan=False)
    lease_ttl: float = Field(default=30.0, ge=0.3, le=7 * 86400, allow_inf_nan=False)
    heartbeat_interval: float = Field(default=5.0, ge=0.05, le=86400, allow_inf_nan=False)
    busy_timeout: float = Field(default=10.0, ge=0, le=3600, allow_inf_nan=False)
    """Seconds one store call waits for another writer's lock before it counts as busy
    (the engine then retries; a command reports it)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "WARNING"
    backend_options: dict[str, BackendOptions] = Field(default_factory=dict)
    """`[backend_options.<backend>]`: each table validated against that backend's model
    (vm/options.py) here, when the settings load."""
    agents: dict[str, dict[str, Any]] = Field(default_factory=dict)
    triggers: dict[str, TriggerHostSettings] = Field(default_factory=dict)
    """`[triggers.<name>]`: webhook secrets (docs/api.md#webhook-triggers)."""
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    """`[gateway]`: the model API gateway's port range and limits (docs/agents.md)."""
    # Output bounds (issue 8 item 5; docs/sandbox.md). Of each command's stdout and stderr,
    # this many bytes of the head and as many of the tail are kept; the middle is cut.
    output_keep_bytes: int = Field(default=64 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Size cap of each step's log file (artifacts/.../output.log), in bytes.
    max_log_bytes: int = Field(default=10 * 1024 * 1024, ge=4096)

    @field_validator("backend_options", mode="before")
    @classmethod
    def _tag_backend_options(cls, value: Any) -> Any:
        return tag_by_name(value)

    @field_validator("backend_options")
    @classmethod
    def _backend_options_match_names(
        cls, value: dict[str, BackendOptions]
    ) -> dict[str, BackendOptions]:
        check_names(value)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _heartbeat_below_lease(self) -> Settings:
        if self.heartbeat_interval * HEARTBEATS_PER_LEASE > self.lease_ttl:
            raise ValueError(
                f"heartbeat_interval ({self.heartbeat_interval:g}s) must be at most 1/"
                f"{HEARTBEATS_PER_LEASE} of lease_ttl ({self.lease_ttl:g}s), so that a lease"
                " survives a few failed renewals"
            )
        return self

    @field_validator("database_url", "registry_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None  # SWARM_DATABASE_URL= (empty) means: not set
        if value is not None and not value.startswith(
            ("postgresql://", "postgres://", "sqlite:///")
        ):
            raise ValueError("must start with postgresql://, postgres:// or sqlite:///")
        return value

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
        """The registry to open: `registry_url`, else `database_url`, else the SQLite file."""
        return _target(self.registry_url) or _target(self.database_url) or self.registry_path

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


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings. `overrides` are command-line flags (None means 'not given')."""
    flags = {k: v for k, v in overrides.items() if v is not None}
    home = Path(flags.get("home") or os.environ.get("SWARM_HOME") or default_home())
    path = config_file or (
        Path(os.environ["SWARM_CONFIG"]) if os.environ.get("SWARM_CONFIG") else home / "config.toml"
    )
    file_values: dict[str, Any] = {}
    if path.is_file():
        try:
            file_values = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} cannot be read as UTF-8 text: {exc}") from exc
    elif config_file is not None:
        raise ConfigError(f"config file {path} does not exist")
    merged = dict(file_values)
    merged.update(_from_environment())
    merged.update(flags)
    merged["home"] = home
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(f"setting {first_error(exc)}") from exc
    return settings


def _from_environment() -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        raw = os.environ.get(f"SWARM_{name.upper()}")
        if raw is None or name == "home":
            continue
        if field.annotation is not None and (
            "dict" in str(field.annotation) or field.annotation is GatewaySettings
        ):
            try:
                values[name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"SWARM_{name.upper()} is not valid JSON: {exc.msg}") from exc
        else:
            values[name] = raw
    return values

"""Every setting's full rules, as pydantic models: the one word on what a setting accepts.

`config.load_settings` builds `Settings` from these when its quick check (config.py) does
not vouch for the values by itself: anything but plain values of scalar settings (a
backend's options, triggers, the gateway, a number written as `"1e1"`, a bad value...).
Bad values are refused here, with pydantic's message for the first problem.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from swarm_engine.config import (
    DATABASE_SCHEMES,
    FIELDS,
    HEARTBEATS_PER_LEASE,
    BackendName,
    LogLevel,
    hostname,
    sqlite_url_problem,
)
from swarm_engine.config_file import default_home
from swarm_engine.errors import ConfigError
from swarm_engine.gateway.settings import GatewaySettings
from swarm_engine.records import HOST_ID_FORM, HOST_ID_RE, shown
from swarm_engine.vm.options import BackendOptions, check_names, tag_by_name

BLANK = "is empty; unset it for the default, or give a value"
"""Why an empty (or whitespace) database or path setting is refused: taken as unset, an
engine with an unset `$PG_URL` would work a private SQLite queue in its home."""

MIN_SECRET_LENGTH = 16
"""The fewest characters a webhook trigger's secret may hold (its HMAC key), blank never."""


WHSEC = "whsec_"
"""How a Standard Webhooks secret written as its key's base64 begins."""


def whsec_key(value: str) -> bytes | None:
    """The key a `whsec_<base64>` secret encodes (as the Standard Webhooks scheme's senders
    write one), or None for any other secret (its UTF-8 bytes are the key). `ValueError`
    when what follows `whsec_` is not base64 of a key."""
    if not value.startswith(WHSEC):
        return None
    rest = value[len(WHSEC) :]
    try:
        key = base64.b64decode(rest + "=" * (-len(rest) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise ValueError(
            "starts with whsec_ but what follows is not the base64 of a key (a Standard"
            " Webhooks secret is whsec_ and its key's base64)"
        )
    return key


def secret_problem(value: str) -> str | None:
    """Why `value` cannot be a webhook secret (shorter than `MIN_SECRET_LENGTH`, blank:
    only whitespace, or `whsec_` and no base64 after it), or None. The secret itself is
    never in the line."""
    if not value.strip():
        return "is blank (only whitespace)"
    if len(value) < MIN_SECRET_LENGTH:
        return (
            f"holds {len(value)} character{'s' if len(value) != 1 else ''}, fewer than the"
            f" {MIN_SECRET_LENGTH} a webhook secret needs"
        )
    try:
        whsec_key(value)
    except ValueError as exc:
        return str(exc)
    return None


class TriggerHostSettings(BaseModel):
    """`[triggers.<name>]`: a webhook trigger's secret, on the host only (never in a
    definition). `secret`, or `secret_env`: the environment variable that holds it. Either
    way the secret is held to one rule (`secret_problem`): 16+ characters, not blank; a
    variable's value when `serve` starts (`env_problem`) and at each delivery."""

    model_config = ConfigDict(extra="forbid")

    secret: str | None = Field(default=None, min_length=MIN_SECRET_LENGTH)
    secret_env: str | None = Field(default=None, min_length=1)
    signature: Literal["standard-webhooks", "body"] = "standard-webhooks"
    """How deliveries are signed (service/triggers.py): `standard-webhooks` (the Standard
    Webhooks scheme: the delivery's id and time signed with its body, 5 minutes' window),
    or `body` (`X-Swarm-Signature` over the body alone, as GitHub's: replayable)."""

    @field_validator("secret")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be blank (only whitespace)")
        if v is not None:
            whsec_key(v)  # (its ValueError, one line, is the setting's error)
        return v

    @model_validator(mode="after")
    def _one_source(self) -> TriggerHostSettings:
        if (self.secret is None) == (self.secret_env is None):
            raise ValueError("give exactly one of secret or secret_env")
        return self

    def resolve(self) -> str | None:
        """The secret, or None when `secret_env` names an unset or empty variable (no
        secret here: deliveries are refused). `ValueError` naming the variable (never its
        value) when it holds one that breaks the rule (`secret_problem`)."""
        if self.secret is not None:
            return self.secret
        problem = self.env_problem()
        if problem is not None:
            raise ValueError(problem)
        return os.environ.get(str(self.secret_env)) or None

    def env_problem(self) -> str | None:
        """Why `secret_env`'s variable cannot be the secret (`$X holds 1 character, ...`),
        or None: no `secret_env`, the variable unset or empty (no secret), or a good one."""
        if self.secret_env is None:
            return None
        value = os.environ.get(self.secret_env)
        problem = secret_problem(value) if value else None
        return None if problem is None else f"${self.secret_env} {problem}"


class SettingsModel(BaseModel):
    """Engine-wide settings, validated (`config.Settings` holds the result). Every field
    can be set as SWARM_<FIELD> in the environment."""

    model_config = ConfigDict(extra="forbid")

    home: Path = Field(default_factory=default_home)
    tickets_db: Path | None = None
    registry_db: Path | None = None
    database_url: str | None = None
    """`postgresql://user@host/db`: the ticket store (and the registry, unless
    `registry_url` says otherwise) in PostgreSQL, shared by several engine hosts
    (docs/scale-out.md). Unset: SQLite files in the home folder."""
    registry_url: str | None = None
    host_id: str = Field(
        default_factory=lambda: hostname(), min_length=1, max_length=253, validate_default=True
    )
    """This engine's host, as recorded with its engines and VMs: each host reaps only its
    own VMs. Default: the machine's hostname. A plain name (`HOST_ID_RE`): no space, no
    control character, nothing that looks like another id; the default too (a hostname
    `böx .` is refused, as is `SWARM_HOST_ID=böx .`)."""
    backend: BackendName = "process"
    max_vms: int = Field(default=4, ge=1, le=1024)
    poll_interval: float = Field(default=1.0, ge=0.01, le=3600, allow_inf_nan=False)
    lease_ttl: float = Field(default=30.0, ge=0.3, le=7 * 86400, allow_inf_nan=False)
    heartbeat_interval: float = Field(default=5.0, ge=0.05, le=86400, allow_inf_nan=False)
    busy_timeout: float = Field(default=10.0, ge=0, le=3600, allow_inf_nan=False)
    """Seconds one store call waits for another writer's lock before it counts as busy
    (the engine then retries; a command reports it)."""
    log_level: LogLevel = "WARNING"
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
    max_log_bytes: int = Field(default=10 * 1024 * 1024, ge=4096, le=2**30)
    """Size cap of each step's log file (artifacts/.../output.log), in bytes: at most 1 GiB,
    a file on the host's disk per step (the run's store budget, `max_run_stored_bytes`, is
    in the database; one step's kept output, `output_keep_bytes`, at most 64 MiB)."""
    max_run_stored_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024, le=2**40)
    """Bytes one run may store in its steps' rows (every attempt's inputs and outputs, as
    stored) and its steps' live logs: a ticket's inputs named by each of 100 steps were
    stored 100 times. A run that would store more fails with one line naming this setting
    (`engine.bounds.RunBudget`)."""
    stream_stall_timeout: float = Field(default=30.0, ge=0.1, le=3600, allow_inf_nan=False)
    """Seconds a client of a live log stream (`serve`) may take to take one event (a
    stalled client, one that stopped reading): then it is disconnected, its slot freed."""
    request_head_timeout: float = Field(default=10.0, ge=0.1, le=3600, allow_inf_nan=False)
    """Seconds a client of `serve` has to send a request's head (its request line and
    headers) once it connected or began one: then its connection is closed."""
    request_body_timeout: float = Field(default=30.0, ge=0.1, le=3600, allow_inf_nan=False)
    """Seconds a client of `serve` has to send a request's body once its head came."""
    api_max_connections: int = Field(default=1024, ge=1, le=1_000_000)
    """Connections `serve` keeps open at once (fewer when its open-file limit is low):
    one more is answered 503 and closed at once."""
    api_max_connections_per_address: int = Field(default=64, ge=0, le=1_000_000)
    """Connections `serve` keeps open at once from one client address (an IPv6 one's
    /64), so that one client cannot hold all `api_max_connections`; one more is answered
    503 and closed at once. 0: no such cap (behind a reverse proxy, where every client
    comes from the proxy's address)."""

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

    @field_validator("host_id")
    @classmethod
    def _plain_host_id(cls, value: str) -> str:
        if not HOST_ID_RE.fullmatch(value):
            whose = " (this machine's hostname, the default)" if value == hostname() else ""
            raise ValueError(
                f"{shown(value)}{whose} is not a plain name: {HOST_ID_FORM} characters (set "
                "SWARM_HOST_ID or host_id in the config file)"
            )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _heartbeat_below_lease(self) -> SettingsModel:
        if self.heartbeat_interval * HEARTBEATS_PER_LEASE > self.lease_ttl:
            raise ValueError(
                f"heartbeat_interval ({self.heartbeat_interval:g}s) must be at most 1/"
                f"{HEARTBEATS_PER_LEASE} of lease_ttl ({self.lease_ttl:g}s), so that a lease"
                " survives a few failed renewals"
            )
        return self

    @field_validator("tickets_db", "registry_db", mode="before")
    @classmethod
    def _path_not_blank(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():  # Path("") would be the cwd
            raise ValueError(BLANK)
        return value

    @field_validator("database_url", "registry_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():  # (an unset $PG_URL): fail closed,
            raise ValueError(BLANK)  # never a private SQLite queue in the home
        if value is not None and not value.startswith(DATABASE_SCHEMES):
            raise ValueError("must start with postgresql://, postgres:// or sqlite:///")
        problem = sqlite_url_problem(value) if value and value.startswith("sqlite:///") else None
        if problem:
            raise ValueError(problem)
        return value

    def fields(self) -> dict[str, Any]:
        """Every setting's value, by name (what `config.Settings` holds)."""
        return {name: getattr(self, name) for name in FIELDS}


def typed_problem(values: Mapping[str, Any]) -> str | None:
    """Why a mapping setting from TOML or JSON (`backend_options`, `triggers`, `gateway`)
    holds a value not strictly of its declared type, anywhere inside (typecheck.py), or
    None: `[backend_options.process] disk_mb = "64"` names `backend_options.process.disk_mb`."""
    from swarm_engine.typecheck import type_problem

    for name, value in values.items():
        field = SettingsModel.model_fields.get(name)
        if field is None:
            continue  # an unknown setting: the model says so
        shaped = tag_by_name(value) if name == "backend_options" else value
        problem = type_problem(field.annotation, shaped, f"setting {name}")
        if problem:
            return problem
    return None


def checked_settings(
    values: Mapping[str, Any], sources: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Every setting, validated; `ConfigError` naming the first bad one, on one line, and
    where its value came from (`sources`: a setting's name -> `config file <path>`,
    `SWARM_<NAME>`, `--<flag>`), as a type error names it (config.py, `_check_types`)."""
    from swarm_engine.models import first_error

    try:
        return SettingsModel(**values).fields()
    except ValidationError as exc:
        raise ConfigError(f"setting {first_error(exc)}{_where(exc, sources or {})}") from exc


def _where(exc: ValidationError, sources: Mapping[str, str]) -> str:
    """Where the first error's value came from: ` (in SWARM_MAX_VMS)`; for a rule of
    several settings (`heartbeat_interval` against `lease_ttl`), each one it names that
    was set: ` (heartbeat_interval in config file PATH, lease_ttl in SWARM_LEASE_TTL)`."""
    error = exc.errors()[0]
    if error["loc"]:
        source = sources.get(str(error["loc"][0]))
        return f" (in {source})" if source else ""
    msg = str(error["msg"])
    spots = {n: m.start() for n in FIELDS if n in sources and (m := re.search(rf"\b{n}\b", msg))}
    named = sorted(spots, key=spots.__getitem__)
    return f" ({', '.join(f'{n} in {sources[n]}' for n in named)})" if named else ""

"""Typed records shared by every layer: agent and workflow definitions (validated by
pydantic); ticket statuses and usage, from records.py.

Numbers in a definition are strict: a whole-number field takes an integer (not `true`, not
`'5'`, not `5.0`), an on/off field a bool, and a number field such as `timeout_seconds` a
number, never text (`'30'`), and a finite one. registry/plain.py relies on it."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

# the pydantic-free records and name patterns live in records.py (the store, short commands
# and registry/plain.py use them without pydantic); they are re-exported here
from swarm_engine.errors import VMError
from swarm_engine.records import ENV_MAX_VARS, ENV_NAME_MAX, MAX_STEP_COST_USD, MAX_STEP_TOKENS
from swarm_engine.records import ENV_NAME_RE as ENV_NAME_RE
from swarm_engine.records import IMAGE_RE as IMAGE_RE
from swarm_engine.records import NAME_RE as NAME_RE
from swarm_engine.records import QEMU_MIN_MEMORY_MB as QEMU_MIN_MEMORY_MB
from swarm_engine.records import TERMINAL as TERMINAL
from swarm_engine.records import VERSION_RE as VERSION_RE
from swarm_engine.records import TicketStatus as TicketStatus
from swarm_engine.records import Usage as Usage
from swarm_engine.records import split_ref as split_ref
from swarm_engine.records import strict_json as strict_json
from swarm_engine.vm.base import output_file_path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


STEP_TIMEOUT_MAX = 7 * 24 * 3600
"""The longest a step may run (an agent's or a workflow step's `timeout_seconds`) and wait
between its attempts (`retry.max_backoff_seconds`): 7 days. Past it a number stops meaning
a time (from about 1.8e19 s, `prlimit --cpu` cannot take it); a registry row past it does
not decode, so its tickets fail with one line naming the field."""
RUN_TIMEOUT_MAX = 365 * 24 * 3600
"""The longest a workflow's `timeout_seconds` may be: a year, as a ticket's."""


class VMRequirements(_Strict):
    """The `vm:` block of agent.yaml."""

    backend: str | None = None
    memory_mb: int | None = Field(default=None, strict=True, ge=16, le=65536)
    vcpus: int | None = Field(default=None, strict=True, ge=1, le=64)
    network: bool = Field(default=False, strict=True)
    allowed_ports: tuple[Annotated[int, Field(strict=True, ge=1, le=65535)], ...] = ()
    image: str | None = None

    @field_validator("allowed_ports")
    @classmethod
    def _distinct_ports(cls, ports: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(ports)) != len(ports):
            raise ValueError("a port is listed twice")
        return ports

    @field_validator("image")
    @classmethod
    def _image_name(cls, name: str | None) -> str | None:
        # a name in the host's images folder, never a path: an agent cannot choose the
        # kernel, initrd or machine options its VM boots with
        if name is not None and not IMAGE_RE.fullmatch(name):
            raise ValueError("must be an image name (letters, digits, '.', '_', '-'), not a path")
        return name


class ApiBudget(_Strict):
    """Stop the step once it has used this many tokens (all four kinds) or USD: a whole
    number and a finite amount (no budget is no `budget:`, never `.inf`), at most what a
    step is believed to use (`records.MAX_STEP_TOKENS`, `MAX_STEP_COST_USD`)."""

    max_tokens: int | None = Field(default=None, strict=True, gt=0, le=MAX_STEP_TOKENS)
    max_usd: float | None = Field(
        default=None, strict=True, allow_inf_nan=False, gt=0, le=MAX_STEP_COST_USD
    )


class ModelApiSpec(_Strict):
    """`model_api:` of a shell agent: its command may call the model API through the
    engine's gateway (docs/agents.md), metered and held to `budget`."""

    budget: ApiBudget = Field(default_factory=ApiBudget)


def _model_api_form(value: Any) -> str:
    return "budget" if isinstance(value, dict | ModelApiSpec) else "bool"


class RetryPolicy(_Strict):
    attempts: int = Field(default=1, strict=True, ge=1, le=20)
    backoff_seconds: float = Field(default=1.0, strict=True, ge=0, le=3600)
    backoff_factor: float = Field(default=2.0, strict=True, ge=1, le=10)
    max_backoff_seconds: float = Field(
        default=60.0, strict=True, allow_inf_nan=False, ge=0, le=STEP_TIMEOUT_MAX
    )


def _output_file(declared: str) -> str:
    # checked whenever a definition is read (a registry row is untrusted), not only at
    # registration: the claude kinds read these files after their (paid) session
    try:
        output_file_path(declared)
    except VMError as exc:
        raise ValueError(str(exc)) from None
    return declared


class AgentSpec(_Strict):
    """One agent definition, as written in agent.yaml (or built in)."""

    name: str = Field(strict=True)
    version: str = Field(default="1.0.0", strict=True)
    description: str = ""
    kind: str = "shell"
    command: str | list[str] | None = None
    entry: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    memory_mb: int = Field(default=512, strict=True, ge=16, le=65536)
    vcpus: int = Field(default=1, strict=True, ge=1, le=64)
    timeout_seconds: float = Field(default=600.0, strict=True, gt=0, le=STEP_TIMEOUT_MAX)
    env: dict[str, str] = Field(default_factory=dict)
    vm: VMRequirements = Field(default_factory=VMRequirements)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    config: dict[str, Any] = Field(default_factory=dict)
    output_files: list[Annotated[str, AfterValidator(_output_file)]] = Field(default_factory=list)
    """Workspace files the claude kinds return (`vm.base.output_file_path`): never a path
    outside the workspace, the workspace itself or a folder."""
    model_api: Annotated[
        Annotated[Annotated[bool, Field(strict=True)], Tag("bool")]
        | Annotated[ModelApiSpec, Tag("budget")],
        Discriminator(_model_api_form),
    ] = False
    """`true` or `{budget: ...}`: the step's VM gets the model API gateway (shell only). An
    object is read as the spec alone, so its error names the field (`model_api.budget...`)."""
    package_path: str | None = None
    """Where `agent register` copied the package (on the host that registered it); None:
    nothing but `agent.yaml` to upload, the agent runs on any host."""
    package_digest: str | None = None
    """`sha256:...` of the package's files (`agents.files.package_digest`): a step reads
    its own host's `<packages>/<name>/<version>` and runs it only if it holds these."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.fullmatch(v):
            raise ValueError(
                "must be lowercase letters, digits, '.', '_' or '-' (optionally '_template:' first)"
            )
        return v

    @model_validator(mode="after")
    def _qemu_memory(self) -> AgentSpec:
        memory = self.vm.memory_mb or self.memory_mb
        if self.vm.backend == "qemu" and memory < QEMU_MIN_MEMORY_MB:
            raise ValueError(
                f"memory_mb {memory} is below {QEMU_MIN_MEMORY_MB}, the least a qemu VM "
                "boots with (vm.backend: qemu)"
            )
        return self

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not VERSION_RE.fullmatch(str(v)):
            raise ValueError("must be a version like 1.0.0")
        return str(v)

    @field_validator("command")
    @classmethod
    def _command(cls, v: str | list[str] | None) -> str | list[str] | None:
        # checked whenever a definition is read too: such a command could never start
        # (`/bin/sh: : Permission denied`), so every ticket of the agent would fail
        if isinstance(v, str) and not v.strip():
            raise ValueError("must not be empty or blank")
        if isinstance(v, list) and not v:
            raise ValueError("must not be an empty list")
        if isinstance(v, list) and not v[0].strip():
            raise ValueError("its first item, the program, must not be empty or blank")
        if any("\x00" in item for item in ([v] if isinstance(v, str) else v or [])):
            raise ValueError("contains a NUL character (no program can be given one)")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        # checked whenever a definition is read (a registry row is untrusted), not only at
        # registration: a process cannot be started with such a variable. (Any name is
        # safe to set: the environment reaches the command only, never a host program,
        # docs/security.md, so `LD_PRELOAD` or `PATH` steer the sandbox's own programs.)
        if len(env) > ENV_MAX_VARS:
            raise ValueError(f"{len(env)} variables, over {ENV_MAX_VARS}")
        for name, value in env.items():
            shown = repr(name) if len(name) <= 40 else repr(name[:39] + "…")
            if not ENV_NAME_RE.fullmatch(name):
                raise ValueError(
                    f"{shown} is not an environment variable name (letters, digits and '_',"
                    f" not starting with a digit, at most {ENV_NAME_MAX} characters"
                    + (f"; this one has {len(name):,})" if len(name) > ENV_NAME_MAX else ")")
                )
            if "\x00" in value:
                raise ValueError(f"the value of {shown} contains a NUL character")
        return env

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def is_template(self) -> bool:
        return self.name.startswith("_template:")

    @property
    def model_api_spec(self) -> ModelApiSpec | None:
        """What `model_api:` asks for, or None when the agent declares no model API use."""
        if isinstance(self.model_api, ModelApiSpec):
            return self.model_api
        return ModelApiSpec() if self.model_api else None


class StepSpec(_Strict):
    id: str
    agent: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    needs: list[str] = Field(default_factory=list)
    timeout_seconds: float | None = Field(
        default=None, strict=True, allow_inf_nan=False, gt=0, le=STEP_TIMEOUT_MAX
    )
    retry: RetryPolicy | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,63}", v):
            raise ValueError(
                "step id must be a letter or '_' then letters, digits, '_' or '-',"
                f" at most 64 characters in all (this one has {len(v):,})"
                if len(v) > 64
                else "step id must be a letter or '_' then letters, digits, '_' or '-'"
            )
        return v


class TriggerSpec(_Strict):
    """What starts a workflow on its own (issue 13): a cron schedule, or a webhook
    (`POST /v1/triggers/<name>`, its secret in host configuration only). Each firing
    creates one ticket of the workflow with these literal `inputs` (data, never a
    template) and `priority`."""

    name: str
    cron: str | None = None
    """Five fields (minute hour day month weekday) or six (seconds last), UTC
    (`cronrules.cron_problem` says which field is wrong)."""
    webhook: bool = Field(default=False, strict=True)
    """Only `true` or `false` (`"yes"` or `1` is refused, not read as true)."""
    sub_minute: bool = Field(default=False, strict=True)
    """Lets `cron` fire more than once a minute (a sixth field naming several seconds):
    without it such a schedule is refused (`registry.workflows.check_workflow`)."""
    inputs: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(default=0, ge=-(2**63), le=2**63 - 1)

    @field_validator("name")
    @classmethod
    def _trigger_name(cls, v: str) -> str:
        if not NAME_RE.fullmatch(v) or v.startswith("_template:"):
            raise ValueError("must be lowercase letters, digits, '.', '_' or '-'")
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from swarm_engine.cronrules import cron_problem

        problem = cron_problem(v)  # (naming the field at fault)
        if problem is not None:
            raise ValueError(problem)
        return v


MAX_STEPS = 1000
"""The most steps a workflow may have: each is a VM run and a row of its own, and a
definition row is untrusted (any SQLite client writes it), so its size is bounded."""

MAX_TRIGGERS = 32
"""The most triggers a workflow may have. Every engine evaluates every cron trigger of
every workflow (`engine.cron`), and one schedule may cost croniter milliseconds, so a
definition's triggers are bounded: more is refused at registration, and a registry row
holding more (written by any SQLite client) does not decode (its workflow is left out,
and the engine's cron task says so in one warning line)."""


class WorkflowSpec(_Strict):
    name: str = Field(strict=True)
    version: str = Field(default="1.0.0", strict=True)
    description: str = ""
    variables: dict[str, Any] = Field(default_factory=dict)
    steps: list[StepSpec] = Field(max_length=MAX_STEPS)
    outputs: dict[str, Any] | None = None
    timeout_seconds: float | None = Field(
        default=None, strict=True, allow_inf_nan=False, gt=0, le=RUN_TIMEOUT_MAX
    )
    triggers: list[TriggerSpec] = Field(default_factory=list)

    @field_validator("triggers", mode="before")
    @classmethod
    def _few_triggers(cls, v: Any) -> Any:
        """Refuse too many triggers before any is validated (each schedule is checked by
        croniter, which may take milliseconds)."""
        if isinstance(v, list) and len(v) > MAX_TRIGGERS:
            raise ValueError(f"at most {MAX_TRIGGERS} triggers per workflow, not {len(v)}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.fullmatch(v) or v.startswith("_template:"):
            raise ValueError("must be lowercase letters, digits, '.', '_' or '-'")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not VERSION_RE.fullmatch(str(v)):
            raise ValueError("must be a version like 1.0.0")
        return str(v)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


_NUMBER_TYPES = frozenset({"int_type", "float_type", "bool_type"})
_TEXT_FIELDS = frozenset({"name", "version"})
"""Text fields whose value is often written as a number (`version: 1.10`): given one, the
error says to quote it (the number may not say what was written: `1.10` reads as 1.1)."""


_BOUND_TYPES = frozenset(
    {"literal_error", "enum", "greater_than", "greater_than_equal", "less_than",
     "less_than_equal", "finite_number", "multiple_of"}
)  # fmt: skip
"""Errors of a value of the right type but out of its range or choices: the line names the
value given (`Input should be 'cgroup' or 'rlimit', not 'none'`)."""


def _given(err: Any) -> str:
    """For a strict number or switch given as something else, what it was (shortened):
    most often a number YAML read as text (`1e3`, `'30'`); for a value out of its range
    or choices, that value."""
    given = err.get("input")
    if err.get("type") in _BOUND_TYPES and isinstance(given, str | int | float):
        shown = repr(given) if len(repr(given)) <= 40 else repr(given)[:37] + "..."
        return f", not {shown}"
    if err.get("type") == "string_type" and isinstance(given, int | float):
        if isinstance(given, bool) or not err["loc"] or err["loc"][-1] not in _TEXT_FIELDS:
            return ""
        return f", not the number {given!r} (quote it: a number is not read as written)"
    if err.get("type") not in _NUMBER_TYPES or "input" not in err:
        return ""
    given = err["input"]
    if isinstance(given, str):
        shown = given if len(given) <= 40 else given[:37] + "..."
        hint = ""
        if err["type"] == "float_type" and _numeric(given):
            hint = " (YAML reads 1e3 and quoted numbers as text: write 1000 or 1.0e+3)"
        elif err["type"] == "int_type" and _numeric(given):
            hint = " (write the number without quotes)"
        return f", not the text {shown!r}{hint}"
    if isinstance(given, bool | int | float):
        return f", not {given!r}"
    return f", not {type(given).__name__}"


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def first_error(exc: ValidationError, under: str = "") -> str:
    """A validation failure as one line: where (below `under`, a dotted path), what, and
    how many more."""
    err = exc.errors()[0]
    parts = [str(p) for p in err["loc"]]
    # a tagged union repeats its tag (`backend_options.qemu.qemu.accel`): say it once
    loc = ".".join(p for i, p in enumerate(parts) if i == 0 or p != parts[i - 1])
    msg = str(err["msg"]).removeprefix("Value error, ") + _given(err)
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    where = ".".join(p for p in (under, loc) if p)
    return f"{where}: {msg}{more}" if where else f"{msg}{more}"

"""Plain records and value rules shared by every layer, without pydantic: ticket statuses,
API usage, `name@version` references, strict JSON, the patterns of definition names.

The store and the short commands (`status`, `ticket create`, `ticket cancel`) need these
and nothing of `models.py`'s validated definitions, whose pydantic import is a third of a
short command's start-up (docs/benchmarks.md, "CLI start-up"). `models.py` re-exports them.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from swarm_engine.jsonrange import fits_double as fits_double
from swarm_engine.jsonrange import long_digits
from swarm_engine.jsonrange import out_of_range as out_of_range
from swarm_engine.jsonsize import JsonText as JsonText
from swarm_engine.jsonsize import JsonTooBig as JsonTooBig
from swarm_engine.jsonsize import JsonTooDeep as JsonTooDeep
from swarm_engine.jsonsize import bounded_json as bounded_json
from swarm_engine.jsonsize import json_size as json_size
from swarm_engine.jsonsize import json_text as json_text
from swarm_engine.jsonsize import mib as mib  # (their home; kept here for importers)

# `\Z`, never `$`: `$` also matches before a last newline, so `"echo\n"` was a name
NAME_RE = re.compile(r"(_template:)?[a-z0-9][a-z0-9_.-]{0,62}\Z")
"""An agent's, workflow's or trigger's name (only agents may be `_template:`s): match it
with `fullmatch` (`match` is as good: it ends in `\\Z`)."""
IMAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*\Z")
"""A VM image's name in the host's images folder (never a path): match it with `fullmatch`."""
VERSION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+-]{0,31}\Z")
"""A definition's version: match it with `fullmatch`."""
HOST_ID_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9_])?\Z")
"""An engine host's id (`host_id`, a hostname by default): a plain name, so that no two
ids look alike (`vm` and `vm ` or `vm\n` took separate engine locks on one machine and
showed as `vm` twice; so did `vm.`, a hostname's root form). Match it with `fullmatch`.
Letter case is kept: `VM` and `vm` are two hosts."""
HOST_ID_FORM = (
    "letters, digits, '.', '_' and '-', starting with a letter or digit and not ending"
    " in '.' or '-', at most 253"
)
ENV_NAME_MAX = 256
"""The most characters a name in an agent's `env` may have."""
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")
"""A name in an agent's `env` (a shell variable's name, at most `ENV_NAME_MAX` characters):
match it with `fullmatch`."""
QEMU_MIN_MEMORY_MB = 128
"""The least `memory_mb` a qemu VM gets: the image's kernel panics ("System is deadlocked on
memory") below about 80 MiB and hangs silently at 16; 128 leaves it room. Other backends
take 16 (a memory cap on a process tree, not a guest kernel's RAM)."""

ENV_MAX_VARS = 1000
"""The most variables an agent's `env:` may set (a command's environment holds at most
2,500, `vm.sandbox_env.MAX_ENV_VARS`: room is left for its `INPUT_*` variables)."""


STORE_INT_MIN, STORE_INT_MAX = -(2**63), 2**63 - 1
"""The integers every store holds (SQLite's INTEGER, PostgreSQL's bigint)."""
_USAGE_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "turns",
)


class TicketStatus(StrEnum):
    DRAFT = "draft"
    OPEN = "open"
    CLAIMED = "claimed"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({TicketStatus.DONE, TicketStatus.FAILED, TicketStatus.CANCELLED})


@dataclass
class Usage:
    """API usage of one step (or a run, summed). Zero for agents without an API."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    turns: int = 0
    cost_usd: float = 0.0
    stop_reason: str | None = None

    def __post_init__(self) -> None:
        # Defence in depth: a count the store cannot hold (its integers end at 2^63-1)
        # would fail the write of the step's end, and with it the run's. Readers refuse
        # such counts long before (agents/claude/usage.py, at most 2^40 an answer).
        for name in _USAGE_COUNTS:
            value = getattr(self, name)
            if type(value) is not int or not STORE_INT_MIN <= value <= STORE_INT_MAX:
                raise ValueError(f"usage {name} {shown(value, 40)} is not a storable count")

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.turns + other.turns,
            self.cost_usd + other.cost_usd,
            other.stop_reason or self.stop_reason,
        )

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_input_tokens
            + self.cache_read_input_tokens
        )


MAX_STEP_TOKENS = 2**40
"""The most tokens of one kind (input, output, cache writes, cache reads) a step or a run
is believed to have used: about 1.1 trillion, some 5,000 times a full 200k context read
at every turn of a 1,000-turn step (a step runs at most 7 days: `timeout_seconds`). A
stored value past it (or negative, or not an integer) was written by no real run: it is a
defect of its row, read as None and counted in no total (store/sql/*/queries/runs.sql:
`close_run`, `usage_totals`, `steps_after`; `Decoder.usage`)."""
MAX_STEP_COST_USD = 1e6
"""The most a step or a run is believed to have cost, in USD (a million: no run reaches
it; `max_usd` stops a Claude agent long before). Past it, negative or not finite: a
defect, counted in no total, as `MAX_STEP_TOKENS`."""
MAX_STEP_DURATION_MS = 366 * 86400 * 1000
"""The longest a step is believed to have run, in ms (a year: a step's timeout is at most
7 days, a ticket's 365). Past it or negative: a defect of the step, not in the duration
histogram."""
MAX_TOTAL_TOKENS = 2**53 - 1
"""Token totals (of a run, of `/v1/usage`, of `/metrics`) stop here: the largest integer
every JSON reader holds exactly (JavaScript's `Number.MAX_SAFE_INTEGER`). Reached only
by more than 8,000 steps at `MAX_STEP_TOKENS` each."""

MAX_TICKET_TIMEOUT_SECONDS = 365 * 86400.0
"""The longest a ticket's `timeout_seconds` may be: a year. `ticket create` and the API
refuse more; a row another client wrote with more fails its ticket with one line."""


def split_ref(ref: str) -> tuple[str, str | None]:
    """'name@1.2' -> ('name', '1.2'); 'name' -> ('name', None). `ConfigError` for an empty
    version after the `@` (`'name@'`): neither the latest version nor a version `''`, the
    one rule of every reference (`ticket create --agent/--workflow`, `agent show`, a
    step's `agent:`, the HTTP API, list filters)."""
    name, sep, version = ref.partition("@")
    if sep and not version:
        from swarm_engine.errors import ConfigError

        raise ConfigError(
            f"{shown(ref)} has no version after '@' (write NAME for the latest version, or"
            " NAME@VERSION)"
        )
    return name, (version if sep else None)


def finite_only(value: Any) -> Any:
    """`value` (a JSON-like structure) with every float that is not finite (infinity, NaN,
    which no strict JSON reader takes) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_only(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_only(v) for v in value]
    return value


def escaped_name(value: Any) -> str:
    """A stored name or version as it is shown on one line, in an error or a table: as
    stored when it is printable text without leading, trailing or repeated spaces; else
    quoted as `repr` writes it when spaces would hide a difference (`'vm '`, `'echo\\n'`),
    else with every character that is not printable escaped (`x\\x1b[2J`): a row's
    `echo\\n` never shows as `echo`."""
    text = str(value)
    if text.isprintable() and text == " ".join(text.split()):
        return text
    if text.isprintable() or text.strip() != text or "  " in text:
        return repr(text)
    return text.encode("unicode_escape").decode("ascii")


SHOWN_CHARS = 200
"""How much of a value a one-line error shows (`shown`)."""

MAX_INPUTS_BYTES = 8 * 1024 * 1024
"""A ticket's `inputs` holds at most this much JSON (UTF-8 bytes, and as the engine writes it again): the store writes a
ticket's whole row again at each change of it (claim, each lease renewal, end), under the
write lock every engine waits for, and an engine holds several copies of the value while
it runs; so one row's size must stay small against everyone's time and memory. Larger data
is better handed in as a file or a URL."""


def inputs_too_big(text: str) -> str | None:
    """Why `text` (a ticket's inputs as JSON) is more than `MAX_INPUTS_BYTES` as the
    engine writes it again (run and step rows: JSON with `\\u` escapes, up to 12 bytes a
    character), or None; None too for text that is not JSON (its readers say so)."""
    if len(text) * 12 <= MAX_INPUTS_BYTES:  # (no character takes more than 12)
        return None
    try:  # what it is, and what it becomes written again
        size = max(len(text.encode("utf-8", "replace")), len(json.dumps(strict_json(text))))
    except (ValueError, RecursionError):
        return None
    if size <= MAX_INPUTS_BYTES:
        return None
    return f"{size:,} bytes of JSON, {INPUTS_OVER}"


INPUTS_OVER = (
    f"more than the {MAX_INPUTS_BYTES // 1024 // 1024} MiB a ticket's inputs may hold (hand"
    " larger data in as a file or a URL)"
)


MAX_RESULT_BYTES = 8 * 1024 * 1024
"""A ticket's `result` is read only when it holds at most this much JSON (UTF-8 bytes, as
stored); a larger one (only another client writes one: the engine measures a result
before it writes it and fails the ticket instead, `engine/bounds.py`) is a row defect, read
as null. Every read of a ticket (a list's
line, a dashboard poll, a claim) would copy and parse it: a 60 MB result made
`GET /v1/tickets` answer 60 MB and a dashboard poll take 2.4 GB. The store's ticket reads
measure it in SQL and never hand a larger one over (`ticket_columns` in
`store/sql/*/queries/tickets.sql`; `inputs` likewise, over `MAX_INPUTS_BYTES`)."""


RESULT_OVER = (
    f"more than the {MAX_RESULT_BYTES // 1024 // 1024} MiB a ticket's result may hold (not read)"
)


def result_too_big(text: str) -> str | None:
    """Why `text` (a ticket's result as JSON) is more than `MAX_RESULT_BYTES`, or None."""
    if len(text) * 4 <= MAX_RESULT_BYTES:  # (no character takes more than 4 bytes)
        return None
    size = len(text.encode("utf-8", "replace"))
    return None if size <= MAX_RESULT_BYTES else f"{size:,} bytes of JSON, {RESULT_OVER}"


MAX_TITLE_BYTES = 64 * 1024
"""A ticket's `title` holds at most this much text (UTF-8 bytes, as stored). A title is a
line for people and for `${ticket.title}`: views show its first 200 characters. Kept small
for the same reason as `MAX_INPUTS_BYTES`: the store writes the whole row again at each
claim, lease renewal and end, and every read of a ticket (each `ticket list` page, each
claim's returned row) copies it (a 60 MB title cost each lease renewal 0.2 s, under the
write lock every engine waits for)."""

MAX_DESCRIPTION_BYTES = 1024 * 1024
"""A ticket's `description` holds at most this much text (UTF-8 bytes, as stored): an
agent's task, or a model's prompt, with room to spare (a long prompt is tens of KiB), for
the reasons of `MAX_TITLE_BYTES`. Larger data is better handed in as a file or a URL."""


MAX_ERROR_BYTES = 64 * 1024
"""An `error` (of a ticket, a run or a step) or a step's `stop_reason` is read whole only
when it holds at most this much text (UTF-8 bytes, as stored); a longer one (the engine
writes one line: a ticket's error is at most 500 characters) is a row defect, read as its
first 200 characters. Every read of a ticket, a run or a step measures it in SQL
(`ticket_columns`, `run_columns`, `step_columns` in `store/sql/*/queries/`): a 60 MB error
in each made `GET /v1/tickets/1` answer 720 MB."""

MAX_RECORD_JSON_BYTES = 8 * 1024 * 1024
"""A run's or a step's `inputs` and `outputs` are read only when they hold at most this much
JSON (UTF-8 bytes, as stored; the cap of a ticket's inputs and result); a larger one is a
row defect, read as null, never handed over by the store (`run_columns`, `step_columns`).
The engine writes none: it measures a step's inputs against this cap, and its outputs
against `agents.files.MAX_OUTPUTS_BYTES`, before it writes them (`engine/bounds.py`)."""

MAX_NOTE_BYTES = 4 * 1024
"""A status event's `note` (a copy of the ticket's error at the change) is read whole only
when it holds at most this much text; a longer one is a row defect, read as its first 200
characters (`event_columns` in `store/sql/*/queries/tickets.sql`)."""

MAX_NAME_BYTES = 1024
"""A name column another client may write (a VM's or an engine's `id`, `host`, `backend`,
`kind`, `state`, a VM's `engine_id` and `isolation`, a definition's `name`, `version` and
`kind`) is read only when it holds at most this much text (UTF-8 bytes, as stored; the
engine writes at most a few dozen characters: `NAME_RE` allows 72, `VERSION_RE` 32, a host
name 64); a longer one is a row defect, read as null, never a start that something could
act on or look up (`vm_columns`, `engine_columns`, `agent_columns`, `workflow_columns` in
`store/sql/*/queries/`)."""

MAX_PATH_BYTES = 4096
"""A VM's `workspace`, `socket_path` and `overlay_path` are read only when they hold at most
this much text (PATH_MAX); a longer one is a row defect, read as null, never cut: the
reaper never connects to or deletes a path it did not read whole (a null path names
nothing of a backend's: nothing is touched)."""

MAX_DEFINITION_BYTES = 1024 * 1024
"""A definition as given, by whatever way in: an `agent.yaml` or `workflow.yaml` file
(`registry.loader.read_yaml`) or a JSON body of `POST /v1/agents` or `/v1/workflows`
(`api/registry.py`, 413), at most this many bytes: one rule, whichever is used."""

MAX_SPEC_BYTES = 8 * 1024 * 1024
"""A registry row's `spec` (JSON) is read only when it holds at most this much (UTF-8
bytes, as stored); a larger one is not read, and its definition fails with one line. The
loader makes a spec of at most about 3 MiB from a definition file (`MAX_DEFINITION_BYTES`,
1 MiB: an escape such as `"\\0"` in 2 bytes of YAML is 6 of JSON; the defaults of at most
1,000 steps add some hundreds of KiB)."""

SPEC_OVER = f"more than the {MAX_SPEC_BYTES // 1024 // 1024} MiB a definition may hold (not read)"

RECORD_JSON_OVER = (
    f"more than the {MAX_RECORD_JSON_BYTES // 1024 // 1024} MiB it may hold (not read)"
)


def text_too_big(text: str, limit: int) -> str | None:
    """Why `text` (a ticket's title or description) is more than `limit` bytes as UTF-8,
    or None. Costs nothing for text of up to `limit / 4` characters (no character takes
    more than 4 bytes), a scan for ASCII text; a lone surrogate counts as 3 bytes."""
    if len(text) * 4 <= limit:
        return None
    if text.isascii():
        size = len(text)
    else:  # encoded a piece at a time: a copy of at most 4 MiB, whatever the size
        size = sum(
            len(text[at : at + 1024 * 1024].encode("utf-8", "surrogatepass"))
            for at in range(0, len(text), 1024 * 1024)
        )
    return None if size <= limit else f"{size:,} bytes of text, {text_over(limit)}"


def text_over(limit: int) -> str:
    """The end of `text_too_big`'s line for a text over `limit` bytes."""
    unit = f"{limit // 1024 // 1024} MiB" if limit >= 1024 * 1024 else f"{limit // 1024} KiB"
    return f"more than the {unit} it may hold"


def binary_not_text(value: bytes) -> str:
    """Why a BLOB is refused where text is stored, and how to store the text instead (the
    sqlite3 shell's `readfile()` and a driver's bytes store a BLOB)."""
    return f"binary (a BLOB of {len(value):,} bytes), not text: write CAST(x AS TEXT)"


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """`value` as an error message names it: its `repr`, whole when that is at most `limit`
    characters, else the first `limit` characters, `…` and how long the value is:
    `'aaaa…' (100,000 characters)`. Every one-line error that names a value from a row or
    a request goes through here, so one value of any size makes a line of at most about
    `limit` + 30 characters (a 100 KB `agent_id` is not copied into `tickets.error` and
    its event's `note`). Only the first `limit` characters of text or bytes are read."""
    if isinstance(value, str | bytes):
        size, unit = len(value), "bytes" if isinstance(value, bytes) else "characters"
        text = repr(value[:limit])
    else:
        text = repr(value)
        size, unit = len(text), "characters"
    if size <= limit and len(text) <= limit:
        return text
    return f"{text[:limit]}… ({size:,} {unit})"


def cut_message(text: str, limit: int = 4 * SHOWN_CHARS) -> str:
    """A message built elsewhere (jsonschema's, naming values it does not let us `shown`)
    whole when at most `limit` characters, else cut as `shown` cuts a value."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def money(value: Any) -> str:
    """A cost in USD for people (CLI tables, dashboard): `-` when it is not a finite number
    (a row any writer stored), exponent notation past a trillion."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return f"${value:.4f}" if abs(value) < 1e12 else f"${value:.4e}"


def strict_dumps(value: Any, **options: Any) -> str:
    """`json.dumps(value, **options)` as strict JSON (`allow_nan=False`): a float that is not
    finite is written as `null`. Every `--json` output is written through it (the API's
    response models write `null` alike: pydantic's default `ser_json_inf_nan`); the common
    case (nothing to replace) costs one `json.dumps`."""
    try:
        return json.dumps(value, allow_nan=False, **options)
    except ValueError:  # "Out of range float values are not JSON compliant" (or a cycle)
        return json.dumps(finite_only(value), allow_nan=False, **options)


def json_type(value: Any) -> str:
    """What JSON calls the type of a decoded value, for messages: `an array`, `null`..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def variables_problem(inputs: Mapping[str, Any]) -> str | None:
    """Why a workflow ticket's `inputs.variables` (which override the workflow's
    `variables`) cannot be used, or None: when given, it must be a JSON object."""
    if "variables" not in inputs or isinstance(inputs["variables"], dict):
        return None
    return f"inputs.variables must be a JSON object, not {json_type(inputs['variables'])}"


def _finite(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class DuplicateKey(ValueError):
    """A JSON object holding a key twice (`key`: that key). JSON readers disagree on which
    one counts (Python keeps the last, SQLite's `json_extract` the first), so a stored
    value holding one would be read differently by the engine and by SQL."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key {key!r} is given twice in one object; give each key once")
        self.key = key

    @property
    def line(self) -> str:
        """`duplicate key "a"` (the key as JSON writes it, cut at 40 characters)."""
        key = self.key if len(self.key) <= 40 else self.key[:39] + "…"
        return f"duplicate key {json.dumps(key)}"


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):  # (rare: only then find which key)
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return out


class TooManyDigits(ValueError):
    """JSON text holding an integer of more digits than Python converts to an int
    (`sys.get_int_max_str_digits`, 4300): `line` is the one line every reader shows."""

    def __init__(self) -> None:
        self.limit = sys.get_int_max_str_digits()
        super().__init__(self.line)

    @property
    def line(self) -> str:
        """`a number of more than 4300 digits`."""
        return f"a number of more than {self.limit} digits"


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise TooManyDigits() from None


def _ranged(text: str) -> int:
    value = _whole(text)
    if not fits_double(value):
        raise ValueError(out_of_range(value))
    return value


def _loads(text: str | bytes, **options: Any) -> Any:
    """`json.loads(text, **options)`, but `TooManyDigits` (not Python's ValueError, with
    its advice to call `sys.set_int_max_str_digits`) for an integer too long to convert.
    Only text that fails is read again to find out, so a good one costs no more."""
    try:
        return json.loads(text, **options)
    except (DuplicateKey, json.JSONDecodeError):
        raise
    except ValueError:
        json.loads(text, **{**options, "parse_int": _whole})  # raises TooManyDigits if so
        raise


def strict_json(text: str | bytes, *, unique_keys: bool = False) -> Any:
    """`json.loads` as the store's `json_valid` and other JSON readers see it: no NaN or
    Infinity, no number that overflows to infinity (`1e999`), no integer past the range
    of a double either (PostgreSQL's `jsonb` stores `1e400` as 401 digits, which SQLite
    reads as infinity: both are refused alike, `number 100000000000… (401 digits) is out
    of range`); with `unique_keys`, no object holding a key twice (which `json.loads`
    would keep the last of). Raises ValueError (`TooManyDigits` for an integer too long
    to read; `TooDeep`, never RecursionError, for a value nested deeper than Python's
    reader goes)."""
    hook = _unique_keys if unique_keys else None
    try:
        value = _loads(
            text, parse_float=_finite, parse_constant=_no_constant, object_pairs_hook=hook
        )
        if long_digits(text):  # (rare) read again, each integer checked
            value = _loads(
                text,
                parse_float=_finite,
                parse_int=_ranged,
                parse_constant=_no_constant,
                object_pairs_hook=hook,
            )
    except RecursionError:  # (thousands of levels: every reader's limit is far below)
        raise TooDeep(f"nested deeper than {MAX_READ_DEPTH} levels") from None
    return value


def loads_unique(text: str | bytes) -> Any:
    """`json.loads(text)`, but `DuplicateKey` for an object holding a key twice, at any
    depth (`json.JSONDecodeError` for text that is not JSON, as `json.loads`;
    `TooManyDigits` for an integer too long to read)."""
    return _loads(text, object_pairs_hook=_unique_keys)


def check_unique_keys(text: str) -> None:
    """Raise `DuplicateKey` when an object in the JSON `text` holds a key twice, at any
    depth; anything else about the text (not JSON, too deep) is left to its reader. Costs
    one `json.loads` of the text, with a Python call per object (on a busy 2-core host,
    87 ms for 1 MiB of 60-byte objects, 1.4 ms for a 1 MiB string)."""
    try:
        loads_unique(text)
    except DuplicateKey:
        raise
    except (ValueError, RecursionError):
        return


MAX_READ_DEPTH = 128
"""Nesting kept when a stored JSON value is read back (`readable_json`): well below what
every reader can write out again (pydantic's serializer stops at 255 levels, counting the
response around the value), and above what a client may store (`MAX_JSON_DEPTH`, 64)."""
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")
"""A NUL's escape in JSON text (`\\u0000`, not an escaped backslash followed by `u0000`)."""


def stored_text(text: str) -> str:
    """A step's text as the engine stores it (a piece of its live log, its error): each
    NUL (U+0000) as U+FFFD, on every store alike (PostgreSQL's text and jsonb cannot hold
    a NUL; SQLite could, so the rule is the engine's, not a store's). Bytes that are not
    UTF-8 already become U+FFFD where a step's output is decoded; the log file
    (`output.log`) keeps the raw bytes."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def stored_json(text: str) -> str:
    """JSON text as `json.dumps` writes it (ASCII) with `stored_text`'s rule applied to
    every string and key in it: each NUL's escape (`\\u0000`) written as U+FFFD's
    (`\\ufffd`), the same length (so a measured size still holds). One scan in C when
    the text holds no NUL."""
    if "\\u0000" not in text:
        return text
    return _NUL_ESCAPE.sub(r"\1\\ufffd", text)


class TooDeep(ValueError):
    """A JSON value nested deeper than `MAX_READ_DEPTH` levels."""


def readable_json(text: str | bytes, *, unique_keys: bool = False) -> Any:
    """`strict_json(text)` made safe for every reader to write out again: a lone UTF-16
    surrogate (what an escape such as `\\udcff` decodes to, which no UTF-8 writer can
    encode) becomes U+FFFD, in keys and values alike; a value nested deeper than
    `MAX_READ_DEPTH` raises `TooDeep`; with `unique_keys`, an object holding a key twice
    (at any depth) raises `DuplicateKey`. Raises ValueError (never RecursionError)."""
    if isinstance(text, bytes):
        text = text.decode(json.detect_encoding(text))
    value = strict_json(text, unique_keys=unique_keys)
    # only walk the value when it may need it (both checks run in C over the text)
    if text.count("[") + text.count("{") > MAX_READ_DEPTH or _SURROGATE_ESCAPE.search(text):
        value = _mend(value, 0)
    return value


def _mend(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict | list) and depth >= MAX_READ_DEPTH:
        raise TooDeep(f"nested deeper than {MAX_READ_DEPTH} levels")
    if isinstance(value, dict):
        return {_LONE_SURROGATE.sub("\ufffd", k): _mend(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_mend(item, depth + 1) for item in value]
    return value

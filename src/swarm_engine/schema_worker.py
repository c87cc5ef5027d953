"""The schema checker's helper process: checks values against JSON Schemas, one at a time.

Started by `swarm_engine.schema_check.SchemaChecker` (never by hand) as

    python -I -m swarm_engine.schema_worker PARENT_PID

A check can cost any time a schema and a value make it cost (`uniqueItems` over thousands
of objects is quadratic; a `pattern` may backtrack catastrophically, inside `re`, which
holds the GIL), so it runs here, in a process of its own that the parent kills when a
check takes too long: the parent is never frozen by one.

Protocol, over stdin and stdout: frames of a 4-byte big-endian length and that many bytes
of UTF-8 JSON. The worker first writes `{"ready": true}` (once jsonschema is imported);
then, for each request `{"schema": "<the schema as JSON text>", "instance": <value>}`, one
answer: `{"ok": true}`, or `{"refused": KIND, "message": "<one line>"}` where KIND is
`inputs` (the value does not match: jsonschema's message), `schema` (not a valid JSON
Schema: `inputs.<where>: not a valid JSON Schema: ...`), `agent` (a schema that cannot be
used: a reference that does not resolve within it, endless recursion, a crash), or
`costly` (out of memory). A request `{"check_schema": "<a schema as JSON text>", "field":
"inputs"}` checks the schema itself (`schemas.check_schema`): `{"ok": true}`, or
`{"refused": "schema", "message": "inputs.<where>: not a valid JSON Schema: ..."}` (or
`costly`). EOF on stdin ends it (exit 0).

It dies with its parent (`PR_SET_PDEATHSIG`: SIGKILL when the thread that started it
ends) and ignores SIGINT (a Ctrl-C is the engine's to handle). Its address space is capped
at `MEMORY_LIMIT` bytes.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import resource
import signal
import struct
import sys
from typing import IO, Any

PR_SET_PDEATHSIG = 1
HEADER = struct.Struct(">I")
"""A frame's header: its length in bytes (at most 4 GiB - 1)."""
MEMORY_LIMIT = 2 * 1024**3
"""The worker's address space, in bytes: a check that needs more is refused (`costly`)."""
MAX_MESSAGE = 500
"""At most this many characters of a message (jsonschema's may quote the whole value)."""


def write_frame(out: IO[bytes], value: Any) -> None:
    """Write `value` as one frame (compact JSON) and flush."""
    data = json.dumps(value, separators=(",", ":")).encode()
    out.write(HEADER.pack(len(data)) + data)
    out.flush()


def read_frame(inp: IO[bytes]) -> Any:
    """The next frame's value; None at EOF (a frame cut short is EOF too)."""
    header = inp.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    data = inp.read(size)
    if len(data) < size:
        return None
    return json.loads(data)


def one_line(text: str) -> str:
    """`text` on one line, cut to `MAX_MESSAGE` characters."""
    line = " ".join(text.splitlines())
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 1] + "…"


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    """A validator for the schema (built once per schema: checking a schema and building
    its validator cost about a millisecond). Raises as `schemas.validator` does."""
    from swarm_engine.schemas import validator

    return validator(json.loads(schema_json))


def answer(request: dict[str, Any]) -> dict[str, Any]:
    """The answer to one request (see the module's docstring)."""
    if "check_schema" in request:
        return schema_answer(request["check_schema"], str(request.get("field")))
    import jsonschema
    from referencing.exceptions import Unresolvable

    from swarm_engine.errors import ConfigError
    from swarm_engine.schemas import LOCAL_ONLY, schema_problem

    try:
        try:
            check = _validator(request["schema"])
        except jsonschema.SchemaError as exc:
            return _refused("schema", schema_problem("inputs", exc))
        except ConfigError as exc:  # a reference that does not resolve within it
            return _refused("agent", f"the agent's inputs schema: {' '.join(str(exc).split())}")
        try:
            check.validate(request["instance"])
        except jsonschema.ValidationError as exc:
            return _refused("inputs", schema_failure(exc))
        except RecursionError:  # `$ref: "#"` refers to itself without end
            return _refused("agent", "the agent's inputs schema: validating recursed too deep")
        except Unresolvable as exc:
            why = " ".join(f"{exc!s:.300} ({LOCAL_ONLY})".split())
            return _refused("agent", f"the agent's inputs schema: {why}")
    except MemoryError:
        return _refused("costly", f"over {MEMORY_LIMIT // 1024**3} GiB of memory")
    except Exception as exc:  # a schema that breaks jsonschema: that check alone fails
        return _refused("agent", f"the agent's inputs schema: {type(exc).__name__}: {exc}")
    return {"ok": True}


def schema_answer(schema_json: str, field: str) -> dict[str, Any]:
    """The answer to a request to check a schema itself (`schemas.check_schema`)."""
    import jsonschema

    from swarm_engine.schemas import check_schema, schema_problem

    try:
        check_schema(json.loads(schema_json))
    except jsonschema.SchemaError as exc:
        return _refused("schema", schema_problem(field, exc))
    except MemoryError:
        return _refused("costly", f"over {MEMORY_LIMIT // 1024**3} GiB of memory")
    except RecursionError:
        return _refused("schema", f"{field}: not a valid JSON Schema: nested too deep")
    except Exception as exc:  # a schema that breaks jsonschema: refused, one line
        return _refused("schema", f"{field}: not a valid JSON Schema: {type(exc).__name__}: {exc}")
    return {"ok": True}


def schema_failure(exc: Any) -> str:
    """jsonschema `ValidationError` `exc` as one bounded line: its message names the
    failing value whole (`'aaa…aaa' is not of type 'integer'`: a 100 KB input would be
    copied into the step's and the ticket's error), so that value is `shown`, and the
    rest (keys, a schema's own values) cut at `cut_message`'s limit."""
    from swarm_engine.records import SHOWN_CHARS, cut_message, shown

    message = str(exc.message)
    whole = repr(exc.instance)
    if len(whole) > SHOWN_CHARS and whole in message:
        message = message.replace(whole, shown(exc.instance), 1)
    return cut_message(message)


def _refused(kind: str, message: str) -> dict[str, Any]:
    return {"refused": kind, "message": one_line(message)}


def _die_with_parent(parent: int) -> bool:
    """Ask for SIGKILL when the parent dies; False if it is gone already."""
    with contextlib.suppress(OSError, AttributeError):  # none: EOF on stdin still ends it
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    return os.getppid() == parent


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        sys.stderr.write("usage: python -m swarm_engine.schema_worker PARENT_PID\n")
        return 2
    if not _die_with_parent(int(argv[1])):
        return 0
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(ValueError, OSError):  # a lower hard limit already holds
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    import jsonschema  # noqa: F401 - now, before the first request's time runs

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    write_frame(out, {"ready": True})
    while True:
        request = read_frame(inp)
        if request is None:
            return 0
        write_frame(out, answer(request))


if __name__ == "__main__":
    sys.exit(main(sys.argv))

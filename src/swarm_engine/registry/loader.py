"""Reading agent.yaml and workflow.yaml into validated specs, with one-line errors.

Definition files are untrusted input, so reading them is bounded: a file is at most
`MAX_DEFINITION_BYTES`; YAML anchors and aliases (`&a`, `*a`, `<<: *a`) are refused outright
(an alias bomb of a few hundred bytes would otherwise expand to gigabytes before any check
could run); nesting is at most `MAX_YAML_DEPTH` levels; a key given twice in one mapping is
an error; and a value is only one of JSON's types (text, a number, true/false, null, a list,
a mapping with text keys): `!!binary`, timestamps, `!!set`, `!!omap`, any other tag and a
key that is not text are refused, naming the field. A number is written in plain
decimal (`30`, `-2`, `2.5`, `1.0e+3`) and is finite, an integer within the signed 64-bit
range: YAML 1.1's other forms (`010` octal, `0x1e`, `0b1`, `1:30` sexagesimal, `1_000`)
would silently change what was written, `.inf`/`.nan` are no JSON, and a huge integer
could neither be stored nor read back, so each is refused naming the field, its line and
column. An agent package folder (what is copied into the registry and the VM) is at most
`MAX_PACKAGE_BYTES` in `MAX_PACKAGE_FILES` files.
"""

from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent, CollectionStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from swarm_engine.agents.files import MAX_PACKAGE_BYTES as MAX_PACKAGE_BYTES
from swarm_engine.agents.files import MAX_PACKAGE_FILES as MAX_PACKAGE_FILES
from swarm_engine.agents.files import SKIP_NAMES, folder_contents, package_digest
from swarm_engine.errors import AgentError, ConfigError
from swarm_engine.models import AgentSpec, WorkflowSpec, first_error
from swarm_engine.records import MAX_DEFINITION_BYTES as MAX_DEFINITION_BYTES
from swarm_engine.registry.agents import check_agent

M = TypeVar("M", bound=BaseModel)

MAX_YAML_DEPTH = 64
_TAG = "tag:yaml.org,2002:"
JSON_SCALARS = frozenset(_TAG + t for t in ("str", "int", "float", "bool", "null"))
"""The YAML tags of the scalars a definition may hold: JSON's (a definition is stored as
JSON, and the same checks read it as a JSON body from the API)."""
JSON_ONLY = "a definition holds only text, numbers, true/false, null, lists and mappings"
_DECIMAL_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z")
_DECIMAL_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+][0-9]+)?\Z")
INT_RANGE = (-(2**63), 2**63 - 1)
"""The integers a definition may hold: those SQLite (and PostgreSQL's bigint) store."""


class _BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` without anchors or aliases, bounded in depth, refusing duplicate
    keys. Every refusal is a `yaml.YAMLError` with the line and column of the problem."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ComposerError(
                None,
                None,
                "YAML anchors and aliases (&name, *name, <<: *name) are not allowed in "
                "definitions; write the value out",
                mark,
            )
        nested = isinstance(event, CollectionStartEvent)
        if nested:
            self._depth += 1
            if self._depth > MAX_YAML_DEPTH:
                raise ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", mark)
        try:
            return super().compose_node(parent, index)
        finally:
            if nested:
                self._depth -= 1

    def construct_document(self, node: Node) -> Any:
        _check_json_like(node, "")
        return super().construct_document(node)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if duplicate:
                raise ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _check_json_like(node: Node, where: str) -> None:
    """Raise `ConstructorError` (the field and the node's line) for the first node that is
    not one of JSON's types: a tag such as `!!binary`, `!!timestamp` (also a plain
    `2024-01-01`), `!!set` or `!!omap`, a local tag (`!x`), or a key that is not text
    (`1:`, `yes:`, `null:`, `<<:`). Walked without building anything; the depth is
    bounded by the composer (`MAX_YAML_DEPTH`)."""
    field = where or "the top level"
    if isinstance(node, ScalarNode):
        expected = node.tag if node.tag in JSON_SCALARS else None
    else:
        expected = _TAG + ("seq" if isinstance(node, SequenceNode) else "map")
    if node.tag != expected:
        if node.tag == _TAG + "timestamp":
            problem = "a date or time (!!timestamp) is not allowed; quote it to make it text"
        else:
            problem = f"{_tag_name(node.tag)} is not allowed; {JSON_ONLY}"
        raise ConstructorError(None, None, f"{field}: {problem}", node.start_mark)
    if isinstance(node, ScalarNode) and node.tag in (_TAG + "int", _TAG + "float"):
        number = _number_problem(node.value, node.tag == _TAG + "int")
        if number:
            raise ConstructorError(None, None, f"{field}: {number}", node.start_mark)
    if isinstance(node, SequenceNode):
        for n, item in enumerate(node.value):
            _check_json_like(item, f"{where}.{n}" if where else str(n))
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            if not (isinstance(key, ScalarNode) and key.tag == _TAG + "str"):
                shown = repr(key.value) if isinstance(key, ScalarNode) else "a list or mapping"
                raise ConstructorError(
                    None,
                    None,
                    f"{field}: the key {shown} is {_tag_name(key.tag)}, not text; {JSON_ONLY}"
                    " (quote the key to make it text)",
                    key.start_mark,
                )
            _check_json_like(value, f"{where}.{key.value}" if where else str(key.value))


def _number_problem(text: str, whole: bool) -> str | None:
    """Why the plain scalar `text`, which YAML 1.1 reads as a number (an integer when
    `whole`), may not stand in a definition, or None: it is not written in plain decimal
    (YAML would change it: `010` is 8, `1:30` is 90, `0x1e` 30, `1_0` 10), it is not
    finite, or it is an integer outside `INT_RANGE`. Digits are counted before any is
    converted (Python refuses to convert over 4300)."""
    shown = text if len(text) <= 40 else text[:37] + "..."
    if not (_DECIMAL_INT if whole else _DECIMAL_FLOAT).match(text):
        if text.lstrip("+-").lower() in (".inf", ".nan"):
            return (
                f"{shown} is not a finite number; {JSON_ONLY} (a number is finite: quote it "
                "to make it text)"
            )
        return (
            f"{shown} is a number YAML would change (octal, hexadecimal, binary, "
            "sexagesimal or with '_'); write it in decimal, or quote it to make it text"
        )
    if whole:
        digits = text.lstrip("+-")
        if len(digits) > 19 or not INT_RANGE[0] <= int(text) <= INT_RANGE[1]:
            return (
                f"{shown} is outside the integers a definition may hold "
                f"({INT_RANGE[0]} to {INT_RANGE[1]}); quote it to make it text"
            )
    elif not math.isfinite(float(text)):
        return f"{shown} is too large a number (not finite); quote it to make it text"
    return None


def _tag_name(tag: str) -> str:
    """`!!binary` for YAML's own tags, else the tag as written."""
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


def _definition_file(path: Path, filename: str) -> Path:
    if path.is_dir():
        path = path / filename
    if not path.is_file():
        # exists() follows a symlink, as open does: one to /dev/zero is not a regular file
        raise ConfigError(f"{path}: {'not a regular file' if path.exists() else 'no such file'}")
    return path


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in the YAML file `path`; `ConfigError` (one line naming the file) if it
    is too big, not YAML, uses anchors or aliases, or is not a mapping."""
    try:
        # O_NONBLOCK: a FIFO put in the file's place since it was checked opens at once
        # (and is refused) instead of waiting for a writer; no effect on a regular file
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ConfigError(f"{path}: not a regular file")
            raw = f.read(MAX_DEFINITION_BYTES + 1)
        if len(raw) > MAX_DEFINITION_BYTES:
            raise ConfigError(
                f"{path}: over {MAX_DEFINITION_BYTES // 1024} KiB (the limit for a definition file)"
            )
        data = yaml.load(raw.decode(), Loader=_BoundedLoader)  # a safe loader, bounded
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def validate(model: type[M], data: dict[str, Any], source: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {first_error(exc)}") from exc


def load_agent(path: Path) -> AgentSpec:
    """The agent defined by `path`: a folder holding `agent.yaml`, or that file, whose
    folder is its package (every file in it is copied into the VM); a file of another
    name (`my-agent.yaml`) is its definition alone, with no package, for its folder is
    no agent's (a `~/custom.yaml` copied the whole home folder, dotfiles and all, into
    every VM). Raises `ConfigError` with one line naming the file."""
    file = _definition_file(path, "agent.yaml")
    spec = agent_from_mapping(read_yaml(file), str(file))
    if file.name != "agent.yaml":
        return spec
    check_package(file.parent)
    folder = file.parent.resolve()
    try:
        files = folder_contents(str(folder), spec.ref)
    except (AgentError, OSError) as exc:
        raise ConfigError(f"{folder}: cannot read the agent package: {exc}") from exc
    if all(rel == file.name for rel, _, _ in files):
        return spec  # nothing a step needs besides the definition: runs on any host
    update = {"package_path": str(folder), "package_digest": package_digest(files)}
    return spec.model_copy(update=update)


def agent_from_mapping(data: dict[str, Any], source: str) -> AgentSpec:
    """An agent definition given as a mapping (agent.yaml's content, or a JSON body),
    checked exactly as a file is; without a package (`package_path` and `package_digest`
    are ignored).
    Raises `ConfigError` ("<source>: <field>: <problem>")."""
    data = dict(data)
    data.pop("package_path", None)
    data.pop("package_digest", None)
    _check_numbers(data, source)
    spec = validate(AgentSpec, data, source)
    if spec.is_template:
        raise ConfigError(f"{source}: names starting with '_template:' are reserved")
    check_agent(spec, source)
    return spec


def workflow_from_mapping(data: dict[str, Any], source: str) -> WorkflowSpec:
    """A workflow definition given as a mapping (workflow.yaml's content, or a JSON
    body), validated as a file is. Raises `ConfigError`; the registry checks its steps'
    agents and references when it registers it."""
    _check_numbers(data, source)
    return validate(WorkflowSpec, data, source)


def _check_numbers(data: dict[str, Any], source: str) -> None:
    """Raise `ConfigError` ("<source>: <field>: ...") for the first integer outside
    `INT_RANGE` or number that is not finite in a definition given as a mapping (a JSON
    body: the YAML loader refuses them with their line). Walked without recursion."""
    todo: list[tuple[str, Any]] = [(str(k), v) for k, v in data.items()]
    while todo:
        where, value = todo.pop()
        if isinstance(value, dict):
            todo.extend((f"{where}.{k}", v) for k, v in value.items())
        elif isinstance(value, list):
            todo.extend((f"{where}.{n}", v) for n, v in enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            if not INT_RANGE[0] <= value <= INT_RANGE[1]:
                raise ConfigError(
                    f"{source}: {where}: an integer outside those a definition may hold "
                    f"({INT_RANGE[0]} to {INT_RANGE[1]}); give it as text"
                )
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{source}: {where}: {value!r} is not a finite number")


def check_package(folder: Path) -> None:
    """Raise `ConfigError` if the package `folder` holds more than `MAX_PACKAGE_FILES`
    files or `MAX_PACKAGE_BYTES` bytes (not counting `SKIP_NAMES` folders, which are
    neither registered nor uploaded), or anything but regular files, folders and symlinks
    (a device, FIFO or socket: copying one would read without end or block). Stops at
    the first file over a limit."""
    files = size = 0
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in SKIP_NAMES]
        for name in names:
            files += 1
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError as exc:
                raise ConfigError(f"{folder}: cannot read the agent package: {exc}") from exc
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                rel = os.path.relpath(os.path.join(root, name), folder)
                raise ConfigError(
                    f"{folder}: {rel}: not a regular file (a device, FIFO or socket); an agent "
                    "package holds regular files only"
                )
            size += st.st_size  # a symlink: its own size
            if files > MAX_PACKAGE_FILES:
                raise ConfigError(
                    f"{folder}: the agent package has over {MAX_PACKAGE_FILES} files (the limit)"
                )
            if size > MAX_PACKAGE_BYTES:
                raise ConfigError(
                    f"{folder}: the agent package is over "
                    f"{MAX_PACKAGE_BYTES // (1024 * 1024)} MiB (the limit)"
                )


def load_workflow(path: Path) -> WorkflowSpec:
    file = _definition_file(path, "workflow.yaml")
    return workflow_from_mapping(read_yaml(file), str(file))

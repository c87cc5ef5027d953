"""A shell agent's `command` string as a template that cannot inject.

A value never becomes shell text. Each distinct reference in the command gets an
environment variable (`SWARM_REF_1`, `SWARM_REF_2`, ... in order of first use) holding the
value, and the reference is replaced by an expansion of that variable, quoted for the place
where it stands, so the shell reads the value as exactly one literal word or part of one:

| where the reference stands                      | replaced by          |
|-------------------------------------------------|----------------------|
| unquoted (also inside `$(...)`, or a comment)   | `"${SWARM_REF_n}"`   |
| inside double quotes                            | `${SWARM_REF_n}`     |
| inside single quotes                            | `'"${SWARM_REF_n}"'` |

The shell expands a variable once and never parses its value as code, so even a misread of
the command text could only split or misquote a value, never run it. Places where no quoting
keeps a value one literal word are refused (at registration, and at run time for a
definition stored before this rule): inside backquotes, `$((...))`, a `${...}` expansion,
right after a backslash, and anywhere after a here-document (`<<`); and inside a word
another program reads as code (the script of `sh -c '...'`, `eval`'s arguments, the code of
`python3 -c`, ...: `agents.shell_code`), unless the reference is that whole word.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from swarm_engine.agents.shell_code import MAX_NESTING, TooDeep, code_references
from swarm_engine.templating import Ref, TemplateError, lookup, parse, references

REF_ENV_PREFIX = "SWARM_REF_"

_REPLACEMENT = {
    "word": '"${%s}"',
    "cmd": '"${%s}"',
    "comment": '"${%s}"',
    "dq": "${%s}",
    "sq": "'\"${%s}\"'",
}
_REFUSED = {
    "bq": "inside backquotes `...` (write $(...) instead)",
    "arith": "inside $((...)) (compute with a program, e.g. $(expr ...), instead)",
    "param": "inside a $${...} expansion",
    "escape": "right after a backslash",
    "heredoc": "after a here-document (<<)",
}
_WORD_BREAKS = frozenset(" \t\n;&|()<>")


class _Scanner:
    """Follows the quoting of POSIX shell text, piece by piece, far enough to tell where a
    reference between two pieces stands."""

    def __init__(self) -> None:
        self.stack: list[list[Any]] = [["word", 0]]  # [context, open parentheses]
        self.escaped = False  # the last character was an unquoted backslash
        self.heredoc = False
        self.prev = "\n"  # for `#`: a comment starts only at a word's start

    def context(self) -> str:
        if self.escaped:
            return "escape"
        if self.heredoc:
            return "heredoc"
        return str(self.stack[-1][0])

    def after_reference(self) -> None:
        self.prev = "x"  # a reference is word content

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            c = text[i]
            i += 1
            if self.escaped:
                self.escaped = False
                self.prev = "x"
                continue
            top = self.stack[-1]
            kind = top[0]
            if kind == "sq":
                if c == "'":
                    self.stack.pop()
            elif kind == "comment":
                if c == "\n":
                    self.stack.pop()
            elif kind == "bq":
                if c == "\\":
                    self.escaped = True
                elif c == "`":
                    self.stack.pop()
            elif c == "\\":
                self.escaped = True
            elif text.startswith("$((", i - 1):
                self.stack.append(["arith", 0])
                i += 2
            elif text.startswith("$(", i - 1):
                self.stack.append(["cmd", 0])
                i += 1
            elif text.startswith("${", i - 1):
                self.stack.append(["param", 0])
                i += 1
            elif c == "`":
                self.stack.append(["bq", 0])
            elif kind == "dq":
                if c == '"':
                    self.stack.pop()
            elif c == '"':
                self.stack.append(["dq", 0])
            elif c == "'" and kind != "arith":
                self.stack.append(["sq", 0])
            elif kind == "param":
                if c == "}":
                    self.stack.pop()
            elif c == "(":
                top[1] += 1
            elif c == ")":
                if top[1] > 0:
                    top[1] -= 1
                elif kind == "arith" and text.startswith("))", i - 1):
                    self.stack.pop()
                    i += 1
                elif kind == "cmd":
                    self.stack.pop()
            elif kind in ("word", "cmd"):
                if c == "#" and self.prev in _WORD_BREAKS:
                    self.stack.append(["comment", 0])
                elif text.startswith("<<", i - 1):
                    self.heredoc = True
            self.prev = c


def _plan(parts: list[str | Ref]) -> list[str]:
    """The context of each reference in `parts`; raises `TemplateError` for one that stands
    where it cannot be kept one literal word."""
    scanner = _Scanner()
    contexts: list[str] = []
    for part in parts:
        if isinstance(part, str):
            scanner.feed(part)
            continue
        where = scanner.context()
        if where in _REFUSED:
            raise TemplateError(
                f"${{{part.path}}} stands {_REFUSED[where]}, where a value cannot be kept one "
                "literal word; move it out, or read $INPUT_<KEY> or the inputs file there"
            )
        contexts.append(where)
        scanner.after_reference()
    try:
        code = code_references([p if isinstance(p, str) else None for p in parts])
    except TooDeep:
        first = next(p for p in parts if isinstance(p, Ref))
        raise TemplateError(
            f"${{{first.path}}} stands in a command that nests $(...) or backquotes over"
            f" {MAX_NESTING} deep, too deep to tell whether a program reads it as code"
        ) from None
    if code:
        index = min(code)
        where, hint, prog = code[index]
        path = [p for p in parts if isinstance(p, Ref)][index].path
        raise TemplateError(
            f"${{{path}}} stands inside {where}, which reads it as code: its value would"
            f" run; {hint.format(prog=prog, path=path)} (or read $INPUT_<KEY> or the inputs"
            " file)"
        )
    return contexts


def check_command(text: str) -> str | None:
    """An error message for the first reference of a command string that stands where it
    cannot be kept one literal word, else None."""
    try:
        _plan(parse(text))
    except TemplateError as exc:
        return str(exc)
    return None


def render_command(text: str, context: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """The command with every reference replaced by a quoted expansion of its variable, and
    those variables (`SWARM_REF_n` -> the value as text: strings as they are, other values
    as JSON). Raises `TemplateError` for a reference that does not resolve or stands where
    it cannot be kept one word."""
    parts = parse(text)
    contexts = iter(_plan(parts))
    names: dict[str, str] = {}
    env: dict[str, str] = {}
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        name = names.get(part.path)
        if name is None:
            value = lookup(part.path, context)
            name = names[part.path] = f"{REF_ENV_PREFIX}{len(names) + 1}"
            env[name] = value if isinstance(value, str) else json.dumps(value)
        out.append(_REPLACEMENT[next(contexts)] % name)
    return "".join(out), env


def check_argv(command: list[Any]) -> str | None:
    """Why an argv-list command is unsafe, or None. In a list, a reference must be a whole
    element (`${inputs.x}`: exactly one literal argument): embedded in a larger element it
    could land in an interpreter's code (`[sh, -c, 'echo ${ticket.title}']`)."""
    for index, element in enumerate(command):
        if not isinstance(element, str):
            continue
        paths = list(references(element))
        if paths and (len(paths) != 1 or element != "${" + paths[0] + "}"):
            return (
                f"[{index}]: a reference in a list command must be a whole element (one"
                " literal argument); give fixed text its own element, or use the string form"
            )
    return None


def whole_reference(command: str) -> str | None:
    """The path of a command that is exactly one reference (`${inputs.cmd}`), else None:
    such a command is the value itself, run as the step's script."""
    text = command.strip()
    paths = list(references(text))
    return paths[0] if len(paths) == 1 and text == "${" + paths[0] + "}" else None


def whole_command_problem(command: object) -> str | None:
    """Why a command that is exactly one reference to anything but an input
    (`${ticket.title}`, `${ticket.description}`) may not be an agent's command, else None.
    `command: ${inputs.<key>}` runs that input as the step's script (a workflow step gives
    such a script input literal text only: `shell_step_inputs`); a ticket's title or
    description would run as code whatever the workflow says, so that is said explicitly
    (`sh -c ${ticket.title}`) or not at all. Checked at registration and on every plan."""
    whole = whole_reference(command) if isinstance(command, str) else None
    if whole is None or whole.startswith("inputs."):
        return None
    return (
        f"${{{whole}}} is the whole command, so that value would run as the step's script;"
        " only an input may be the whole command (${inputs.<key>}); to run it as a script on"
        f" purpose, say so: sh -c ${{{whole}}}"
    )

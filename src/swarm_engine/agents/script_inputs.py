"""The inputs a shell agent runs as code, and what a workflow step may give them.

A value substituted into an agent's `command` never becomes shell code
(`agents.shell_command`), but some inputs are handed over to be run as code, whole:

- the built-in `shell` agent (a shell agent without `command`) runs `inputs.command`;
- a command that is exactly one reference, `command: ${inputs.cmd}`, runs `inputs.cmd`;
- a reference standing in the code argument of an interpreter, in a command string or an
  argv list: after `-c` (or an option cluster holding `c`, `-ec`) of a shell (`sh`, `bash`,
  `dash`, `zsh`, `ksh`, `mksh`, `ash`, `busybox`, by the command word's base name, also after
  `env`, `exec` ...), after `python* -c`, `perl|ruby|node -e`, or anywhere after `eval`;
  in a command string also a reference in a command piped into one (`echo ${inputs.s} | sh`).

The scan is deliberately eager (`echo sh -c ${inputs.x}` counts too) and a command string
too odd to split counts as running every input it names if it names a shell or `eval` at
all. What a program does with a value beyond that (`sh -c "$1"`, a script that evals) is the
command's own business, as docs/agents.md says.

A workflow step is a template: its inputs are rendered as plain text, so a reference
embedded in such an input would paste a value (a ticket's title, an LLM's output) into a
script. Such an input may therefore hold only literal text or exactly one whole reference
(handing a whole script over explicitly), never a reference inside text
(`step_script_problem`).
"""

from __future__ import annotations

import functools
import json
import re
import shlex
from typing import TYPE_CHECKING, Any

from swarm_engine.templating import Ref, parse, references, strings

if TYPE_CHECKING:
    from swarm_engine.models import AgentSpec

_CODE_FLAGS = (
    (re.compile(r"(?:sh|bash|dash|zsh|ksh|mksh|ash|busybox)"), re.compile(r"-[A-Za-z]*c[A-Za-z]*")),
    (re.compile(r"python[0-9.]*"), re.compile(r"-[A-Za-z]*c")),
    (re.compile(r"(?:perl|ruby|node|nodejs)"), re.compile(r"-[A-Za-z]*[eE]")),
)
"""(interpreter base name, the option whose argument is code)."""
_SEPARATORS = ";&|()\n"
_MARK = re.compile("\ue000([0-9]{1,9})\ue001")
"""Where reference n stands in the text given to the shell-word splitter."""
_ANY_INTERPRETER = re.compile(
    r"(?<![\w.-])(?:eval|sh|bash|dash|zsh|ksh|mksh|ash|busybox|python[0-9.]*|perl|ruby|node|"
    r"nodejs)(?![\w.-])"
)


def script_inputs(agent: AgentSpec) -> dict[str, str]:
    """The inputs `agent` runs as code: input key -> how, for a message
    (`"agent shell@1.0.0 runs as its script"`). Empty for a kind that runs no command."""
    if agent.kind != "shell":
        return {}
    if agent.command is None:
        return {"command": f"agent {agent.ref} runs as its script"}
    keys, whole = _code_keys(json.dumps(agent.command))
    how = "runs as its script" if whole else "runs as code"
    return {key: f"agent {agent.ref} {how}" for key in keys}


@functools.lru_cache(maxsize=64)
def _code_keys(command_json: str) -> tuple[tuple[str, ...], bool]:
    """For a command (as JSON: a string or a list), the sorted input keys it runs as code
    and whether it is exactly one reference. Once per command: every plan asks, and a
    command may be 128 KiB (about 0.2 s to split)."""
    command: Any = json.loads(command_json)
    whole = False
    paths: set[str] = set()
    if isinstance(command, str):
        parts = parse(command.strip())
        whole = len(parts) == 1 and isinstance(parts[0], Ref)
        paths = _string_code_refs(parts)
    elif isinstance(command, list):
        paths = _argv_code_refs(command)
    keys = {p.split(".")[1] for p in paths if p.startswith("inputs.")}
    return tuple(sorted(keys)), whole


def _string_code_refs(parts: list[str | Ref]) -> set[str]:
    """The reference paths of a command string (`parts`, parsed) that run as code: the
    text is split into shell words once, each reference marked where it stands."""
    refs = [p.path for p in parts if isinstance(p, Ref)]
    if len(parts) == 1 and refs:  # `${inputs.cmd}`: the whole script
        return set(refs)
    marked: list[str] = []
    for part in parts:
        marked.append(part if isinstance(part, str) else f"\ue000{len(marked)}\ue001")
    index = {n: p.path for n, p in enumerate(parts) if isinstance(p, Ref)}
    try:
        words = _words("".join(marked))
    except ValueError:  # too odd to split: eager, if it names an interpreter at all
        literal = "".join(p for p in parts if isinstance(p, str))
        return set(refs) if _ANY_INTERPRETER.search(literal) else set()
    found: set[str] = set()
    segments = _segments(words)
    for n, segment in enumerate(segments):
        piped = n + 1 < len(segments) and segment.then == "|" and segments[n + 1].interpreter()
        for word in _code_words(segment.words, piped):
            found.update(index[int(m)] for m in _MARK.findall(word) if int(m) in index)
    return found


class _Segment:
    """One simple command's words, and the separator token after it (`|`, `;`, ...)."""

    def __init__(self, words: list[str], then: str) -> None:
        self.words = words
        self.then = then

    def interpreter(self) -> bool:
        """Whether the command is an interpreter (reading its code from stdin when
        piped into: `... | sh`)."""
        words = self.words[1:] if self.words[:1] in (["env"], ["exec"], ["command"]) else self.words
        name = words[0].rsplit("/", 1)[-1] if words else ""
        return any(program.fullmatch(name) for program, _ in _CODE_FLAGS)


def _segments(words: list[str]) -> list[_Segment]:
    out: list[_Segment] = []
    current: list[str] = []
    for word in words:
        if word and all(c in _SEPARATORS for c in word):
            out.append(_Segment(current, word))
            current = []
        else:
            current.append(word)
    out.append(_Segment(current, ""))
    return out


def _code_words(words: list[str], piped: bool) -> list[str]:
    """The words of one simple command that are code: all of them when its output is
    piped into an interpreter; else every word after `eval`, and the argument of an
    interpreter's code option (`sh -c <code>`, `python3 -c <code>`). One pass."""
    if piped:
        return words
    code: list[str] = []
    evaluating = False
    programs: set[int] = set()  # the `_CODE_FLAGS` whose program came before
    previous: str | None = None
    for word in words:
        if evaluating or (
            previous is not None and any(_CODE_FLAGS[i][1].fullmatch(previous) for i in programs)
        ):
            code.append(word)
        name = word.rsplit("/", 1)[-1]
        evaluating = evaluating or name == "eval"
        programs.update(i for i, (program, _) in enumerate(_CODE_FLAGS) if program.fullmatch(name))
        previous = word
    return code


def _words(text: str) -> list[str]:
    """`text` split as POSIX shell words, with runs of `;&|()` and newlines as their own
    tokens (separators between simple commands). Raises `ValueError` (unbalanced quotes)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=_SEPARATORS + "<>")
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    return list(lexer)


def _argv_code_refs(command: list[Any]) -> set[str]:
    """The reference paths of an argv-list command that run as code."""
    words = [w if isinstance(w, str) else "" for w in command]
    return {path for word in _code_words(words, piped=False) for path in references(word)}


def step_script_problem(inputs: dict[str, Any], agent: AgentSpec) -> str | None:
    """Why a workflow step's `inputs` (a template) may not go to `agent`, as
    `inputs.<key>: <problem>; <fix>`, or None: an input the agent runs as code
    (`script_inputs`) holds a reference inside text."""
    for key, how in script_inputs(agent).items():
        if key not in inputs:
            continue
        for where, text in strings(inputs[key], f"inputs.{key}"):
            parts = parse(text)
            paths = [p.path for p in parts if isinstance(p, Ref)]
            if not paths or len(parts) == 1:  # literal, or one whole reference: as render
                continue
            name = _input_name(paths[0], key)
            return (
                f"{where}: ${{{paths[0]}}} stands inside text that {how} (its value would "
                "run as code); pass the value as an input of its own "
                f"({name}: ${{{paths[0]}}}) and read it in the script as "
                f'"$INPUT_{name.upper()}" or from $SWARM_INPUTS'
            )
    return None


def _input_name(path: str, taken: str) -> str:
    """A name for an input of its own holding reference `path`: its last part when that
    is an identifier other than `taken`, else `value`."""
    last = path.rsplit(".", 1)[-1]
    return last if last.isidentifier() and last != taken else "value"

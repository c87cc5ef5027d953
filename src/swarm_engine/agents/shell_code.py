"""Where a command string hands a reference to a program that reads it as code.

`agents.shell_command` keeps each value one literal word for the outer shell; but a word
can be another program's *code*: the script of `sh -c '...'` (any shell, `-ec`, `-lc`, ...),
the arguments of `eval`, the code of `python3 -c`, `perl -e`, `node -e`, an `awk` or `sed`
program, the command of `trap`. A reference inside such a word is pasted into that code:
`sh -c 'echo Hello ${ticket.title}'` runs the title. So such a reference is refused, as
one inside backquotes is, unless it is the whole word (`sh -c ${inputs.script}`, `eval
${inputs.script}`: running that value as code, said on purpose). A value reaches such code
as data as an argument after it (`sh -c 'echo "$1"' _ ${ticket.title}`), or as
`$INPUT_<KEY>` or the inputs file.

The command's words are followed far enough to tell (`_Parser`): quotes, escapes, `$(...)`,
backquotes and `${...}` (a reference nested in any of them is inside the word), command
separators, redirections. Any word may start such a program (`env sh -c`, `timeout 5 bash
-c`, `find -exec sh -c`, `docker run img sh -c`): failing closed, a reference is refused
even where such a word is only an argument (`echo sh -c 'x ${inputs.v}'`). A word that is
an expansion is read as a shell in command position only (`"$SHELL" -c`, `env "$SHELL"
-c`): elsewhere it is an argument (`tar -C ${inputs.dir} -czf out/${inputs.name}.tgz`). Beyond telling: a program that
runs its arguments through a shell of its own (`ssh`, `su -c`, `watch`), or text piped into
an interpreter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

Why = tuple[str, str, str]
"""Where a reference stands ("the script of `sh -c`"), how to pass it as data instead (a
format string of `prog` and `path`), and the program."""
MAX_NESTING = 100
"""The deepest `$(...)` / backquotes the parser follows (it recurses): a command nested
deeper, with a reference in it, is refused (too deep to tell where the reference stands)."""
REF = "\x00"  # a reference, in a word's text
EXPANSION = "\x01"  # any other expansion ($X, $(...), `...`, ${...}, $((...)))


@dataclass(frozen=True)
class _Program:
    """How a program takes code in its arguments."""

    what: str  # "the script of", "the code of", "the program of"
    hint: str  # how to pass a value as data instead
    code_flags: str = ""  # short options whose argument (attached or the next word) is code
    code_long: tuple[str, ...] = ()  # long options whose argument is code
    arg_flags: str = ""  # short options taking an argument that is not code
    arg_long: tuple[str, ...] = ()
    file_flags: str = ""  # options giving the code in a file: then no operand is code
    switch: str = ""  # a flag making the first operand code (a shell's `-c`)
    operand_code: bool = False  # the first operand is code (unless an option gave it)
    plus_options: bool = False  # `+o`, `+e` are options too (shells)


_SHELL = _Program(
    "the script of",
    "pass it as an argument after the script and read it there: "
    "{prog} -c '... \"$1\" ...' _ ${{{path}}}",
    arg_flags="oO",
    arg_long=("--rcfile", "--init-file"),
    switch="c",
    plus_options=True,
)
_SHELLS = ("sh", "bash", "rbash", "dash", "ash", "zsh", "ksh", "ksh93", "mksh", "pdksh", "yash",
           "posh", "fish", "csh", "tcsh")  # fmt: skip
_ARGV = "pass it as an argument after the code and read it there ({argv})"
_PROGRAMS: dict[str, _Program] = {
    **dict.fromkeys(_SHELLS, _SHELL),
    "perl": _Program("the code of", _ARGV.format(argv="@ARGV"), code_flags="eE"),
    "ruby": _Program("the code of", _ARGV.format(argv="ARGV"), code_flags="e", arg_flags="rI"),
    "node": _Program(
        "the code of",
        _ARGV.format(argv="process.argv"),
        code_flags="ep",
        code_long=("--eval", "--print"),
        arg_flags="r",
        arg_long=("--require",),
    ),
    "php": _Program("the code of", _ARGV.format(argv="$argv"), code_flags="r", arg_flags="cdf"),
    "lua": _Program("the code of", _ARGV.format(argv="arg"), code_flags="e", arg_flags="l"),
    "Rscript": _Program("the code of", _ARGV.format(argv="commandArgs()"), code_flags="e"),
    "awk": _Program(
        "the program of",
        "pass it as a variable: {prog} -v value=${{{path}}} '... value ...'",
        code_long=("--source",),
        arg_flags="Fvf",
        file_flags="f",
        operand_code=True,
    ),
    "sed": _Program(
        "the script of",
        "give the value to a program that reads it as data (awk -v value=${{{path}}}, or"
        " $INPUT_<KEY>)",
        code_flags="e",
        code_long=("--expression",),
        arg_flags="fl",
        arg_long=("--file", "--line-length"),
        file_flags="f",
        operand_code=True,
    ),
    "trap": _Program(
        "the command of", "read it from a variable there: trap '... \"$X\" ...'", operand_code=True
    ),
}
_PYTHON = _Program("the code of", _ARGV.format(argv="sys.argv"), code_flags="c", arg_flags="WXQm")
_ALIASES = {"nodejs": "node", "luajit": "lua", "gawk": "awk", "mawk": "awk", "nawk": "awk",
            "gsed": "sed"}  # fmt: skip
_PYTHON_RE = re.compile(r"(python|pypy)[0-9.]*")
_VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*|[0-9@*#?$!-])")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_BEFORE_COMMAND = frozenset(
    ("!", "{", "if", "then", "else", "elif", "while", "until", "do", "time", "command", "builtin")
)
"""Words that may stand before a command name (with assignments): `eval` after them is
the builtin."""
_EVAL_HINT = "use it as a word of its own, outside eval's code"


_WRAPPERS = frozenset(("env", "exec", "nohup", "nice", "sudo", "doas", "xargs", "setsid",
                       "stdbuf", "command", "builtin", "time"))  # fmt: skip
"""Programs whose next word may be the command they run: a word that is an expansion there
stands in command position too (`env "$SHELL" -c`)."""


def _program(text: str, command_position: bool) -> tuple[str, _Program] | None:
    """The program a word starts, by its name (a path's last part), or the shell's rules
    for a word that is an expansion in command position (`"$SHELL" -c`: which program is
    beyond telling); an expansion elsewhere is an argument (`tar -C ${inputs.dir} -czf`)."""
    if REF in text or EXPANSION in text:
        return ("sh", _SHELL) if command_position else None
    name = text.rsplit("/", 1)[-1]
    name = _ALIASES.get(name, name)
    if name in _PROGRAMS:
        return name, _PROGRAMS[name]
    if _PYTHON_RE.fullmatch(name):
        return name, _PYTHON
    return None


@dataclass
class _Word:
    text: str = ""
    refs: list[int] = field(default_factory=list)  # positions of the references in it

    @property
    def whole(self) -> bool:
        """The word is exactly one reference (quoted or not)."""
        return self.text == REF


class _Command:
    """The words of one simple command, read one by one: which of them are code."""

    def __init__(self, found: dict[int, Why]) -> None:
        self.found = found
        self.reset()

    def reset(self) -> None:
        self.mode = ""  # "", "opts", "code", "arg", "eval", "skip"
        self.after_skip = ""  # the mode after a redirection's target
        self.name = ""
        self.prog: _Program | None = None
        self.switched = self.coded = self.ended = False
        self.from_option = False  # the code word comes from an option (more may follow)
        self.evaluated: list[_Word] = []
        self.first = True  # no command name yet (only assignments, `!`, `then`, ...)
        self.after_wrapper = False  # the last word was `env`, `nohup`, ...: a command follows

    def _code(self, word: _Word, whole_allowed: bool = True) -> None:
        if word.refs and not (whole_allowed and word.whole):
            assert self.prog is not None
            flag = self.prog.switch or self.prog.code_flags[:1]
            shown = f"{self.name} -{flag}" if flag else self.name
            why = (f"{self.prog.what} `{shown}`", self.prog.hint, self.name)
            for pos in word.refs:
                self.found.setdefault(pos, why)

    def word(self, word: _Word) -> None:
        mode = self.mode
        if mode == "skip":  # a redirection's target
            self.mode = self.after_skip
            return
        if mode == "eval":
            self.evaluated.append(word)
            return
        if mode == "code":
            self._code(word)
            self.coded = True
            self.mode = "opts" if self.from_option else ""
            return
        if mode == "arg":
            self.mode = "opts"
            return
        if mode == "opts":
            self._option_or_operand(word)
            return
        first, self.first = self.first, False
        if _ASSIGNMENT.match(word.text):  # `X=v`: a variable (before a command), no program
            self.first = first
            return
        if first and word.text in _BEFORE_COMMAND:
            self.first = True
        elif first and word.text == "eval":
            self.mode = "eval"
            return
        after_wrapper = self.after_wrapper
        self.after_wrapper = word.text.rsplit("/", 1)[-1] in _WRAPPERS
        found = _program(word.text, first or after_wrapper)
        if found is not None:
            self.name, self.prog = found
            self.mode = "opts"
            self.switched = self.coded = self.ended = self.from_option = False

    def redirect(self) -> None:
        """The next word is a redirection's target, not an argument."""
        self.after_skip = self.mode
        self.mode = "skip"

    def _option_or_operand(self, word: _Word) -> None:
        prog = self.prog
        assert prog is not None
        text = word.text
        starts = "-+" if prog.plus_options else "-"
        if not self.ended and text == "--":
            self.ended = True
            return
        if not self.ended and len(text) > 1 and text[0] in starts:
            self._option(word)
            return
        # the first operand
        if self.switched or (prog.operand_code and not self.coded):
            self.from_option = False
            self._code(word)
        self.mode = ""

    def _option(self, word: _Word) -> None:
        prog = self.prog
        assert prog is not None
        text = word.text
        if text.startswith("--"):
            name, eq, _ = text.partition("=")
            if name in prog.code_long:
                self.from_option = True
                if eq:
                    self._code(word, whole_allowed=False)
                    self.coded = True
                else:
                    self.mode = "code"
            elif name in prog.arg_long and not eq:
                self.mode = "arg"
            return
        for i, letter in enumerate(text[1:], 1):
            rest = text[i + 1 :]
            if letter in prog.code_flags:
                self.from_option = True
                if rest:  # attached: `-e'...'`
                    self._code(word, whole_allowed=False)
                    self.coded = True
                else:
                    self.mode = "code"
                return
            if letter in prog.file_flags:
                self.coded = True
            if letter in prog.arg_flags:
                if not rest:
                    self.mode = "arg"
                return
            if letter == prog.switch and prog.switch:
                self.switched = True
            if letter in (REF, EXPANSION):  # a flag that is a value: beyond telling
                return

    def end(self) -> None:
        if self.mode == "eval" and self.evaluated:
            whole = len(self.evaluated) == 1 and self.evaluated[0].whole
            if not whole:
                why = ("the arguments of `eval`", _EVAL_HINT, "eval")
                for word in self.evaluated:
                    for pos in word.refs:
                        self.found.setdefault(pos, why)
        self.reset()


class TooDeep(Exception):
    """A command nests `$(...)` or backquotes deeper than `MAX_NESTING`."""


class _Parser:
    """Reads shell text into words and simple commands (`_Command`), with the positions of
    the references in `refs`."""

    def __init__(self, text: str, refs: set[int]) -> None:
        self.s = text
        self.refs = refs
        self.found: dict[int, Why] = {}
        self.stopped = False
        self.depth = 0

    def commands(self, i: int, close: str) -> tuple[int, list[int]]:
        """Commands from `i` to `close` (`)`, a backquote, or "" for the end); the position
        after it and the references seen."""
        s = self.s
        seen: list[int] = []
        command = _Command(self.found)
        word: _Word | None = None
        depth = 0

        def end_word() -> None:
            nonlocal word
            if word is not None:
                seen.extend(word.refs)
                command.word(word)
                word = None

        while i < len(s) and not self.stopped:
            c = s[i]
            if i in self.refs:
                word = word or _Word()
                word.text += REF
                word.refs.append(i)
                i += 1
            elif c == close and (close != ")" or depth == 0):
                end_word()
                command.end()
                return i + 1, seen
            elif c in " \t":
                end_word()
                i += 1
            elif c in "\n;&|()":
                end_word()
                command.end()
                if c == "(":
                    depth += 1
                elif c == ")" and depth:
                    depth -= 1
                i += 1
            elif c in "<>":
                if s.startswith("<<", i):  # a here-document: refused past here anyway
                    self.stopped = True
                    break
                if word is not None and word.text.isdigit():
                    word = None  # `2>`: a descriptor, not a word
                end_word()
                i += 1
                while i < len(s) and s[i] in "<>&|":
                    i += 1
                command.redirect()
            elif c == "#" and word is None:
                while i < len(s) and s[i] != "\n":
                    i += 1
            else:
                word = word or _Word()
                i = self.part(i, word)
        end_word()
        command.end()
        return i, seen

    def part(self, i: int, word: _Word) -> int:
        """One piece of a word at `i` (a character, an escape, a quoted string, an
        expansion) into `word`; the position after it."""
        s = self.s
        c = s[i]
        if c == "\\":
            word.text += s[i + 1 : i + 2].replace("\n", "")
            return i + 2
        if c == "'":
            end = s.find("'", i + 1)
            end = len(s) if end < 0 else end
            for k in range(i + 1, end):
                if k in self.refs:
                    word.text += REF
                    word.refs.append(k)
                else:
                    word.text += s[k]
            return end + 1
        if c == '"':
            k = i + 1
            while k < len(s) and s[k] != '"' and not self.stopped:
                if k in self.refs:
                    word.text += REF
                    word.refs.append(k)
                    k += 1
                elif s[k] == "\\":
                    word.text += s[k + 1 : k + 2] if s[k + 1 : k + 2] in '$`"\\' else s[k : k + 2]
                    k += 2
                elif s[k] in "$`":
                    k = self.expansion(k, word)
                else:
                    word.text += s[k]
                    k += 1
            return k + 1
        if c in "$`":
            return self.expansion(i, word)
        word.text += c
        return i + 1

    def expansion(self, i: int, word: _Word) -> int:
        """An expansion at `i` (`$X`, `$(...)`, `` `...` ``, `${...}`, `$((...))`; a `$`
        starting none is a character) into `word`; the position after it."""
        s = self.s
        if s.startswith("$((", i) or s.startswith("${", i):
            close, opener = ("))", "(") if s[i + 1] == "(" else ("}", "{")
            depth, k = 0, i + 2
            while k < len(s):
                if k in self.refs:
                    word.refs.append(k)
                elif s[k] == opener:
                    depth += 1
                elif s.startswith(close, k) and depth == 0:
                    break
                elif s[k] == close[0] and depth:
                    depth -= 1
                k += 1
            word.text += EXPANSION
            return k + len(close)
        if s.startswith("$(", i) or s[i] == "`":
            start, close = (i + 2, ")") if s[i] == "$" else (i + 1, "`")
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise TooDeep
            after, nested = self.commands(start, close)
            self.depth -= 1
            word.refs.extend(nested)
            word.text += EXPANSION
            return after
        m = _VARIABLE.match(s, i)
        if m:
            word.text += EXPANSION
            return m.end()
        word.text += s[i]
        return i + 1


def code_references(pieces: list[str | None]) -> dict[int, Why]:
    """For the references of a command (`None` in `pieces`, in order), those that stand
    inside another program's code: their index -> (where, how to pass it as data, the
    program). Raises `TooDeep` for a command nested past `MAX_NESTING`."""
    if None not in pieces:
        return {}
    text, refs, order = "", set[int](), dict[int, int]()
    for piece in pieces:
        if piece is None:
            order[len(text)] = len(order)
            refs.add(len(text))
            text += REF
        else:
            text += piece
    parser = _Parser(text, refs)
    parser.commands(0, "")
    return {order[pos]: why for pos, why in parser.found.items()}

"""Where a command string hands a reference to a program that reads it as code.

`agents.shell_command` keeps each value one literal word for the outer shell; but a word
can be another program's *code*: the script of `sh -c '...'` (any shell, `-ec`, `-lc`, ...),
the arguments of `eval`, the code of `python3 -c`, `perl -e`, `node -e`, an `awk` or `sed`
program, the command of `trap`. A reference inside such a word is pasted into that code:
`sh -c 'echo Hello ${ticket.title}'` runs the title. So such a reference is refused, as
one inside backquotes is, unless it is the whole word (`sh -c ${inputs.script}`, `eval
${inputs.script}`: running that value as code, said on purpose). A value reaches such code
as data as an argument after it (`sh -c 'echo "$1"' _ ${ticket.title}`; the word after
a shell's script is its `$0`, never an option), if the script reads that parameter as
data (it is read as any command is: `eval "$1"` or bash's `[[ $1 -gt 1 ]]` refuses it,
`_Parser.script_params`), or as `$INPUT_<KEY>` or the inputs file.

The command's words are followed far enough to tell (`_Parser`): quotes, escapes, `$(...)`,
backquotes, `${...}`, `$((...))` and `$'...'` (a reference nested in any of them is inside
the word), command separators, redirections, `case` patterns. Where the parser cannot be
sure where something ends (an unclosed quote or expansion, a construct shells read
differently), every reference of the command is refused (`_Parser.give_up`). Any word may
start such a program (`env sh -c`, `timeout 5 bash -c`, `find -exec sh -c`, `docker run
img sh -c`): failing closed, a reference is refused even where such a word is only an
argument (`echo sh -c 'x ${inputs.v}'`). A command word that is an expansion is read as
a shell (`"$SHELL" -c`, `timeout 5 "$S" -c`, after a wrapper's options: `command -p`,
`time -p`, `env -`); as it may as well be `eval`, every later partial reference of the
command is refused, as is one after an expansion standing where an option of a covered
program may (`sh $C '...'`, `perl "$E" '...'`) or an argument that is an expansion of a
program not on the list (`find -exec "$S" -c`). A reference starting a word where a
program that reads code reads options is refused (`perl -e '...' ${v}`, `tar -xf a.tar
${v}`: a value `-e...` or `--to-command=...` is an option; `--` first ends that), and any
in an operand of `make` (`NAME=value` is makefile code). The argument of an option is
data (`tar -C ${inputs.dir} -czf out/${inputs.name}.tgz`), as is a redirection's target.
A program that hands its words to a shell (`ssh HOST CMD...`, `su USER ARG...`, `watch`,
`parallel`), an operand that is code (`sqlite3 DB SQL`, `git config alias.x ...`) and a
value reaching code through a program's input (`echo ${v} | sh`, `| xargs -I{} sh -c
'...{}'`, `find ${v} -exec sh -c '...{}'`) are `agents/code_paths.py`'s.

What each simple command does with its words is `agents/code_words.py`'s `Command` (a
program's options: `agents/code_options.py`). The check knows a list of programs
(`agents/code_programs.py`: `PROGRAMS`, `PYTHON`; versioned names such as `perl5.36.0`
count; wrappers such as `timeout`, `sudo`, `xargs`) and every option of theirs, in each
program's own syntax: which take an argument (`perl -I DIR`, `awk -W ARG`), of what shape
(`perl -l`/`-0` digits only, so `-lne` is `-l -n -e`; `perl -d` only `t`/`:Mod`), and
whether it is optional (`make -j [N]`), which take code (`perl -M`, `sed --expr`, a GNU
abbreviation), which take none; clusters or whole words (`node -pe`); options after
operands (GNU `sed`, `tar`, `make`); the words `env -S` splits. After an option it does
not know, a reference inside a larger word is refused (fail closed: `Command.blind`); a
command that defines an alias (`alias e=eval`), or a shell function whose arguments
reach code (`f() { eval "$@"; }`: `code_flow`), refuses every reference. For `git`, `make`, `tar`, `vim`, `gdb` only the options
taking commands are known (`open_options`: the others are let be; a prefix of one of
those is taken for it). Any program not on the list is not seen: docs/agents.md says so and gives
the safe forms. Programs that run a command they are given (wrappers, `ssh`, `su`) are
`agents/code_runners.py`'s.

What the script does with its own variables and functions across commands (a reference
assigned to a variable that is exported, or expanded into code; a function that runs its
arguments; bash's arithmetic: `((...))`, `$((X))`) is `agents/code_flow.py`'s `Flow`,
resolved once the whole text is read.
"""

from __future__ import annotations

import re

from swarm_engine.agents.code_flow import ARITH_WHY, IDENTIFIERS, NAMES, PARAMS, WHICH, Flow
from swarm_engine.agents.code_options import Why, Word
from swarm_engine.agents.code_programs import (
    VARIABLE,
)
from swarm_engine.agents.code_spec import EXPANSION, REF
from swarm_engine.agents.code_words import ALIAS, FUNCTION_WHY, Command

MAX_NESTING = 100
"""The deepest `$(...)` / backquotes the parser follows (it recurses): a command nested
deeper, with a reference in it, is refused (too deep to tell where the reference stands)."""


def _evaluated_why(where: str) -> Why:
    return (f"a function's argument inside {where}, which bash evaluates", "", "")


_PROMPT_WHY = (
    "a prompt expansion `${...@P}`, where bash runs the value's `$(...)`",
    'expand it as "${{X}}" there, or read $INPUT_<KEY> there',
    "",
)
_OPENERS = frozenset(("{", "if", "while", "until", "for", "select", "case"))
_CLOSERS = frozenset(("}", "fi", "done", "esac"))


_SHIFTS = re.compile(r"(?<![\w-])(shift|set)(?![\w-])")
"""A script that moves its positional parameters (`shift`, `set -- ...`): which value
each holds is beyond telling, so any counts."""


class TooDeep(Exception):
    """A command nests `$(...)` deeper than `MAX_NESTING`."""


_UNSURE_HINT = "close it, or write the command without it"
"""For a command the parser cannot follow (an unclosed quote or expansion, a construct
shells read differently): every reference of it is refused, where it stands being beyond
telling."""


class _Parser:
    """Reads shell text into words and simple commands (`Command`), with the positions of
    the references in `refs`. Where it cannot be sure where something ends, it stops and
    says why in `unsure` (failing closed: `code_references` refuses every reference)."""

    def __init__(self, text: str, refs: set[int]) -> None:
        self.s = text
        self.refs = refs
        self.found: dict[int, Why] = {}
        self.stopped = False
        self.unsure = ""
        self.depth = 0
        self.flow = Flow()

    def give_up(self, what: str) -> int:
        """Stop reading: the shell text is beyond following (`what`); the end."""
        if not self.stopped:
            self.unsure = what
            self.stopped = True
        return len(self.s)

    def commands(self, i: int, close: str) -> tuple[int, list[int]]:
        """Commands from `i` to `close` (`)` or "" for the end); the position after it and
        the references seen."""
        s = self.s
        seen: list[int] = []
        command = Command(self.found, self.flow, self.script_params)
        word: Word | None = None
        depth = cases = 0  # open `(`; open `case` (whose patterns end with `)`)
        groups = 0  # open `{`, `if`, `while`, ...: a pipe after one gets all inside
        segment: list[Word] = []  # the words since the last `;`, `&&`, ... outside those
        feeding: list[list[Word]] = []  # what is piped into each open group (`| { ...; }`)

        def end_word() -> None:
            nonlocal word, cases, groups
            if word is not None:
                if command.first and word.text == "case":
                    cases += 1
                elif command.first and word.text == "esac" and cases:
                    cases -= 1
                if command.first and word.text in _OPENERS:
                    groups += 1
                    feeding.append(list(command.piped))
                elif command.first and word.text in _CLOSERS and groups:
                    groups -= 1
                    if feeding:
                        feeding.pop()
                seen.extend(word.refs)
                segment.append(word)
                command.word(word)
                word = None

        def separate(c: str) -> None:
            """A command ends at `c`: after a pipe, the next reads what it writes."""
            if c == "&" and s[i - 1 : i] == "|":  # bash's `|&`: still a pipe
                return
            pipe = c == "|" and not s.startswith("||", i) and s[i - 1 : i] != "|"
            if not pipe and not depth and not groups:
                segment.clear()
            command.piped = list(segment) if pipe else list(feeding[-1] if feeding else [])

        while i < len(s) and not self.stopped:
            c = s[i]
            if i in self.refs:
                word = word or Word()
                word.text += REF
                word.refs.append(i)
                i += 1
            elif c == close and depth == 0:
                end_word()  # (an `esac` may close the last `case` first)
                command.end()
                i += 1
                if not cases:
                    return i, seen
            elif c in " \t":
                end_word()
                i += 1
            elif c == "(" and word is None and s.startswith("((", i):  # bash: arithmetic
                i = self.arithmetic_command(i)
            elif c in "\n;&|()":
                array = word is not None and word.text.endswith("=")  # bash: `a=()`
                if c == "(" and not array and s[i + 1 :].lstrip(" \t").startswith(")"):
                    command.defines_function()  # `f() { ...; }`, `f () ...`
                end_word()
                feed = command.piped
                command.end()
                separate(c)
                if c == "(":
                    depth += 1
                    feeding.append(feed)  # `... | (cd d && sh)`: each command reads it
                    command.piped = list(feed)
                elif c == ")" and depth:
                    depth -= 1
                    if feeding:
                        feeding.pop()
                i += 1
            elif c in "<>" and s.startswith("(", i + 1):  # bash: `<(...)`, a file's name
                word = word or Word()
                i = self.process_substitution(i, word)
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
                word = word or Word()
                i = self.part(i, word)
        end_word()
        command.end()
        if close:
            i = self.give_up("a `$(` without its `)`")
        return i, seen

    def script_params(self, text: str) -> dict[str, Why] | None:
        """What the script of `sh -c SCRIPT $0 ARGS...` does with its positional parameters:
        each (`"0"`, `"1"`, ...; `"@"`: any) that reaches code, an arithmetic expression
        or a variable's name (`[[ $1 -gt 1 ]]`, `${2:0:$1}`), with where; None where that
        is beyond telling (a script this check cannot follow, or one defining an alias or
        a function its parameters reach code through)."""
        inner = _Parser(text, set())
        inner.depth = self.depth + 1
        if inner.depth > MAX_NESTING:
            raise TooDeep
        inner.commands(0, "")
        inner.flow.resolve(inner.found)
        if inner.stopped or ALIAS in inner.found or (inner.flow.functions and inner.found):
            return None  # (stopped: beyond following, or at a here-document, `<<<` too)
        shifted = _SHIFTS.search(text) is not None  # `shift`, `set --`: which is beyond telling
        which = inner.flow.which
        return {"@" if shifted else which.get(pos, "@"): why for pos, why in inner.found.items()}

    def part(self, i: int, word: Word) -> int:
        """One piece of a word at `i` (a character, an escape, a quoted string, an
        expansion) into `word`; the position after it."""
        s = self.s
        c = s[i]
        if c == "\\":
            word.text += s[i + 1 : i + 2].replace("\n", "")
            return i + 2
        if c == "'":
            return self.single(i, word)
        if c == '"':
            return self.double(i, word)
        if c in "$`":
            return self.expansion(i, word)
        if c in "*?" or (c == "[" and "]" in re.split(r"[\s;&|<>()]", s[i + 1 :], maxsplit=1)[0]):
            word.glob = True  # `/bin/[s]h`, `pyth*3`: which program it names is beyond telling
        word.text += c
        return i + 1

    def single(self, i: int, word: Word) -> int:
        """A single-quoted string at `i`; the position after it."""
        end = self.s.find("'", i + 1)
        if end < 0:
            return self.give_up("a `'` without its closing quote")
        for k in range(i + 1, end):
            if k in self.refs:
                word.text += REF
                word.refs.append(k)
            else:
                word.text += self.s[k]
        return end + 1

    def double(self, i: int, word: Word) -> int:
        """A double-quoted string at `i`; the position after it."""
        s = self.s
        k = i + 1
        while k < len(s) and not self.stopped:
            if k in self.refs:
                word.text += REF
                word.refs.append(k)
                k += 1
            elif s[k] == '"':
                return k + 1
            elif s[k] == "\\":
                word.text += s[k + 1 : k + 2] if s[k + 1 : k + 2] in '$`"\\' else s[k : k + 2]
                k += 2
            elif s[k] in "$`":
                k = self.expansion(k, word, quoted=True)
            else:
                word.text += s[k]
                k += 1
        return self.give_up('a `"` without its closing quote')

    def expansion(self, i: int, word: Word, quoted: bool = False) -> int:
        """An expansion at `i` (`$X`, `$(...)`, `` `...` ``, `${...}`, `$((...))`, `$'...'`;
        a `$` starting none is a character) into `word`; the position after it. Inside
        double quotes when `quoted`."""
        s = self.s
        inner = Word()  # what an expansion holds: only its references count
        if s.startswith("$((", i):
            after = self.arithmetic(i + 3, inner)
            self._evaluated(inner, "$((...))")
            self.flow.use(set(IDENTIFIERS.findall(s, i + 3, after)), ARITH_WHY)
        elif s.startswith("$(", i):
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise TooDeep
            after, nested = self.commands(i + 2, ")")
            self.depth -= 1
            inner.refs.extend(nested)
        elif s.startswith("$[", i):  # bash's old `$[...]`: arithmetic
            after = self.bracket(i + 2, inner)
            for pos in inner.refs:
                self.found.setdefault(pos, ARITH_WHY if pos >= 0 else _evaluated_why("$[...]"))
            self.flow.use(set(IDENTIFIERS.findall(s, i + 2, after)), ARITH_WHY)
        elif s.startswith("${", i):
            after = self.parameter(i + 2, inner, quoted)
            self._evaluated(inner, "${...}")  # `${v:$1}`, `${!1}`: arithmetic, a name
        elif s[i] == "`":
            after = self.backquotes(i + 1, inner)
        elif s.startswith("$'", i) and not quoted:
            return self.ansi(i, word)
        elif m := VARIABLE.match(s, i):
            after = m.end()
        else:
            word.text += s[i]
            return i + 1
        word.refs.extend(inner.refs)
        lead = not word.text
        word.text += EXPANSION
        word.split = word.split or not quoted
        span = s[i:after]
        word.names.update(NAMES.findall(span))  # (`$(...)`: any name in it, failing closed)
        if PARAMS.match(span) or (span[:1] == "`" and PARAMS.search(span)):
            m = WHICH.match(span)
            which = (m.group(1) or m.group(2)) if m else "@"
            word.refs.append(self.flow.param(which))  # `$1`, `"$@"`: a function's argument
            word.lead_param = word.lead_param or lead
            if span.startswith(("${!", "`")):  # (backquotes' commands are not followed)
                self.found[word.refs[-1]] = _evaluated_why(span[:3] + "...")
            if span.endswith("@P}"):
                self.found[word.refs[-1]] = _PROMPT_WHY
        if span.startswith("${") and span.endswith("@P}"):
            self.flow.use(set(NAMES.findall(span)), _PROMPT_WHY)
        return after

    def process_substitution(self, i: int, word: Word) -> int:
        """`<(...)` or `>(...)` at `i` into `word` (a file's name, its text written by the
        commands in it: `Command.word` refuses it to a program that may run it)."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise TooDeep
        after, nested = self.commands(i + 2, ")")
        self.depth -= 1
        word.refs.extend(nested)
        word.text += EXPANSION
        word.names.update(NAMES.findall(self.s, i, after))
        word.procsub = True
        return after

    def arithmetic_command(self, i: int) -> int:
        """`((...))` at `i` (bash: an arithmetic command; dash: nested subshells): every
        reference and variable in it is evaluated as arithmetic, so refused."""
        inner = Word()
        after = self.arithmetic(i + 2, inner)
        for pos in inner.refs:
            self.found.setdefault(pos, ARITH_WHY)
        self.flow.use(set(IDENTIFIERS.findall(self.s, i + 2, after)), ARITH_WHY)
        return after

    def _evaluated(self, inner: Word, where: str) -> None:
        """A function's argument inside `$((...))` or a `${...}` expansion: bash evaluates
        it (`a[$(id)]` runs), so the function may run it."""
        for pos in inner.refs:
            if pos < ALIAS:
                self.found.setdefault(pos, _evaluated_why(where))

    def nested(self, k: int, word: Word, quoted: bool) -> int | None:
        """A reference, escape, quoted string or expansion at `k` inside `${...}` or
        `$((...))` into `word`; the position after it, or None for another character."""
        s = self.s
        if k in self.refs:
            word.refs.append(k)
            return k + 1
        c = s[k]
        if c == "\\":
            return k + 2
        if c == "'":
            if quoted:  # dash reads it as a character there, bash as a quote
                return self.give_up("a `'` inside `${...}` inside double quotes")
            return self.single(k, word)
        if c == '"':
            return self.double(k, word)
        if c in "$`":
            return self.expansion(k, word, quoted)
        return None

    def parameter(self, k: int, word: Word, quoted: bool) -> int:
        """The inside of `${...}` from `k` (POSIX: quotes, escapes and expansions in it
        are followed; a `{` does not nest); the position after its `}`."""
        s = self.s
        while k < len(s) and not self.stopped:
            after = self.nested(k, word, quoted)
            if after is not None:
                k = after
            elif s[k] == "}":
                return k + 1
            else:
                k += 1
        return self.give_up("a `${` without its `}`")

    def arithmetic(self, k: int, word: Word) -> int:
        """The inside of `$((...))` from `k`; the position after its matching `))`."""
        s = self.s
        depth = 0
        while k < len(s) and not self.stopped:
            after = self.nested(k, word, False)
            if after is not None:
                k = after
            elif s[k] == "(":
                depth += 1
                k += 1
            elif s[k] == ")" and depth:
                depth -= 1
                k += 1
            elif s.startswith("))", k):
                return k + 2
            elif s[k] == ")":  # bash reads `$((a) b)` as `$( (a) b)`, dash refuses it
                return self.give_up("a `$((` closed by a single `)`")
            else:
                k += 1
        return self.give_up("a `$((` without its `))`")

    def bracket(self, k: int, word: Word) -> int:
        """The inside of bash's `$[...]` from `k`; the position after its matching `]`."""
        s = self.s
        depth = 0
        while k < len(s) and not self.stopped:
            after = self.nested(k, word, False)
            if after is not None:
                k = after
            elif s[k] in "[]" and (s[k] == "[" or depth):
                depth += 1 if s[k] == "[" else -1
                k += 1
            elif s[k] == "]":
                return k + 1
            else:
                k += 1
        return self.give_up("a `$[` without its `]`")

    def backquotes(self, k: int, word: Word) -> int:
        """The inside of `` `...` `` from `k`: it ends at the first backquote not escaped,
        whatever the quotes in it (any reference there is refused: `shell_command`)."""
        s = self.s
        while k < len(s):
            if k in self.refs:
                word.refs.append(k)
            if s[k] == "\\":
                k += 1
            elif s[k] == "`":
                return k + 1
            k += 1
        return self.give_up("a backquote without its closing backquote")

    def ansi(self, i: int, word: Word) -> int:
        """`$'...'` at `i` (bash, zsh, ksh: a backslash escapes a quote there; dash: a `$`,
        then a plain single-quoted string): where both readings end alike, it is quoted
        text; else the shell's reading is beyond telling."""
        s = self.s
        k = i + 2
        while k < len(s) and s[k] != "'":
            k += 2 if s[k] == "\\" else 1
        if k >= len(s) or k != s.find("'", i + 2):
            return self.give_up("a `$'...'` string with an escaped quote")
        return self.single(i + 1, word)


def code_references(pieces: list[str | None]) -> dict[int, Why]:
    """For the references of a command (`None` in `pieces`, in order), those that stand
    inside another program's code: their index -> (where, how to pass it as data, the
    program). Raises `TooDeep` for a command nested past `MAX_NESTING`. Where the parser
    loses its place, every reference is refused (fail closed)."""
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
    parser.flow.resolve(parser.found)
    if parser.unsure:
        where = f"a command this check cannot follow ({parser.unsure}), so possibly code"
        return dict.fromkeys(order.values(), (where, _UNSURE_HINT, ""))
    if ALIAS in parser.found:  # an alias: any word may be code
        return dict.fromkeys(order.values(), parser.found[ALIAS])
    if parser.flow.functions and min(parser.found, default=0) < ALIAS:
        return dict.fromkeys(order.values(), FUNCTION_WHY)  # its arguments reach code
    return {order[pos]: why for pos, why in parser.found.items() if pos >= 0}

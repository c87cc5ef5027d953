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
backquotes, `${...}`, `$((...))` and `$'...'` (a reference nested in any of them is inside
the word), command separators, redirections, `case` patterns. Where the parser cannot be
sure where something ends (an unclosed quote or expansion, a construct shells read
differently), every reference of the command is refused (`_Parser.give_up`). Any word may
start such a program (`env sh -c`, `timeout 5 bash -c`, `find -exec sh -c`, `docker run
img sh -c`): failing closed, a reference is refused even where such a word is only an
argument (`echo sh -c 'x ${inputs.v}'`). A command word that is an expansion is read as
a shell (`"$SHELL" -c`, `timeout 5 "$S" -c`); as it may as well be `eval`, every later
partial reference of the command is refused, as is one after an expansion standing where
an option of a covered program may (`sh $C '...'`, `perl "$E" '...'`). The argument of an
option is data (`tar -C ${inputs.dir} -czf out/${inputs.name}.tgz`). Beyond telling: a
program that runs its arguments through a shell of its own (`ssh`, `su -c`, `watch`), or
text piped into an interpreter.

The check knows a list of programs (`PROGRAMS`, `PYTHON`; versioned names such as
`perl5.36.0` count; wrappers such as `timeout`, `sudo`, `xargs`) and every option of
theirs, in each program's own syntax: which take an argument (`perl -I DIR`, `awk -W
ARG`) and of what shape (`perl -l`/`-0` digits only, so `-lne` is `-l -n -e`), which take
code (`perl -M`, `sed --expr`, a GNU abbreviation), which take none; clusters or whole
words (`node -pe`); options after operands (GNU `sed`). After an option it does not know,
a reference inside a larger word is refused (fail closed: `_Command.blind`); a command
that defines an alias (`alias e=eval`) refuses every reference. For `git`, `make`, `tar`,
`vim`, `gdb` only the options taking commands are known (`open_options`: the others are
let be; a prefix of one of those is taken for it). Any program not on the list (`ssh`,
`su -c`, `emacs --eval`) is not seen: docs/agents.md says so and gives the safe forms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from swarm_engine.agents.code_programs import (
    ASSIGNMENT,
    BEFORE_COMMAND,
    EVAL_HINT,
    EXPANSION,
    PROGRAMS,
    REF,
    VARIABLE,
    WRAPPERS,
    Program,
    program_of,
)

Why = tuple[str, str, str]
"""Where a reference stands ("the script of `sh -c`"), how to pass it as data instead (a
format string of `prog` and `path`), and the program."""
MAX_NESTING = 100
"""The deepest `$(...)` / backquotes the parser follows (it recurses): a command nested
deeper, with a reference in it, is refused (too deep to tell where the reference stands)."""


@dataclass
class _Word:
    text: str = ""
    refs: list[int] = field(default_factory=list)  # positions of the references in it

    @property
    def whole(self) -> bool:
        """The word is exactly one reference (quoted or not)."""
        return self.text == REF


ALIAS = -1
"""The key in `found` saying that the command defines an alias (`alias e=eval`, then `e
...`): any word may then be code, so every reference in it is refused."""
_ALIAS_WHY = (
    "a command that defines an alias (`alias`), where any word may become code",
    "define no alias in a command with a reference; write the program's name",
    "alias",
)
_BLIND_HINT = "give it as a whole word of its own"
_NAMED_BY_EXPANSION = (
    "an argument of a command named by an expansion (it may be `eval` or a shell), so"
    " possibly code",
    "write the program's name, and " + _BLIND_HINT,
    "",
)


class _Command:
    """The words of one simple command, read one by one: which of them are code."""

    def __init__(self, found: dict[int, Why]) -> None:
        self.found = found
        self.reset()

    def reset(self) -> None:
        self.mode = ""  # "", "opts", "code", "arg", "module", "eval", "skip"
        self.after_skip = ""  # the mode after a redirection's target
        self.name = ""
        self.prog: Program | None = None
        self.switched = self.coded = self.ended = False
        self.from_option = False  # the code word comes from an option (more may follow)
        self.evaluated: list[_Word] = []
        self.first = True  # no command name yet (only assignments, `!`, `then`, ...)
        self.after_wrapper = False  # the last word was `env`, `nohup`, ...: a command follows
        self.operands = 0
        self.opted = False
        self.exempt = False
        self.flag = ""  # the option whose argument is code (`-e`, `--expression`)
        self.blind: Why | None = None  # past an option the check does not know

    def _code(self, word: _Word, whole_allowed: bool = True) -> None:
        if word.refs and not (whole_allowed and word.whole):
            assert self.prog is not None
            flag = self.prog.switch and f"-{self.prog.switch}"
            flag = self.flag if self.from_option else flag
            shown = f"{self.name} {flag}" if flag else self.name
            why = (f"{self.prog.what} `{shown}`", self.prog.hint, self.name)
            for pos in word.refs:
                self.found.setdefault(pos, why)

    def _go_blind(self, option: str, why: Why | None = None) -> None:
        """Past an option this check does not know (it may take the next word, or make any
        word code): every later partial reference of the command is refused."""
        if self.blind is None:
            option = option.replace(EXPANSION, "$...").replace(REF, "${...}")
            self.blind = why or (
                f"an argument of `{self.name}` after `{option}`, an option this check does"
                " not know, so possibly code",
                _BLIND_HINT,
                self.name,
            )

    def word(self, word: _Word) -> None:
        self.exempt = False  # the word is the command named by an expansion (`x-${v}`)
        self._read(word)
        if self.blind is not None and word.refs and not word.whole and not self.exempt:
            for pos in word.refs:
                self.found.setdefault(pos, self.blind)

    def _read(self, word: _Word) -> None:
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
            if word.text.startswith("-") and self.flag in self.prog_optional():
                self._option_or_operand(word)  # `node -p -e`: an option, not code
            return
        if mode == "arg":
            self.mode = "opts"
            return
        if mode == "module":
            self._module(word.text)
            return
        if mode == "opts":
            self._option_or_operand(word)
            return
        first, self.first = self.first, False
        if ASSIGNMENT.match(word.text):  # `X=v`: a variable (before a command), no program
            self.first = first
            return
        if first and word.text in BEFORE_COMMAND:
            self.first = True
        elif first and word.text == "eval":
            self.mode = "eval"
            return
        elif first and word.text == "alias":
            self.found[ALIAS] = _ALIAS_WHY
        after_wrapper = self.after_wrapper
        self.after_wrapper = word.text.rsplit("/", 1)[-1] in WRAPPERS
        found = program_of(word.text, first or after_wrapper)
        if found is not None:
            self.name, self.prog = found
            self.mode = "opts"
            self.switched = self.coded = self.ended = self.from_option = False
            self.operands = 0
            self.opted = False  # an option came (then no old-style `tar xIf`)
            if (REF in word.text or EXPANSION in word.text) and self.blind is None:
                self._go_blind("", _NAMED_BY_EXPANSION)  # `$e "..."`, `"$S" -c '...'`
                self.exempt = True  # (what follows the name, not the name)

    def prog_optional(self) -> tuple[str, ...]:
        return self.prog.optional_code if self.prog else ()

    def redirect(self) -> None:
        """The next word is a redirection's target, not an argument."""
        self.after_skip = self.mode
        self.mode = "skip"

    def _module(self, module: str) -> None:
        """`python3 -m MODULE`: the rest are the module's arguments, code for some."""
        assert self.prog is not None
        self.mode = ""
        if module in self.prog.code_modules:
            self._go_blind(
                "", (f"the code of `{self.name} -m {module}`", self.prog.hint, self.name)
            )

    def _option_or_operand(self, word: _Word) -> None:
        prog = self.prog
        assert prog is not None
        text = word.text
        starts = "-+" if prog.plus_options else "-"
        if not self.ended and text == "--":
            self.ended = True
            return
        if not self.ended and len(text) > 1 and text[0] in starts:
            self.opted = True
            self._option(word)
            return
        if not self.ended and text[:1] in (REF, EXPANSION):  # `sh $C '...'`: maybe `-c`
            self._go_blind(
                "",
                (
                    f"an argument of `{self.name}` after a word that is an expansion (it may"
                    " be an option), so possibly code",
                    _BLIND_HINT,
                    self.name,
                ),
            )
        old_style = prog.old_style and self.operands == 0 and not self.opted
        if old_style and text.isalpha() and set(text) & set(prog.code_flags):
            # `tar xIf PROG FILE`: the letters' arguments follow in order
            why = f"an argument of `{self.name}` after `{text}`, old-style options one of"
            self._go_blind("", (why + " which takes a command", _BLIND_HINT, self.name))
        if prog.command_operand:  # `env`, `flock FILE`: options go on; then a command
            if prog.assignments and ASSIGNMENT.match(text):
                return
            self.operands += 1
            if self.operands < prog.command_operand and program_of(text, False) is None:
                return  # (a word naming a program starts it, failing closed, as anywhere)
            self.mode = ""
            self.after_wrapper = True
            self.word(_Word(word.text))  # its references were seen above
            return
        # the first operand
        if self.switched or (prog.operand_code and not self.coded):
            self.from_option = False
            self._code(word)
            self.coded = True
        self.mode = "opts" if prog.permute else ""  # GNU sed: `sed p f -e '...'`

    def _long(self, name: str) -> str:
        """A long option's full name (GNU programs take a unique prefix: `--expr`). Where
        only the code options are known (`open_options`), a prefix of one is taken for it
        (failing closed: `tar --to-com`, `gdb -eval-comm`)."""
        prog = self.prog
        assert prog is not None
        every = prog.code_long + prog.arg_long + prog.known_long
        if name in every or not prog.abbrev:
            return name
        if prog.open_options:
            return min((c for c in prog.code_long if c.startswith(name)), default=name)
        matches = {full for full in every if full.startswith(name)}
        return matches.pop() if len(matches) == 1 else name

    def _option(self, word: _Word) -> None:
        prog = self.prog
        assert prog is not None
        text = word.text
        if prog.dash_long and not text.startswith("--") and len(text) > 2:
            text = "-" + text
        if prog is PROGRAMS["vim"] and text.startswith("+"):  # `vim +cmd`: a command
            self.from_option, self.flag = True, "+"
            self._code(word, whole_allowed=False)
            return
        if text.startswith("--") or prog.whole_words:
            self._long_option(word, text)
            return
        i = 1
        while i < len(text):
            letter, rest = text[i], text[i + 1 :]
            i += 1
            if letter in prog.code_flags or letter in prog.rest_code:
                self.from_option, self.flag = True, f"-{letter}"
                if rest or letter in prog.rest_code:  # attached: `-e'...'`, `-Mstrict`
                    self._code(word, whole_allowed=False)
                    self.coded = True
                else:
                    self.mode = "code"
                return
            if letter in prog.file_flags:
                self.coded = True
            if letter == "m" and prog.code_modules:
                if rest:
                    self._module(rest)
                else:
                    self.mode = "module"
                return
            if letter in prog.arg_flags:
                if not rest:
                    self.mode = "arg"
                return
            if letter in prog.rest_flags:
                return
            counted = dict(prog.counted).get(letter)
            if counted is not None:  # `perl -l0`, `-0777`: then more letters (`-lne`)
                m = re.match(counted, rest)
                i += m.end() if m else 0
                continue
            if letter == prog.switch and prog.switch:
                self.switched = True
            elif letter in (REF, EXPANSION) or not (
                prog.open_options or letter in prog.known
            ):  # unknown, a flag that is a value, or an expansion (`-$X`)
                self._go_blind(text[0] + letter)
                return

    def _long_option(self, word: _Word, text: str) -> None:
        """A long option (`--eval=...`), or any option of a program whose options are
        whole words (`node -pe`)."""
        prog = self.prog
        assert prog is not None
        given, eq, _ = text.partition("=")
        if prog.whole_words:  # node: `--experimental_loader` is `--experimental-loader`
            dashes = len(given) - len(given.lstrip("-"))
            given = given[:dashes] + given[dashes:].replace("_", "-")
        name = self._long(given)
        if prog is PROGRAMS["vim"] and name.lower().startswith(("--cmd", "--remote")):
            name = "--cmd"  # vim takes any word starting so, in any case
        if name in prog.code_long:
            self.from_option, self.flag = True, name
            if eq:
                self._code(word, whole_allowed=False)
                self.coded = True
            else:
                self.mode = "code"
        elif name in prog.arg_long:
            if not eq:
                self.mode = "arg"
        elif (
            (name not in prog.known_long and not prog.open_options)
            or REF in given
            or EXPANSION in given
        ):
            self._go_blind(given)

    def end(self) -> None:
        if self.mode == "eval" and self.evaluated:
            whole = len(self.evaluated) == 1 and self.evaluated[0].whole
            if not whole:
                why = ("the arguments of `eval`", EVAL_HINT, "eval")
                for word in self.evaluated:
                    for pos in word.refs:
                        self.found.setdefault(pos, why)
        self.reset()


class TooDeep(Exception):
    """A command nests `$(...)` deeper than `MAX_NESTING`."""


_UNSURE_HINT = "close it, or write the command without it"
"""For a command the parser cannot follow (an unclosed quote or expansion, a construct
shells read differently): every reference of it is refused, where it stands being beyond
telling."""


class _Parser:
    """Reads shell text into words and simple commands (`_Command`), with the positions of
    the references in `refs`. Where it cannot be sure where something ends, it stops and
    says why in `unsure` (failing closed: `code_references` refuses every reference)."""

    def __init__(self, text: str, refs: set[int]) -> None:
        self.s = text
        self.refs = refs
        self.found: dict[int, Why] = {}
        self.stopped = False
        self.unsure = ""
        self.depth = 0

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
        command = _Command(self.found)
        word: _Word | None = None
        depth = cases = 0  # open `(`; open `case` (whose patterns end with `)`)

        def end_word() -> None:
            nonlocal word, cases
            if word is not None:
                if command.first and word.text == "case":
                    cases += 1
                elif command.first and word.text == "esac" and cases:
                    cases -= 1
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
            elif c == close and depth == 0:
                end_word()  # (an `esac` may close the last `case` first)
                command.end()
                i += 1
                if not cases:
                    return i, seen
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
        if close:
            i = self.give_up("a `$(` without its `)`")
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
            return self.single(i, word)
        if c == '"':
            return self.double(i, word)
        if c in "$`":
            return self.expansion(i, word)
        word.text += c
        return i + 1

    def single(self, i: int, word: _Word) -> int:
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

    def double(self, i: int, word: _Word) -> int:
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

    def expansion(self, i: int, word: _Word, quoted: bool = False) -> int:
        """An expansion at `i` (`$X`, `$(...)`, `` `...` ``, `${...}`, `$((...))`, `$'...'`;
        a `$` starting none is a character) into `word`; the position after it. Inside
        double quotes when `quoted`."""
        s = self.s
        inner = _Word()  # what an expansion holds: only its references count
        if s.startswith("$((", i):
            after = self.arithmetic(i + 3, inner)
        elif s.startswith("$(", i):
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise TooDeep
            after, nested = self.commands(i + 2, ")")
            self.depth -= 1
            inner.refs.extend(nested)
        elif s.startswith("${", i):
            after = self.parameter(i + 2, inner, quoted)
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
        word.text += EXPANSION
        return after

    def nested(self, k: int, word: _Word, quoted: bool) -> int | None:
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

    def parameter(self, k: int, word: _Word, quoted: bool) -> int:
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

    def arithmetic(self, k: int, word: _Word) -> int:
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

    def backquotes(self, k: int, word: _Word) -> int:
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

    def ansi(self, i: int, word: _Word) -> int:
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
    if parser.unsure:
        where = f"a command this check cannot follow ({parser.unsure}), so possibly code"
        return dict.fromkeys(order.values(), (where, _UNSURE_HINT, ""))
    if ALIAS in parser.found:
        return dict.fromkeys(order.values(), _ALIAS_WHY)
    return {order[pos]: why for pos, why in parser.found.items()}

"""One covered program's options, read in its own syntax (`OptionReader`, the base of
`agents/code_words.py`'s `Command`): which take an argument and of what shape, which take
code (`perl -e`, `sed --expr`, a GNU abbreviation), clusters (`perl -lne`) or whole
words (`node -pe`), by the tables of `agents/code_programs.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from swarm_engine.agents.code_programs import PROGRAMS
from swarm_engine.agents.code_spec import EXPANSION, REF, Program

if TYPE_CHECKING:
    from swarm_engine.agents.code_flow import Flow

Why = tuple[str, str, str]
"""Where a reference stands ("the script of `sh -c`"), how to pass it as data instead (a
format string of `prog` and `path`), and the program."""


@dataclass
class Word:
    text: str = ""
    refs: list[int] = field(default_factory=list)  # positions of the references in it
    glob: bool = False  # it holds an unquoted `*`, `?` or `[...]`: a pathname expansion
    names: set[str] = field(default_factory=set)  # the variables it expands (`$X`, `${X}`)
    split: bool = False  # it holds an unquoted expansion (split into words, globbed)
    lead_param: bool = False  # it starts with a positional parameter (`"$1"`, `$@`)
    procsub: bool = False  # it holds a process substitution (`<(echo ...)`: a file)

    @property
    def whole(self) -> bool:
        """The word is exactly one reference (quoted or not)."""
        return self.text == REF

    @property
    def whole_variable(self) -> bool:
        """The word is exactly one quoted expansion of a variable (`"$X"`)."""
        return self.text == EXPANSION and len(self.names) == 1 and not self.split


BLIND_HINT = "give it as a whole word of its own"


class OptionReader:
    """The option reading of `code_words.Command`: the state it shares with it, and what a
    reference in an option's argument is."""

    found: dict[int, Why]
    flow: Flow
    mode: str
    name: str
    prog: Program | None
    switched: bool
    coded: bool
    from_option: bool
    flag: str
    blind: Why | None
    optional: str
    letters: set[str]  # the short options read (`bash -s`, `python3 -m`)
    module: str  # `python3 -m MODULE`: the module
    replace: str  # `xargs -I R`: R ("\n" while its word is due)
    code_texts: list[str]  # the words read as code (`sh -c 'echo {}'`)

    def _split(self, text: str, word: Word) -> None:
        """`env -S STRING` (`code_words.Command`)."""
        raise NotImplementedError

    def _code(self, word: Word, whole_allowed: bool = True) -> None:
        whole = whole_allowed and (word.whole or word.whole_variable)  # said on purpose
        self.code_texts.append(word.text)
        if word.refs or word.names:
            assert self.prog is not None
            flag = self.prog.switch and f"-{self.prog.switch}"
            flag = self.flag if self.from_option else flag
            shown = f"{self.name} {flag}" if flag else self.name
            why = (f"{self.prog.what} `{shown}`", self.prog.hint, self.name)
            self._refuse(word, why, whole)

    def _go_blind(self, option: str, why: Why | None = None) -> None:
        """Past an option this check does not know (it may take the next word, or make any
        word code): every later partial reference of the command is refused."""
        if self.blind is None:
            option = option.replace(EXPANSION, "$...").replace(REF, "${...}")
            self.blind = why or (
                f"an argument of `{self.name}` after `{option}`, an option this check does"
                " not know, so possibly code",
                BLIND_HINT,
                self.name,
            )

    def _module(self, module: str) -> None:
        """`python3 -m MODULE`: the rest are the module's arguments, code for some."""
        assert self.prog is not None
        self.mode, self.module = "", module
        if module in self.prog.code_modules:
            self._go_blind(
                "", (f"the code of `{self.name} -m {module}`", self.prog.hint, self.name)
            )

    def _refuse(self, word: Word, why: Why, whole: bool = False) -> None:
        """Refuse the word's references, and those its variables hold (`Flow`); for a
        word that is code on purpose as a whole (`sh -c ${v}`, `eval "$X"`), only a
        function's arguments it holds (`f() { x=$1; eval "$x"; }`)."""
        if not whole:
            for pos in word.refs:
                self.found.setdefault(pos, why)
        self.flow.use(word.names, why, whole)

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

    def _option(self, word: Word) -> None:
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
            self.letters.add(letter)
            if letter in prog.replace:  # `xargs -I R`, `-IR`, `-i[R]`
                self.replace = rest or ("{}" if letter in prog.rest_flags else "\n")
            if f"-{letter}" in prog.split:  # `env -S 'sh -c'`, `-S"sh -c"`
                self.flag = f"-{letter}"
                if rest:
                    self._split(rest, word)
                else:
                    self.mode = "split"
                return
            shape = dict(prog.rest_code_if).get(letter)
            if shape is not None and re.match(shape, rest):  # `perl -d:Mod=...`
                self.from_option, self.flag = True, f"-{letter}"
                self._code(word, whole_allowed=False)
                self.coded = True
                return
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
            optional = dict(prog.optional_args).get(letter)
            if optional is not None:  # `make -j 4`, `make -j -E ...`: only of that shape
                if not rest:
                    self.mode, self.optional = "optional", optional
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

    def _long_option(self, word: Word, text: str) -> None:
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
        if name in prog.split:
            self.flag = name
            if eq:
                self._split(text.partition("=")[2], word)
            else:
                self.mode = "split"
        elif name in prog.code_long:
            self.from_option, self.flag = True, name
            if eq:
                self._code(word, whole_allowed=False)
                self.coded = True
            else:
                self.mode = "code"
        elif name in prog.arg_long:
            if not eq:
                self.mode = "arg"
        elif name == "--replace" and prog.replace:
            self.replace = text.partition("=")[2] or "{}"
        elif REF in given or EXPANSION in given or not self._known(name):
            self._go_blind(given)

    def _known(self, name: str) -> bool:
        """A long option the check may read past (listed, or `_plain`)."""
        prog = self.prog
        assert prog is not None
        return name in prog.known_long or prog.open_options or self._plain(name)

    def _plain(self, name: str) -> bool:
        """An unknown `--long` option of a program whose every code option is listed and
        none of whose operands is code (`node --trace-uncaught`, `ruby --disable-gems`):
        it may take the next word as an argument, which is then data (a script's name, or
        its argument), so no later word is code; not a prefix of a code option."""
        prog = self.prog
        assert prog is not None
        runs = (prog.operand_code or prog.switch or prog.split or prog.command_operand
                or prog.shell_operands or prog.code_from)  # fmt: skip
        prefix = any(c.startswith(name) for c in prog.code_long + prog.split)
        return name.startswith("--") and not runs and not prefix

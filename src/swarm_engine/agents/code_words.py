"""One simple command's words, read one by one (`Command`): which of them another
program reads as code (the script of `sh -c`, the code of `perl -e`, the arguments of
`eval`), by each program's options in its own syntax (`agents/code_programs.py`). The
shell text is split into words and commands by `agents/shell_code.py`'s parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from swarm_engine.agents.code_programs import (
    ASSIGNMENT,
    BEFORE_COMMAND,
    EVAL_HINT,
    EXPANSION,
    MAKE_HINT,
    NO_COMMAND,
    OPTION_HINT,
    PREFIX_OPTIONS,
    PROGRAMS,
    REF,
    WRAPPERS,
    Program,
    program_of,
)

Why = tuple[str, str, str]
"""Where a reference stands ("the script of `sh -c`"), how to pass it as data instead (a
format string of `prog` and `path`), and the program."""


@dataclass
class Word:
    text: str = ""
    refs: list[int] = field(default_factory=list)  # positions of the references in it

    @property
    def whole(self) -> bool:
        """The word is exactly one reference (quoted or not)."""
        return self.text == REF


ALIAS = -1
"""The key in `found` saying that the command defines an alias (`alias e=eval`, then `e
...`): any word may then be code, so every reference in it is refused."""
ALIAS_WHY = (
    "a command that defines an alias (`alias`), where any word may become code",
    "define no alias in a command with a reference; write the program's name",
    "alias",
)
FUNCTION_WHY = (
    "a command that defines a shell function (`f() { ...; }`), whose body may run any"
    " argument as code",
    "define no function in a command with a reference; write the program's name",
    "function",
)
_BLIND_HINT = "give it as a whole word of its own"
_NAMED_BY_EXPANSION = (
    "an argument of a command named by an expansion (it may be `eval` or a shell), so"
    " possibly code",
    "write the program's name, and " + _BLIND_HINT,
    "",
)


class Command:
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
        self.evaluated: list[Word] = []
        self.first = True  # no command name yet (only assignments, `!`, `then`, ...)
        self.after_wrapper = False  # the last word was `env`, `nohup`, ...: a command follows
        self.operands = 0
        self.opted = False
        self.exempt = False
        self.flag = ""  # the option whose argument is code (`-e`, `--expression`)
        self.blind: Why | None = None  # past an option the check does not know
        self.unknown = ""  # the command is a program not on the list (`find`, `chroot`)
        self.optional = ""  # the shape of an optional argument (`make -j`: digits)
        self.prefix = ""  # `command`, `time`, `builtin` just read: their options come next
        self.prefix_arg = False  # the next word is the argument of `time -f`/`-o`

    def _code(self, word: Word, whole_allowed: bool = True) -> None:
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

    def word(self, word: Word) -> None:
        self.exempt = False  # the word is the command named by an expansion (`x-${v}`)
        target = self.mode == "skip"  # a redirection's target: never a program's argument
        self._read(word)
        exempt = self.exempt or target
        if self.blind is not None and word.refs and not word.whole and not exempt:
            for pos in word.refs:
                self.found.setdefault(pos, self.blind)

    def _read(self, word: Word) -> None:
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
            assert self.prog is not None
            ends = self.prog.code_ends_options  # `python3 -c CODE`: then sys.argv only
            self.mode = "opts" if self.from_option and not ends else ""
            if word.text.startswith("-") and self.flag in self.prog_optional():
                self._option_or_operand(word)  # `node -p -e`: an option, not code
            return
        if mode == "arg":
            self.mode = "opts"
            return
        if mode == "split":
            self._split(word.text, word)
            return
        if mode == "module":
            self._module(word.text)
            return
        if mode == "optional":
            self.mode = "opts"
            if not re.fullmatch(self.optional, word.text):
                self._option_or_operand(word)  # not the option's argument
            return
        if mode == "opts":
            self._option_or_operand(word)
            return
        if self.first and self.prefix and self._prefix_option(word.text):
            return
        first, self.first = self.first, False
        if ASSIGNMENT.match(word.text):  # `X=v`: a variable (before a command), no program
            self.first = first
            return
        if first and word.text in BEFORE_COMMAND:
            self.first = True
            self.prefix = word.text if word.text in PREFIX_OPTIONS else ""
        elif first and word.text == "eval":
            self.mode = "eval"
            return
        elif first and word.text == "alias":
            self.found.setdefault(ALIAS, ALIAS_WHY)
        elif first and word.text == "function":  # bash, ksh: `function f { ...; }`
            self.defines_function()
        after_wrapper = self.after_wrapper
        self.after_wrapper = word.text.rsplit("/", 1)[-1] in WRAPPERS
        found = program_of(word.text, first or after_wrapper)
        if found is None and (first or after_wrapper):
            runs = word.text.rsplit("/", 1)[-1] not in NO_COMMAND
            self.unknown = word.text if runs else ""  # `find`, `taskset`; not `echo`
        elif found is None and self.unknown and EXPANSION in word.text.rsplit("/", 1)[-1]:
            self._go_blind("", self._unknown_blind())  # `find -exec "$S" -c '...'`
        if found is not None:
            self.unknown = ""
            self.name, self.prog = found
            self.mode = "opts"
            self.switched = self.coded = self.ended = self.from_option = False
            self.operands = 0
            self.opted = False  # an option came (then no old-style `tar xIf`)
            if (REF in word.text or EXPANSION in word.text) and self.blind is None:
                self._go_blind("", _NAMED_BY_EXPANSION)  # `$e "..."`, `"$S" -c '...'`
                self.exempt = True  # (what follows the name, not the name)

    def _prefix_option(self, text: str) -> bool:
        """An option of `command`, `time` or `builtin` (`command -p`, `time -f FMT`, `--`):
        read, the next word is still the command word (`command -p eval ...`). False for
        the command word itself."""
        if self.prefix_arg:
            self.prefix_arg = False
            return True
        if text == "--":
            self.prefix = ""
            return True
        if len(text) < 2 or text[0] != "-":
            self.prefix = ""
            return False
        flags, with_arg, long_arg, long_flags = PREFIX_OPTIONS[self.prefix]
        if text.startswith("--"):
            name, eq, _ = text.partition("=")
            if name in long_arg and not eq:
                self.prefix_arg = True
            elif name not in long_arg + long_flags:
                self._go_blind(text, self._prefix_blind(text))
            return True
        for i, letter in enumerate(text[1:], 1):
            if letter in with_arg:
                self.prefix_arg = i == len(text) - 1  # `-f FMT`, or attached: `-fFMT`
                return True
            if letter not in flags:
                self._go_blind(text, self._prefix_blind(text))
                return True
        return True

    def _unknown_blind(self) -> Why:
        name = self.unknown.replace(EXPANSION, "$...").replace(REF, "${...}")
        return (
            f"an argument of `{name}` after a word that is an expansion (it may name a"
            f" shell or `eval` that `{name}` runs), so possibly code",
            "write the program's name, and " + _BLIND_HINT,
            name,
        )

    def _prefix_blind(self, text: str) -> Why:
        option = text.replace(EXPANSION, "$...").replace(REF, "${...}")
        return (
            f"an argument of `{self.prefix}` after `{option}`, an option this check does"
            " not know, so possibly code",
            _BLIND_HINT,
            self.prefix,
        )

    def _split(self, text: str, word: Word) -> None:
        """The argument of `env -S` (in `word`): its words stand in its place, options of
        `env` or a command and its arguments (`env -S 'sh -c' '...'`). One holding a
        quote, an escape, a `$` or an expansion is beyond splitting here: a reference in
        it is refused, as is every later partial one (fail closed)."""
        self.mode = "opts"
        if REF in text or EXPANSION in text or set(text) & set("'\"\\$#"):
            self.from_option = True
            self._code(word, whole_allowed=text == word.text)  # `env -S ${inputs.cmd}`
            why = f"an argument of `{self.name}` after `{self.flag}` with a string this"
            self._go_blind("", (why + " check does not split, so possibly code",
                                _BLIND_HINT, self.name))  # fmt: skip
            return
        for piece in text.split():
            self._read(Word(piece))

    def defines_function(self) -> None:
        """The command defines a shell function (`f() { eval "$@"; }`, then `f "..."`):
        any word may then be code, as after an alias."""
        self.found.setdefault(ALIAS, FUNCTION_WHY)

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

    def _option_or_operand(self, word: Word) -> None:
        prog = self.prog
        assert prog is not None
        text = word.text
        starts = "-+" if prog.plus_options else "-"
        if not self.ended and text == "--":
            self.ended = True
            return
        if not self.ended and text == "-" and prog.dash_option:  # `env -`: `env -i`
            return
        if not self.ended and len(text) > 1 and text[0] in starts:
            self.opted = True
            self._option(word)
            return
        if word.refs and prog.assignment_operands:  # make: `x-${v}` may be `x-:=$(...)`
            why = f"an operand of `{self.name}`, where a word holding `=` is makefile code"
            self._refuse(word, (why + " (`NAME:=$(shell ...)`)", MAKE_HINT, self.name))
        elif self._may_be_option(word):  # `tar -xf a.tar ${v}`: `--to-command=...`
            why = f"an argument of `{self.name}` where it reads options (a value may be one)"
            self._refuse(word, (why + ", so possibly code", OPTION_HINT, self.name))
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
            self.word(Word(word.text))  # its references were seen above
            return
        # the first operand
        if self.switched or (prog.operand_code and not self.coded):
            self.from_option = False
            self._code(word)
            self.coded = True
        self.mode = "opts" if prog.permute else ""  # GNU sed: `sed p f -e '...'`

    def _may_be_option(self, word: Word) -> bool:
        """An operand starting with a reference, which a program reading options after
        its operands (`permute`) reads as an option if the value starts with `-`; not the
        operand that is its code (`sed ${inputs.script} f`)."""
        prog = self.prog
        assert prog is not None
        code_operand = self.switched or (prog.operand_code and not self.coded)
        return prog.permute and not self.ended and word.text[:1] == REF and not code_operand

    def _refuse(self, word: Word, why: Why) -> None:
        for pos in word.refs:
            self.found.setdefault(pos, why)

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

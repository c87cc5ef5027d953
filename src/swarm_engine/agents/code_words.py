"""One simple command's words, read one by one (`Command`): which of them another
program reads as code (the script of `sh -c`, the code of `perl -e`, the arguments of
`eval`), by each program's options in its own syntax (`agents/code_programs.py`, read by
`agents/code_options.py`). The shell text is split into words and commands by
`agents/shell_code.py`'s parser.
"""

from __future__ import annotations

import re

from swarm_engine.agents.code_flow import ARITH_WHY, Flow
from swarm_engine.agents.code_options import BLIND_HINT, Why, Word
from swarm_engine.agents.code_paths import DECLARERS, PathReader, ScriptReader
from swarm_engine.agents.code_programs import (
    ASSIGNMENT,
    BEFORE_COMMAND,
    EVAL_HINT,
    MAKE_HINT,
    NO_COMMAND,
    OPTION_HINT,
    PREFIX_OPTIONS,
    WRAPPERS,
    program_of,
)
from swarm_engine.agents.code_spec import EXPANSION, REF, Program

EVALUATORS = frozenset(("let", "read", "unset", "getopts", "mapfile", "readarray"))
"""Bash builtins whose arguments are arithmetic or variable names (`a[$(cmd)]` runs)."""
ARITH_OPERATORS = frozenset(("-eq", "-ne", "-lt", "-le", "-gt", "-ge"))
SUBSCRIPT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\[")

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
_NAMED_BY_EXPANSION = (
    "an argument of a command named by an expansion (it may be `eval` or a shell), so"
    " possibly code",
    "write the program's name, and " + BLIND_HINT,
    "",
)


class Command(PathReader):
    """The words of one simple command, read one by one: which of them are code."""

    def __init__(self, found: dict[int, Why], flow: Flow, script: ScriptReader) -> None:
        self.found = found
        self.flow = flow
        self.script_reader = script
        self.piped: list[Word] = []  # the words of the commands piped into this one
        self.reset()

    def reset(self) -> None:
        self.mode = ""  # "", "opts", "code", "arg", "module", "eval", "skip", "exported",
        # "declared" (`local`, `declare`, ...), "set"
        self.declared = False  # `declare`'s options so far: `-x` (or any) makes it export
        self.evaluates = False  # `declare -i`/`-n`: its names' values are evaluated
        self.after_skip = ""  # the mode after a redirection's target
        self.name = ""
        self.prog: Program | None = None
        self.switched = self.coded = self.ended = False
        self.from_option = False  # the code word comes from an option (more may follow)
        self.evaluated: list[Word] = []
        self.first = True  # no command name yet (only assignments, `!`, `then`, ...)
        self.assigned: list[Word] = []  # `X=v` words so far: the next command's environment
        self.env_whole: Word | None = None  # `env ${v}`: an assignment if a word follows
        self.after_wrapper = False  # the last word was `env`, `nohup`, ...: a command follows
        self.operands = self.count = 0
        self.operated = self.shell_first = self.nested = False
        self.sub = self.key = ""
        self.args_due = 0  # words still due as old-style options' arguments
        self.opted = False
        self.exempt = False
        self.flag = ""  # the option whose argument is code (`-e`, `--expression`)
        self.blind: Why | None = None  # past an option the check does not know
        self.unknown = ""  # the command is a program not on the list (`find`, `chroot`)
        self.optional = ""  # the shape of an optional argument (`make -j`: digits)
        self.prefix = ""  # `command`, `time`, `builtin` just read: their options come next
        self.prefix_arg = False  # the next word is the argument of `time -f`/`-o`
        self.letters = set()
        self.module = ""  # `python3 -m MODULE`: the module
        self.replace = ""
        self.code_texts = []
        self.prev: Word | None = None  # the last word of `[[ ... ]]`
        self.arith = False  # it is `[[` (whose `-eq` operands are arithmetic)
        self.chain: list[str] = []  # the programs read so far (`find`, `xargs`, `sh`)
        self.words: list[Word] = []  # the command's words
        self.script: Word | None = None  # the script of `sh -c SCRIPT $0 ARGS...`
        self.positional: list[Word] = []  # its `$0 ARGS...`

    def word(self, word: Word) -> None:
        if self.env_whole is not None:  # a word after `env ${v}`: the value may be `X=...`
            self._environment([self.env_whole])
            self.env_whole = None
        self.exempt = False  # the word is the command named by an expansion (`x-${v}`)
        blind_before = self.blind is not None
        target = self.mode == "skip"  # a redirection's target: never a program's argument
        self.words.append(word)
        self._read(word)
        exempt = self.exempt or target
        sourced = self.chain[:1] in ([".", "source"],)
        if word.procsub and ((self.prog is not None and self.prog.reads_code) or sourced):
            why = f"a file `<(...)` gives `{self.name or self.chain[0]}`, which may run it"
            self._refuse(word, (why + " as code", BLIND_HINT, self.name))
        if self.blind is not None and not exempt:
            if not word.whole:  # (a function's argument: if blind before it, `$e "$1"`)
                for pos in word.refs:
                    if pos >= 0 or blind_before:
                        self.found.setdefault(pos, self.blind)
            self.flow.use(word.names, self.blind, word.whole_variable)

    def _read(self, word: Word) -> None:
        mode = self.mode
        if mode == "skip":  # a redirection's target
            self.mode = self.after_skip
            return
        if mode == "eval":
            self.evaluated.append(word)
            return
        if mode == "positional":  # `sh -c SCRIPT $0 ARGS...`: never options nor a command
            if self.chain[:1] == ["find"] and word.text in (";", "+"):  # `-exec ... \;`
                self._positional()  # then find's own words again (`-exec perl -e ...`)
                self.mode, self.script, self.positional = "", None, []
                return
            self.positional.append(word)
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
        if mode == "exported":  # every argument may name or set an exported variable
            self._export(word)
            return
        if mode == "evaluated":  # `let ${v}`, `read ${v}`: arithmetic or a variable's name
            self._refuse(word, ARITH_WHY)
            return
        if mode == "cond":  # `[[ ${v} -eq 1 ]]`, `[ -v ${v} ]`
            self._condition(word)
            return
        if mode == "printf":  # `printf -v ${v} ...`; a value first may be `-vNAME`
            self.mode = "evaluated" if word.text == "-v" else ""
            if word.text.startswith("-v") and word.text != "-v":
                self._refuse(word, ARITH_WHY)
            elif word.text[:1] == REF or word.lead_param:
                why = "an argument of `printf` where it reads options (`-v NAME` evaluates NAME)"
                self._refuse(word, (why, OPTION_HINT, "printf"))
            return
        if mode == "function":
            self.mode, self.first = "", True
            return
        if mode == "declared":
            self._declare(word)
            return
        if mode == "set":  # `set -a`, `set -o allexport`: every variable is exported
            if word.text == "--":
                self.mode = ""
            elif re.fullmatch(r"-[A-Za-z]*a[A-Za-z]*|allexport", word.text) or (
                word.text[:1] in (REF, EXPANSION)
            ):
                self.flow.export_all = True
            return
        if mode == "arg":
            self.mode = "opts"
            if self.replace == "\n":  # `xargs -I R`
                self.replace = word.text
            return
        if mode == "split":
            self._split(word.text, word)
            return
        if mode == "module":
            self._module(word.text)
            return
        if mode == "optional":
            self.mode = "opts"
            unsure = word.text[:1] in (REF, EXPANSION)  # `vim -S ${v}`: `-c...` is not it
            if unsure or not re.fullmatch(self.optional, word.text):
                self._option_or_operand(word)  # not the option's argument
            return
        if mode == "opts":
            self._option_or_operand(word)
            return
        if mode == "shellwords":
            self._shell_word(word)
            return
        if mode == "shelldata":  # `parallel sh -c '... {}' ::: ${v}`: in that code
            if self.nested:
                why = f"an argument of `{self.name}` put into a program's code its command"
                self._refuse(word, (why + " line runs (`{}`)", BLIND_HINT, self.name))
            return
        if self.first and self.prefix and self._prefix_option(word.text):
            return
        first, self.first = self.first, False
        if SUBSCRIPT.match(word.text):  # `a[${v}]=1`: bash evaluates the subscript
            self._refuse(word, ARITH_WHY)
            self.first = first
            return
        if ASSIGNMENT.match(word.text):  # `X=v`: a variable (before a command), no program
            self.first = first
            if first:
                self.assigned.append(word)
            return
        self._environment(self.assigned)  # a command follows them: its environment
        self.assigned = []
        if first and word.text == "export":  # `export X=${v}`, `export ${v}`, `export X`
            self.mode = "exported"
        elif first and word.text in DECLARERS:  # `local X=${v}`: an assignment
            self.mode, self.declared = "declared", False
        elif first and word.text == "set":
            self.mode = "set"
        elif first and word.text in EVALUATORS:
            self.mode = "evaluated"
        elif first and word.text in ("[[", "[", "test", "printf"):
            self.mode = "printf" if word.text == "printf" else "cond"
            self.prev, self.arith = None, word.text == "[["
        elif first and word.text in (".", "source", "eval"):  # may export any variable
            self.flow.export_all = True
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
            self.mode = "function"  # its name, then its body's commands
            return
        after_wrapper = self.after_wrapper
        self.after_wrapper = word.text.rsplit("/", 1)[-1] in WRAPPERS
        directory, _, last = word.text.rpartition("/")
        literal = (
            bool(last)
            and not (REF in last or EXPANSION in last or word.glob or word.split)
            and any(c in directory for c in (REF, EXPANSION))
        )  # `"$HOME/bin/tool"`: a quoted expansion names only the directory
        found = program_of(last if literal else word.text, first or after_wrapper)
        if (first or after_wrapper) and not (first and word.text in BEFORE_COMMAND):
            self.chain.append(word.text.rsplit("/", 1)[-1])
        if word.glob and (first or after_wrapper):  # `/bin/[s]h -c`: read as an expansion
            found = program_of(EXPANSION, True)
        if found is None and (first or after_wrapper):
            runs = word.text.rsplit("/", 1)[-1] not in NO_COMMAND
            self.unknown = word.text if runs else ""  # `find`, `taskset`; not `echo`
        elif found is None and self.unknown and EXPANSION in word.text.rsplit("/", 1)[-1]:
            self._go_blind("", self._unknown_blind())  # `find -exec "$S" -c '...'`
        if found is not None:
            self.unknown = ""
            self.name, self.prog = found
            self.letters, self.module = set(), ""
            self.mode = "opts"
            self.switched = self.coded = self.ended = self.from_option = False
            self.operands = 0
            self.operated = False  # an operand came (then options end, but for `permute`)
            self.count = 0  # operands so far
            self.sub = ""  # the first operand (`git clone`)
            self.key = ""  # `git config KEY`
            self.shell_first = self.nested = False
            self.args_due = 0
            self.opted = False  # an option came (then no old-style `tar xIf`)
            named = (REF in word.text or EXPANSION in word.text or word.glob) and not literal
            if named and (first or after_wrapper):  # a function's argument as a command
                for pos in word.refs:
                    if pos < 0:
                        self.found.setdefault(pos, _NAMED_BY_EXPANSION)
                self.flow.use(word.names, _NAMED_BY_EXPANSION, word.whole_variable)
            if named and (first or after_wrapper) and self.blind is None:
                self._go_blind("", _NAMED_BY_EXPANSION)  # `$e "..."`, `"$S" -c '...'`
                # (what follows the name, not the name: `./t/${v}.sh`; but a reference
                # inside another expansion, `${X:-sh -c '... ${v}'}`, may be code)
                self.exempt = EXPANSION not in word.text

    def _condition(self, word: Word) -> None:
        """A word of `[[ ... ]]` or `test`: an operand of `-eq`, `-lt`, ... (in `[[`) or
        of `-v` is evaluated (arithmetic, a variable's name with a subscript)."""
        prev, self.prev = self.prev, word
        if word.text in ARITH_OPERATORS and self.arith and prev is not None:
            self._refuse(prev, ARITH_WHY)
        if prev is not None and (
            prev.text == "-v" or (self.arith and prev.text in ARITH_OPERATORS)
        ):
            self._refuse(word, ARITH_WHY)

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
            "write the program's name, and " + BLIND_HINT,
            name,
        )

    def _prefix_blind(self, text: str) -> Why:
        option = text.replace(EXPANSION, "$...").replace(REF, "${...}")
        return (
            f"an argument of `{self.prefix}` after `{option}`, an option this check does"
            " not know, so possibly code",
            BLIND_HINT,
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
                                BLIND_HINT, self.name))  # fmt: skip
            return
        for piece in text.split():
            self._read(Word(piece))

    def defines_function(self) -> None:
        """The command defines a shell function (`f() { eval "$@"; }`, then `f "..."`):
        if its positional parameters reach code, any word may (`Flow`)."""
        self.flow.functions = True

    def prog_optional(self) -> tuple[str, ...]:
        return self.prog.optional_code if self.prog else ()

    def redirect(self) -> None:
        """The next word is a redirection's target, not an argument."""
        self.after_skip = self.mode
        self.mode = "skip"

    def _option_or_operand(self, word: Word) -> None:
        prog = self.prog
        assert prog is not None
        text = word.text
        starts = "-+" if prog.plus_options else "-"
        if self.args_due:  # an argument of old-style options (`tar czf OUT.tgz`)
            self.args_due -= 1
            return
        if not self.ended and text == "--":
            self.ended = True
            return
        if not self.ended and text == "-" and prog.dash_option:  # `env -`: `env -i`
            return
        if not self.ended and len(text) > 1 and text[0] in starts:
            self.opted = True
            self._option(word)
            return
        first_operand, self.operated = not self.operated, True
        if prog.bang_operands and (text[:1] == REF or word.lead_param):  # `ed !cmd`
            why = f"an operand of `{self.name}`, where a value starting with `!` is a command"
            self._refuse(word, (why + " it runs", prog.hint, self.name))
        elif word.refs and prog.assignment_operands:  # make: `x-${v}` may be `x-:=$(...)`
            why = f"an operand of `{self.name}`, where a word holding `=` is makefile code"
            self._refuse(word, (why + " (`NAME:=$(shell ...)`)", MAKE_HINT, self.name))
        elif self._may_be_option(word, first_operand):  # `tar -xf a.tar ${v}`
            why = f"an argument of `{self.name}` where it reads options (a value may be one)"
            self._refuse(word, (why + ", so possibly code", OPTION_HINT, self.name))
        if not self.ended and text[:1] in (REF, EXPANSION):  # `sh $C '...'`: maybe `-c`
            self._go_blind(
                "",
                (
                    f"an argument of `{self.name}` after a word that is an expansion (it may"
                    " be an option), so possibly code",
                    BLIND_HINT,
                    self.name,
                ),
            )
        old_style = prog.old_style and self.operands == 0 and not self.opted
        if old_style and text.isalpha() and set(text) & set(prog.code_flags):
            # `tar xIf PROG FILE`: the letters' arguments follow in order
            why = f"an argument of `{self.name}` after `{text}`, old-style options one of"
            self._go_blind("", (why + " which takes a command", BLIND_HINT, self.name))
        elif old_style and text.isalpha():  # `tar xzf FILE`: FILE is `f`'s argument
            self.args_due = sum(letter in prog.arg_flags for letter in text)
        self.count += 1
        self.sub = self.sub or text
        if self._operand_code(word):
            return
        if prog.command_operand:  # `env`, `flock FILE`: options go on; then a command
            if prog.assignments and text.find("=") > 0:  # any name: `BASH_FUNC_f%%=...`
                self._environment([word])  # `env X=v cmd`: the command's environment
                return
            self.operands += 1
            if self.operands < prog.command_operand and program_of(text, False) is None:
                return  # (a word naming a program starts it, failing closed, as anywhere)
            self.mode = ""
            self.after_wrapper = True
            params = [pos for pos in word.refs if pos < 0]  # (the others were seen above)
            self.word(Word(word.text, params, word.glob, word.names, word.split))
            self.words.pop()  # (seen once)
            if prog.assignments and word.whole:  # `env -- ${v} cmd`: `X=...` if words follow
                self.env_whole = word
            return
        # the first operand
        if self.switched or (prog.operand_code and not self.coded):
            self.from_option = False
            self._code(word)
            self.coded = True
            if self.switched:  # a shell's script: then its `$0` and positional parameters
                self.script, self.mode = word, "positional"
                return
        self.mode = "opts" if prog.permute or prog.subcommands else ""  # `sed p f -e '...'`

    def _may_be_option(self, word: Word, first_operand: bool) -> bool:
        """A word starting with a reference where a program that reads code reads options
        (its first operand, or any for one reading options after operands: `permute`), so
        an option if the value starts with `-` (`perl -e '...' ${v}` with `-e...`, `tar
        -xf a.tar ${v}` with `--to-command=...`); not the operand that is its code (`sed
        ${inputs.script} f`)."""
        prog = self.prog
        assert prog is not None
        code_operand = self.switched or (prog.operand_code and not self.coded)
        # (`git config` stops reading options at its key)
        later = prog.subcommands and self.sub != prog.config
        where = prog.permute or first_operand or later
        return (
            where
            and prog.reads_code
            and not self.ended
            and (word.text[:1] == REF or word.lead_param)
            and not code_operand
        )

    def end(self) -> None:
        if self.mode == "eval" and self.evaluated:
            one = self.evaluated[0]
            whole = len(self.evaluated) == 1 and (one.whole or one.whole_variable)
            why = ("the arguments of `eval`", EVAL_HINT, "eval")
            for word in self.evaluated:
                self._refuse(word, why, whole)
        self._input_code()
        self._positional()
        if self.first:  # `X=${v}` alone: a variable of the script (`Flow`)
            for word in self.assigned:
                name = word.text.partition("=")[0].removesuffix("+")
                self.flow.assign(name, word.refs, word.names)
        self.reset()

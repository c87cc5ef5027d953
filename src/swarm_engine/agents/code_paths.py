"""Where a value reaches a program other than as one of its arguments, for
`agents/code_words.py`'s `Command` (`PathReader`, its base): a command's environment
(`X=${v} cmd`, `export`, `declare`), its input (`echo ${v} | sh`, `| xargs -I{} sh -c
'...{}'`, `find ${v} -exec sh -c '...{}'`), a command line a program hands a shell (`ssh
HOST CMD...`, `su USER ARG...`, `watch CMD...`), an operand that is code of its own
(`sqlite3 DB SQL`, `git config KEY VALUE`), and a shell's positional parameter its script
reads as code or evaluates (`bash -c '[[ $1 -gt 1 ]]' _ ${v}`, read by `ScriptReader`).
"""

from __future__ import annotations

from collections.abc import Callable

from swarm_engine.agents.code_flow import ARITH_WHY
from swarm_engine.agents.code_options import BLIND_HINT, OptionReader, Why, Word
from swarm_engine.agents.code_programs import ASSIGNMENT, PROGRAMS, PYTHON, program_of
from swarm_engine.agents.code_spec import EXPANSION, REF

DECLARERS = frozenset(("readonly", "declare", "typeset", "local"))
"""Builtins whose arguments set variables (exported after `-x`), as `export`'s do."""
ENVIRONMENT_WHY = (
    "a variable of a command's environment (programs read code from some: BASH_ENV,"
    " PERL5OPT, NODE_OPTIONS, TAR_OPTIONS)",
    "give it as an argument, or read it from $INPUT_<KEY>, which the step has already",
    "",
)

ScriptReader = Callable[[str], dict[str, Why] | None]
"""What a shell's script does with its positional parameters (`shell_code`'s
`_Parser.script_params`): which (`"1"`, `"@"`: any) reach code, and where; None: beyond
telling."""
SCRIPT_HINT = (
    'write the script literally (in single quotes) and read its arguments there only as data ("$1")'
)


class PathReader(OptionReader):
    """The state `Command` shares, and what a value's other paths to code are."""

    piped: list[Word]
    chain: list[str]
    words: list[Word]
    ended: bool
    count: int
    sub: str
    key: str
    shell_first: bool
    nested: bool
    declared: bool
    evaluates: bool  # `declare -i`, `-n`: its names' values are evaluated
    script: Word | None
    positional: list[Word]
    script_reader: ScriptReader

    def _positional(self) -> None:
        """The words after a shell's script (`sh -c SCRIPT $0 ARGS...`) are its `$0` and
        positional parameters: data, unless the script reads one as code, as arithmetic or
        as a variable's name (bash: `[[ $1 -gt 1 ]]`, `$(( $1 ))`, `${2:0:$1}`, where a
        value `a[$(cmd)]` runs cmd; dash reads it as a number only), which its text is
        read for, as any command's (with what `xargs` appends, and the paths `find` gives
        as `{}`). A script that is an expansion is beyond reading."""
        script, words = self.script, self.positional
        appended = self.piped if "xargs" in self.chain else []
        paths = self.words if "find" in self.chain else []
        given = words + appended + paths
        if script is None or script.whole or not any(w.refs or w.names for w in given):
            return  # (a whole reference as the script: code on purpose, its arguments too)
        shown = f"{self.name} -c"
        text = script.text
        why = f"an argument of `{shown}` whose script this check cannot read or follow"
        unread = (why + " (it may run its arguments)", SCRIPT_HINT, self.name)
        if text == EXPANSION and not script.split:  # `sh -c "$S" _ ${v}`: whose is S?
            refs = [pos for word in given for pos in word.refs]
            names = set().union(*(word.names for word in given))
            params = any(pos < 0 for pos in script.refs)
            self.flow.script((script.names, params), refs, names, unread)
            return
        reached = None if REF in text or EXPANSION in text else self.script_reader(text)
        if reached is None:
            reached = {"@": unread}
        for which, (where, hint, _) in reached.items():
            if not where.startswith(f"an argument of `{shown}`"):
                label = "a positional parameter" if which == "@" else f"${which}"
                where = where.removeprefix("a function's argument inside ")  # `$((...))`
                where = f"an argument of `{shown}` its script reads ({label}) in {where}"
            hint = hint or ARITH_WHY[1]
            chosen = words if which == "@" else words[int(which) : int(which) + 1]
            if which == "@" or int(which) >= len(words):
                chosen = chosen + appended  # `| xargs sh -c '...' _`: appended to them
            if any("{}" in word.text for word in chosen):
                chosen = chosen + paths  # `find ${v} -exec sh -c '...' _ {} \;`
            if self.replace and any(self.replace in word.text for word in chosen):
                chosen = chosen + appended  # `| xargs -I{} sh -c '...' _ {}`
            for word in chosen:
                self._refuse(word, (where, hint, self.name))

    def _input_code(self) -> None:
        """References that reach code through a program's input: piped into a program
        that reads its input as code (`echo ${v} | sh`, `| python3`, `| m4`), or put into
        code by `{}` (`... | xargs -I{} sh -c 'echo {}'`, `find ${v} -exec sh -c '...{}'`).
        """
        prog, name = self.prog, self.name
        braces = [t for t in self.code_texts if "{}" in t]
        if "find" in self.chain and braces:  # the paths found start with its operands
            why = f"a path `find` puts into the code of `{name}` (`{{}}`)"
            for word in self.words:
                self._refuse(word, (why, BLIND_HINT, name))
        if self.piped and self.chain[:1] in (["read"], ["mapfile"], ["readarray"]):
            refs = [pos for word in self.piped for pos in word.refs]
            names = set().union(*(word.names for word in self.piped))
            for word in self.words[1:]:  # `... | while read -r line`: `$line` holds it
                if not word.text.startswith("-"):
                    self.flow.assign(word.text, refs, names)
        texts = [word.text for word in self.words]
        at = next((k for k, t in enumerate(texts) if t in ("for", "select")), -1)
        if self.chain[:1] in (["for"], ["select"]) and texts[at + 2 : at + 3] == ["in"]:
            values = self.words[at + 3 :]  # `for f in ${v}`: `$f` holds it
            refs = [pos for word in values for pos in word.refs]
            self.flow.assign(texts[at + 1], refs, set().union(*(w.names for w in values)))
        elif self.chain[:1] in (["for"], ["select"]) and len(texts) > at + 1:  # `for a; do`
            self.flow.assign(texts[at + 1], [self.flow.param()], set())  # over "$@"
        if not self.piped or prog is None:
            return
        if "xargs" in self.chain and self.replace:
            code = [t for t in self.code_texts if self.replace in t]
            where = f"the input `xargs` puts into the code of `{name}` ({self.replace!r})"
        elif prog.shell_end:  # `| parallel sh -c 'echo {}'`: the input lines are its args
            code = ["args"] if self.nested or self.count == 0 else []
            where = f"the input `{name}` puts into the code of its command line (`{{}}`)"
        elif "xargs" in self.chain:  # appended: an option (`-e...`) where one may be
            safe = self.ended or (self.coded and (prog.switch or prog.code_ends_options))
            code = [] if safe or not prog.reads_code else ["args"]
            where = f"the input `xargs` gives `{name}` as arguments where it reads options"
        else:
            code = ["stdin"] if _reads_stdin_code(self) else []
            where = f"the input piped into `{name}` (read as its code or commands)"
        if code:
            hint = "read it from $INPUT_<KEY> there, or pass it as an argument"
            for word in self.piped:
                self._refuse(word, (where, hint, name))

    def _export(self, word: Word) -> None:
        """An argument of `export` (or of `declare -x`): it names (and may set) a variable
        of every later command's environment."""
        self._environment([word])
        name = word.text.partition("=")[0]
        if word.text.startswith("-"):
            return
        if REF in name or EXPANSION in name:  # `export "$N"`: any name
            self.flow.export_all = True
        self.flow.exported.add(name.removesuffix("+"))

    def _declare(self, word: Word) -> None:
        """An argument of `local`, `declare`, `typeset` or `readonly`: with no option, an
        assignment (as `X=v` alone, `Flow`); after any option (`-x` exports, `-i` and `-n`
        evaluate the value), a variable of a command's environment."""
        text = word.text
        if text[:1] in "-+" and not self.declared:
            self.declared = True
            if "x" in text or REF in text or EXPANSION in text:
                self.mode = "exported"
            self.evaluates = "i" in text or "n" in text or self.mode == "exported"
            return
        if self.declared and self.evaluates:  # `declare -i N`: assigning N evaluates
            self.flow.integers.add(text.partition("=")[0].removesuffix("+"))
        if EXPANSION in text.partition("=")[0] and REF not in text.partition("=")[0]:
            self._refuse(word, ARITH_WHY)  # `local "$1"`: a name `a[$(cmd)]` runs cmd
        if self.declared or word.split or REF in text.partition("=")[0]:
            self._environment([word])  # (`local a=$1` splits in dash: `a=x PATH=...`)
            return
        if ASSIGNMENT.match(text):
            self.flow.assign(text.partition("=")[0].removesuffix("+"), word.refs, word.names)

    def _operand_code(self, word: Word) -> bool:
        """An operand that starts a shell's command line (`ssh HOST CMD...`, `su USER
        ARG...`, `git submodule foreach CMD`), is code of its own (`sqlite3 DB SQL`), or a
        configuration value (`git config alias.x '!cmd'`): read, True."""
        prog = self.prog
        assert prog is not None
        text = word.text
        given = self.coded and "c" in prog.code_flags  # `su -c CMD USER ARG`: ARG is data
        at = prog.shell_operands and self.count >= prog.shell_operands and not given
        if at or text in prog.shell_after:
            self.mode, self.shell_first = "shellwords", True
            if at:
                self._shell_word(word)
            return True
        if prog.code_from and self.count >= prog.code_from:  # each SQL a code of its own
            self.from_option = False
            self._code(word)
            return True
        if prog.config and self.sub == prog.config and self.count > 1:
            if self.count == 2 and text in ("set", "get", "unset", "--"):  # `git config set`
                self.count -= 1
            elif self.count == 2:
                self.key = text.lower()
                self.from_option = False
                self._code(word, whole_allowed=False)  # the key itself: `alias.x`
            elif self.count == 3 and self.key not in prog.safe_keys:
                self.from_option = False
                self._code(word)
            return True
        return False

    def _shell_word(self, word: Word) -> None:
        """A word of the command line a program hands a shell (joined by spaces)."""
        prog = self.prog
        assert prog is not None
        if word.text in prog.shell_end:  # `parallel CMD ::: ARGS`: the arguments follow
            self.mode = "shelldata"
            self.nested = self.nested or self.shell_first  # `parallel ::: CMD`: commands
            return
        whole = prog.shell_whole and self.shell_first  # `ssh host ${inputs.cmd}`
        self.shell_first = False
        if program_of(word.text, False) or set(word.text) & set(" \t'\"\\$;|&<>()"):
            self.nested = True  # `sh -c '...{}'`, a word holding a command line
        if word.refs or word.names:
            why = f"the command line `{self.name}` hands a shell (its words joined)"
            hint = prog.hint if prog.shell_operands else BLIND_HINT
            self._refuse(
                word, (why, hint, self.name), whole and (word.whole or word.whole_variable)
            )

    def _environment(self, words: list[Word]) -> None:
        """References in a command's environment (`X=${v} cmd`, `env X=${v} cmd`) are
        refused: programs read code from some variables (`BASH_ENV`, `ENV`, `PERL5OPT`,
        `NODE_OPTIONS`, `TAR_OPTIONS`, `BASH_FUNC_f%%`), and which is beyond telling."""
        for word in words:
            self._refuse(word, ENVIRONMENT_WHY)


STDIN_CODE = frozenset(("perl", "ruby", "node", "php", "lua", "m4", "Rscript", "tclsh"))
"""Programs that read code from their input when given none (`echo ... | perl`)."""
STDIN_MODULES = frozenset(("pdb", "code"))
"""Python modules that read commands or code from their input whatever their arguments
(`echo ... | python3 -m pdb main.py`: pdb runs `!stmt` and any Python statement)."""


def _reads_stdin_code(command: PathReader) -> bool:
    """The command reads its input as code: a shell given no script (or `-s`), an
    interpreter given no code or file (or `-`), `sqlite3` given no SQL."""
    prog = command.prog
    assert prog is not None
    no_file = command.count == 0 or command.sub == "-"
    if prog.switch:  # a shell
        return not command.switched and (no_file or "s" in command.letters)
    if prog.bang_operands:  # `ed`: its input is its commands (`!cmd` runs cmd)
        return True
    if prog is PROGRAMS["vim"]:  # Ex mode (`ex`, `vim -e`, `-E`): its input is commands
        ex = command.name.rsplit("/", 1)[-1] in ("ex", "gex", "nex")
        return ex or bool({"e", "E"} & command.letters)
    if prog is PYTHON:
        if command.module in STDIN_MODULES:
            return True
        return not command.coded and no_file and "m" not in command.letters
    if prog.code_from:
        return command.count < prog.code_from
    if prog.shell_operands:  # `| ssh host`, `| su bob`, `| parallel`: a shell's input
        given = command.coded and "c" in prog.code_flags
        return command.count < prog.shell_operands and not given and command.name != "watch"
    readers = [PROGRAMS[name] for name in STDIN_CODE]
    return any(prog is r for r in readers) and not command.coded and no_file

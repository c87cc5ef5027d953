"""How a program takes code in its arguments (`Program`), the markers of a word's text,
and the hints shared by the tables of `agents/code_programs.py` (interpreters) and
`agents/code_runners.py` (programs that run a command they are given).
"""

from __future__ import annotations

from dataclasses import dataclass

REF = "\x00"  # a reference, in a word's text
EXPANSION = "\x01"  # any other expansion ($X, $(...), `...`, ${...}, $((...)))


@dataclass(frozen=True)
class Program:
    """How a program takes code in its arguments, and every option it has (an option not
    listed here makes the check fail closed: `code_words.Command.blind`)."""

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
    known: str = ""  # short options taking no argument
    rest_flags: str = ""  # short options whose argument, if any, is the rest of the word
    known_long: tuple[str, ...] = ()  # long options taking no argument (or one after `=`)
    abbrev: bool = False  # GNU getopt: a long option may be abbreviated (`--expr`)
    command_operand: int = 0  # the operand (1, 2, ...) that is a command to run (`env`)
    code_modules: tuple[str, ...] = ()  # `python3 -m timeit`: modules reading code
    open_options: bool = False  # only the code options are listed: others are let be
    dash_long: bool = False  # `-ex` is `--ex` (gdb)
    rest_code: str = ""  # short options whose argument is the rest of the word, as code
    counted: tuple[tuple[str, str], ...] = ()  # (letter, regex): an attached argument of
    # that shape, after which more letters follow (`perl -l0ne`: `-l0`, `-n`, `-e`)
    whole_words: bool = False  # each option a word of its own, no clusters (node `-pe`)
    optional_code: tuple[str, ...] = ()  # code options whose argument is optional
    assignments: bool = False  # `NAME=value` words before the command (`env`, `sudo`)
    permute: bool = False  # options may follow operands (GNU getopt without `+`: sed,
    # tar, make, gdb; vim): a value there may be an option (`--to-command=...`)
    old_style: bool = False  # a first word of letters is options (`tar xIf PROG FILE`)
    dash_option: bool = False  # a lone `-` is an option (`env -`, the same as `env -i`)
    optional_args: tuple[tuple[str, str], ...] = ()  # (letter, regex): an optional
    # argument, the rest of the word, or the next word if it fully matches (`make -j 4`)
    rest_code_if: tuple[tuple[str, str], ...] = ()  # (letter, regex): the rest of the
    # word is code when it starts so (`perl -d:Mod=...`); else `counted` reads the letter
    code_ends_options: bool = False  # after the code every word is an argument (python)
    assignment_operands: bool = False  # an operand holding `=` is code (make: `x:=...`)
    split: tuple[str, ...] = ()  # options whose argument is split into more arguments
    # (`env -S 'sh -c'`): read as words of the command in its place
    shell_operands: int = 0  # from this operand on, the operands are one command line
    # the program hands a shell (`ssh host CMD...`, `su USER ARG...`, `watch CMD...`)
    shell_whole: bool = False  # a whole reference as the first of them is said on purpose
    shell_end: tuple[str, ...] = ()  # words ending that command line (`parallel ... :::`)
    shell_after: tuple[str, ...] = ()  # an operand after which the rest is a command line
    # (`git submodule foreach CMD`)
    code_from: int = 0  # from this operand on, each operand is code (`sqlite3 DB SQL...`)
    subcommands: bool = False  # the first operand is a subcommand, which reads options
    # after operands too (`git clone -c`): a later operand starting with a value may be
    # one (`git ls-remote ${v}` with `--upload-pack=CMD`)
    config: str = ""  # an operand after which come a configuration key and value (`git
    # config alias.x '!cmd'`): a value is code unless the key is one of `safe_keys`
    safe_keys: tuple[str, ...] = ()
    replace: str = ""  # options giving a string replaced by each input line (`xargs -I {}`)
    bang_operands: bool = False  # an operand starting with `!` is a shell command whose
    # output is read (`ed !cmd`); its input is commands (`!cmd` too)

    @property
    def reads_code(self) -> bool:
        """Some option or operand of the program is code (not a wrapper's own options)."""
        return bool(self.code_flags or self.code_long or self.rest_code or self.switch
                    or self.split or self.code_modules or self.operand_code
                    or self.rest_code_if or self.shell_operands or self.code_from)  # fmt: skip


BLIND_OPEN = "give it as a whole word of its own, or read $INPUT_<KEY> there"
ARGV = "pass it as an argument after the code and read it there ({argv})"
ARGV_DASHES = "pass it as an argument after the code and `--`, and read it there ({argv})"
SHELL_STRING = "give it as an argument of its own after the command string: {prog} ... ${{{path}}}"
REMOTE = "read it from a file or stdin there, or give the command no value: {prog} ... CMD"

"""The programs that read some of their arguments as code, for `agents.shell_code`: how
each takes code (a shell's `-c` script, `perl -e`, an `awk` program), every option it has
(which take an argument, which take code), the names it goes by (`perl5.36.0`,
`python3.11`, `vi` for `vim`), and which words may stand before a command.

An option not listed for a covered program makes the check fail closed (`shell_code`'s
`code_words.Command.blind`); a program not listed here is not seen (docs/agents.md).
"""

from __future__ import annotations

import re

from swarm_engine.agents.code_runners import RUNNERS
from swarm_engine.agents.code_spec import (
    ARGV,
    ARGV_DASHES,
    BLIND_OPEN,
    EXPANSION,
    REF,
    SHELL_STRING,
    Program,
)

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
SHELL = Program(
    "the script of",
    "pass it as an argument after the script and read it there: "
    "{prog} -c '... \"$1\" ...' _ ${{{path}}}",
    arg_flags="oO",
    arg_long=("--rcfile", "--init-file"),
    switch="c",
    plus_options=True,
    known=LETTERS,
    known_long=("--norc", "--noprofile", "--login", "--posix", "--restricted", "--verbose",
                "--version", "--help", "--debugger", "--noediting", "--dump-strings",
                "--dump-po-strings", "--wordexp", "--protected"),
)  # fmt: skip
SHELLS = ("sh", "bash", "rbash", "dash", "ash", "zsh", "ksh", "ksh93", "mksh", "pdksh", "yash",
           "posh", "fish", "csh", "tcsh")  # fmt: skip
PROGRAMS: dict[str, Program] = {
    **dict.fromkeys(SHELLS, SHELL),
    "perl": Program(
        # man perlrun, perl.c: `-l`/`-0` take digits only, so `-lne` is `-l -n -e`; `-d`
        # takes `t` and `:Mod...` only, `-V` `:name` only, so `-de` is `-d -e`
        "the code of", ARGV_DASHES.format(argv="@ARGV"), code_flags="eE", rest_code="MmF",
        arg_flags="I", rest_flags="ixC", known="acfgnpsStTuUvwWXh?",
        counted=(("0", r"x[0-9A-Fa-f]+|[0-7]*"), ("l", r"[0-7]*"),
                 ("d", r"t(?![A-Za-z0-9_])|"), ("V", r":.*|")),
        rest_code_if=(("d", r"t?[:=]"),),
        known_long=("--help", "--version"),
    ),
    "ruby": Program(
        # ruby --help: `-0`, `-W`, `-T` take digits, `-K` one letter, then more letters
        "the code of", ARGV_DASHES.format(argv="ARGV"), code_flags="e", arg_flags="rICE",
        rest_flags="xFi", known="acdlnpsSUvwyh",
        counted=(("0", r"[0-7]{0,4}"), ("W", r":.*|[0-7]?"), ("K", r"."), ("T", r"[0-7]{0,2}")),
        arg_long=("--enable", "--disable", "--encoding", "--external-encoding",
                  "--internal-encoding", "--dump"),
        known_long=("--verbose", "--version", "--copyright", "--help", "--yydebug", "--jit",
                    "--yjit"),
    ),
    "node": Program(
        "the code of",
        ARGV_DASHES.format(argv="process.argv"),
        # node --help: every option a word of its own (`-pe` is `--print --eval`)
        whole_words=True,
        optional_code=("-p", "--print"),
        code_long=("-e", "-p", "-pe", "--eval", "--print", "--import", "--loader",
                   "--experimental-loader"),
        arg_long=("-r", "-C", "--require", "--input-type", "--conditions", "--title",
                  "--env-file", "--max-old-space-size", "--stack-size",
                  "--unhandled-rejections"),
        known_long=("-c", "-i", "-v", "-h","--check", "--interactive", "--version", "--help", "--no-warnings",
                    "--trace-warnings", "--enable-source-maps", "--inspect", "--inspect-brk",
                    "--abort-on-uncaught-exception", "--preserve-symlinks", "--test",
                    "--watch", "--no-deprecation", "--trace-deprecation", "--expose-gc"),
    ),
    "php": Program(
        "the code of", ARGV_DASHES.format(argv="$argv"), code_flags="rBRE", arg_flags="cdfztSF",
        file_flags="fF", known="aCehHilmnqsvw",
        code_long=("--run", "--process-begin", "--process-code", "--process-end"),
        arg_long=("--php-ini", "--define", "--file", "--process-file", "--rf", "--rc", "--re",
                  "--ri", "--zend-extension"),
        known_long=("--info", "--modules", "--version", "--no-chdir", "--no-php-ini",
                    "--hide-args", "--syntax-check", "--syntax-highlight", "--strip", "--help",
                    "--interactive", "--ini"),
    ),
    "lua": Program(
        "the code of", ARGV.format(argv="arg"), code_flags="e", arg_flags="l", known="ivEW"
    ),
    "Rscript": Program(
        "the code of", ARGV.format(argv="commandArgs()"), code_flags="e",
        known_long=("--vanilla", "--verbose", "--version", "--default-packages",
                    "--no-environ", "--no-site-file", "--no-init-file", "--restore",
                    "--no-restore", "--save", "--no-save", "--no-echo", "--quiet",
                    "--silent", "--help"),
    ),
    "awk": Program(
        "the program of",
        "pass it as a variable: {prog} -v value=${{{path}}} '... value ...'",
        code_flags="e",
        code_long=("--source",),
        arg_flags="FvfEilW",
        arg_long=("--assign", "--field-separator", "--file", "--exec", "--include", "--load"),
        file_flags="fE",
        operand_code=True,
        known="bcCghMnNOPrsStV",
        rest_flags="dDLop",
        known_long=("--characters-as-bytes", "--traditional", "--copyright", "--debug",
                    "--dump-variables", "--gen-pot", "--help", "--lint", "--bignum",
                    "--use-lc-numeric", "--non-decimal-data", "--optimize", "--profile",
                    "--posix", "--re-interval", "--no-optimize", "--sandbox", "--lint-old",
                    "--version", "--pretty-print", "--csv"),
        abbrev=True,
    ),
    "sed": Program(
        "the script of",
        "give the value to a program that reads it as data (awk -v value=${{{path}}}, or"
        " $INPUT_<KEY>)",
        code_flags="e",
        code_long=("--expression",),
        arg_flags="fl",
        arg_long=("--file", "--line-length"),
        file_flags="f",
        operand_code=True,
        known="nrEsuzb",
        rest_flags="i",
        permute=True,
        known_long=("--quiet", "--silent", "--debug", "--posix", "--sandbox",
                    "--follow-symlinks", "--in-place", "--null-data", "--zero-terminated",
                    "--regexp-extended", "--separate", "--unbuffered", "--binary", "--help",
                    "--version"),
        abbrev=True,
    ),
    "trap": Program(
        "the command of", "read it from a variable there: trap '... \"$X\" ...'",
        operand_code=True, known="lp",
    ),
    "env": Program(
        "the command line of", SHELL_STRING, code_flags="S", code_long=("--split-string",),
        arg_flags="uCP", arg_long=("--unset", "--chdir"), known="i0v",
        known_long=("--ignore-environment", "--null", "--debug", "--help", "--version",
                    "--default-signal", "--ignore-signal", "--block-signal",
                    "--list-signal-handling"),
        abbrev=True, command_operand=1, assignments=True, dash_option=True,
        split=("-S", "--split-string"),
    ),
    "git": Program(
        # options of its own and of the subcommand (`git clone -c`, `git rebase --exec`)
        "the command or configuration of", BLIND_OPEN, code_flags="cxu", arg_flags="CmFbBo",
        open_options=True,
        code_long=("--config-env", "--exec", "--upload-pack", "--receive-pack", "--extcmd",
                   "--tree-filter", "--env-filter", "--msg-filter", "--index-filter",
                   "--commit-filter", "--parent-filter", "--tag-name-filter", "--setup"),
        arg_long=("--file", "--blob", "--type", "--default", "--comment", "--git-dir",
                  "--work-tree", "--namespace", "--message", "--author", "--branch",
                  "--origin", "--date", "--depth", "--format", "--pretty"),
        subcommands=True,
        shell_after=("foreach",), shell_whole=True, config="config",
        safe_keys=("user.name", "user.email", "init.defaultbranch", "commit.gpgsign",
                   "tag.gpgsign", "pull.rebase", "push.default", "core.autocrlf",
                   "core.filemode", "safe.directory", "advice.detachedhead", "color.ui"),
    ),
    "sqlite3": Program(  # `sqlite3 [OPTS] DB SQL...`: each SQL an argument of its own
        # (`.shell`, `.system`, `edit()` run commands); one dash or two, options anywhere
        "the SQL of", "bind it from a file or stdin there, or read $INPUT_<KEY> there",
        code_long=("--cmd",), dash_long=True, permute=True, code_from=2,
        arg_long=("--init", "--separator", "--newline", "--nullvalue", "--maxsize",
                  "--mmap", "--vfs", "--escape"),
        known_long=("--append", "--ascii", "--bail", "--batch", "--box", "--column",
                    "--csv", "--echo", "--header", "--noheader", "--html", "--interactive",
                    "--json", "--line", "--list", "--markdown", "--memtrace", "--nofollow",
                    "--readonly", "--safe", "--stats", "--table", "--version", "--help",
                    "--deserialize", "--zip", "--quote", "--tabs", "--utf8",
                    "--no-rowid-in-view", "--unsafe-testing"),
    ),
    "m4": Program(  # `-D NAME=TEXT` defines a macro: its text runs where it is expanded
        "the macro text of", "read it from $INPUT_<KEY> there: esyscmd or the input file",
        code_flags="D", code_long=("--define",), arg_flags="IUlotFRLHBST",
        arg_long=("--include", "--undefine", "--arglength", "--error-output", "--trace",
                  "--freeze-state", "--reload-state", "--nesting-limit", "--hashsize",
                  "--word-regexp", "--debugfile", "--synclines"),
        known="ePQsEGgihv", rest_flags="d",
        known_long=("--interactive", "--prefix-builtins", "--quiet", "--silent",
                    "--fatal-warnings", "--traditional", "--gnu", "--debug", "--help",
                    "--version", "--import-environment", "--safer"),
        abbrev=True, permute=True,
    ),
    "emacs": Program(  # `--eval EXPR`, `-f FUNC`; one dash or two, any unique prefix
        "the code of", BLIND_OPEN, code_flags="f", dash_long=True, open_options=True,
        code_long=("--eval", "--execute", "--funcall"), arg_flags="lLdtuT",
        abbrev=True, permute=True, command_operand=99,
    ),
    "make": Program(
        "the makefile text of", BLIND_OPEN, code_flags="E", code_long=("--eval",),
        arg_flags="CfIoW", open_options=True, command_operand=99, abbrev=True,
        optional_args=(("j", r"[0-9]+"), ("l", r"[0-9.]+")), permute=True,
        assignment_operands=True,
    ),
    "tar": Program(
        "the command of", BLIND_OPEN, code_flags="IF", open_options=True, command_operand=99,
        code_long=("--checkpoint-action", "--to-command", "--use-compress-program",
                   "--info-script", "--new-volume-script", "--rmt-command", "--rsh-command"),
        arg_flags="bCfgHKLNTVX", known_long=("--checkpoint",), abbrev=True, old_style=True,
        permute=True,
    ),
    "vim": Program(
        "the command of", BLIND_OPEN, code_flags="c", code_long=("--cmd",),
        # `-s` takes no argument in Ex mode (`-es`): read as taking none (failing closed);
        # `-S` takes the next word unless it is an option (vim's main.c)
        arg_flags="uUiTwWt", open_options=True, plus_options=True, command_operand=99,
        optional_args=(("S", r"(?!-).*"),), permute=True,
    ),
    "gdb": Program(
        # getopt_long_only: one dash or two, and any prefix (`-eval-comm`)
        "the command of", BLIND_OPEN, open_options=True, dash_long=True, command_operand=99,
        code_long=("--ex", "--iex", "--eiex", "--eval-command", "--init-eval-command",
                   "--early-init-eval-command", "--x", "--ix", "--eix", "--command",
                   "--init-command", "--early-init-command"),
        known_long=("--e", "--c", "--i", "--exec", "--core", "--interpreter"),
        arg_flags="bDlecspdi", abbrev=True, permute=True,
    ),
    "ed": Program(  # `ed !cmd` reads the output of cmd, run by a shell
        "the file operand of", "start it with a literal: {prog} ./${{{path}}}",
        arg_flags="p", arg_long=("--prompt",), open_options=True, permute=True,
        bang_operands=True,
    ),
    "tclsh": Program(  # `tclsh [FILE [ARG...]]`: its input is Tcl code when given no file
        "the code of", "pass it as an argument after the script and read it there ($argv)",
        open_options=True,
    ),
    # GNU getopt reads options after operands: `--filter`/`--compress-program` run a
    # command through the shell (`split -l 5 f ${v}` with `--filter=CMD`)
    "split": Program(
        "the command of", BLIND_OPEN, code_long=("--filter",), arg_flags="abClnt",
        arg_long=("--suffix-length", "--additional-suffix", "--bytes", "--line-bytes",
                  "--lines", "--number", "--separator"),
        open_options=True, abbrev=True, permute=True,
    ),
    "sort": Program(
        "the command of", BLIND_OPEN, code_long=("--compress-program",), arg_flags="kotST",
        arg_long=("--key", "--output", "--field-separator", "--buffer-size",
                  "--temporary-directory", "--parallel", "--batch-size", "--files0-from",
                  "--random-source", "--sort"),
        open_options=True, abbrev=True, permute=True,
    ),
    # zip reads options after operands too: `-TT CMD`/`--unzip-command CMD` runs CMD by sh
    "zip": Program(
        "the command of", BLIND_OPEN, code_long=("--unzip-command",),
        arg_flags="bnOtxiP", open_options=True, permute=True,
    ),
    **RUNNERS,
}  # fmt: skip
PYTHON = Program(
    "the code of", ARGV.format(argv="sys.argv"), code_flags="c", arg_flags="WXQm",
    known="bBdEhiIOPqsSuvVxR?", arg_long=("--check-hash-based-pycs",),
    known_long=("--help", "--version", "--help-env", "--help-xoptions", "--help-all"),
    # modules that read code, or run another module or script given after their options
    code_ends_options=True,
    code_modules=("timeit", "pdb", "cProfile", "profile", "trace", "runpy", "idlelib",
                  "idlelib.idle", "doctest"),
)  # fmt: skip
ALIASES = {"vi": "vim", "nvim": "vim", "ex": "vim", "view": "vim", "nodejs": "node", "luajit": "lua", "gawk": "awk", "mawk": "awk", "nawk": "awk",
            "gsed": "sed", "busybox-sh": "sh",
            "emacs-nox": "emacs", "emacsclient": "emacs", "sqlite": "sqlite3", "gm4": "m4", "wish": "tclsh",
            "slogin": "ssh"}  # fmt: skip
PYTHON_RE = re.compile(r"(python|pypy)[0-9.]*")
VERSIONED = re.compile(r"([A-Za-z]+?)-?[0-9][0-9.]*")
"""A versioned name (`perl5.36.0`, `lua5.4`, `php8.2`, `luajit-2.1`): the program it is."""
VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*|[0-9@*#?$!-])")
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\+?=")
BEFORE_COMMAND = frozenset(
    ("!", "{", "if", "then", "else", "elif", "while", "until", "do", "time", "command", "builtin")
)
"""Words that may stand before a command name (with assignments): `eval` after them is
the builtin."""
PREFIX_OPTIONS: dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...]]] = {
    # (flags, letters taking an argument, long options taking one, long flags): after
    # these options (and `--`) the next word is still the command word (`command -p eval`)
    "command": ("pvV", "", (), ()),
    "builtin": ("", "", (), ()),
    # bash's keyword takes `-p`; /usr/bin/time (dash): `+af:o:pqvV` and long forms
    "time": ("apqvV", "fo", ("--format", "--output"), ("--append", "--portability",
             "--quiet", "--verbose", "--version", "--help")),
}  # fmt: skip
EVAL_HINT = "use it as a word of its own, outside eval's code"
OPTION_HINT = "put `--` before it: {prog} ... -- ${{{path}}}"
MAKE_HINT = 'read it from the environment in a recipe: "$$INPUT_<KEY>"'


NO_COMMAND = frozenset(("echo", "printf", "cat", "cp", "mv", "rm", "ln", "mkdir", "rmdir",
                         "ls", "touch", "test", "[", "grep", "head", "tail", "wc",
                         "uniq", "cut", "tr", "tee", "diff", "cmp", "chmod", "basename",
                         "dirname", "realpath", "readlink", "stat", "mktemp", "base64",
                         "jq", "curl", "wget", "read", "export", "local", "set", "unset",
                         "cd", "return", "exit", "shift"))  # fmt: skip
"""Programs that run none of their arguments: after one, a word that is an expansion
(`echo "$X" -c "..."`) names no program it runs (any other program may: `find -exec`)."""
WRAPPERS = frozenset(("env", "exec", "nohup", "nice", "sudo", "doas", "xargs", "setsid",
                       "stdbuf", "command", "builtin", "time", "busybox", "unshare",
                       "nsenter", "ionice"))  # fmt: skip
"""Programs whose next word may be the command they run: a word that is an expansion there
stands in command position too (`env "$SHELL" -c`)."""


def program_of(text: str, command_position: bool) -> tuple[str, Program] | None:
    """The program a word starts, by its name (a path's last part), or the shell's rules
    for a word that is an expansion in command position (`"$SHELL" -c`: which program is
    beyond telling); an expansion elsewhere is an argument (`tar -C ${inputs.dir} -czf`)."""
    if REF in text or EXPANSION in text:
        return ("sh", SHELL) if command_position else None
    name = text.rsplit("/", 1)[-1]
    if PYTHON_RE.fullmatch(name):
        return name, PYTHON
    versioned = VERSIONED.fullmatch(name)
    base = versioned.group(1) if versioned and name not in PROGRAMS else name
    base = ALIASES.get(base, base)
    if base in PROGRAMS:
        return name, PROGRAMS[base]
    return None

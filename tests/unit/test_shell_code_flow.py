"""The code check across a script's own variables and functions (`agents.code_flow`): a
reference assigned to a variable that reaches a program's environment or code, and a
shell function whose body runs its arguments; each refused form shown to run a hostile
value in real dash and bash, each accepted one shown not to."""

from __future__ import annotations

import shutil

import pytest
from tests.support.shell_runs import HOSTILE, runs_value

from swarm_engine.agents.shell_command import check_command

SHELLS = [s for s in ("dash", "bash") if shutil.which(s)]


REFUSED = [
    # a variable assigned alone, exported anywhere (before or after), or `set -a`
    ("BASH_ENV=${inputs.x}; export BASH_ENV; bash -c true", "reaches a program's env"),
    ("export BASH_ENV; BASH_ENV=${inputs.x}; bash -c true", "reaches a program's env"),
    ("X=${inputs.x}; export X; bash -c true", "reaches a program's environment"),
    ("set -a; BASH_ENV=${inputs.x}; bash -c true", "reaches a program's environment"),
    ("set -o allexport; BASH_ENV=${inputs.x}; bash -c true", "reaches a program's env"),
    ("set -eua; BASH_ENV=${inputs.x}; bash -c true", "reaches a program's environment"),
    ("BASH_ENV=${inputs.x}; declare -x BASH_ENV; bash -c true", "reaches a program's env"),
    ("BASH_ENV=${inputs.x}; typeset -x BASH_ENV; bash -c true", "reaches a program's env"),
    ("local BASH_ENV=${inputs.x}; export BASH_ENV; bash -c true", "reaches a program's env"),
    ('N=BASH_ENV; BASH_ENV=${inputs.x}; export "$N"; bash -c true', "reaches a program's"),
    ("BASH_ENV=${inputs.x}; . ./lib.sh; bash -c true", "reaches a program's environment"),
    # a name programs read code from, which a parent may have exported
    ("PERL5OPT=${inputs.x}; perl -e 1", "reaches a program's environment"),
    ("NODE_OPTIONS=${inputs.x}; node -e 1", "reaches a program's environment"),
    ("GIT_SSH_COMMAND=${inputs.x}; git fetch", "reaches a program's environment"),
    # through another variable, or expanded into an environment or code
    ("X=${inputs.x}; BASH_ENV=$X; export BASH_ENV; bash -c true", "reaches a program's"),
    (
        "for i in 1 2; do BASH_ENV=$X; X=${inputs.x}; done; export BASH_ENV; bash -c :",
        "reaches a program's env",
    ),
    ("X=${inputs.x}; BASH_ENV=$X bash -c true", "a variable of a command's environment"),
    ('X=${inputs.x}; export BASH_ENV="$X"; bash -c true', "a variable of a command's env"),
    ('X=${inputs.x}; env BASH_ENV="$X" bash -c true', "a variable of a command's env"),
    ('X=${inputs.x}; sh -c "echo $X"', "the script of `sh -c`"),
    ('X=$(printf %s ${inputs.x}); sh -c "echo $X"', "the script of `sh -c`"),
    ('X=${inputs.x}; eval "echo $X"', "the arguments of `eval`"),
    ("X=${inputs.x}; python3 -c \"print('$X')\"", "the code of `python3 -c`"),
    # a function whose body runs its arguments
    ('f() { eval "$1"; }; f ${inputs.x}', "a command that defines a shell function"),
    ('f() { "$@"; }; f eval ${inputs.x}', "a command that defines a shell function"),
    ('f() { sh -c "$1"; }; f ${inputs.x}', "a command that defines a shell function"),
    ('f() { x=$1; sh -c "echo $x"; }; f ${inputs.x}', "a command that defines a shell"),
    ('f() { BASH_ENV="$1" bash -c true; }; f ${inputs.x}', "a command that defines a shell"),
    ("f() { echo $(( $1 )); }; f ${inputs.x}", "a command that defines a shell function"),
    ('f() { timeout 5 "$@"; }; f sh -c ${inputs.x}', "a command that defines a shell func"),
    ('f() { exec "$@"; }; f eval ${inputs.x}', "a command that defines a shell function"),
    ('f() { x=$1; eval "$x"; }; f ${inputs.x}', "a command that defines a shell function"),
    ("f() { cmd=$1; $cmd; }; f ${inputs.x}", "a command that defines a shell function"),
    ('f() { echo "$1" | sh; }; f ${inputs.x}', "a command that defines a shell function"),
    ('f() { ssh host "$1"; }; f ${inputs.x}', "a command that defines a shell function"),
    # a loop's variable over references or a function's arguments
    ('for f in a ${inputs.x}; do sh -c "echo $f"; done', "the script of `sh -c`"),
    ('f() { for a in "$@"; do eval "$a"; done; }; f ${inputs.x}', "defines a shell func"),
    ('f() { for a; do eval "$a"; done; }; f ${inputs.x}', "defines a shell function"),
    # a variable holding a reference as the command (split into words when unquoted)
    ("cmd=${inputs.x}; $cmd", "a command named by an expansion"),
]


@pytest.mark.parametrize(("command", "where"), REFUSED)
def test_a_value_reaching_code_through_the_script_is_refused(command: str, where: str) -> None:
    problem = check_command(command)
    assert problem is not None and "\n" not in problem, command
    assert where in problem, problem


# (not shown: what needs a program or a parent's environment, `bash` only, or a name
# that is exported but read by none: `X`)
RUN_REFUSED = [c for c, _ in REFUSED if not any(
    w in c for w in ("lib.sh", "git", "node", "$((", "PERL5OPT", "typeset", "declare",
                     "local", "python3", "X=${inputs.x}; export X;", "exec", "cmd=",
                     "ssh")
)]  # fmt: skip


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("command", RUN_REFUSED)
def test_a_refused_form_does_run_a_value(shell: str, command: str) -> None:
    """What the check refuses is no guess: each runs a hostile value in a real shell."""
    assert runs_value(shell, command), command


@pytest.mark.parametrize("shell", ["bash"] if "bash" in SHELLS else [])
@pytest.mark.parametrize(
    "command",
    [
        "BASH_ENV=${inputs.x}; declare -x BASH_ENV; bash -c true",
        "local BASH_ENV=${inputs.x}; export BASH_ENV; bash -c true",
        "f() { echo $(( $1 )); }; f ${inputs.x}",
    ],
)
def test_a_refused_bash_form_does_run_a_value(shell: str, command: str) -> None:
    value = 'a[$(touch "$M")]' if "$((" in command else HOSTILE
    if command.startswith("local"):
        command = f"g() {{ {command}; }}; g"  # `local` only in a function
    assert runs_value(shell, command, value), command


ACCEPTED = [
    'out=$(printf \'%s\' "${inputs.x}"); echo "$out"',
    'name=${inputs.x}; echo "$name"; printf \'%s\\n\' "$name" > "out/$name.txt"',
    'name=${inputs.x}; sh -c \'echo "$1"\' _ "$name"; readonly name',
    'name=${inputs.x}; export OTHER=1; env OTHER2=1 python3 m.py "$name"',
    'f() { echo "$1"; printf \'%s\\n\' "$@"; }; f "${inputs.x}"',
    'f() { local n="$1"; cp -- "$n" out/; }; f "${inputs.x}"',
    'f() { git commit -m "$1"; }; f "${inputs.x}"',
    'for f in ${inputs.x}; do echo "$f"; done; f() { for a; do echo "$a"; done; }; f 1',
    'name=${inputs.x}; sh -c "$name"',
]


@pytest.mark.parametrize("command", ACCEPTED)
def test_common_uses_of_a_variable_stay_accepted(command: str) -> None:
    assert check_command(command) is None, check_command(command)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("command", ACCEPTED[:3] + ACCEPTED[4:6])
def test_an_accepted_form_does_not_run_a_value(shell: str, command: str) -> None:
    assert not runs_value(shell, command.replace("out/", "/tmp/h137-none/"), checked=True)


# bash evaluates arithmetic and variable names with subscripts: `a[$(cmd)]` runs `cmd`
EVALUATED = [
    "(( ${inputs.x} + 1 ))",
    "for ((i = 0; i < ${inputs.x}; i++)); do :; done",
    "[[ ${inputs.x} -eq 1 ]]",
    "[[ 1 -lt ${inputs.x} ]]",
    "declare -A a; [[ -v ${inputs.x} ]]",
    "declare -A a; test -v ${inputs.x}",
    "printf -v ${inputs.x} %s 1",
    "printf ${inputs.x} 1",
    "read ${inputs.x} < /dev/null",
    "let ${inputs.x}",
    "a[${inputs.x}]=1",
    "X=${inputs.x}; echo $((X + 1))",
    "X=${inputs.x}; (( X ))",
    'n=${inputs.x}; echo "$((n))"',
    "declare -i n; n=${inputs.x}",
    "f() { [[ $1 -gt 0 ]]; }; f ${inputs.x}",
    'f() { let "$1"; }; f ${inputs.x}',
]
ARITH_VALUE = 'a[$(touch "$M")]'


@pytest.mark.parametrize("command", EVALUATED)
def test_a_value_bash_evaluates_is_refused(command: str) -> None:
    problem = check_command(command)
    assert problem is not None and "\n" not in problem, command
    assert "evaluates" in problem or "defines a shell function" in problem


@pytest.mark.parametrize("shell", ["bash"] if "bash" in SHELLS else [])
@pytest.mark.parametrize("command", EVALUATED)
def test_a_refused_evaluated_form_does_run_a_value_in_bash(shell: str, command: str) -> None:
    value = "-v" + ARITH_VALUE if command.startswith("printf ${") else ARITH_VALUE
    assert runs_value(shell, command, value), command


EVALUATED_ACCEPTED = [
    '[[ -n ${inputs.x} ]] && [[ ${inputs.x} == a* ]] && echo "${inputs.x}"',
    '[ "${inputs.x}" = a ] || test -n "${inputs.x}"; printf "%s" ${inputs.x}',
    'echo $(( 1 + 2 )) ${inputs.x}; n=${inputs.x}; echo "$n"',
]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("command", EVALUATED_ACCEPTED)
def test_an_accepted_test_does_not_evaluate_a_value(shell: str, command: str) -> None:
    assert check_command(command) is None, check_command(command)
    if shell == "dash" and "[[" in command:
        return
    assert not runs_value(shell, command, ARITH_VALUE, checked=True)

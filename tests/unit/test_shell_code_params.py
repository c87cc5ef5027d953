"""The code check on a shell's positional parameters (`sh -c SCRIPT $0 ARGS...`,
`agents.code_paths`): the script is read for what it does with `$1`, `"$@"`, ... (code,
bash's arithmetic, a variable's name); the word after the script is `$0`, never an option
nor a command. Each refused form is shown to run a hostile value in real dash and bash
(the outer shell; the inner one is bash), each accepted one shown not to; and `ed`'s
`!cmd` operand."""

from __future__ import annotations

import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.shell_runs import HOSTILE, runs_value

from swarm_engine.agents.shell_command import check_command

SHELLS = [s for s in ("dash", "bash") if shutil.which(s)]
ARITH_VALUE = 'a[$(touch "$M")]'
UNQUOTED = "a[$(touch${IFS}$M)]"  # (`xargs` splits its input at blanks and quotes)

EVALUATED = [
    "bash -c 'if [[ \"$1\" -gt 10 ]]; then echo big; else echo small; fi' _ ${inputs.x}",
    "bash -c 'echo \"$${1:0:$2}\"' _ hello ${inputs.x}",
    "bash -c 'echo $(( $1 + 1 ))' _ ${inputs.x}",
    "bash -c '(( $1 > 1 ))' bash ${inputs.x}",
    "bash -c 'let \"y=$1\"' _ ${inputs.x}",
    "bash -c 'x=$1; (( x > 1 ))' _ ${inputs.x}",
    "bash -c 'a[$1]=2' _ ${inputs.x}",
    "bash -c 'declare -i n=$1' _ ${inputs.x}",
    "bash -c 'for v in \"$@\"; do (( v )); done' _ 1 ${inputs.x}",
    "bash -c 'shift; (( $1 > 1 ))' _ 5 ${inputs.x}",
    'bash -c \'sh -c "bash -c \\"(( \\\\\\$1 ))\\" _ \\"\\$1\\"" _ "$1"\' _ ${inputs.x}',
    "bash -c 'echo $[ $1 ]' _ ${inputs.x}",
    "bash -c 'declare \"$1\"' _ ${inputs.x}=1",
    "bash -c 'echo \"${1@P}\"' _ ${inputs.x}",
    "bash -c 'cat <<E\nx\nE\n(( $1 ))' _ ${inputs.x}",
    "echo ${inputs.x} | xargs bash -c '(( $1 ))' _",
    "echo ${inputs.x} | xargs -I{} bash -c '(( $1 ))' _ {}",
    "timeout 5 env bash -c '(( $1 ))' _ ${inputs.x}",
    "touch -- ${inputs.x}; find ${inputs.x} -maxdepth 0 -exec bash -c '(( $1 ))' _ {} \\;",
]
RUN = [
    "bash -c 'eval \"$1\"' _ ${inputs.x}",
    "sh -c '\"$@\"' sh eval ${inputs.x}",
    "sh -c 'sh -c \"$1\"' sh ${inputs.x}",
    "sh -c 'echo \"$1\" | sh' sh ${inputs.x}",
    "dash -c 'x=$2; eval \"echo $x\"' _ a ${inputs.x}",
]


@pytest.mark.parametrize("command", EVALUATED + RUN)
def test_a_parameter_the_script_reads_as_code_is_refused(command: str) -> None:
    problem = check_command(command)
    assert problem is not None and "\n" not in problem, command
    assert problem.startswith("${inputs.x} stands inside ")


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("command", EVALUATED)
def test_a_refused_evaluated_parameter_does_run_a_value(shell: str, command: str) -> None:
    value = UNQUOTED if "xargs" in command or "find" in command else ARITH_VALUE
    assert runs_value(shell, command, value), command


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("command", RUN)
def test_a_refused_parameter_run_as_code_does_run_a_value(shell: str, command: str) -> None:
    assert runs_value(shell, command, HOSTILE) or runs_value(shell, command, 'touch "$M"')


ACCEPTED = [
    "sh -c 'echo \"$1\"' sh ${inputs.x}",
    'bash -c \'printf "%s\\n" "$@"\' bash ${inputs.x} ${inputs.y}',
    'sh -c \'echo "$0" "$1"\' -- ${inputs.x}',
    "sh -c 'echo \"$1\"' sh -- ${inputs.x}",
    "bash -c '(( $1 > 1 )) && echo \"$2\"' _ 5 ${inputs.x}",
    'bash -c \'[ "$1" -gt 1 ] 2>/dev/null; [[ $1 == a* ]]; echo "$${1:0:2}"\' _ ${inputs.x}',
    "bash -c 'case $1 in *[!0-9]*) exit 1;; esac' _ ${inputs.x}",
    "echo ${inputs.x} | xargs bash -c 'echo \"$1\"' _",
    "printf '%s\\n' 1p q | ed -s ./${inputs.x}",
]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("command", ACCEPTED)
def test_a_parameter_read_as_data_is_accepted_and_does_not_run(shell: str, command: str) -> None:
    assert check_command(command) is None, check_command(command)
    for value in (HOSTILE, ARITH_VALUE, "-c", "!touch $M"):
        assert not runs_value(shell, command, value, checked=True), (command, value)


def test_the_word_after_a_shell_s_script_is_never_read_as_options() -> None:
    """`sh -c SCRIPT sh ARG`: `sh` is `$0` (a `--` there would be `$1`), so no hint of one."""
    for zero in ("sh", "bash", "-e", "--", "python3", "perl"):
        assert check_command(f"sh -c 'echo \"$1\"' {zero} ${{inputs.x}}") is None, zero


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    "command",
    [
        """S='eval "$1"'; bash -c "$S" _ ${inputs.x}""",
        'S=\'eval "$1"\'; X=${inputs.x}; sh -c "$S" _ "$X"',
        """S='eval "$1"'; sh -c "$S; :" _ ${inputs.x}""",
    ],
)
def test_a_script_of_the_command_s_own_beyond_reading_refuses_its_arguments(
    shell: str, command: str
) -> None:
    problem = check_command(command)
    assert problem is not None and "whose script this check cannot read" in problem
    assert runs_value(shell, command, HOSTILE)


def test_find_s_words_after_a_shell_s_arguments_are_read_again() -> None:
    """`find -exec sh -c SCRIPT _ {} \\;` ends at `;`: a later `-exec` is read as before."""
    first = "find . -exec sh -c 'echo \"$1\"' _ {} \\; "
    assert check_command(first + "-exec perl -e 'print \"${inputs.x}\"' \\;") is not None
    problem = check_command(
        "find ${inputs.x} -exec sh -c 'echo \"$1\"' _ {} + -exec bash -c '(( $1 ))' _ {} +"
    )
    assert problem is not None and "its script reads ($1)" in problem
    assert check_command(first + "-exec sh -c 'echo \"$1\"' _ {} \\; -print") is None


def test_a_script_from_outside_the_command_is_code_on_purpose() -> None:
    """A whole reference, `$INPUT_<KEY>` or the step's own `$1` as the script: its
    arguments are that code's business (docs/agents.md)."""
    for script in ("${inputs.s}", '"$INPUT_S"', '"$1"'):
        assert check_command(f"sh -c {script} _ ${{inputs.x}}") is None, script


@pytest.mark.parametrize(
    ("command", "value"),
    [
        ("printf '%s\\n' 1p q | ed -s ${inputs.x}", '!touch "$M"'),
        ("printf '%s\\n' 1p q | ed -s -- ${inputs.x}", '!touch "$M"'),
        ("echo ${inputs.x} | ed -s", '!touch "$M"'),
    ],
)
def test_ed_s_command_operand_and_input_are_refused(command: str, value: str) -> None:
    problem = check_command(command)
    assert problem is not None and "`ed`" in problem
    for shell in SHELLS if shutil.which("ed") else []:
        assert runs_value(shell, command, value), (shell, command)


@pytest.mark.parametrize("shell", SHELLS if shutil.which("git") else [])
@pytest.mark.parametrize("sub", ["ls-remote ${inputs.x} HEAD", "ls-remote origin ${inputs.x}"])
def test_a_git_operand_where_any_subcommand_reads_options_is_refused(shell: str, sub: str) -> None:
    """Any subcommand (not only `clone`, `push`) reads options after operands; `--` ends them."""
    problem = check_command("git " + sub)
    assert problem is not None and "where it reads options" in problem
    assert check_command("git ls-remote -- ${inputs.x} HEAD") is None
    if sub.startswith("ls-remote ${"):
        assert runs_value(shell, "git " + sub, '--upload-pack=touch "$M"; false #')


@pytest.mark.parametrize("shell", ["bash"] if "bash" in SHELLS else [])
@pytest.mark.parametrize(
    "command",
    ['X=${inputs.x}; echo "$${X@P}"', "X=${inputs.x}; echo $[ X ]", "echo $[ ${inputs.x} ]"],
)
def test_bash_s_prompt_expansion_and_old_arithmetic_are_refused(shell: str, command: str) -> None:
    """`${X@P}` runs the value's `$(...)`; `$[...]` is `$((...))`."""
    problem = check_command(command)
    assert problem is not None and ("evaluates" in problem or "prompt" in problem), problem
    assert runs_value(shell, command, ARITH_VALUE), command


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    ("command", "value", "program"),
    [
        (
            "sqlite3 :memory: \"SELECT 'hello ' || '${inputs.x}'\"",
            "x' || edit('', 'touch \"$M\"; true') || '",
            "sqlite3",
        ),
        ('echo "Hello NAME" | m4 -DNAME=${inputs.x}', 'x syscmd(touch "$M")', "m4"),
    ],
)
def test_a_tester_s_sql_and_macro_forms_are_refused(
    shell: str, command: str, value: str, program: str
) -> None:
    problem = check_command(command)
    assert problem is not None and f"`{program}" in problem, problem
    if shutil.which(program):
        assert runs_value(shell, command, value), command


SCRIPT_PIECES = ["echo", '"$1"', "$1", "(( ", " ))", "[[ ", " ]]", " -gt 1", "eval", "let",
                 "x=$1;", "$x", '"$x"', "$${1:0:$2}", ";", " ", "a[", "]=1", "declare",
                 "printf", " -v", "read", '"$@"', "$((", "))", "$${!1}", "sh -c", "|", "test",
                 " -eq ", "local", "export", "trap", "for v in", "do", "done", "$v", "(", ")",
                 "{", "}", "\n", "&&", "$[", "$${1@P}", "shift;", "$2", "$0", "f()", "unset",
                 "x", "1"]  # fmt: skip


@pytest.mark.skipif("bash" not in SHELLS, reason="needs bash")
@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(SCRIPT_PIECES), min_size=1, max_size=8).map("".join))
def test_an_accepted_script_never_runs_its_arguments(script: str) -> None:
    """End to end: whenever the check accepts `bash -c SCRIPT _ ${inputs.x} ${inputs.y}`,
    bash running it with a hostile value (shell code, an arithmetic subscript, a
    command) never runs it."""
    command = f"bash -c '{script}' _ ${{inputs.x}} ${{inputs.y}}"
    if check_command(command) is not None:
        return
    for value in (HOSTILE, ARITH_VALUE, 'touch "$M"'):
        assert not runs_value("bash", command, value, checked=True), (command, value)

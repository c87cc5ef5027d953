"""A value substituted into a shell command string is one literal word (or part of one), in
every place a reference may stand: checked by running the rendered command with the real
`sh`, for hostile values and for arbitrary text."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_engine.agents.shell_command import check_command, render_command
from swarm_engine.templating import TemplateError

# each line prints one field, NUL-terminated; the comment holds a quote that must not count
COMMAND = "\n".join(
    [
        "printf '%s\\0' ${inputs.v}",
        "printf '%s\\0' \"dq ${inputs.v} dq\"",
        "printf '%s\\0' 'sq ${inputs.v} sq'",
        "printf '%s\\0' --name=${inputs.v}",
        "x=$(printf '%s.' ${inputs.v}); printf '%s\\0' \"$${x%.}\"",
        "printf '%s\\0' \"$(printf '%s.' \"${inputs.v}\")\"  # it's ${inputs.v}",
        'set -- ${inputs.v} ${inputs.n}; printf \'%s\\0\' "$#" "$2"',
    ]
)
HOSTILE = [
    "x; echo INJECTED; id",
    "$(echo INJECTED)",
    "`echo INJECTED`",
    "'; echo INJECTED; '",
    '"; echo INJECTED; "',
    "a  b\tc *",
    "line\necho INJECTED",
    "$HOME ${HOME} $$ $0",
    "\\",
    "'\"'\"\\$`",
    "-n",
    "",
    "ü \u2028 \U0001f600",
    "${inputs.v} $${",
]


def run(value: str) -> list[str]:
    text, env = render_command(COMMAND, {"inputs": {"v": value, "n": 5}})
    done = subprocess.run(
        ["sh", "-c", text], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, check=True
    )
    assert done.stderr == b""
    return done.stdout.decode().split("\0")[:-1]


def expected(value: str) -> list[str]:
    return [value, f"dq {value} dq", f"sq {value} sq", f"--name={value}", value, f"{value}.",
            "2", "5"]  # fmt: skip


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_are_one_literal_word_everywhere(value: str) -> None:
    assert run(value) == expected(value)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\0")))
def test_any_text_is_one_literal_word_everywhere(value: str) -> None:
    assert run(value) == expected(value)


def test_a_value_travels_in_the_environment_not_in_the_command() -> None:
    text, env = render_command(
        "echo ${ticket.title} '${ticket.title}' \"${inputs.n}\"",
        {"ticket": {"title": "x; id"}, "inputs": {"n": [1, "a"]}},
    )
    assert text == 'echo "${SWARM_REF_1}" \'\'"${SWARM_REF_1}"\'\' "${SWARM_REF_2}"'
    assert env == {"SWARM_REF_1": "x; id", "SWARM_REF_2": '[1, "a"]'}


@pytest.mark.parametrize(
    ("command", "where"),
    [
        ("echo $(( ${inputs.n} + 1 ))", "inside $((...))"),
        ("echo `echo ${inputs.v}`", "inside backquotes"),
        ('echo "`echo ${inputs.v}`"', "inside backquotes"),
        ("echo $${X:-${inputs.v}}", "inside a $${...} expansion"),
        ("echo \\${inputs.v}", "right after a backslash"),
        ('echo "\\${inputs.v}"', "right after a backslash"),
        ("cat <<EOF\n${inputs.v}\nEOF", "after a here-document"),
        ("cat <<'EOF'\nx\nEOF\necho ${inputs.v}", "after a here-document"),
    ],
)
def test_places_where_no_quoting_holds_are_refused(command: str, where: str) -> None:
    problem = check_command(command)
    assert problem is not None and where in problem and "\n" not in problem
    assert problem.startswith("${inputs.")


@pytest.mark.parametrize(
    "command",
    [
        'echo "$${HOME:-none}" ${inputs.v} $(( 1 + 2 )) ${inputs.v}',
        "echo `date` ${inputs.v}",
        'echo $${X:-y} "$(echo ${inputs.v})" # a comment\'s quote ${inputs.v}',
        "echo $$ $# \\$ ${inputs.v}",
    ],
)
def test_references_beside_those_places_are_accepted(command: str) -> None:
    assert check_command(command) is None


# A reference inside a word another program reads as code: refused, unless it is that
# whole word (running a value as code, said on purpose). `agents.shell_code`.
CODE_WORDS = [
    ("sh -c 'echo Hello ${ticket.title}'", "the script of `sh -c`"),
    ('bash -c "echo ${inputs.v}"', "the script of `bash -c`"),
    ("bash -ec 'echo ${inputs.v}'", "the script of `bash -c`"),
    ("bash -lc 'echo ${inputs.v}'", "the script of `bash -c`"),
    ("dash -xc echo\\ ${inputs.v}", "the script of `dash -c`"),
    ("zsh -o pipefail +e -c 'echo ${inputs.v}'", "the script of `zsh -c`"),
    ("/bin/sh -c 'x'${inputs.v}", "the script of `sh -c`"),
    ("sh -c -- 'echo ${inputs.v}'", "the script of `sh -c`"),
    ("sh 2>/dev/null -c 'echo ${inputs.v}'", "the script of `sh -c`"),
    ("env A=1 timeout 5 nice sh -c 'echo ${inputs.v}'", "the script of `sh -c`"),
    ("find . -exec sh -c 'echo ${inputs.v}' \\;", "the script of `sh -c`"),
    ('x=$(bash -c "echo ${inputs.v}"); echo "$x"', "the script of `bash -c`"),
    ('echo ok; sh -c "echo $(cat ${inputs.v})"', "the script of `sh -c`"),
    ('"$SHELL" -c "echo ${inputs.v}"', "the script of `sh -c`"),
    ('env A=1 "$SHELL" -c "echo ${inputs.v}"', "the script of `sh -c`"),
    ('nohup ${inputs.n} -c "echo ${inputs.v}"', "the script of `sh -c`"),
    ("X=1 sh -c 'echo ${inputs.v}'", "the script of `sh -c`"),
    # a command word with a glob names a program beyond telling (read as an expansion)
    ("/bin/[s]h -c 'echo ${inputs.v}'", "the script of `sh -c`"),
    ("/usr/bin/pyth*3 -c 'print(\"${inputs.v}\")'", "the script of `sh -c`"),
    ("timeout 5 /bin/[s]h -c 'echo ${inputs.v}'", "the script of `sh -c`"),
    # a reference inside an expansion that names the command (its quotes make it code)
    ("$${X:-sh -c 'echo ${inputs.v}'}", "an argument of a command named by an expansion"),
    ("/usr/bin/env /usr/bin/pyth*3 -c 'print(\"${inputs.v}\")'", "the script of `sh -c`"),
    # `export`'s arguments, and `env`'s before its command, are a command's environment
    ("export BASH_ENV=${inputs.v}; bash -c true", "a variable of a command's environment"),
    ("export ${inputs.v}; bash -c true", "a variable of a command's environment"),
    ("env -- ${inputs.v} bash -c true", "a variable of a command's environment"),
    # a command's environment: programs read code from some variables (BASH_ENV, ...)
    ("X=${inputs.v} sh -c 'echo \"$X\"'", "a variable of a command's environment"),
    ("BASH_ENV=${inputs.v} bash -c true", "a variable of a command's environment"),
    ("TAR_OPTIONS=${inputs.v} tar -cf /dev/null f", "a variable of a command's environment"),
    ("env PERL5OPT=${inputs.v} perl -e 1", "a variable of a command's environment"),
    (
        "env 'BASH_FUNC_f%%=() { echo ${inputs.v}; }' bash -c f",
        "a variable of a command's environment",
    ),
    ('eval "echo ${inputs.v}"', "the arguments of `eval`"),
    ("eval echo ${inputs.v}", "the arguments of `eval`"),
    ("if true; then eval ${inputs.v} ${inputs.n}; fi", "the arguments of `eval`"),
    ("python3 -c 'print(\"${inputs.v}\")'", "the code of `python3 -c`"),
    ("python3 -Ic 'import os' ${inputs.n}; python3 -c'${inputs.v}'", "the code of `python3 -c`"),
    ("perl -e 'print ${inputs.v}'", "the code of `perl -e`"),
    ("node --eval 'f(${inputs.v})'", "the code of `node --eval`"),
    ("awk '{ print \"${inputs.v}\" }' file", "the program of `awk`"),
    ("sed -n -e p -e 's/a/${inputs.v}/' file", "the script of `sed -e`"),
    ("trap 'echo ${inputs.v}' EXIT", "the command of `trap`"),
    # options that take an argument, code in an option, versioned names, GNU abbreviations
    ('perl -I /tmp -e "system(q(echo ${inputs.v}))"', "the code of `perl -e`"),
    ('perl "-Mstrict;print(q(${inputs.v}))" -e 1', "the code of `perl -M`"),
    ('perl5.36.0 -e "print q(${inputs.v})"', "the code of `perl5.36.0 -e`"),
    ('node --input-type commonjs -e "f(${inputs.v})"', "the code of `node -e`"),
    ('python3 -m timeit -n1 "f(${inputs.v})"', "the code of `python3 -m timeit`"),
    ('python3.11 -c "f(${inputs.v})"', "the code of `python3.11 -c`"),
    ('lua5.4 -e "f(${inputs.v})"', "the code of `lua5.4 -e`"),
    ('php8.2 -r "f(${inputs.v});"', "the code of `php8.2 -r`"),
    ('sed -n --expr="1e echo ${inputs.v}" f', "the script of `sed --expression`"),
    ('sed -n --e "1e echo ${inputs.v}" f', "the script of `sed --expression`"),
    ('awk -W interactive "BEGIN{system(\\"echo ${inputs.v}\\")}"', "the program of `awk`"),
    # wrappers that hand a string to a shell
    ("env -S 'sh -c \"echo ${inputs.v}\"'", "the command line of `env -S`"),
    ('flock /tmp/lk -c "echo ${inputs.v}"', "the script of `flock -c`"),
    ('flock -w 5 /tmp/lk sh -c "echo ${inputs.v}"', "the script of `sh -c`"),
    ('script -qc "echo ${inputs.v}" /dev/null', "the script of `script -c`"),
    # an alias may make any word code; an option the check does not know: fail closed
    ('alias e=eval\ne "echo ${inputs.v}"', "a command that defines an alias"),
    ("alias x='ls'; echo ${inputs.v}", "a command that defines an alias"),
    # so may a shell function's body
    ('run() { eval "$@"; }; run "echo ${inputs.v}"', "a command that defines a shell func"),
    ('run () { sh -c "$1"; }\nrun "a ${inputs.v}"', "a command that defines a shell func"),
    ('function run { eval "$@"; }; run ${inputs.v}', "a command that defines a shell func"),
    # the long tail: programs reading an option's argument as commands
    ('git -c alias.zz="!echo ${inputs.v}" zz', "the command or configuration of `git -c`"),
    ('make -f /dev/null --eval="x:;echo ${inputs.v}" x', "the makefile text of `make --eval`"),
    ("tar cf f --checkpoint-action=exec='echo ${inputs.v}' d", "the command of `tar --checkp"),
    ('vim -es -u NONE -c "!echo ${inputs.v}" -c q', "the command of `vim -c`"),
    ('gdb -batch -nx -ex "shell echo ${inputs.v}"', "the command of `gdb --ex`"),
    ('flock -n /tmp/lk make x sh -c "echo ${inputs.v}"', "the script of `sh -c`"),
    ('perl -Z -x "print q(${inputs.v})"', "an argument of `perl` after `-Z`, an option"),
    ('node -Z x "f(${inputs.v})"', "an argument of `node` after"),
    ('node --ev "f(${inputs.v})"', "an argument of `node` after"),
]


@pytest.mark.parametrize(("command", "where"), CODE_WORDS)
def test_a_reference_inside_another_program_s_code_is_refused(command: str, where: str) -> None:
    problem = check_command(command)
    assert problem is not None and "\n" not in problem
    assert problem.split(" ", 1)[1].startswith(f"stands inside {where}"), problem
    assert "which reads it as code" in problem
    with pytest.raises(TemplateError, match="reads it as code"):
        render_command(command, {"inputs": {"v": "x", "n": 1}, "ticket": {"title": "t"}})


@pytest.mark.parametrize(
    "command",
    [
        "sh -c 'echo \"$1\"' _ ${inputs.v}",  # the form the refusal suggests
        "sh -c ${inputs.v}",  # the whole script: a value run as code on purpose
        'bash -ec "${inputs.v}" _ ${inputs.n}',
        "eval ${inputs.v}",
        "python3 -c 'import sys; print(sys.argv[1])' ${inputs.v}",
        "python3 tool.py -c ${inputs.v}",
        "awk -v value=${inputs.v} -F, '{ print value }' ${inputs.n}",
        "sed -e 's/a/b/' -- ${inputs.v}",
        "sh script.sh -c 'echo ${inputs.v}'",
        "echo ${inputs.v} sh -c; echo eval ${inputs.v}",
        'grep -c ${inputs.v} f; git commit -m "fix ${inputs.v}"',
        "sh -c 'echo ok' # sh -c 'echo ${inputs.v}'",
        "sh -c 'echo ok'; echo 'sh -c ${inputs.v}'",
        '[ -n "${inputs.v}" ] && tar -czf a.tgz *.txt && echo "${inputs.n}"',  # `[`: no glob
        # a word that is a reference is a shell in command position only
        "tar -C ${inputs.v} -czf out/${inputs.n}.tgz .",
        'python3 tool.py --input ${inputs.v} -c "${inputs.n}.yaml"',
        "curl -sS ${inputs.v} -c cookies-${inputs.n}.txt",
        "grep -e ${inputs.v} -c file-${inputs.n}.txt",
        'echo "$X" -c "a ${inputs.v}"',
        # options known to take an argument, or none: the words after them are data
        "perl -I lib script.pl --name=x-${inputs.v}",
        "perl -ne 'print' -- ${inputs.v}; ruby -rjson tool.rb a-${inputs.v}",
        "python3 -u -W ignore tool.py -c x-${inputs.v}; python3 -m mytool --n x-${inputs.v}",
        "node --no-warnings app.js --x=y-${inputs.v}",
        "sed -i.bak --expression=s/a/b/ f-${inputs.v}; sed -n p f-${inputs.v}",
        "awk -F, -v v=${inputs.v} '{ print v }' f-${inputs.v}",
        "env -i A=1 python3 tool.py x-${inputs.v}; env -S 'printf %s' ${inputs.v}",
        "flock -n /tmp/lk make -C x-${inputs.v} a; script -q -c make log-${inputs.v}.txt",
        "git -C d commit -m 'fix ${inputs.v}'; make -C d-${inputs.v} x",
        "tar -C d -czf out/${inputs.v}.tgz .; gdb -batch a.out core-${inputs.v}",
        "vim -es -u NONE file-${inputs.v}.txt",
    ],
)
def test_a_reference_outside_another_program_s_code_is_accepted(command: str) -> None:
    assert check_command(command) is None


@pytest.mark.parametrize("value", HOSTILE)
def test_a_value_after_a_shell_s_script_is_data(value: str) -> None:
    """The form the refusal suggests keeps the value one argument of the inner shell."""
    text, env = render_command(
        'sh -c \'printf "%s\\0" "$1"\' _ ${inputs.v}; bash -ec \'printf "%s" "$@"\' _ ${inputs.v}',
        {"inputs": {"v": value}},
    )
    done = subprocess.run(
        ["sh", "-c", text], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, check=True
    )
    assert done.stdout.decode() == f"{value}\0{value}"


def test_a_command_nested_too_deep_to_follow_is_refused_with_one_line() -> None:
    """The parser that finds another program's code recurses into `$(...)`: a command
    nested 50,000 deep (within the 128 KiB a command may hold) was a RecursionError."""
    assert check_command("echo " + "$(echo " * 99 + "${inputs.v}" + ")" * 99) is None
    assert check_command("echo " + "$(" * 50_000 + "x") is None  # no reference: not parsed
    problem = check_command("echo " + "$(" * 50_000 + "${inputs.v}")
    assert problem == (
        "${inputs.v} stands in a command that nests $(...) or backquotes over 100 deep, too"
        " deep to tell whether a program reads it as code"
    )

"""A value substituted into a shell command string is one literal word (or part of one), in
every place a reference may stand: checked by running the rendered command with the real
`sh`, for hostile values and for arbitrary text."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_engine.agents.shell_command import check_command, render_command

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

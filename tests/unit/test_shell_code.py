"""The check that refuses a reference pasted into code another program runs
(`agents.shell_code`): where its shell lexer could lose its place, and the option syntax of
the programs it covers (`agents.code_programs`)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_engine.agents.shell_command import check_command

BAD = "sh -c 'echo ${inputs.x}'"


def refused(command: str) -> str:
    problem = check_command(command)
    assert problem is not None, command
    assert "\n" not in problem and problem.startswith("${inputs."), problem
    return problem


# the lexer: each construct closed where the shell closes it, or the whole refused
@pytest.mark.parametrize(
    "prefix",
    [
        "echo $((1))",
        "n=$((1+1))",
        "n=$(( (1+2) * 3 ))",
        'n=$(( $(echo "))") + 1 ))',
        "n=$(( ')' ))",
        "echo $${X:-'}'}",
        'echo $${X:-"}"}',
        "echo $${X:-\\}}",
        "echo $${X:-{}",
        "echo $${X:-$(echo '}')}",
        "a=`echo '`; b=`'`",
        "x=$(case a in a) echo ok;; esac)",
        "x=$(case a in (a) echo ')';; esac)",
        "echo $'a\\nb'",
    ],
)
def test_a_reference_after_a_closed_construct_is_still_seen(prefix: str) -> None:
    assert check_command(prefix + "; echo ${inputs.x}") is None
    assert "stands inside the script of `sh -c`" in refused(f"{prefix}; {BAD}")


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("echo $((1 + 2; " + BAD, "a `$((` without its `))`"),
        ("echo $((1) ); " + BAD, "a `$((` closed by a single `)`"),
        ("echo $${X:-a; " + BAD, "a `${` without its `}`"),
        ("echo \"$${X:-'}'}\"; echo ${inputs.x}", "a `'` inside `${...}` inside double"),
        ("echo $'\\''; " + BAD, "a `$'...'` string with an escaped quote"),
        ("echo 'a ${inputs.x}", "a `'` without its closing quote"),
        ('echo "a; ' + BAD, 'a `"` without its closing quote'),
        ("x=$(echo a; " + BAD, "a `$(` without its `)`"),
    ],
)
def test_a_command_the_lexer_cannot_follow_is_refused(command: str, why: str) -> None:
    problem = check_command(command)
    assert problem is not None and "\n" not in problem
    assert why in problem or "where a value cannot be kept" in problem, problem


def test_a_command_the_lexer_cannot_follow_names_why() -> None:
    problem = refused("echo ${inputs.x}; echo $${X:-a")
    assert "a command this check cannot follow (a `${` without its `}`)" in problem


FRAGMENTS = ["$((", "))", "(", ")", "$(", "$${X:-", "$${#", "}", "{", "'", '"', "`", "\\",
             "$'", "\\'", "$", "x", " ", ";", "\n", "#", "case x in ", "esac", "a)", ";;",
             "1+2", "echo ", "${inputs.y}", "|", "&&", "=", "-", "$$", "<", ">"]  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join))
def test_a_reference_in_code_after_any_prefix_is_refused(prefix: str) -> None:
    """Whatever comes first, valid or not (an unclosed `$((`, a quote inside `${...}`, a
    stray backquote), the script of `sh -c` after it is never accepted: either the lexer
    follows the prefix and sees the script, or it says it cannot."""
    assert check_command(prefix + "\n\n" + BAD) is not None

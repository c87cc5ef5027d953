"""The code check over GNU programs that read options after their operands and run a
command given by one (`split --filter`, `sort --compress-program`, `zip --unzip-command`),
and over programs reading their input as commands (`ex`, `vim -e`, `tclsh`, `python3 -m
pdb`): each refused form that runs here shown to run a hostile value in real dash and bash,
each accepted one shown not to (`agents.code_programs`, `agents.code_paths`)."""

from __future__ import annotations

import shutil

import pytest
from tests.support.shell_runs import HOSTILE, runs_value

from swarm_engine.agents.shell_command import check_command

SHELLS = [s for s in ("dash", "bash") if shutil.which(s)]
TOUCH_PY = "import os; os.system('touch ' + os.environ['M'])"

REFUSED = [
    # (command, where the problem says it stands, a value it runs, the program to run it)
    ("seq 1 10 > data.txt; split -l 5 data.txt ${inputs.x}", "argument of `split` where it",
     '--filter=touch "$M"', "split"),
    ("split data.txt ${inputs.x}", "argument of `split` where it", None, "split"),
    ("sort -o out.txt in.txt ${inputs.x}", "argument of `sort` where it", None, "sort"),
    ("sort ${inputs.x} in.txt", "argument of `sort` where it", None, "sort"),
    # the value picks the program sort runs to compress its temporary files
    ("printf '#!/bin/sh\\ntouch \"$M\"; cat\\n' > c; chmod +x c; seq 1 3000 > d;"
     " sort -S 1k -T . d ${inputs.x} > /dev/null", "argument of `sort` where it",
     "--compress-program=./c", "sort"),
    ("echo hi > f.txt; zip -T out.zip f.txt ${inputs.x}", "argument of `zip` where it",
     '--unzip-command=touch "$M";', "zip"),
    ("echo ${inputs.x} | ex -s notes.txt", "piped into `ex`", '!touch "$M"', "ex"),
    ("echo ${inputs.x} | vi -es notes.txt", "piped into `vi`", '!touch "$M"', "vi"),
    ("echo ${inputs.x} | vim -e -s notes.txt", "piped into `vim`", '!touch "$M"', "vim"),
    ("echo ${inputs.x} | view -es notes.txt", "piped into `view`", '!touch "$M"', "view"),
    ("echo ${inputs.x} | vim -Es notes.txt", "piped into `vim`", '!touch "$M"', "vim"),
    ("echo ${inputs.x} | tclsh", "piped into `tclsh`", "exec touch $::env(M)", "tclsh"),
    ("echo ${inputs.x} | tclsh8.6", "piped into `tclsh8.6`", "exec touch $::env(M)", "tclsh8.6"),
    ("echo ${inputs.x} | wish", "piped into `wish`", None, "wish"),
    ('echo "print(1)" > main.py; echo ${inputs.x} | python3 -m pdb main.py', "piped into",
     TOUCH_PY, "python3"),
    ("echo ${inputs.x} | python3 -m code", "piped into", TOUCH_PY, "python3"),
]  # fmt: skip


@pytest.mark.parametrize(("command", "where"), [(c, w) for c, w, _, _ in REFUSED])
def test_a_late_option_or_an_input_read_as_commands_is_refused(command: str, where: str) -> None:
    problem = check_command(command)
    assert problem is not None and "\n" not in problem, command
    assert problem.startswith("${inputs.x} ") and where in problem, problem


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    ("command", "value", "program"), [(c, v, p) for c, _, v, p in REFUSED if v is not None]
)
def test_a_refused_form_does_run_a_value(
    shell: str, command: str, value: str, program: str
) -> None:
    if not shutil.which(program, path="/usr/bin:/bin"):
        pytest.skip(f"no {program}")
    assert runs_value(shell, command, value), command


def test_a_late_option_names_the_fix() -> None:
    problem = check_command("split -l 5 data.txt ${inputs.x}")
    assert problem is not None and "put `--` before it: split ... -- ${inputs.x}" in problem


ACCEPTED = [
    'seq 1 10 > data.txt; split -l 5 data.txt -- "${inputs.x}"',
    "seq 1 10 > data.txt; split -l 5 -- data.txt ${inputs.x}",
    "seq 1 10 > data.txt; split --lines=5 data.txt p-${inputs.x}",
    "echo b > in.txt; sort -o out.txt -- in.txt ${inputs.x}; sort -k 2 in.txt > s-${inputs.x}",
    "echo ${inputs.x} > f.txt; zip -q out.zip -- f.txt; zip -q z-${inputs.x}.zip f.txt",
    "echo ${inputs.x} | grep y; echo ${inputs.x} | sort; echo ${inputs.x} | python3 main.py",
    'echo "${inputs.x}" | vim -es -c "wq" notes.txt -- 2>/dev/null || true',
]


@pytest.mark.parametrize("command", ACCEPTED[:-1])
def test_ordinary_uses_stay_accepted(command: str) -> None:
    assert check_command(command) is None, check_command(command)


def test_a_value_piped_into_ex_mode_stays_refused_even_with_c() -> None:
    """`vim -es -c wq` still reads its input as commands before `-c` runs (fail closed)."""
    assert check_command(ACCEPTED[-1]) is not None


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("command", ACCEPTED[:-1])
def test_an_accepted_form_does_not_run_a_value(shell: str, command: str) -> None:
    for value in (HOSTILE, '--filter=touch "$M"', '--unzip-command=touch "$M";'):
        assert not runs_value(shell, command.replace("python3 main.py", "cat"), value, checked=True)

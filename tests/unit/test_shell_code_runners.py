"""The code check over programs that run a command they are given (`agents.code_runners`:
`ssh HOST CMD`, `su -c`, `watch`, `parallel`, wrappers such as `chroot`, `taskset`,
`busybox`), interpreters added since (`sqlite3`, `m4`, `emacs`, git's subcommands), and a
value that reaches code through a program's input (`| sh`, `| xargs -I{} sh -c`, `find
${v} -exec sh -c '...{}'`); each refused form that runs here shown to run a hostile value
in real dash and bash, each accepted one shown not to."""

from __future__ import annotations

import shutil

import pytest
from tests.support.shell_runs import HOSTILE, runs_value

from swarm_engine.agents.shell_command import check_command

SHELLS = [s for s in ("dash", "bash") if shutil.which(s)]


REFUSED = [
    # a remote or another user's shell: the words after `ssh HOST`, `su USER`, `su -c`
    ("ssh host 'echo ${inputs.x}'", "the command line `ssh` hands a shell"),
    ("ssh -p 22 host ls ${inputs.x}", "the command line `ssh` hands a shell"),
    ("ssh host ${inputs.x}", "an argument of `ssh` where it reads options"),
    ('ssh -o ProxyCommand="nc ${inputs.x} 22" host', "of `ssh -o`"),
    ("su -c 'echo ${inputs.x}' bob", "the command of `su -c`"),
    ("su bob -- -c 'echo ${inputs.x}'", "the command line `su` hands a shell"),
    ("runuser -u bob -c 'echo ${inputs.x}'", "the command of `runuser -c`"),
    ("su --command='echo ${inputs.x}' bob", "the command of `su --command`"),
    # a command line run by a shell: `watch`, `parallel` (before `:::`)
    ("watch -n 5 'ls ${inputs.x}'", "the command line `watch` hands a shell"),
    ("watch ls ${inputs.x}", "the command line `watch` hands a shell"),
    ("parallel 'echo ${inputs.x}' ::: a b", "the command line `parallel` hands a shell"),
    ("parallel sh -c 'echo {}' ::: ${inputs.x}", "an argument of `parallel` put into"),
    # wrappers: their command is a program's name
    ("busybox sh -c 'echo ${inputs.x}'", "the script of `sh -c`"),
    ("unshare -r sh -c 'echo ${inputs.x}'", "the script of `sh -c`"),
    ("nsenter -t 1 -m sh -c 'echo ${inputs.x}'", "the script of `sh -c`"),
    ("chroot --userspec=a:b / sh -c 'echo ${inputs.x}'", "the script of `sh -c`"),
    ("taskset -c 1 \"$S\" -c 'echo ${inputs.x}'", "the script of `sh -c`"),
    ("ionice -c 3 \"$S\" -c 'echo ${inputs.x}'", "the script of `sh -c`"),
    ("chrt -o 0 \"$S\" -c 'echo ${inputs.x}'", "the script of `sh -c`"),
    ("setsid -w sh -c 'echo ${inputs.x}'", "the script of `sh -c`"),
    ("stdbuf -oL sh -c 'echo ${inputs.x}'", "the script of `sh -c`"),
    ("flock /tmp/lk -c 'echo ${inputs.x}'", "the script of `flock -c`"),
    ("script -qec 'echo ${inputs.x}' /dev/null", "the script of `script -c`"),
    # sqlite3 (`.shell`, `.system`, `edit()`), m4 (`-D`), emacs (`--eval`, `-f`)
    ("sqlite3 :memory: '.shell echo ${inputs.x}'", "the SQL of `sqlite3`"),
    ("sqlite3 db 'select 1' \"select '${inputs.x}'\"", "the SQL of `sqlite3`"),
    ("sqlite3 -cmd '.system echo ${inputs.x}' db", "the SQL of `sqlite3 --cmd`"),
    ("sqlite3 db ${inputs.x}", "an argument of `sqlite3` where it reads options"),
    ("m4 -D 'X=${inputs.x}' in.m4", "the macro text of `m4 -D`"),
    ("m4 --define=X=${inputs.x} in.m4", "the macro text of `m4 --define`"),
    ("m4 in.m4 ${inputs.x}", "an argument of `m4` where it reads options"),
    ("emacs --batch --eval '(message \"${inputs.x}\")'", "the code of `emacs --eval`"),
    ("emacs -batch -eval '(shell-command \"${inputs.x}\")'", "the code of `emacs --eval`"),
    ("emacs -Q --batch --ev '(f \"${inputs.x}\")'", "the code of `emacs --eval`"),
    # git: a subcommand's options, `config` values that are code, `submodule foreach`
    ("git rebase --exec 'make ${inputs.x}' main", "of `git --exec`"),
    ("git rebase -x 'make ${inputs.x}' main", "of `git -x`"),
    ("git clone -c 'core.sshCommand=ssh -i ${inputs.x}' url d", "of `git -c`"),
    ("git clone --upload-pack='cat ${inputs.x}' url d", "of `git --upload-pack`"),
    ("git clone ${inputs.x} d", "an argument of `git` where it reads options"),
    ("git fetch origin ${inputs.x}", "an argument of `git` where it reads options"),
    ("git config alias.zz '!echo ${inputs.x}'", "configuration of `git`"),
    ("git config --global core.pager 'less ${inputs.x}'", "configuration of `git`"),
    ("git config set core.editor 'vi ${inputs.x}'", "configuration of `git`"),
    ("git submodule foreach 'echo ${inputs.x}'", "the command line `git` hands a shell"),
    ("git filter-branch --tree-filter 'rm ${inputs.x}' HEAD", "of `git --tree-filter`"),
    # a value piped into a program that reads its input as code
    ('echo "${inputs.x}" | sh', "the input piped into `sh`"),
    ('echo "${inputs.x}" | bash -s -- a', "the input piped into `bash`"),
    ('printf %s "${inputs.x}" | tr a b | python3', "the input piped into `python3`"),
    ('echo "${inputs.x}" | perl', "the input piped into `perl`"),
    ('echo "${inputs.x}" | m4', "the input piped into `m4`"),
    ('echo "${inputs.x}" | sqlite3 :memory:', "the input piped into `sqlite3`"),
    ('echo "${inputs.x}" | ssh -p 22 host', "the input piped into `ssh`"),
    ('echo "${inputs.x}" | su bob', "the input piped into `su`"),
    ('echo "${inputs.x}" | parallel', "the input `parallel` puts"),
    ('echo "${inputs.x}" | parallel sh -c "echo {}"', "the input `parallel` puts"),
    ("parallel ::: ${inputs.x}", "an argument of `parallel` put into"),
    # a group after a pipe: each command in it reads the pipe
    ('echo "${inputs.x}" | (cd / && sh)', "the input piped into `sh`"),
    ('{ echo a; echo "${inputs.x}"; } | { read -r a; sh; }', "the input piped into `sh`"),
    ('echo "${inputs.x}" | while read -r l; do eval "echo $l"; done', "the arguments of `eva"),
    # a process substitution: a file a program may run
    ('sh <(echo "${inputs.x}")', "a file `<(...)` gives `sh`"),
    ('python3 <(printf %s "${inputs.x}")', "a file `<(...)` gives `python3`"),
    ('X=${inputs.x}; bash <(echo "$X")', "a file `<(...)` gives `bash`"),
    ('{ echo a; echo "${inputs.x}"; } | sh', "the input piped into `sh`"),
    ('if true; then echo "${inputs.x}"; fi | sh', "the input piped into `sh`"),
    ('(echo "${inputs.x}") | sh', "the input piped into `sh`"),
    ('X=${inputs.x}; echo "$X" | sh', "the input piped into `sh`"),
    # put into code by `{}`: `xargs -I`, `find -exec`
    ("printf '%s\\n' ${inputs.x} | xargs -I{} sh -c 'echo {}'", "the input `xargs` puts"),
    ("printf '%s\\n' ${inputs.x} | xargs -I % sh -c 'echo %'", "the input `xargs` puts"),
    ("printf '%s\\n' ${inputs.x} | xargs -i sh -c 'echo {}'", "the input `xargs` puts"),
    ("printf '%s\\n' ${inputs.x} | xargs --replace sh -c 'echo {}'", "the input `xargs`"),
    ("printf '%s\\n' ${inputs.x} | xargs perl -e 'print @ARGV;'", "the input `xargs` gives"),
    ("printf '%s\\n' ${inputs.x} | xargs sh -c", "the input `xargs` gives `sh`"),
    ("mkdir -p ${inputs.x}; find ${inputs.x} -exec sh -c 'echo {}' \\;", "a path `find` puts"),
    ("find . -name ${inputs.x} -execdir bash -c 'echo {}' \\;", "a path `find` puts"),
]


@pytest.mark.parametrize(("command", "where"), REFUSED)
def test_a_reference_a_runner_makes_code_is_refused(command: str, where: str) -> None:
    problem = check_command(command)
    assert problem is not None and "\n" not in problem, command
    assert where in problem, problem


def _here(command: str) -> bool:
    """The refused form runs here: its programs are installed and need no host, root,
    terminal or special value."""
    needs = ("ssh", "su ", "runuser", "watch", "parallel", "unshare", "nsenter", "chroot",
             "emacs", "m4", "git", "$S", "sqlite3", "-cmd", "busybox", "python3", "perl",
             "xargs", "find .", "<(", "read -r")  # fmt: skip
    return not any(n in command for n in needs)


RUN_REFUSED = [c for c, _ in REFUSED if _here(c)]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("command", RUN_REFUSED)
def test_a_refused_form_does_run_a_value(shell: str, command: str) -> None:
    for program in ("sqlite3", "flock", "script", "perl", "python3", "setsid", "stdbuf"):
        if program in command and not shutil.which(program):
            pytest.skip(f"no {program}")
    assert runs_value(shell, command), command


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    ("command", "value", "program"),
    [
        ("busybox sh -c 'echo ${inputs.x}'", HOSTILE, "busybox"),
        ("S=sh; taskset -c 0 \"$S\" -c 'echo ${inputs.x}'", HOSTILE, "taskset"),
        ("S=sh; ionice -c 3 \"$S\" -c 'echo ${inputs.x}'", HOSTILE, "ionice"),
        ("echo X | m4 -D 'X=${inputs.x}'", 'syscmd(touch "$M")', "m4"),
        ("echo ${inputs.x} | m4", 'syscmd(touch "$M")', "m4"),
        ("sqlite3 :memory: 'select 1' '.shell echo ${inputs.x}'", HOSTILE, "sqlite3"),
        ("sqlite3 :memory: '.shell echo ${inputs.x}'", HOSTILE, "sqlite3"),
        ('echo "${inputs.x}" | sqlite3 :memory:', '.shell touch "$M"', "sqlite3"),
        (
            'printf %s "${inputs.x}" | tr a a | python3',
            "import os; os.system('touch \"$M\"')",
            "python3",
        ),
        ('echo "${inputs.x}" | perl', 'system q(touch "$M")', "perl"),
        ("printf '%s\\n' ${inputs.x} | xargs -I{} sh -c 'echo {}'", "a;touch $M", "xargs"),
        ("printf '%s\\n' ${inputs.x} | xargs -I % sh -c 'echo %'", "a;touch $M", "xargs"),
        ("printf '%s\\n' ${inputs.x} | xargs -i sh -c 'echo {}'", "a;touch $M", "xargs"),
        ("printf '%s\\n' ${inputs.x} | xargs --replace sh -c 'echo {}'", "a;touch $M", "xargs"),
        (
            "printf '%s\\n' ${inputs.x} | xargs perl -e 'print @ARGV;'",
            "-esystem(q{touch},$ENV{M})",
            "perl",
        ),
        ("printf '%s\\n' ${inputs.x} | xargs sh -c", "touch${IFS}$M", "xargs"),
        ('echo "${inputs.x}" | (cd / && sh)', HOSTILE, "sh"),
        ('{ echo a; echo "${inputs.x}"; } | { read -r a; sh; }', HOSTILE, "sh"),
        (
            'echo "${inputs.x}" | while read -r l; do eval "echo $l"; done',
            '$(touch "$M")',
            "sh",
        ),
        (
            "touch ./${inputs.x}; find . -name ${inputs.x} -execdir bash -c 'echo {}' \\;",
            "a$(touch $M)",
            "find",
        ),
        (
            "git init -q r && cd r && git config alias.zz '!echo ${inputs.x}' && git zz",
            HOSTILE,
            "git",
        ),
    ],
)
def test_a_refused_program_form_does_run_a_value(
    shell: str, command: str, value: str, program: str
) -> None:
    if not shutil.which(program):
        pytest.skip(f"no {program}")
    assert check_command(command) is not None
    assert runs_value(shell, command, value), command


ACCEPTED = [
    "ssh host -- uptime; ssh -p 22 host uptime; ssh ./h-${inputs.x} true",
    "su bob -c 'echo \"$1\"' -- _ ${inputs.x}; echo ${inputs.x} | su -c 'cat' bob",
    "echo ${inputs.x} | ssh host cat; echo ${inputs.x} | parallel echo",
    "watch -n 5 ls; parallel echo {} ::: ${inputs.x} ${inputs.x}; echo ${inputs.x} | parallel echo",
    'diff <(echo "${inputs.x}") f; echo "${inputs.x}" | while read -r l; do echo "$l"; done',
    'echo "${inputs.x}" | (cd / && cat); { echo a; } | sh',
    "sqlite3 \"out-${inputs.x}.db\" 'create table t (a)'; sqlite3 db -- 'select 1'",
    "m4 in-${inputs.x}.m4 < /dev/null; m4 -I inc-${inputs.x} /dev/null",
    'git config user.name "${inputs.x}"; git config --global user.email ${inputs.x}',
    'git commit -m "fix: ${inputs.x}"; git add -- ${inputs.x}; git checkout -b b-${inputs.x}',
    "git clone -- ${inputs.x} d; git -C d-${inputs.x} status",
    'echo "${inputs.x}" | python3 -c "import sys; print(sys.stdin.read())"',
    'echo "${inputs.x}" | python3 -m json.tool; echo "${inputs.x}" | perl -ne print',
    'echo "${inputs.x}" | sh -c "cat"; echo "${inputs.x}" || sh; echo "${inputs.x}"; sh < /dev/null',
    'echo "${inputs.x}" | sqlite3 :memory: "select 1"; echo "${inputs.x}" | m4 /dev/null',
    "printf '%s\\n' ${inputs.x} | xargs -I{} sh -c 'echo \"$1\"' _ {}",
    "printf '%s\\n' ${inputs.x} | xargs sh -c 'echo \"$1\"' _",
    "printf '%s\\n' ${inputs.x} | xargs -0 python3 -c 'import sys; print(sys.argv)'",
    "printf '%s\\n' ${inputs.x} | xargs -I{} cp -- {} /tmp/h137-none/",
    "mkdir -p ${inputs.x}; find ${inputs.x} -exec sh -c 'echo \"$1\"' _ {} \\;",
    "find . -name ${inputs.x} -print; find ${inputs.x} -type f -exec cat {} +",
    "setsid -w sh -c 'echo \"$1\"' _ ${inputs.x}; stdbuf -oL echo ${inputs.x}",
    "taskset -c 0 make -C d-${inputs.x}; ionice -c 3 nice cp a b-${inputs.x}",
]


@pytest.mark.parametrize("command", ACCEPTED)
def test_ordinary_uses_stay_accepted(command: str) -> None:
    assert check_command(command) is None, check_command(command)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("command", [c for c in ACCEPTED if "ssh" not in c and "su " not in c
                                     and "watch" not in c and "git c" not in c])  # fmt: skip
def test_an_accepted_form_does_not_run_a_value(shell: str, command: str) -> None:
    assert not runs_value(shell, command, checked=True), command


@pytest.mark.parametrize("shell", ["bash"] if "bash" in SHELLS else [])
@pytest.mark.parametrize(
    "command", ['sh <(echo "${inputs.x}")', 'X=${inputs.x}; bash <(echo "$X")']
)
def test_a_refused_process_substitution_does_run_a_value_in_bash(shell: str, command: str) -> None:
    assert runs_value(shell, command), command

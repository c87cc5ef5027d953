"""The check that refuses a reference pasted into code another program runs
(`agents.shell_code`): where its shell lexer could lose its place, and the option syntax of
the programs it covers (`agents.code_programs`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from swarm_engine.agents.shell_command import check_command, render_command

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
    follows the prefix and sees the script, or it says it cannot. (Two newlines between:
    a trailing backslash joins one line only, and a comment ends at the first.)"""
    assert check_command(prefix + "\n\n" + BAD) is not None


# each program's option syntax (man perlrun, ruby --help, node --help, GNU getopt_long)
@pytest.mark.parametrize(
    ("command", "where"),
    [
        # perl's `-l`, `-0` take digits only: the `e` after them is still `-e`
        ("echo a | perl -lne 'print \"${inputs.x}\"'", "the code of `perl -e`"),
        ("perl -lane 'print \"${inputs.x}\"'", "the code of `perl -e`"),
        ("perl -nle 'print \"${inputs.x}\"'", "the code of `perl -e`"),
        ("perl -ple 's/a/${inputs.x}/'", "the code of `perl -e`"),
        ("perl -0777ne 'print \"${inputs.x}\"'", "the code of `perl -e`"),
        ("perl -0xfe -e 'print \"${inputs.x}\"'", "the code of `perl -e`"),
        ("perl -F: -lane 'print \"${inputs.x}\"'", "the code of `perl -e`"),
        # `-F`, `-M`, `-d` take the rest of their word only, never the next word
        ("perl -F -e 'print \"${inputs.x}\"'", "the code of `perl -e`"),
        ("perl -d -e 'print \"${inputs.x}\"'", "the code of `perl -e`"),
        ("perl '-Mstrict;print(q(${inputs.x}))' -e 1", "the code of `perl -M`"),
        # `-d` takes only `t` and `:Mod` attached, `-V` only `:name`: `-de` is `-d -e`
        ("perl -de 'print qq(${inputs.x})'", "the code of `perl -e`"),
        ("perl -dte 'print qq(${inputs.x})'", "the code of `perl -e`"),
        ("perl -Ve 'print qq(${inputs.x})'", "the code of `perl -e`"),
        ("perl -d:Foo=${inputs.x} t.pl", "the code of `perl -d`"),
        # an optional argument is taken only in its shape (`make -j 4`; vim `-es`, `-S`)
        ("make -f /dev/null -j -E 'x: ; echo ${inputs.x}'", "the makefile text of `make -E`"),
        ("make -l --eval 'x: ; echo ${inputs.x}'", "the makefile text of `make --eval`"),
        ("make -j 4 -E 'x: ; echo ${inputs.x}'", "the makefile text of `make -E`"),
        ("vim -Nes -c 'let v = \"${inputs.x}\"'", "the command of `vim -c`"),
        ("vim -S -c 'let v = \"${inputs.x}\"'", "the command of `vim -c`"),
        ("vim -S ${inputs.x}", "an argument of `vim` where it reads options"),
        # modules that run another module or code
        ("python3 -m cProfile -m timeit 'f(\"${inputs.x}\")'", "the code of `python3 -m cP"),
        ("python3 -m trace --count -m timeit 'f(${inputs.x})'", "the code of `python3 -m tr"),
        ("python3 -m runpy timeit 'f(${inputs.x})'", "the code of `python3 -m runpy`"),
        # ruby: `-W` one digit (or `:cat`), `-K` one letter, `-0` octal digits
        ("ruby -W0e 'puts \"${inputs.x}\"'", "the code of `ruby -e`"),
        ("ruby -Kue 'puts \"${inputs.x}\"'", "the code of `ruby -e`"),
        ("ruby -0ne 'puts \"${inputs.x}\"'", "the code of `ruby -e`"),
        # node: each option a word of its own; `-pe` is `--print --eval`
        ("node -pe '\"${inputs.x}\"'", "the code of `node -pe`"),
        ("node -p -e '\"${inputs.x}\"'", "the code of `node -e`"),
        ("node --experimental_loader 'x${inputs.x}'", "the code of `node --experimental-l"),
        # GNU sed takes options after operands
        ("sed p f -e '1e echo ${inputs.x}'", "the script of `sed -e`"),
        # abbreviated long options, where the program takes them
        ("make -f /dev/null --ev='$(shell echo ${inputs.x})'", "the makefile text of `make"),
        ("make --eva 'x: ; echo ${inputs.x}'", "the makefile text of `make --eval`"),
        ("tar -xf t.tar --to-com='echo ${inputs.x}'", "the command of `tar --to-command`"),
        ("tar cf f --checkpoint-act=exec='echo ${inputs.x}' d", "the command of `tar --checkp"),
        ("tar -cf f --use-compress-prog 'gzip ${inputs.x}' d", "the command of `tar --use-c"),
        ("gdb -eval-comm='shell echo ${inputs.x}'", "the command of `gdb --eval-command`"),
        ("gdb -batch --eval-c 'shell echo ${inputs.x}'", "the command of `gdb --eval-command`"),
        ("vim --CMDx '!echo ${inputs.x}'", "the command of `vim --cmd`"),
    ],
)
def test_a_reference_in_code_given_by_any_option_syntax_is_refused(
    command: str, where: str
) -> None:
    assert f"stands inside {where}" in refused(command)


# an expansion as an option or as the command: what it holds is beyond telling
@pytest.mark.parametrize(
    ("command", "where"),
    [
        ("C=-c; sh $C 'echo ${inputs.x}'", "an argument of `sh` after a word that is an exp"),
        ("sh ${inputs.opt} 'echo ${inputs.x}'", "an argument of `sh` where it reads options"),
        ("python3 $(echo -c) 'print(\"${inputs.x}\")'", "an argument of `python3` after a"),
        ('perl "$E" \'print "${inputs.x}"\'', "an argument of `perl` after a word that"),
        ('sed -e p "$V" out-${inputs.x}', "an argument of `sed` after a word that"),
        ("perl -$E 'x: ; echo ${inputs.x}'", "an argument of `perl` after `-$...`"),
        ('e=eval; $e "echo ${inputs.x}"', "an argument of a command named by an expansion"),
        ("${inputs.cmd} x-${inputs.x}", "an argument of a command named by an expansion"),
        ("./t/${inputs.t}.sh 'a ${inputs.x}'", "an argument of a command named by an expansion"),
        ("$HOME/bin/t 'a ${inputs.x}'", "an argument of a command named by an expansion"),
        ("\"$HOME/bin/$T\" 'a ${inputs.x}'", "an argument of a command named by an expansion"),
        ("\"$D/sh\" -c 'echo ${inputs.x}'", "the script of `sh -c`"),
        ("\"$D/bash\" -ec 'echo ${inputs.x}'", "the script of `bash -c`"),
        ("m4 --d X=${inputs.x} f", "an argument of `m4` after `--d`"),
        ("E=E; make -$E'x:;echo ${inputs.x}'", "an argument of `make` after `-$...`"),
        ("C=-c; sh $C'echo ${inputs.x}'", "an argument of `sh` after a word that is an"),
        ("S=/bin/sh; timeout 5 \"$S\" -c 'echo ${inputs.x}'", "the script of `sh -c`"),
        ("timeout -s KILL 5 \"$S\" -c 'echo ${inputs.x}'", "the script of `sh -c`"),
        ("nice -n 5 \"$S\" -c 'echo ${inputs.x}'", "the script of `sh -c`"),
        ("sudo -u x A=1 \"$S\" -c 'echo ${inputs.x}'", "the script of `sh -c`"),
        ("xargs -0 \"$S\" -c 'echo ${inputs.x}'", "the script of `sh -c`"),
        ("setsid -f \"$S\" -c 'echo ${inputs.x}'", "the script of `sh -c`"),
        ("stdbuf -o L \"$E\" 'echo ${inputs.x}'", "an argument of `stdbuf` after a word"),
        ("sudo -s 'echo ${inputs.x}'", "an argument of `sudo` after `-s`"),
        # a wrapper's own options (and `--`, `env -`) come before its command word
        ('command -p eval "echo ${inputs.x}"', "the arguments of `eval`"),
        ('command -- eval "echo ${inputs.x}"', "the arguments of `eval`"),
        ("S=sh; command -p -- \"$S\" -c 'echo ${inputs.x}'", "the script of `sh -c`"),
        ("S=sh; time -p \"$S\" -c 'echo ${inputs.x}'", "the script of `sh -c`"),
        ('time -f %e -o t.txt eval "echo ${inputs.x}"', "the arguments of `eval`"),
        ("S=sh; env - PATH=/bin \"$S\" -c 'echo ${inputs.x}'", "the script of `sh -c`"),
        # `env -S STRING`: the string's words stand in its place (a program, its options)
        ("env -S 'sh -c' 'echo ${inputs.x}'", "the script of `sh -c`"),
        ("env -S\"sh -ec\" 'echo ${inputs.x}'", "the script of `sh -c`"),
        ("env --split-string='sh -c' 'echo ${inputs.x}'", "the script of `sh -c`"),
        ("env -iS 'perl -e' 'print \"${inputs.x}\"'", "the code of `perl -e`"),
        ("env -S '-i sh -c' 'echo ${inputs.x}'", "the script of `sh -c`"),
        ("env -S 'sh -c \"$0\"' 'a ${inputs.x}'", "an argument of `env` after `-S` with a"),
        # where a program that reads code reads options, a value may be one (`-e...`)
        ("perl -e 'print 1' ${inputs.x}", "an argument of `perl` where it reads options"),
        ("node -e 'f()' ${inputs.x}", "an argument of `node` where it reads options"),
        ("awk -f p.awk ${inputs.x}", "an argument of `awk` where it reads options"),
        ("env ${inputs.x} ls", "an argument of `env` where it reads options"),
        ("script -q -c make ${inputs.x}", "an argument of `script` where it reads options"),
        # programs reading options after operands: a value there may be an option
        ("tar -C out -xf a.tar ${inputs.x}", "an argument of `tar` where it reads options"),
        ("sed -e s/a/b/ in.txt ${inputs.x}", "an argument of `sed` where it reads options"),
        ("vim f.txt ${inputs.x}", "an argument of `vim` where it reads options"),
        ("gdb prog ${inputs.x}", "an argument of `gdb` where it reads options"),
        # make reads an operand holding `=` as makefile code (`x-:=$(shell ...)`)
        ("make -s NAME=${inputs.x}", "an operand of `make`, where a word holding `=`"),
        ("make x-${inputs.x}", "an operand of `make`, where a word holding `=`"),
        ("make -- ${inputs.x}", "an operand of `make`, where a word holding `=`"),
        # a program not on the list (a wrapper) may run a word that is an expansion
        ("S=sh; find . -exec \"$S\" -c 'echo ${inputs.x}' \\;", "an argument of `find` after"),
        ("taskset 1 \"$S\" -c 'echo ${inputs.x}'", "the script of `sh -c`"),
        ("chroot / \"$S\" -c 'echo ${inputs.x}'", "the script of `sh -c`"),
        ("timeout 5 strace -f \"$S\" -c 'echo ${inputs.x}'", "an argument of `strace` after"),
        # old-style tar: the letters' arguments follow in order
        ("tar xIf 'gzip -d ${inputs.x}' a.tar", "an argument of `tar` after `xIf`, old-style"),
    ],
)
def test_a_reference_after_an_expansion_as_option_or_command_is_refused(
    command: str, where: str
) -> None:
    assert f"stands inside {where}" in refused(command)


@pytest.mark.parametrize(
    "command",
    [
        "tar -C ${inputs.dir} -czf out/${inputs.name}.tgz .",
        "sh -c 'echo \"$1\"' _ ${inputs.x}",
        "echo ${inputs.x}",
        "perl -lne 'print' -- ${inputs.x}; perl -F, -lane 'print $F[0]' f-${inputs.x}",
        "node -pe '1+1' -- ${inputs.x}; ruby -W0 -ne 'puts' f-${inputs.x}",
        "sed -n p f-${inputs.x} g-${inputs.x}",
        "timeout 5 make -C d-${inputs.x} a; nice -n 5 sh -c 'echo \"$1\"' _ ${inputs.x}",
        "sudo -u x make -C d-${inputs.x} a; xargs -0 -I{} cp {} out-${inputs.x}/",
        "gdb -batch -ex bt a.out core-${inputs.x}; make -C d-${inputs.x} x",
        "tar --checkpoint -cf out-${inputs.x}.tar .; tar czf out-${inputs.x}.tgz .",
        "x=$(case a in a) echo ok;; esac) ${inputs.x}",
        "x-${inputs.x}; ./tools/${inputs.x}.sh --check",
        'cp "$HOME/a" "out/${inputs.x}.txt"; echo "$X" -c "a ${inputs.x}"',
        'python3 main.py "$HOME" "out/${inputs.x}.txt"',
        "a=(); (cd d && ls) ${inputs.x}",
        'tar xzf "${inputs.x}.tgz"; tar cf ${inputs.x} .; tar xCf ${inputs.d} a.tar f',
        "awk '{ print }' ${inputs.x}; python3 -c 'f()' ${inputs.x}; env A=1 ${inputs.x}",
        # after `python3 -c CODE` every word is sys.argv; a redirection's target no option
        'python3 -c \'import sys\' "${inputs.x}" "${inputs.x}-s" > "o/${inputs.x}.txt"',
        'node -e \'f()\' -- "${inputs.x}" > "out/${inputs.x}.txt"',
        'perl -e \'f()\' "$HOME" 2> "out/${inputs.x}.txt"',
        "tar -xf a.tar -- ${inputs.x}; sed -e p -- ${inputs.x}; make -C ${inputs.dir} all",
        "perl -V:version x-${inputs.x}; perl -dt t.pl x-${inputs.x}; vim -S s.vim x-${inputs.x}",
        "env -S 'sh -c' 'echo \"$1\"' _ ${inputs.x}; env -S 'python3 m.py' x-${inputs.x}",
        # a quoted expansion naming only the directory; an unknown long option of a
        # program whose code options are all known and whose operands are no code
        '"$HOME/bin/tool" --name="${inputs.x}"; "${inputs.d}/bin/tool" -n "a ${inputs.x}"',
        'node --trace-uncaught script.js "${inputs.x}" "--name=${inputs.x}"',
        'ruby --disable-gems x.rb "${inputs.x}" "--n=${inputs.x}"',
        'node --experimental-foo x "f(${inputs.x})"',
    ],
)
def test_harmless_forms_stay_accepted(command: str) -> None:
    assert check_command(command) is None


SHELL_PIECES = ["sh -c 'echo ${inputs.x}'", 'eval "echo ${inputs.x}"', "echo ${inputs.x}",
                "bash -c \"echo '${inputs.x}'\"", "C=-c; sh $C 'echo ${inputs.x}'",
                'e=eval; $e "echo ${inputs.x}"', "sh -c 'echo \"$1\"' _ ${inputs.x}",
                "S=sh; timeout 5 \"$S\" -c 'echo ${inputs.x}'", "sh -c ${inputs.x}",
                # a value through the script's variables and functions (`code_flow`)
                "BASH_ENV=${inputs.x}", "X=${inputs.x}", "export BASH_ENV", "set -a",
                "BASH_ENV=$X", "bash -c true", 'sh -c "echo $X"', 'f() { eval "$1"; }',
                'f() { echo "$1"; }', "f ${inputs.x}", 'declare -x X',
                # through a program's input, or a program that runs its arguments
                "echo ${inputs.x} | sh", " | sh", " | xargs -I{} sh -c 'echo {}'",
                "find ${inputs.x} -exec sh -c 'echo {}' \\;", "busybox sh -c 'echo ${inputs.x}'",
                "sqlite3 :memory: '.shell echo ${inputs.x}'", "{ echo ${inputs.x}; }",
                "flock . -c 'echo ${inputs.x}'", "setsid -w sh -c 'echo ${inputs.x}'",
                "D=/bin; \"$D/sh\" -c 'echo ${inputs.x}'", '"$HOME/bin/tool" ']  # fmt: skip
HOSTILE = 'x\';touch "$M";\'";touch "$M";"$(touch "$M")`touch "$M"`;touch "$M"'


@pytest.mark.parametrize("shell", [s for s in ("dash", "bash") if shutil.which(s)])
@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from([f for f in FRAGMENTS if f not in ("&&", "|")] + SHELL_PIECES),
        max_size=8,
    ).map("".join)
)
def test_an_accepted_command_never_runs_a_value(shell: str, command: str) -> None:
    """End to end: whenever the check accepts a command, the real shell running it with a
    hostile value never runs the value (`$M` is touched only if it does). `sh -c
    ${inputs.x}` (the whole script: said on purpose) is left out."""
    assume("sh -c ${inputs.x}" not in command or check_command(command) is not None)
    if check_command(command) is not None:
        return
    text, env = render_command(command, {"inputs": {"x": HOSTILE, "y": HOSTILE}})
    with tempfile.TemporaryDirectory() as d:
        mark = os.path.join(d, "ran")
        subprocess.run(
            [shell, "-c", text],
            env={"PATH": "/usr/bin:/bin", "M": mark, **env},
            cwd=d,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )
        assert not os.path.exists(mark), command

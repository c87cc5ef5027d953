"""Programs that run a command they are given, for `agents.shell_code`: wrappers that run
their operands as a command (`timeout 5 sh -c ...`, `chroot DIR sh -c ...`, `busybox sh`),
and those that hand a string to a shell (`flock -c`, `script -c`, `su -c`, `ssh host
CMD...`, `watch CMD...`, `parallel CMD ::: ARGS`): every option of theirs, as
`agents/code_programs.py` holds those of interpreters.
"""

from __future__ import annotations

from swarm_engine.agents.code_spec import SHELL_STRING, Program

RUNNERS: dict[str, Program] = {
    "flock": Program(
        "the script of", SHELL_STRING, code_flags="c", code_long=("--command",),
        arg_flags="wE", arg_long=("--timeout", "--wait", "--conflict-exit-code"),
        known="sxeunoFhVv",
        known_long=("--shared", "--exclusive", "--unlock", "--nonblock", "--nb", "--close",
                    "--no-fork", "--verbose", "--help", "--version"),
        abbrev=True, command_operand=2,
    ),
    "script": Program(
        "the script of", SHELL_STRING, code_flags="c", code_long=("--command",),
        permute=True, arg_flags="EIOBTmo",
        arg_long=("--echo", "--log-in", "--log-out", "--log-io", "--log-timing",
                  "--logging-format", "--output-limit"),
        known="aefqhV", rest_flags="t",
        known_long=("--append", "--return", "--flush", "--force", "--quiet", "--timing",
                    "--help", "--version"),
        abbrev=True, command_operand=99,
    ),
    # wrappers: options of their own, then a command (`timeout 5 "$S" -c`)
    "timeout": Program(
        "the command of", SHELL_STRING, arg_flags="ks", known="fpv",
        arg_long=("--kill-after", "--signal"),
        known_long=("--foreground", "--preserve-status", "--verbose", "--help", "--version"),
        abbrev=True, command_operand=2,
    ),
    "nice": Program(
        "the command of", SHELL_STRING, arg_flags="n", arg_long=("--adjustment",),
        known="0123456789", known_long=("--help", "--version"), abbrev=True,
        command_operand=1,
    ),
    "nohup": Program(
        "the command of", SHELL_STRING, known_long=("--help", "--version"), abbrev=True,
        command_operand=1,
    ),
    "setsid": Program(
        "the command of", SHELL_STRING, known="cfwhV",
        known_long=("--ctty", "--fork", "--wait", "--help", "--version"), abbrev=True,
        command_operand=1,
    ),
    "stdbuf": Program(
        "the command of", SHELL_STRING, arg_flags="ioe",
        arg_long=("--input", "--output", "--error"), known_long=("--help", "--version"),
        abbrev=True, command_operand=1,
    ),
    "xargs": Program(
        "the command of", SHELL_STRING, arg_flags="adEILnPs", rest_flags="eil",
        known="0oprtx",
        arg_long=("--arg-file", "--delimiter", "--max-args", "--max-procs", "--max-chars",
                  "--process-slot-var"),
        known_long=("--null", "--open-tty", "--interactive", "--no-run-if-empty",
                    "--verbose", "--exit", "--show-limits", "--help", "--version", "--eof",
                    "--replace", "--max-lines"),
        abbrev=True, command_operand=1,
    ),
    "sudo": Program(  # `-s`, `-i` (a shell's command line) not known: fail closed
        "the command of", SHELL_STRING, arg_flags="aCcDgpRrtTUu", known="AbEeHKklnPSVv",
        arg_long=("--user", "--group", "--chdir", "--chroot", "--close-from", "--prompt",
                  "--role", "--type", "--command-timeout", "--other-user"),
        known_long=("--askpass", "--background", "--bell", "--preserve-env", "--edit",
                    "--set-home", "--remove-timestamp", "--reset-timestamp", "--list",
                    "--non-interactive", "--preserve-groups", "--stdin", "--validate",
                    "--version", "--help"),
        abbrev=True, command_operand=1, assignments=True,
    ),
    "doas": Program(
        "the command of", SHELL_STRING, arg_flags="aCu", known="Ln", command_operand=1,
    ),
    "exec": Program(
        "the command of", SHELL_STRING, arg_flags="a", known="cl", command_operand=1,
    ),
}  # fmt: skip

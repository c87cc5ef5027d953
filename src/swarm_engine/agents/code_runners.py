"""Programs that run a command they are given, for `agents.shell_code`: wrappers that run
their operands as a command (`timeout 5 sh -c ...`, `chroot DIR sh -c ...`, `busybox sh`),
and those that hand a string to a shell (`flock -c`, `script -c`, `su -c`, `ssh host
CMD...`, `watch CMD...`, `parallel CMD ::: ARGS`): every option of theirs, as
`agents/code_programs.py` holds those of interpreters.
"""

from __future__ import annotations

from swarm_engine.agents.code_spec import REMOTE, SHELL_STRING, Program

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
        abbrev=True, command_operand=1, replace="Ii",
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
    "busybox": Program(  # `busybox sh -c ...`: an applet, then its arguments
        "the command of", SHELL_STRING, known_long=("--list", "--list-full", "--help"),
        command_operand=1,
    ),
    "chroot": Program(
        "the command of", SHELL_STRING, arg_long=("--userspec", "--groups"),
        known_long=("--skip-chdir", "--help", "--version"), abbrev=True, command_operand=2,
    ),
    "taskset": Program(  # `taskset MASK CMD`; `-c` reads MASK as a list
        "the command of", SHELL_STRING, known="acphV",
        known_long=("--all-tasks", "--cpu-list", "--pid", "--help", "--version"),
        abbrev=True, command_operand=2,
    ),
    "ionice": Program(
        "the command of", SHELL_STRING, arg_flags="cnpPu", known="thV",
        arg_long=("--class", "--classdata", "--pid", "--pgid", "--uid"),
        known_long=("--ignore", "--help", "--version"), abbrev=True, command_operand=1,
    ),
    "chrt": Program(  # `chrt [-f] PRIO CMD`
        "the command of", SHELL_STRING, arg_flags="TPD", known="abdfiormpvReEhV",
        arg_long=("--sched-runtime", "--sched-period", "--sched-deadline"),
        known_long=("--all-tasks", "--batch", "--deadline", "--fifo", "--idle", "--other",
                    "--rr", "--reset-on-fork", "--max", "--pid", "--verbose", "--ext",
                    "--help", "--version"),
        abbrev=True, command_operand=2,
    ),
    "unshare": Program(
        "the command of", SHELL_STRING, arg_flags="SGRw", known="muinpUCTfrchV",
        arg_long=("--setgroups", "--propagation", "--setuid", "--setgid", "--root", "--wd",
                  "--map-user", "--map-group", "--map-users", "--map-groups", "--monotonic",
                  "--boottime", "--load-interp"),
        known_long=("--mount", "--uts", "--ipc", "--net", "--pid", "--user", "--cgroup",
                    "--time", "--fork", "--map-root-user", "--map-current-user", "--map-auto",
                    "--map-subids", "--kill-child", "--mount-proc", "--mount-binfmt",
                    "--keep-caps", "--help", "--version"),
        abbrev=True, command_operand=1,
    ),
    "nsenter": Program(  # `-m[FILE]`: an optional argument, attached only
        "the command of", SHELL_STRING, arg_flags="tSGN", rest_flags="muinpUCTrw",
        known="aFZehV", arg_long=("--target", "--setuid", "--setgid", "--user-parent"),
        known_long=("--all", "--mount", "--uts", "--ipc", "--net", "--pid", "--user",
                    "--cgroup", "--time", "--root", "--wd", "--preserve-credentials",
                    "--no-fork", "--follow-context", "--env", "--help", "--version"),
        abbrev=True, command_operand=1,
    ),
    # a shell's command line: `su -c CMD`, the words after `su USER` (the shell's own
    # arguments: `-c ...`), after `ssh HOST`, `watch`, `parallel` (joined by spaces)
    **dict.fromkeys(("su", "runuser"), Program(
        "the command of", SHELL_STRING, code_flags="c",
        code_long=("--command", "--session-command"), arg_flags="gGswu",
        arg_long=("--group", "--supp-group", "--shell", "--whitelist-environment", "--user"),
        known="flmpPhV", known_long=("--login", "--preserve-environment", "--pty",
                                     "--fast", "--help", "--version"),
        abbrev=True, permute=True, dash_option=True, shell_operands=2,
    )),
    "ssh": Program(  # ssh reads options again after HOST; `-o ProxyCommand=...` is code
        "the remote command line of", REMOTE, code_flags="o", arg_flags="BbcDEeFIiJLlmOpQRSWw",
        known="46AaCfGgKkMNnqsTtVvXxYy", permute=True, shell_operands=2, shell_whole=True,
    ),
    "watch": Program(
        "the command line of", SHELL_STRING, arg_flags="nq", known="bcCdegprtvwxh",
        arg_long=("--interval", "--equexit"),
        known_long=("--beep", "--color", "--no-color", "--differences", "--errexit",
                    "--chgexit", "--exec", "--precise", "--no-rerun", "--no-title",
                    "--no-wrap", "--no-linewrap", "--help", "--version"),
        abbrev=True, shell_operands=1, shell_whole=True,
    ),
    "parallel": Program(  # GNU parallel: its options are many; the arguments after `:::`
        "the command line of", "give it after `:::`: {prog} ... ::: ${{{path}}}",
        open_options=True, shell_operands=1, shell_whole=True,
        shell_end=(":::", "::::", ":::+", "::::+"),
    ),
}  # fmt: skip

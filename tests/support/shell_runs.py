"""Running a shell agent's command in a real shell with a hostile value, for the tests of
the code check (`agents.shell_code`): does the value run?"""

from __future__ import annotations

import os
import subprocess
import tempfile

from swarm_engine.agents.shell_command import (
    _REPLACEMENT,
    REF_ENV_PREFIX,
    _Scanner,
    render_command,
)
from swarm_engine.templating import Ref, parse

HOSTILE = 'x\';touch "$M";\'";touch "$M";"$(touch "$M")`touch "$M"`;touch "$M"'
"""A value that touches `$M` wherever a shell reads it as code."""


def render_unchecked(command: str) -> str:
    """The command with each reference quoted as `render_command` quotes it, without its
    check (which refuses the forms these tests run), every reference one variable."""
    scanner = _Scanner()
    out: list[str] = []
    for part in parse(command):
        if isinstance(part, Ref):
            out.append(_REPLACEMENT.get(scanner.context(), '"${%s}"') % f"{REF_ENV_PREFIX}1")
            scanner.after_reference()
        else:
            scanner.feed(part)
            out.append(part)
    return "".join(out)


def runs_value(shell: str, command: str, value: str = HOSTILE, checked: bool = False) -> bool:
    """Whether `shell` running the command, with `value` for each reference, runs it (in
    a fresh directory, with no stdin); rendered by `render_command` if `checked`."""
    if checked:
        text, refs = render_command(command, {"inputs": {"x": value, "y": value}})
    else:
        text, refs = render_unchecked(command), {f"{REF_ENV_PREFIX}1": value}
    with tempfile.TemporaryDirectory() as d:
        mark = os.path.join(d, "ran")
        subprocess.run(
            [shell, "-c", text],
            env={"PATH": "/usr/bin:/bin", "M": mark, "HOME": d, **refs},
            cwd=d,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=20,
            check=False,
        )
        return os.path.exists(mark)

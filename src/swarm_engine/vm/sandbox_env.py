"""A process-backend command's two environments: the host's and the sandbox's.

A command's own environment (an agent's `env:`, a ticket's `INPUT_*` values, the engine's
`SWARM_*` variables) is data that a definition author or a ticket wrote. It reaches only
the command: under bubblewrap, a memory file of `--setenv NAME VALUE` arguments that
bubblewrap reads (`--clearenv`, then `--args FD`) and sets in its own memory for the
program it starts inside the namespaces; with isolation "none", a memory file of
`NAME=value` strings the subreaper (`vm/subreaper.py`) hands to the command it spawns.
Neither is in any command line, nor in any host program's environment.

Every program the engine starts on the host on the way there (unshare, the shell that
binds the workspace, setpriv as root, bubblewrap, the subreaper) gets `host_env`: a fixed
PATH, LANG and the VM's tag, nothing a step wrote. So `LD_PRELOAD`, `PATH` or any other
variable of an agent can no longer steer a host program before the sandbox exists.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Mapping

from swarm_engine.errors import VMError
from swarm_engine.vm.proctree import VM_TAG

HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The PATH of every program the engine starts on the host for a command (a fixed list)."""
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
"""A command's PATH unless its agent sets one (the sandbox's /usr is the host's)."""
MAX_ENV_VARS = 2500
"""The most variables one command's environment may hold: bubblewrap reads at most 9,000
arguments in all, and each variable is three (`--setenv NAME VALUE`)."""


def host_env(vm_id: str) -> dict[str, str]:
    """The environment of the engine's host-side programs for VM `vm_id`'s commands: built
    here, never from a step's variables. Tagged with `vm_id`, so that whatever the VM left
    behind on the host is found and killed (`vm/proctree.py`)."""
    return {"PATH": HOST_PATH, "LANG": "C.UTF-8", VM_TAG: vm_id}


@functools.lru_cache(maxsize=1)
def prlimit() -> str:
    """`prlimit` by its full path: it is started by bubblewrap (or the subreaper) with the
    command's environment, whose PATH is the agent's to set."""
    return shutil.which("prlimit", path=SANDBOX_PATH) or "/usr/bin/prlimit"


def check_env(env: Mapping[str, str]) -> None:
    """Raise `VMError` (one line) for an environment no process can be given: a name that
    is empty or holds `=` or NUL, a value holding NUL, text that is not encodable, or more
    than `MAX_ENV_VARS` variables. (Agent definitions and inputs are checked earlier, with
    their own lines: this is the last check before any process starts.)"""
    if len(env) > MAX_ENV_VARS:
        raise VMError(
            f"the command's environment has {len(env)} variables, over {MAX_ENV_VARS}; "
            "put the rest in a file"
        )
    for name, value in env.items():
        shown = repr(name) if len(name) <= 40 else repr(name[:39] + "…")
        if not name or "=" in name or "\0" in name:
            raise VMError(f"{shown} is not an environment variable name")
        if "\0" in value:
            raise VMError(f"the value of environment variable {shown} contains a NUL character")
        try:
            name.encode()
            value.encode()
        except UnicodeEncodeError as exc:
            raise VMError(f"environment variable {shown} cannot be encoded: {exc.reason}") from exc


def bwrap_env_args(env: Mapping[str, str]) -> bytes:
    """`env` as bubblewrap's `--args` reads it: NUL-terminated `--setenv NAME VALUE`."""
    check_env(env)
    return b"".join(
        b"--setenv\0" + name.encode() + b"\0" + value.encode() + b"\0"
        for name, value in env.items()
    )


def env_block(env: Mapping[str, str]) -> bytes:
    """`env` as the subreaper reads it: NUL-terminated `NAME=value` strings."""
    check_env(env)
    return b"".join(f"{name}={value}".encode() + b"\0" for name, value in env.items())

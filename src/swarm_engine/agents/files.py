"""Helpers agents share: moving inputs, outputs and package files in and out of a VM."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swarm_engine.errors import AgentError, VMError
from swarm_engine.package_folders import (
    HeldCopy,
    content_name,
    hold,
    is_package_folder,
    reading,
)
from swarm_engine.records import readable_json
from swarm_engine.vm.base import VM
from swarm_engine.vm.shortage import patiently

if TYPE_CHECKING:
    from swarm_engine.models import AgentSpec

SWARM_DIR = ".swarm"
INPUTS_FILE = f"{SWARM_DIR}/inputs.json"
OUTPUTS_FILE = f"{SWARM_DIR}/outputs.json"
SKIP_NAMES = {".git", "__pycache__", ".venv", "node_modules"}
MAX_PACKAGE_FILES = 2000
MAX_PACKAGE_BYTES = 64 * 1024 * 1024
"""An agent package (what registration copies and a step uploads) is at most this many
regular files and bytes, `SKIP_NAMES` folders not counted."""

# How inputs reach a command. The inputs file ($SWARM_INPUTS) always holds all of them; a
# scalar input is also an environment variable INPUT_<KEY> when its value is at most
# INPUT_ENV_MAX_BYTES, while the INPUT_* variables stay within INPUT_ENV_TOTAL_BYTES in all
# (keys in sorted order); keys whose INPUT_<KEY> names collide are only in the file.
# Linux refuses to exec with any one argument or environment string over MAX_ARG_STRLEN
# (128 KiB, counting its NUL), so no single value may ever get there.
INPUT_ENV_MAX_BYTES = 32 * 1024
INPUT_ENV_TOTAL_BYTES = 256 * 1024
INPUT_ENV_MAX_VARS = 1000
"""The most `INPUT_*` variables a step gets (a command's environment holds at most 2,500,
`vm.sandbox_env.MAX_ENV_VARS`); the rest of the inputs are in the inputs file only."""
MAX_ARG_BYTES = 128 * 1024 - 1
"""The longest one argv or environment string (`KEY=value`) may be, in bytes."""

ENV_PRELUDE = (
    'SWARM_INPUTS="$SWARM_WORKSPACE/.swarm/inputs.json"; '
    'SWARM_OUTPUTS="$SWARM_WORKSPACE/.swarm/outputs.json"; '
    "export SWARM_INPUTS SWARM_OUTPUTS; "
)


async def put_inputs(vm: VM, inputs: dict[str, Any], text: str | None = None) -> None:
    """Write all of `inputs`, as JSON, to the inputs file ($SWARM_INPUTS): `text` when
    given (the JSON the step's row holds, `StepContext.inputs_json`: at most 8 MiB, the
    engine's cap on a step's inputs), else `inputs` written out."""
    data = text if text is not None else json.dumps(inputs, default=str)
    await vm.put_file(INPUTS_FILE, data.encode())


def input_env_name(key: str) -> str | None:
    """The environment variable that input `key` is exported as (`INPUT_<KEY>`, the key
    upper-cased), or None for a key that is not an identifier."""
    return f"INPUT_{key.upper()}" if key.isidentifier() else None


def colliding_input_keys(inputs: dict[str, Any]) -> list[str]:
    """The keys of `inputs` whose `INPUT_<KEY>` name another key has too (`a` and `A`,
    `ß` and `SS`), sorted: none of them is exported (`input_env`), whatever its value."""
    names: dict[str, list[str]] = {}
    for key in inputs:
        name = input_env_name(key)
        if name is not None:
            names.setdefault(name, []).append(key)
    return sorted(k for keys in names.values() if len(keys) > 1 for k in keys)


def input_env(inputs: dict[str, Any]) -> dict[str, str]:
    """The `INPUT_<KEY>` environment variables for `inputs`: one per scalar input whose key
    is an identifier and whose value is at most `INPUT_ENV_MAX_BYTES` (UTF-8), in sorted
    key order while they total at most `INPUT_ENV_TOTAL_BYTES` and number at most
    `INPUT_ENV_MAX_VARS`. Larger values, and values
    no environment can hold (a NUL character, unpaired surrogates), are only in the
    inputs file. So are keys whose names collide (`colliding_input_keys`: `a` and `A`
    both `INPUT_A`): neither is exported, rather than one silently standing for both."""
    env: dict[str, str] = {}
    total = 0
    colliding = set(colliding_input_keys(inputs))
    for key in sorted(inputs):
        value = inputs[key]
        name = input_env_name(key)
        if not isinstance(value, str | int | float | bool) or name is None or key in colliding:
            continue
        text = str(value)
        try:
            size = len(text.encode())
        except UnicodeEncodeError:
            continue
        if "\0" in text or size > INPUT_ENV_MAX_BYTES or total + size > INPUT_ENV_TOTAL_BYTES:
            continue
        if len(env) >= INPUT_ENV_MAX_VARS:
            break
        env[name] = text
        total += size
    return env


MAX_OUTPUTS_BYTES = 4 * 1024 * 1024
"""The largest `$SWARM_OUTPUTS` file a step may write. Its object becomes the step's
outputs and, for a last step, the ticket's result: it is stored twice, sent whole by
`ticket show` and `GET /v1/tickets/ID`, and a later step's templates may copy it into its
inputs, each decoded copy a few times the file's size in memory. 4 MiB keeps one such
ticket well within a `ticket list` page (`service.tickets.PAGE_BYTES`, 8 MiB) and an
engine's memory bounded (a 60 MB file, under only the 64 MiB read limit, took an engine
to 574 MB). Results larger than that do not belong in the ticket store. The same bound
holds for a step's whole outputs as stored (the file's keys with `stdout`, `stderr`...),
of every agent kind: `engine.bounds.step_outputs_json`."""


ENGINE_OUTPUT_KEYS = ("stdout", "stderr", "exit_code", "stdout_bytes", "stderr_bytes")
"""The keys of a command's outputs the engine fills itself (`stdout_bytes`, `stderr_bytes`
only when that stream was cut): an outputs file may set none of them (`merged_outputs`)."""


def merged_outputs(own: dict[str, Any], written: dict[str, Any] | None) -> dict[str, Any]:
    """`own` (the outputs the engine filled: `stdout`, `stderr`, `exit_code`...) with the
    keys of `written` (the object of `$SWARM_OUTPUTS`, None: no file) added. A file that
    sets any of `ENGINE_OUTPUT_KEYS` is refused, never merged over the engine's values nor
    dropped: `AgentError`, one line (`$SWARM_OUTPUTS sets stdout, exit_code: keys the
    engine fills itself (stdout, stderr, exit_code, stdout_bytes, stderr_bytes); write
    them under other names`), failing the step."""
    if not written:
        return own
    taken = [key for key in written if key in ENGINE_OUTPUT_KEYS]
    if taken:
        raise AgentError(
            f"$SWARM_OUTPUTS sets {', '.join(taken)}: keys the engine fills itself"
            f" ({', '.join(ENGINE_OUTPUT_KEYS)}); write them under other names"
        )
    return {**own, **written}


async def read_outputs_file(vm: VM) -> dict[str, Any] | None:
    """The JSON object an agent wrote to $SWARM_OUTPUTS, or None if it wrote none.
    `AgentError` (one line, failing the step) for a file that cannot be read, is over
    `MAX_OUTPUTS_BYTES` (checked before it is parsed), is not JSON or not an object."""
    try:
        raw = await vm.get_file(OUTPUTS_FILE)
    except VMError as exc:
        if "no such file" in str(exc).lower():  # it wrote none (every backend says so)
            return None
        raise AgentError(f"$SWARM_OUTPUTS cannot be read: {exc}") from exc
    if len(raw) > MAX_OUTPUTS_BYTES:
        raise AgentError(
            f"$SWARM_OUTPUTS is {len(raw):,} bytes, over its limit of"
            f" {MAX_OUTPUTS_BYTES // (1024 * 1024)} MiB"
        )
    try:
        data = readable_json(raw)  # what the store's readers can write out again
    except ValueError as exc:
        raise AgentError(f"$SWARM_OUTPUTS is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise AgentError("$SWARM_OUTPUTS must hold a JSON object")
    return data


async def upload_package(
    vm: VM,
    agent: AgentSpec,
    packages_dir: Path | None,
    *,
    timeout: float,
    held: HeldCopy | None = None,
) -> int:
    """Copy an agent's package folder into the workspace; returns the file count (0 for
    an agent without one). The package is read only from where `agent register` put it
    (`package_root`; `held`: the copy the step's run holds, `hold_package`) and only as
    `package_contents` allows; anything else is an
    `AgentError` (one line) and nothing is uploaded. It is read off the event loop; a host
    short of descriptors or memory is waited out up to `timeout` seconds
    (`vm/shortage.py`)."""
    if not agent.package_path and agent.package_digest is None:
        return 0  # (a digest is the record of a package: a row with one and no path has one)
    deadline = time.monotonic() + timeout
    files = await patiently(
        lambda: asyncio.to_thread(package_contents, agent, packages_dir, held), deadline=deadline,
        doing=f"read the package of agent {agent.ref}", vm_id=vm.id,
    )  # fmt: skip
    for rel, executable, data in files:
        await vm.put_file(rel, data, 0o755 if executable else 0o644)
    return len(files)


REGISTER = "swarm-engine agent register PATH"
"""What a host lacking an agent's package (or holding another content) is told to run."""


def package_root(agent: AgentSpec, packages_dir: Path | None) -> tuple[str, str]:
    """The real path of `agent`'s package folder, resolved once through the link
    `<packages_dir>/<name>/<version>` that `agent register` swaps (`package_folders`),
    and of the copy it is in (the same folder, unless the row names one inside it). A
    row with a `package_digest` is read through this host's own link whatever its
    `package_path` says (the registering host's folder: `package_contents`' check of the
    digest stands for it); an older row's `package_path` (a stored value: any writer may
    have put any path there) must resolve to a copy of that name@version or inside it,
    or `AgentError`."""
    path = agent.package_path
    unnamed = not isinstance(path, str) or "\x00" in path
    if packages_dir is None or (unnamed and agent.package_digest is None):
        raise AgentError(f"agent {agent.ref}: its package_path is not a registered package")
    packages = os.path.realpath(packages_dir)
    link = Path(os.path.normpath(os.path.join(packages, agent.name, agent.version)))
    if not link.is_relative_to(packages) or link.relative_to(packages).parts != (
        agent.name,
        agent.version,
    ):  # a name or version that is a path (`..`, `/`): no package of its own
        raise AgentError(f"agent {agent.ref}: its package_path is not a registered package")
    where = str(link) if agent.package_digest is not None or path is None else path
    given = Path(os.path.realpath(where))
    parts = given.relative_to(packages).parts if given.is_relative_to(packages) else ()
    if len(parts) < 2 or parts[0] != agent.name or not is_package_folder(parts[1], agent.version):
        raise AgentError(
            f"agent {agent.ref}: package_path {where[:200]!r} is not its registered package "
            f"folder ({link}); a package is read only from there (registered by an older"
            " engine? register it again: swarm-engine agent register --force PATH)"
        )
    return str(given), os.path.join(packages, *parts[:2])


READ_TRIES = 100
"""How often a step resolves its package's link again when the copy it found was
retired before it could hold it (each time, a registration swapped the package)."""


def package_digest(files: list[tuple[str, bool, bytes]]) -> str:
    """`sha256:<hex>` of a package's files as a step uploads them (`package_contents`):
    each one's path, executable bit and bytes, in path order."""
    digest = hashlib.sha256()
    for rel, executable, data in sorted(files):
        name = rel.encode(errors="surrogateescape")
        digest.update(b"%d:%s:%d:%d:" % (len(name), name, executable, len(data)))
        digest.update(data)
    return f"sha256:{digest.hexdigest()}"


def hold_package(agent: AgentSpec, packages_dir: Path | None) -> HeldCopy | None:
    """Hold this host's copy of `agent`'s package for a run planned with it (until
    `HeldCopy.release`): the copy named by its `package_digest` (`content_name`: a
    registration with other files since may have linked another), else the one its link
    names. None for a row without a digest (it reads whatever the link names) or a
    package not on this host (its step says so). Raises `AgentError` for a row naming no
    package folder of its own (`package_root`). Blocking: run it in a worker thread."""
    if agent.package_digest is None or packages_dir is None:
        return None
    for _ in range(READ_TRIES):
        _, copy = package_root(agent, packages_dir)
        named = content_name(agent.version, agent.package_digest)
        found = [os.path.join(os.path.dirname(copy), named)] if named else []
        for path in [*found, copy]:
            held = hold(path)
            if held is not None:
                return held
        if not os.path.lexists(copy):
            return None
    return None


def _held_files(agent: AgentSpec, held: HeldCopy) -> list[tuple[str, bool, bytes]] | None:
    """The files of the copy `held` (`package_folders.HeldCopy`); None if it is gone or
    is no package (`folder_contents`' `AgentError`: the link's copy is read then)."""
    for _ in range(READ_TRIES):
        root = held.where()
        if root is None:
            return None
        with reading(root) as found:
            if found:
                try:
                    return folder_contents(root, agent.ref)
                except AgentError:
                    return None
    return None


def package_contents(
    agent: AgentSpec, packages_dir: Path | None, held: HeldCopy | None = None
) -> list[tuple[str, bool, bytes]]:
    """Each file of the agent's package (`package_root`): relative path, executable,
    bytes, as `folder_contents` reads them, all of one registration's copy (held against
    removal while it is read, `package_folders.reading`). With `held` (the copy the
    step's run holds, `hold_package`), that copy's files when they have the row's
    digest, else the link's. A row's `package_digest` must be theirs: this host's copy
    missing or holding another content is an `AgentError` saying to register the agent
    on this host (docs/scale-out.md). Blocking: run it in a worker thread."""
    want = agent.package_digest
    if held is not None and want is not None:
        files = _held_files(agent, held)
        if files is not None and package_digest(files) == want:
            return files
    last = None
    for _ in range(READ_TRIES):
        root, copy = package_root(agent, packages_dir)
        if want is not None and not os.path.lexists(root):
            raise AgentError(
                f"agent {agent.ref}: its package is not on this host ({root});"
                f" register it on this host too: {REGISTER}"
            )
        if copy == last and not os.path.lexists(copy):  # not a copy retired as it was
            # found (then the link names another, or a new copy of the same files): none
            raise AgentError(f"agent {agent.ref}: its package folder {root} is missing")
        with reading(copy) as found:
            if found:
                files = folder_contents(root, agent.ref)
                if want is not None and package_digest(files) != want:
                    # no path: a stored error keeps the start of a long line and its
                    # end (store/errortext.py), and a deep home's path pushed the fixes
                    # into the part left out
                    raise AgentError(
                        f"agent {agent.ref}: its files on this host differ from the ones"
                        " this step was planned with: either this host holds another"
                        " registration (registering it on this host again fixes it:"
                        f" {REGISTER}) or it was registered again as the run began"
                        " ('swarm-engine ticket reopen' runs the ticket with the new files)"
                    )
                return files
        last = copy
    raise AgentError(
        f"agent {agent.ref}: its package was replaced {READ_TRIES} times while the step"
        " read it (agent register --force in a loop?)"
    )


def folder_contents(root: str, ref: str) -> list[tuple[str, bool, bytes]]:
    """Each file of the package folder `root` of agent `ref`: relative path, executable,
    bytes. Only regular files are read, each opened without following a symlink and
    without blocking; symlinks and `SKIP_NAMES` folders are left out; a device, FIFO or
    socket, over `MAX_PACKAGE_FILES` files or over `MAX_PACKAGE_BYTES` bytes in all is an
    `AgentError`. An error listing or reading is raised (`OSError`). Blocking: run it in a
    worker thread (the caller holds the folder against removal, or owns it)."""
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise AgentError(f"agent {ref}: its package folder {root} is missing") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AgentError(f"agent {ref}: its package folder {root} is a symlink") from exc
        raise

    def fail(exc: OSError) -> None:
        raise exc

    out: list[tuple[str, bool, bytes]] = []
    total = 0
    try:
        walk = os.fwalk(".", dir_fd=root_fd, follow_symlinks=False, onerror=fail)
        for folder, dirs, names, dir_fd in walk:
            dirs[:] = [d for d in dirs if d not in SKIP_NAMES]
            for name in names:
                rel = os.path.normpath(os.path.join(folder, name))
                mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    continue
                if not stat.S_ISREG(mode):
                    raise AgentError(
                        f"agent {ref}: package file {rel[:200]!r} is not a regular file "
                        "(a device, FIFO or socket); a package holds regular files only"
                    )
                if len(out) >= MAX_PACKAGE_FILES:
                    raise AgentError(
                        f"agent {ref}: its package has over {MAX_PACKAGE_FILES} files (the limit)"
                    )
                data = _read_regular(name, dir_fd, MAX_PACKAGE_BYTES - total)
                if data is None:
                    raise AgentError(
                        f"agent {ref}: package file {rel[:200]!r} is not a regular file"
                    )
                total += len(data)
                if total > MAX_PACKAGE_BYTES:
                    raise AgentError(
                        f"agent {ref}: its package is over "
                        f"{MAX_PACKAGE_BYTES // (1024 * 1024)} MiB (the limit)"
                    )
                out.append((rel, bool(mode & stat.S_IXUSR), data))
    finally:
        os.close(root_fd)
    return out


def _read_regular(name: str, dir_fd: int, limit: int) -> bytes | None:
    """At most `limit + 1` bytes of the regular file `name` in `dir_fd`, opened without
    following a symlink or blocking; None if it is not a regular file when opened."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1024 * 1024))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def tail(text: bytes | str, lines: int = 5, limit: int = 500) -> str:
    """The end of a command's output for a step's one-line error: its last `lines`
    non-blank lines, each stripped, joined with ` / ` (as `ticket show` and every
    `error:` line join lines), at most `limit` characters (the end kept, `…` where cut).
    Only the output's last `8 * limit` characters are looked at, whatever its size."""
    end = text[-8 * limit :]
    s = end.decode(errors="replace") if isinstance(end, bytes) else end
    out = " / ".join([line.strip() for line in s.splitlines() if line.strip()][-lines:])
    return out if len(out) <= limit else "…" + out[len(out) - limit + 1 :]

"""Claude Code on the host: one folder per release, installed once from the npm registry.

`<cache_dir>/<version>` holds `npm install --ignore-scripts @anthropic-ai/claude-code@<version>`
(the package's install script is not run: the engine runs nothing of it on the host). The
program is the native binary of the platform package npm picks
(`node_modules/@anthropic-ai/claude-code-<platform>/claude`); it needs no Node.js to run.
A release is installed into a temporary folder, checked (`claude --version`), then renamed
into place, under a lock, so engines on one host never download it twice or see half of it;
a folder that is there is never downloaded again. npm dies with the engine
(`PR_SET_PDEATHSIG`), and the temporary folder of an engine that died while installing
(`.<version>.<pid>.tmp`, the pid gone) is deleted by the next install.

    python -m swarm_engine.agents.claude_code.install [--version V] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from swarm_engine.agents.claude_code.settings import DEFAULT_VERSION, default_cache_dir
from swarm_engine.errors import AgentError
from swarm_engine.vm.proctree import die_with_parent, stale_tmp

PACKAGE = "@anthropic-ai/claude-code"
BINARY = "claude"
INSTALL_TIMEOUT = 900.0

Say = Callable[[str], None]


def installed(cache_dir: Path, version: str) -> Path | None:
    """The folder holding the release's `claude` binary, or None if it is not installed."""
    scope = cache_dir / version / "node_modules" / "@anthropic-ai"
    try:
        candidates = sorted(scope.glob("claude-code-*"))
    except OSError:
        return None
    for folder in candidates:
        binary = folder / BINARY
        if binary.is_file() and os.access(binary, os.X_OK):
            return folder
    return None


def check_installable(
    cache_dir: Path, version: str, *, npm: str = "npm", allow: bool = True
) -> None:
    """Raise `AgentError` unless a missing release could be installed now."""
    if not allow:
        raise AgentError(
            f"Claude Code {version} is not installed in {cache_dir}: run `python -m "
            f"swarm_engine.agents.claude_code.install --version {version}` or set "
            "install = true under [agents.claude-code]"
        )
    if shutil.which(npm) is None:
        raise AgentError(
            f"Claude Code {version} is not installed in {cache_dir} and npm ({npm}) is not "
            "found: install npm (apt-get install npm) or install Claude Code there yourself"
        )


def ensure(
    cache_dir: Path, version: str, *, npm: str = "npm", allow: bool = True, say: Say | None = None
) -> Path:
    """The installed release's folder; installs it first when missing and `allow`.
    Raises `AgentError` (one line) when it is missing and cannot be installed."""
    found = installed(cache_dir, version)
    if found is not None:
        return found
    check_installable(cache_dir, version, npm=npm, allow=allow)
    exe = shutil.which(npm) or npm
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AgentError(f"cannot create {cache_dir}: {exc.strerror}") from exc
    with _locked(cache_dir / f".{version}.lock"):
        found = installed(cache_dir, version)  # another engine may have done it meanwhile
        if found is not None:
            return found
        sweep(cache_dir)
        if say is not None:
            say(f"installing Claude Code {version} from the npm registry into {cache_dir}")
        _install(exe, cache_dir, version)
    found = installed(cache_dir, version)
    if found is None:  # pragma: no cover - _install checked it
        raise AgentError(f"Claude Code {version}: no binary after installing")
    return found


def sweep(cache_dir: Path) -> int:
    """Delete temporary folders of installs whose engine died (`.<version>.<pid>.tmp`)."""
    removed = 0
    with contextlib.suppress(OSError):
        for entry in cache_dir.glob(".*.tmp"):
            if stale_tmp(entry):
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
    return removed


def _install(npm: str, cache_dir: Path, version: str) -> None:
    tmp = cache_dir / f".{version}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o755)
    try:
        argv = [npm, "install", "--prefix", str(tmp), "--ignore-scripts", "--no-audit",
                "--no-fund", "--no-save", "--loglevel=error", f"{PACKAGE}@{version}"]  # fmt: skip
        try:
            done = subprocess.run(
                argv, capture_output=True, timeout=INSTALL_TIMEOUT, check=False,
                stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AgentError(f"npm install {PACKAGE}@{version} failed: {exc}") from exc
        if done.returncode != 0:
            why = done.stderr.decode(errors="replace").strip().splitlines()
            raise AgentError(
                f"npm install {PACKAGE}@{version} exited with {done.returncode}: "
                f"{why[-1] if why else 'no message'}"
            )
        staged = tmp / "node_modules" / "@anthropic-ai"
        binaries = [
            p / BINARY for p in sorted(staged.glob("claude-code-*")) if (p / BINARY).is_file()
        ]
        if not binaries:
            raise AgentError(
                f"npm installed {PACKAGE}@{version} but no native binary for this platform "
                f"(looked in {staged}/claude-code-*/{BINARY})"
            )
        _readable(tmp)  # a root engine's sandboxes run as their own uid: they must read it
        _check_version(binaries[0], version)
        target = cache_dir / version
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_version(binary: Path, version: str) -> None:
    try:
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, timeout=60, check=False,
            stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin", "HOME": str(binary.parent)},
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AgentError(f"the installed Claude Code does not run: {exc}") from exc
    if version not in done.stdout.decode(errors="replace"):
        raise AgentError(
            f"the installed Claude Code says {done.stdout.decode(errors='replace').strip()!r}, "
            f"not {version}"
        )


def _readable(root: Path) -> None:
    """Folders and files readable (and programs runnable) by every user, writable by none
    but the owner."""
    for folder, dirs, files in os.walk(root):
        os.chmod(folder, 0o755)
        for name in files:
            path = Path(folder) / name
            if path.is_symlink():
                continue
            mode = path.stat().st_mode
            os.chmod(path, 0o755 if mode & stat.S_IXUSR else 0o644)
        dirs[:] = [d for d in dirs if not (Path(folder) / d).is_symlink()]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m swarm_engine.agents.claude_code.install",
        description="Install a Claude Code release for the claude-code agent kind (once).",
    )
    parser.add_argument("--version", default=DEFAULT_VERSION)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--npm", default="npm")
    args = parser.parse_args(argv)
    cache = args.cache_dir or default_cache_dir()
    try:
        folder = ensure(cache, args.version, npm=args.npm, say=lambda t: print(t, file=sys.stderr))
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(folder / BINARY)
    return 0


if __name__ == "__main__":
    sys.exit(main())

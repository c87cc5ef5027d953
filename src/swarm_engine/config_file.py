"""Finding the home and its config file, and reading that file: only a regular file, of
bounded size, as UTF-8 text.

Only a path where nothing is (not even a dangling link) counts as a missing file: a
dangling link, a folder or a FIFO at `<home>/config.toml` is refused, never taken for
"no config file" (the engine would run on default limits). A FIFO is opened without
blocking, so it does not hang the command. A file over `MAX_CONFIG_BYTES` is refused
before it is read (a config file is a few lines; `stop` must not read 300 MB first).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from swarm_engine.errors import ConfigError

MAX_CONFIG_BYTES = 1024 * 1024
"""The largest config file read (1 MiB): a bigger one is refused before it is read."""


def read_config(path: Path, named: str | None) -> str | None:
    """The text of the config file at `path`; None when nothing is there and the file was
    not named (`named` None: `<home>/config.toml`; else `""` for --config or
    `" (SWARM_CONFIG)"`, said after the path). `ConfigError` for a named file that does
    not exist, for anything there that is not a regular file, for a file over
    `MAX_CONFIG_BYTES` and for one that is not UTF-8 text."""
    said = f"config file {path}{named or ''}"
    if not os.path.lexists(path):
        if named is not None:  # named, so meant: a typo is not a default
            raise ConfigError(f"{said} does not exist")
        return None
    not_a_file = ConfigError(f"{said} is not a file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, IsADirectoryError):  # a dangling link, a folder
        raise not_a_file from None
    except OSError as exc:
        raise ConfigError(f"{said} cannot be read: {exc.strerror}") from exc
    too_big = ConfigError(f"{said} is over {MAX_CONFIG_BYTES} bytes (1 MiB): not read")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # a folder, a FIFO, a device...
            raise not_a_file
        if info.st_size > MAX_CONFIG_BYTES:
            raise too_big
        data = b""
        while len(data) <= MAX_CONFIG_BYTES:  # at most one byte past the bound
            chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise ConfigError(f"{said} cannot be read: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise too_big  # it grew since
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{said} cannot be read as UTF-8 text: {exc}") from exc


def default_home() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("swarm-engine", appauthor=False))


def locate_config(
    config_file: Path | None, flags: Mapping[str, Any]
) -> tuple[Path, Path, str | None]:
    """The home (`home_of`), the config file's path and its text (`read_config`).
    `ConfigError` for an empty `SWARM_HOME` (the default home would be another store) and
    for a home that is there but is no folder."""
    home = home_of(flags)
    from_env = config_file is None and bool(os.environ.get("SWARM_CONFIG"))
    path = config_file or (Path(os.environ["SWARM_CONFIG"]) if from_env else home / "config.toml")
    named = " (SWARM_CONFIG)" if from_env else "" if config_file is not None else None
    return home, path, read_config(path, named)


def home_of(flags: Mapping[str, Any]) -> Path:
    """The home: `--home`, else `SWARM_HOME`, else the default; refused (one line naming
    where it came from) when `SWARM_HOME` is empty or the home is a file (or a FIFO...)."""
    env = os.environ.get("SWARM_HOME")
    if flags.get("home"):
        home, source = Path(flags["home"]), "--home"
    elif env is not None:
        if not env.strip():
            raise ConfigError(
                "setting home: is empty; unset it for the default, or give a value (in SWARM_HOME)"
            )
        home, source = Path(env), "SWARM_HOME"
    else:
        home, source = default_home(), "the default"
    if os.path.exists(home) and not os.path.isdir(home):
        raise ConfigError(f"setting home: {home} is not a folder (in {source})")
    return home

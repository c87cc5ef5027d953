"""The `anthropic` Python SDK as one tarball, for code that runs inside a sandbox.

A sandbox sees the host's read-only /usr (so /usr/bin/python3) but not this test
environment's packages. `sdk_tarball()` packs the installed `anthropic` distribution and
everything it requires (their files as their RECORDs list them, bytecode left out) into one
`.tar.gz`, once per test session; a step unpacks it into /tmp and sets PYTHONPATH:

    mkdir -p /tmp/sdk && tar -xzf sdk.tar.gz -C /tmp/sdk && PYTHONPATH=/tmp/sdk python3 x.py

The sandbox's /usr/bin/python3 must be the same minor version as this Python (compiled
modules such as pydantic_core are built for it); `usable()` says whether it is.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

UNPACK = "mkdir -p /tmp/sdk && tar -xzf sdk.tar.gz -C /tmp/sdk"
RUN = f"{UNPACK} && PYTHONPATH=/tmp/sdk PYTHONDONTWRITEBYTECODE=1 exec python3"


def usable() -> str | None:
    """Why the bundle cannot run in a sandbox here, or None."""
    try:
        done = subprocess.run(
            ["/usr/bin/python3", "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except OSError as exc:
        return f"no /usr/bin/python3: {exc}"
    if done.stdout.strip() != str(tuple(sys.version_info[:2])):
        return f"/usr/bin/python3 is {done.stdout.strip()}, this is {sys.version_info[:2]}"
    return None


def _closure(root: str) -> list[metadata.Distribution]:
    seen: dict[str, metadata.Distribution] = {}
    todo = [root]
    while todo:
        name = re.split(r"[\s<>=!~;\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        for req in dist.requires or []:
            if "extra ==" not in req:
                todo.append(req)
    return list(seen.values())


@functools.cache
def sdk_tarball() -> Path:
    out = Path(tempfile.mkdtemp(prefix="sdk-bundle-")) / "sdk.tar.gz"
    with tarfile.open(out, "w:gz", compresslevel=1) as tar:
        for dist in _closure("anthropic"):
            for file in dist.files or []:
                if "__pycache__" in file.parts or file.suffix == ".pyc" or file.parts[0] == "..":
                    continue
                path = Path(str(dist.locate_file(file)))
                if path.is_file():
                    tar.add(path, arcname=str(file))
    return out

"""Guest image copies for the QEMU suites: a test that edits an image's manifest works on
its own copy (the image's files linked, its manifest written anew), never on the shared
images folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from swarm_engine.vm.qemu.config import default_image
from swarm_engine.vm.qemu.image import load_image


def linked_image(images: Path, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A copy of the default image under `tmp_path/images`: its folder and its manifest
    (written to the copy; change it and write it again with `write_manifest`)."""
    source = load_image(images, default_image())
    folder = tmp_path / "images" / source.name
    folder.mkdir(parents=True)
    for item in source.path.iterdir():
        if item.name != "manifest.json":
            (folder / item.name).symlink_to(item)
    manifest = dict(source.manifest)
    write_manifest(folder, manifest)
    return folder, manifest


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest))

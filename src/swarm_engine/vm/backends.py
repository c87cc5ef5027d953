"""Backends by name. Each entry is imported lazily so optional parts load only when used."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from swarm_engine.errors import ConfigError
from swarm_engine.vm.base import VMBackend
from swarm_engine.vm.options import as_mapping

BACKENDS: dict[str, str] = {
    "process": "swarm_engine.vm.process:create",
    "qemu": "swarm_engine.vm.qemu.backend:create",
}


def create_backend(
    name: str, home: Path, options: BaseModel | Mapping[str, Any] | None = None
) -> VMBackend:
    """Build the backend called `name`; `options` are its config: the model the settings
    validated (vm/options.py), or a mapping the backend validates."""
    target = BACKENDS.get(name)
    if target is None:
        raise ConfigError(f"unknown VM backend {name!r} (known: {', '.join(sorted(BACKENDS))})")
    module_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    backend: VMBackend = factory(home, as_mapping(options))
    return backend

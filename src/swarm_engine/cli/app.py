"""What every command shares: settings in `ctx.obj`, and opening the two databases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from swarm_engine.config import Settings
from swarm_engine.errors import UsageError
from swarm_engine.registry import Registry
from swarm_engine.store import Store, open_store

pass_settings = click.make_pass_decorator(Settings)


def ensure_home(settings: Settings) -> None:
    """Create the home folder and both databases (whatever command runs first)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    open_store(settings.tickets_path).close()
    Registry(settings.registry_path, settings.packages_dir).close()


@contextmanager
def store_of(settings: Settings) -> Iterator[Store]:
    store = open_store(settings.tickets_path, busy_timeout=settings.busy_timeout)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def registry_of(settings: Settings) -> Iterator[Registry]:
    registry = Registry(settings.registry_path, settings.packages_dir)
    try:
        yield registry
    finally:
        registry.close()


def parse_inputs(pairs: tuple[str, ...], inputs_json: str | None) -> dict[str, Any]:
    """--inputs-json '{...}' then --input KEY=VALUE pairs (VALUE parsed as JSON if it can be)."""
    inputs: dict[str, Any] = {}
    if inputs_json is not None:
        try:
            loaded = json.loads(inputs_json)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"--inputs-json is not valid JSON: {exc.msg} (column {exc.colno})"
            ) from exc
        if not isinstance(loaded, dict):
            raise UsageError("--inputs-json must be a JSON object")
        inputs.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--input {pair!r} must look like KEY=VALUE")
        try:
            inputs[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            inputs[key.strip()] = value
    return inputs

"""Backend options: one validated model per backend, as a union told apart by `backend`.

`[backend_options.<name>]` in config.toml (or `SWARM_BACKEND_OPTIONS`) is checked when the
settings load, against the model of the backend called `<name>`: an unknown backend, an
unknown option or a bad value is a `ConfigError` at start-up, not when a step first
needs that backend. Each model has `extra="forbid"` and `backend: Literal[<name>]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from swarm_engine.vm.process_config import ProcessConfig
from swarm_engine.vm.qemu.config import QemuOptions


class ProcessOptions(ProcessConfig):
    """The process backend's options (`ProcessConfig`, `extra="forbid"`) with their tag."""

    backend: Literal["process"] = "process"


BackendOptions = Annotated[ProcessOptions | QemuOptions, Field(discriminator="backend")]
"""The options of any one backend."""


def tag_by_name(value: Any) -> Any:
    """`{name: {...}}` -> `{name: {"backend": name, ...}}`: the table's name is the tag
    (a `backend` key inside it, if given, must agree: validation then says where)."""
    if not isinstance(value, Mapping):
        return value
    tagged: dict[Any, Any] = {}
    for name, options in value.items():
        if isinstance(options, Mapping) and "backend" not in options:
            options = {"backend": name, **options}
        tagged[name] = options
    return tagged


def check_names(options: Mapping[str, BaseModel]) -> None:
    """Each table's name must be the backend its options are for."""
    for name, model in options.items():
        tag = getattr(model, "backend", None)
        if tag != name:
            raise ValueError(f"backend_options.{name} holds options of backend {tag!r}")


def as_mapping(options: BaseModel | Mapping[str, Any] | None) -> dict[str, Any]:
    """What a backend's `create(home, options)` takes: the fields that were set."""
    if options is None:
        return {}
    if isinstance(options, BaseModel):
        return options.model_dump(exclude={"backend"}, exclude_unset=True)
    return dict(options)

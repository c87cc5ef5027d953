"""Reading agent.yaml and workflow.yaml into validated specs, with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from swarm_engine.errors import ConfigError
from swarm_engine.models import AgentSpec, WorkflowSpec, first_error

M = TypeVar("M", bound=BaseModel)


def _definition_file(path: Path, filename: str) -> Path:
    if path.is_dir():
        path = path / filename
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    return path


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def validate(model: type[M], data: dict[str, Any], source: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {first_error(exc)}") from exc


def load_agent(path: Path) -> AgentSpec:
    file = _definition_file(path, "agent.yaml")
    data = read_yaml(file)
    data.pop("package_path", None)
    if "version" in data:
        data["version"] = str(data["version"])
    spec = validate(AgentSpec, data, str(file))
    if spec.is_template:
        raise ConfigError(f"{file}: names starting with '_template:' are reserved")
    return spec.model_copy(update={"package_path": str(file.parent.resolve())})


def load_workflow(path: Path) -> WorkflowSpec:
    file = _definition_file(path, "workflow.yaml")
    data = read_yaml(file)
    if "version" in data:
        data["version"] = str(data["version"])
    return validate(WorkflowSpec, data, str(file))

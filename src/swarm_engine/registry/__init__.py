"""Agent and workflow definitions: loading, validation and the registry database."""

from swarm_engine.registry.catalog import Registry
from swarm_engine.registry.loader import load_agent, load_workflow

__all__ = ["Registry", "load_agent", "load_workflow"]

"""Agent and workflow definitions: loading, validation and the registry database."""

from swarm_engine.registry.loader import load_agent, load_workflow
from swarm_engine.registry.store import Registry

__all__ = ["Registry", "load_agent", "load_workflow"]

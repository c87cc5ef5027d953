"""Agent and workflow definitions: loading (`registry.loader`), validation and the registry
(`registry.catalog.Registry`). The YAML loader is imported only by what loads files."""

from swarm_engine.registry.catalog import Registry

__all__ = ["Registry"]

"""The `claude` agent kind (see docs/claude.md). `DEFAULT_CONFIG` seeds the registry."""

from swarm_engine.agents.claude.settings import DEFAULT_CONFIG, ClaudeConfig, parse_config

__all__ = ["DEFAULT_CONFIG", "ClaudeConfig", "parse_config"]

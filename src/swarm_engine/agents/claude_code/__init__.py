"""The `claude-code` agent kind: Claude Code, headless, in the step's VM (docs/agents.md)."""

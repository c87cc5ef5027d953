"""swarm-engine: tickets in, isolated agent runs out."""

__version__ = "0.1.0"
"""The package's version, as in pyproject.toml (a test checks they agree): `--version`
prints it without reading the installed metadata (importlib.metadata costs 15-20 ms)."""

"""Decoded registry specs are kept for reuse only while small: the engine reads a ticket's
definition again for each ticket, and kept every spec text it decoded, up to 256 of them
of up to 8 MiB each (30 workflows of 5 MB held about 300 MB for as long as it ran, a
tester's finding). A text over `CACHED_SPEC_CHARS` is decoded each time it is read, and
the same spec comes out either way."""

from __future__ import annotations

import json

from swarm_engine.models import WorkflowSpec
from swarm_engine.registry import catalog
from swarm_engine.registry.catalog import CACHED_SPEC_CHARS, decode_definition


def row(name: str, description: str) -> dict[str, object]:
    spec = {
        "name": name,
        "version": "1.0.0",
        "description": description,
        "steps": [{"id": "s", "agent": "echo"}],
    }
    return {"name": name, "version": "1.0.0", "spec": json.dumps(spec)}


def test_a_big_spec_is_decoded_each_time_and_never_kept() -> None:
    cached = catalog._decode_cached
    big = row("big", "b" * (CACHED_SPEC_CHARS + 1))
    small = row("small", "a small one")
    before = cached.cache_info().currsize
    first = decode_definition(WorkflowSpec, "workflow", big)
    again = decode_definition(WorkflowSpec, "workflow", big)
    assert first == again and first is not again  # (decoded twice: nothing kept)
    assert cached.cache_info().currsize == before
    kept = decode_definition(WorkflowSpec, "workflow", small)
    assert decode_definition(WorkflowSpec, "workflow", small) is kept
    assert cached.cache_info().currsize == before + 1

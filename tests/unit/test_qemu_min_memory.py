"""Registration refuses a qemu agent whose memory no guest kernel of the image boots in
(it used to pass, then time out three times, 60 s each, with no reason)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from swarm_engine.models import AgentSpec
from swarm_engine.registry.plain import plain_agent


def test_registration_refuses_a_qemu_agent_too_small_to_boot() -> None:
    base = {"name": "small", "command": ["true"]}
    with pytest.raises(ValidationError, match="memory_mb 16 is below 128"):
        AgentSpec.model_validate({**base, "memory_mb": 16, "vm": {"backend": "qemu"}})
    with pytest.raises(ValidationError, match="memory_mb 64 is below 128"):
        AgentSpec.model_validate({**base, "vm": {"backend": "qemu", "memory_mb": 64}})
    assert AgentSpec.model_validate({**base, "memory_mb": 128, "vm": {"backend": "qemu"}})
    assert AgentSpec.model_validate({**base, "memory_mb": 16}).memory_mb == 16  # not qemu


def test_the_quick_check_leaves_a_too_small_qemu_agent_to_the_model() -> None:
    """A row written past registration: `ticket create`'s quick check must not pass what
    the model refuses (it says None: the model decides, with its one line)."""
    small = '{"name": "small", "command": ["true"], "memory_mb": 16, "vm": {"backend": "qemu"}}'
    assert plain_agent(small) is None
    inner = '{"name": "small", "command": ["true"], "vm": {"backend": "qemu", "memory_mb": 64}}'
    assert plain_agent(inner) is None
    fine = '{"name": "small", "command": ["true"], "vm": {"backend": "qemu"}}'
    assert plain_agent(fine) == ("small", "1.0.0", "shell")
    assert plain_agent('{"name": "small", "command": ["true"], "memory_mb": 16}') is not None

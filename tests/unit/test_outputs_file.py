"""`read_outputs_file`: $SWARM_OUTPUTS up to `MAX_OUTPUTS_BYTES` is read, one byte more
fails the step before it is parsed."""

from __future__ import annotations

import pytest

from swarm_engine.agents.files import MAX_OUTPUTS_BYTES, read_outputs_file
from swarm_engine.errors import AgentError


class OneFile:
    """The one method of a VM that `read_outputs_file` calls."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def get_file(self, path: str) -> bytes:
        return self.data


def outputs_of(size: int) -> bytes:
    return b'{"x": "' + b"y" * (size - 9) + b'"}'


async def test_an_outputs_file_at_the_limit_is_read() -> None:
    got = await read_outputs_file(OneFile(outputs_of(MAX_OUTPUTS_BYTES)))  # type: ignore[arg-type]
    assert got is not None and len(got["x"]) == MAX_OUTPUTS_BYTES - 9


async def test_one_byte_over_the_limit_fails_with_the_size_and_the_limit() -> None:
    with pytest.raises(AgentError) as caught:
        await read_outputs_file(OneFile(outputs_of(MAX_OUTPUTS_BYTES + 1)))  # type: ignore[arg-type]
    assert str(caught.value) == "$SWARM_OUTPUTS is 4,194,305 bytes, over its limit of 4 MiB"

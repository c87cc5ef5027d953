"""`emit_yaml` (`agent show`, `workflow show`): a definition as YAML that reads back to
it, with no control, format or invisible character written raw, whichever emitter."""

from __future__ import annotations

import pytest
import yaml

from swarm_engine.cli.output import emit_yaml
from swarm_engine.cli.text import CONTROL_BUT_LINES, FORMAT_CHARS, IGNORABLE_CHARS


def test_every_hidden_character_is_escaped_and_the_yaml_reads_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    hidden = "".join(
        chr(code)
        for start, end in FORMAT_CHARS + IGNORABLE_CHARS
        for code in range(start, min(end, start + 40) + 1)
        if not 0xD800 <= code <= 0xDFFF  # (a lone surrogate cannot be written out)
    )
    data = {"description": "[bold]x[/bold] " + hidden, "long": "w" * 200_000, "n": 1}
    emit_yaml(data)
    out = capsys.readouterr().out
    assert CONTROL_BUT_LINES.search(out) is None and out.isascii()
    assert yaml.safe_load(out) == data

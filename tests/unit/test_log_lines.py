"""A step's log keeps each stream's bytes as they came, however its chunks fell, and
prefixes every line of stderr (`LogLines`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from swarm_engine.engine.loglines import LogLines

text = st.text(alphabet="ab \n\t\r\x1bé", max_size=40)


def logged(chunks: list[tuple[str, str]]) -> str:
    parts: list[str] = []
    lines = LogLines(parts.append)
    for stream, chunk in chunks:
        lines.feed(stream, chunk)
    lines.close()
    return "".join(parts)


@given(text, st.lists(st.integers(min_value=0, max_value=40), max_size=8))
def test_one_stream_is_kept_exactly_wherever_its_chunks_fall(out: str, cuts: list[int]) -> None:
    points = sorted({min(c, len(out)) for c in cuts})
    pieces = [out[a:b] for a, b in zip([0, *points], [*points, len(out)], strict=True)]
    expected = out if not out or out.endswith("\n") else out + "\n"
    assert logged([("stdout", p) for p in pieces]) == expected


@given(st.lists(st.tuples(st.sampled_from(["stdout", "stderr"]), text), max_size=10))
def test_every_stderr_line_is_prefixed_and_nothing_is_lost(chunks: list[tuple[str, str]]) -> None:
    log = logged(chunks)
    assert log == "" or log.endswith("\n")
    # each stream's own text comes back from the lines that carry it (a line cut by the
    # other stream is continued on a later line of the same stream)
    for stream, prefix in (("stdout", ""), ("stderr", "[stderr] ")):
        own = "".join(c for s, c in chunks if s == stream).replace("\n", "")
        mine = [ln for ln in log.split("\n") if (ln.startswith("[stderr] ") == bool(prefix))]
        assert "".join(ln[len(prefix) :] for ln in mine) == own


def test_lines_of_two_streams() -> None:
    assert logged([("stdout", "to"), ("stdout", "tal\nnext"), ("stderr", "e1\ne2\n"),
                   ("stdout", " line\n")]) == (
        "total\nnext\n[stderr] e1\n[stderr] e2\n line\n"
    )  # fmt: skip

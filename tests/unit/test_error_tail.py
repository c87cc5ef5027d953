"""A command's output as the end of a step's one-line error (`agents.files.tail`)."""

from __future__ import annotations

from swarm_engine.agents.files import tail


def test_lines_are_joined_on_one_line_blank_ones_dropped() -> None:
    said = b"File size limit exceeded\n\n\nswarm-engine: the workspace went over its limit\n"
    assert (
        tail(said) == "File size limit exceeded / swarm-engine: the workspace went over its limit"
    )


def test_only_the_last_lines_and_characters_are_kept() -> None:
    assert tail("\n".join(f"line {i}  " for i in range(100)), lines=3) == (
        "line 97 / line 98 / line 99"
    )
    long = tail("x" * 10_000 + "\nthe end", limit=50)
    assert len(long) == 50 and long.startswith("…") and long.endswith(" / the end")
    assert tail("  \n\n ") == "" and tail(b"") == ""


def test_a_huge_output_costs_no_more_than_its_end() -> None:
    assert tail(b"a\n" * 5_000_000 + b"done\n") == "a / a / a / a / done"

"""The two bounds on what a step prints: `BoundedOutput` (a command's captured stream) and
`StepLog` (the step's log file). Whatever arrives, in whatever chunks: the start and the
end are kept, a `[... N bytes cut ...]` line says exactly how much is missing, and the
size stays under the limit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from swarm_engine.engine.steplog import MAX_TAIL, StepLog
from swarm_engine.vm.output import SLACK, BoundedOutput

CUT = re.compile(rb"\n\[\.\.\. (\d+) bytes cut \.\.\.\]\n")


def stream(total: int) -> bytes:
    """`total` bytes that differ along the way: a cut in the wrong place shows."""
    digits = b"".join(b"%09d\n" % i for i in range(total // 10 + 1))
    return digits[:total]


def split(data: bytes) -> tuple[bytes, int, bytes]:
    found = CUT.search(data)
    assert found is not None, "no cut marker"
    return data[: found.start()], int(found.group(1)), data[found.end() :]


@pytest.mark.parametrize("chunk", [1, 7, 4096, 65536, 10**6])
def test_head_and_tail_are_the_streams_ends_and_the_count_is_exact(chunk: int) -> None:
    data = stream(1_000_003)
    out = BoundedOutput(keep=5000)
    for i in range(0, len(data), chunk):
        out.add(data[i : i + chunk])
    head, cut, tail = split(out.value())
    assert out.total == len(data)
    assert (head, tail) == (data[:5000], data[-5000:])
    assert cut == len(data) - 10000


def test_small_streams_are_whole() -> None:
    for size in (0, 1, 5000, 10000, 10000 + SLACK):
        out = BoundedOutput(keep=5000)
        out.add(stream(size))
        assert out.value() == stream(size) and out.total == size


def test_a_cut_value_is_always_shorter_than_the_stream() -> None:
    for size in range(10000 + SLACK + 1, 10000 + SLACK + 200):
        out = BoundedOutput(keep=5000)
        out.add(stream(size))
        assert len(out.value()) < size


def test_the_cut_moves_to_a_character_boundary() -> None:
    text = ("ab€" * 10000).encode()  # € is 3 bytes: most cut points fall inside one
    for keep in range(1000, 1006):
        out = BoundedOutput(keep=keep)
        out.add(text)
        head, cut, tail = split(out.value())
        head.decode(), tail.decode()  # strict: raises on a broken character
        assert len(head) + cut + len(tail) == len(text)


def test_the_step_log_keeps_its_start_live_and_its_end_after_a_marker(tmp_path: Path) -> None:
    path = tmp_path / "output.log"
    lines = [f"line {i:06d} ü\n" for i in range(200_000)]
    with StepLog(path, limit=64 * 1024) as log:
        for line in lines:
            log.write(line)
        log.flush()
        live = path.read_bytes()
        assert live.startswith(b"line 000000 \xc3\xbc\n") and b"cut" not in live
    data = path.read_bytes()
    whole = "".join(lines).encode()
    assert len(data) <= 64 * 1024
    head, cut, tail = split(data)
    assert whole.startswith(head) and whole.endswith(tail)
    assert tail.endswith(b"line 199999 \xc3\xbc\n")
    assert len(head) + cut + len(tail) == len(whole) == log.total
    data.decode()  # no broken character at either side of the cut


def test_a_step_log_under_the_limit_is_whole(tmp_path: Path) -> None:
    path = tmp_path / "output.log"
    with StepLog(path, limit=64 * 1024) as log:
        log.write("x" * 40_000)
        log.write("y" * 20_000)
    assert path.read_bytes() == b"x" * 40_000 + b"y" * 20_000


def test_the_step_log_tail_in_memory_is_bounded(tmp_path: Path) -> None:
    """A 10 MiB limit keeps 1 MiB of the end (not 5 MiB) in memory; the file is full."""
    path = tmp_path / "output.log"
    chunk = "z" * 65536
    with StepLog(path, limit=10 * 1024 * 1024) as log:
        for _ in range(400):  # 25 MiB
            log.write(chunk)
            assert log.buffered <= MAX_TAIL + len(chunk)
    size = path.stat().st_size
    assert 10 * 1024 * 1024 - 64 <= size <= 10 * 1024 * 1024


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        BoundedOutput(keep=0)
    with pytest.raises(ValueError):
        StepLog(Path("/nonexistent/x.log"), limit=100)

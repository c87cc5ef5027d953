"""A step log whose file is opened while its VM boots (`StepLog(opened=DEFERRED)`).

Whenever the file comes (before the first line, midway, after the step ended, or never),
the file and the live copy end up holding exactly what a log opened at once holds.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_engine.engine.steplog import DEFERRED, StepLog

LIMIT = 8192


def _written(path: Path, pieces: list[str], attach_at: int | None) -> tuple[bytes, bytes]:
    """(file, live copy) of a deferred log given its file after `attach_at` pieces (None:
    after it was closed)."""
    mirrored: list[bytes] = []
    log = StepLog(path, LIMIT, mirrored.append, DEFERRED)
    for i, piece in enumerate(pieces):
        if i == attach_at:
            log.attach(StepLog.open_log(path))
        log.write(piece)
    if attach_at is not None and attach_at >= len(pieces):
        log.attach(StepLog.open_log(path))
    log.close()
    if attach_at is None:
        assert log.deferred
        log.attach(StepLog.open_log(path))
    assert not log.deferred
    return path.read_bytes(), b"".join(mirrored)


@settings(max_examples=60, deadline=None)
@given(
    pieces=st.lists(st.text(min_size=0, max_size=3000), max_size=12),
    attach=st.one_of(st.none(), st.integers(min_value=0, max_value=13)),
)
def test_a_deferred_log_holds_what_a_log_opened_at_once_holds(
    tmp_path_factory: pytest.TempPathFactory, pieces: list[str], attach: int | None
) -> None:
    root = tmp_path_factory.mktemp("logs")
    at_once = root / "a" / "output.log"
    at_once.parent.mkdir()
    mirrored: list[bytes] = []
    with StepLog(at_once, LIMIT, mirrored.append) as log:
        for piece in pieces:
            log.write(piece)
    data, live = _written(root / "b" / "output.log", pieces, attach)
    assert data == at_once.read_bytes()
    assert live == b"".join(mirrored)
    assert len(data) <= LIMIT


def test_a_log_whose_folder_cannot_be_made_keeps_its_live_copy(tmp_path: Path) -> None:
    mirrored: list[bytes] = []
    log = StepLog(tmp_path / "output.log", LIMIT, mirrored.append, DEFERRED)
    log.write("first\n")
    log.attach(OSError(errno.ENOSPC, "No space left on device"))
    log.write("second\n")
    log.close()
    assert isinstance(log.failed, OSError)
    assert not (tmp_path / "output.log").exists()
    assert b"".join(mirrored) == b"first\nsecond\n"


def test_a_file_given_twice_is_closed(tmp_path: Path) -> None:
    log = StepLog(tmp_path / "output.log", LIMIT, None, DEFERRED)
    first = StepLog.open_log(tmp_path / "output.log")
    again = StepLog.open_log(tmp_path / "again.log")
    assert not isinstance(first, OSError) and not isinstance(again, OSError)
    log.attach(first)
    log.attach(again)
    assert again.closed and not first.closed
    log.close()
    assert first.closed


@settings(max_examples=60, deadline=None)
@given(
    pieces=st.lists(st.text(min_size=0, max_size=3000), max_size=12),
    park=st.integers(min_value=0, max_value=13),
    short=st.integers(min_value=0, max_value=4),
    attach=st.one_of(st.none(), st.integers(min_value=0, max_value=13)),
)
def test_a_log_parked_for_a_shortage_holds_what_a_log_opened_at_once_holds(
    tmp_path_factory: pytest.TempPathFactory,
    pieces: list[str],
    park: int,
    short: int,
    attach: int | None,
) -> None:
    """A step waiting out a shortage of descriptors gives its log's back (`park`), before
    or after the log got its file; its reopenings fail `short` times (the host still
    short); whenever it gets its file back (at a flush, or at close), the file and the
    live copy hold exactly what a log opened at once holds."""
    root = tmp_path_factory.mktemp("logs")
    at_once = root / "a" / "output.log"
    at_once.parent.mkdir()
    with StepLog(at_once, LIMIT) as log:
        for piece in pieces:
            log.write(piece)
    path = root / "b" / "output.log"
    mirrored: list[bytes] = []
    log = StepLog(path, LIMIT, mirrored.append, DEFERRED)
    refusals = [short]
    real_open = Path.open

    def opening(self: Path, *args: object, **kwargs: object) -> object:
        if self == path and refusals[0] > 0:
            refusals[0] -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "open", opening)
        for i, piece in enumerate(pieces):
            if i == attach:
                log.attach(StepLog.open_log(path))
            if i == park:
                log.park()
                assert log.parked
            log.write(piece)
            log.flush()
        if attach is None or attach >= len(pieces):
            log.attach(StepLog.open_log(path))
        if park >= len(pieces):
            log.park()
        refusals[0] = 0  # the shortage passed (else the file would say it stopped)
        log.close()
    assert not log.parked and log.failed is None
    assert path.read_bytes() == at_once.read_bytes()
    assert b"".join(mirrored) == path.read_bytes()


def test_a_parked_log_holds_no_descriptor_until_it_is_written_again(tmp_path: Path) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    log = StepLog(tmp_path / "output.log", LIMIT, None, DEFERRED)
    log.attach(StepLog.open_log(tmp_path / "output.log"))
    log.write("before\n")
    held = open_fds()
    log.park()
    assert open_fds() == held - 1
    log.write("during\n")  # held in memory
    assert open_fds() == held - 1
    log.flush()  # the step runs again: the file is back
    assert open_fds() == held and not log.parked
    log.close()
    assert (tmp_path / "output.log").read_text() == "before\nduring\n"

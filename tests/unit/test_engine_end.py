"""The end an engine leaves for `stop` (`cli/engine_end.py`): written as it exits, read
only for the process that wrote it, pruned once no `stop` read it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from swarm_engine.cli.engine_end import KEPT_SECONDS, end_path, read_end, recorded_end
from swarm_engine.errors import StoreError


def test_a_clean_end_and_an_error_are_read_back_with_their_codes(tmp_path: Path) -> None:
    began = time.time()
    with recorded_end(tmp_path) as last_line:
        last_line("engine stopped after running 2 ticket(s)")
    path = end_path(tmp_path, os.getpid())
    assert read_end(path, began) == (0, "engine stopped after running 2 ticket(s)")
    with pytest.raises(StoreError), recorded_end(tmp_path):
        raise StoreError("engine stopped after running 0 ticket(s) and aborting 2,\nleft")
    assert read_end(path, began) == (
        6,
        "error: engine stopped after running 0 ticket(s) and aborting 2, / left",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no partial file


def test_an_end_written_before_the_engine_started_is_another_process_s(tmp_path: Path) -> None:
    path = end_path(tmp_path, 4242)
    path.write_text("6\nerror: an old engine of a reused pid\n")
    old = time.time() - 60
    os.utime(path, (old, old))
    assert read_end(path, began=time.time()) is None
    assert read_end(path, began=None) == (6, "error: an old engine of a reused pid")
    path.write_text("not a code\n")
    assert read_end(path, began=None) is None


def test_ends_no_stop_read_are_pruned_once_old(tmp_path: Path) -> None:
    stale, fresh = end_path(tmp_path, 1), end_path(tmp_path, 2)
    for path in (stale, fresh):
        path.write_text("0\nengine stopped\n")
    old = time.time() - KEPT_SECONDS - 5
    os.utime(stale, (old, old))
    with recorded_end(tmp_path) as last_line:
        last_line("engine stopped after running 0 ticket(s)")
    assert not stale.exists() and fresh.exists()

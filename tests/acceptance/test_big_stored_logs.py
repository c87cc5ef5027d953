"""A step's stored log larger than what one text holds: `swarm-engine logs` prints all of it
chunk by chunk (its memory stays flat), the API's download keeps its first and last 8 MiB
with one line saying how many bytes were left out and how to get all of it, and a run
whose logs add up past 64 MiB leaves the later steps' logs out, saying so.

The rows are written as the engine's log shipping writes them: `LogStore.append` (the
fenced insert), in 32 KiB chunks, into a ticket, run and steps any SQLite client made.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.support.api import start_api
from tests.support.cli import env_for
from tests.support.stored_logs import failed_ticket

from swarm_engine.engine.logship import CHUNK_BYTES
from swarm_engine.service.logs import LOG_KEEP_BYTES, as_text
from swarm_engine.store import open_store

MiB = 1024 * 1024


FILLER = ("x" * 63 + "\n") * (CHUNK_BYTES // 64)


def chunk(step: int, n: int) -> str:
    """The n-th chunk of a step's log, `CHUNK_BYTES` long: a tagged line, then filler."""
    return (f"<step {step} chunk {n:05d}>\n" + FILLER)[:CHUNK_BYTES]


def write_run(home: Path, sizes: list[int]) -> None:
    """Ticket 100, its run 1 and one step per entry of `sizes` (ids 1...), each with that
    many bytes of stored log (in whole 32 KiB chunks) and an error."""
    conn = failed_ticket(home / "tickets.db", len(sizes))
    conn.commit()
    conn.close()
    store = open_store(home / "tickets.db")
    try:
        for sid, size in enumerate(sizes, 1):
            for n in range(size // CHUNK_BYTES):
                assert store.logs.append(sid, chunk(sid, n)) is not None
    finally:
        store.close()


def test_a_big_step_log_is_printed_whole_and_downloaded_bounded(home: Path) -> None:
    size = 2 * LOG_KEEP_BYTES + 4 * MiB  # 20 MiB, over what the download keeps
    write_run(home, [size])
    chunks = size // CHUNK_BYTES

    # the CLI prints every byte, holding one batch of chunks at a time
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm_engine", "logs", "100"],
        env=env_for(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    for n in (0, chunks // 2, chunks - 1):
        assert f"<step 1 chunk {n:05d}>\n" in out
    assert out.count("<step 1 chunk") == chunks and len(out) > size
    assert "error: step 1 failed" in out

    # the download: the first and the last 8 MiB, and a line saying what is left out
    api = start_api(home, token="t0ken-for-big-logs")
    try:
        got = api.get("/v1/tickets/100/logs")
    finally:
        api.stop()
    assert got.status_code == 200, got.text
    text = got.text
    assert text.startswith("=== run 1 · step s1 · attempt 1 · failed ===\n<step 1 chunk 00000>")
    assert f"<step 1 chunk {chunks - 1:05d}>\n" in text
    assert f"<step 1 chunk {chunks // 2:05d}>\n" not in text  # the middle is cut
    left_out = size - 2 * LOG_KEEP_BYTES
    assert (
        f"\n[... {left_out} bytes of this log left out here; all of it: swarm-engine logs 100"
        " --run 1 --step s1, or GET /v1/tickets/100/logs/stream?run=1&step=s1 ...]\n"
    ) in text
    assert text.endswith("error: step 1 failed\n")
    assert len(text.encode()) < 2 * LOG_KEEP_BYTES + 1024


def peak_of_logs(home: Path, ticket: int) -> tuple[int, int]:
    """`swarm-engine logs TICKET`: the bytes it printed and its peak RSS in bytes."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm_engine", "logs", str(ticket)],
        env=env_for(home), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    printed = 0
    with proc.stdout:
        while block := proc.stdout.read(1 << 20):
            printed += len(block)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0
    return printed, usage.ru_maxrss * 1024


def test_logs_prints_a_big_log_in_little_memory(home: Path) -> None:
    """`swarm-engine logs` over a 48 MiB stored log peaks at about the memory it takes
    over a log of one chunk (holding the log as one text took over three times its size)."""
    size = 48 * MiB
    write_run(home, [size])
    conn = sqlite3.connect(home / "tickets.db")
    with conn:  # ticket 101: the same run with a log of one chunk
        conn.execute(
            "INSERT INTO tickets (id, title, status, agent_id) VALUES (101, 't', 'failed', 'echo')"
        )
        conn.execute(
            "INSERT INTO workflow_runs (id, ticket_id, attempt, attempt_id, execution_mode,"
            " status) VALUES (2, 101, 1, 'a2', 'workflow', 'failed')"
        )
        conn.execute(
            "INSERT INTO step_executions (id, run_id, step_id, agent_name, agent_version,"
            " agent_kind, status) VALUES (50, 2, 'small', 'echo', '1', 'echo', 'failed')"
        )
        conn.execute(
            "INSERT INTO step_logs (step_execution_id, data) VALUES (50, ?)", (chunk(50, 0),)
        )
    conn.close()
    printed, peak = peak_of_logs(home, 100)
    assert printed > size
    small_printed, small_peak = peak_of_logs(home, 101)
    assert small_printed > CHUNK_BYTES
    assert peak - small_peak < size // 4, f"peak RSS {peak} bytes, {small_peak} for one chunk"


def test_a_run_whose_logs_add_up_past_the_cap_leaves_the_later_ones_out(home: Path) -> None:
    """With the caps made small (`keep`, `most`): each step's log is cut to its head and
    tail, and once the logs hold `most` bytes the later steps keep their header and error
    and say where their log is; the text stays bounded."""
    write_run(home, [256 * 1024, 256 * 1024, 256 * 1024, 256 * 1024])
    store = open_store(home / "tickets.db")
    try:
        run, text = as_text(store, 100, keep=64 * 1024, most=200 * 1024)
    finally:
        store.close()
    assert run["id"] == 1
    for sid in (1, 2, 3, 4):
        assert f"=== run 1 · step s{sid} · attempt 1 · failed ===\n" in text
        assert f"error: step {sid} failed\n" in text
    for sid in (1, 2):  # head and tail, the middle cut
        assert f"<step {sid} chunk 00000>" in text and f"<step {sid} chunk 00007>" in text
        assert f"<step {sid} chunk 00003>" not in text
        assert f"[... {128 * 1024} bytes of this log left out here; all of it:" in text
    assert "<step 3 chunk" not in text and "<step 4 chunk" not in text
    assert "[... this step's log is left out: the logs above hold" in text.split("step s3")[1]
    assert "all of it: swarm-engine logs 100 --run 1 --step s4, or GET " in text
    assert len(text.encode()) < 2 * (2 * 64 * 1024 + 512) + 4 * 1024

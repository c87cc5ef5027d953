"""What a write's SAVEPOINT costs on PostgreSQL (`store_scale.py --only savepoint`).

`PostgresDatabase._write` (`store/postgres.py`) runs a write that may draw an id inside a
store transaction under a SAVEPOINT, so that a wedged id sequence can be repaired and the
write run again (`store/pgsequences.py`). Two measurements, each on a fresh database of
one server, interleaved in rounds so that drift of the host falls on both sides alike:

1. Ticket lifecycles through the store API, in a child process, each the writes an
   engine makes for a one-step ticket in its transactions (`engine/writes.py`): create
   an `echo` ticket; `claim_next`; `start_run` + `add_step`; the VM's boot; its ready +
   `step_started`; a log chunk + the VM destroyed + `step_finished` + `finish_run`
   (done): ms per lifecycle, store writes (INSERT/UPDATE statements) per second. Once
   for this checkout's `src/` and once for each `--src PATH` (another checkout's `src/`,
   e.g. `git worktree add /tmp/base 5c16703~1` for the code before the repair), each
   child importing `swarm_engine` from its folder and migrating its database itself.
   A counting pass (one lifecycle, not timed) gives the round trips, writes and
   savepoints one lifecycle takes.
2. The raw statement sequence through the same driver (psycopg) in the same run: a
   transaction holding one `UPDATE tickets SET status` (its trigger writes an event row:
   it draws an id), bare; with `SAVEPOINT`/`RELEASE SAVEPOINT` around it, as
   `conn.transaction()` nested in a transaction sends them; and after a `SAVEPOINT` only
   (the commit releases it).

Run as a script, this module is the child: `python _lifecycles.py URL N [count]`.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
RAW_BLOCK = 100
"""Raw transactions timed one way before switching to the other."""


def run_lifecycles(url: str, n: int) -> dict[str, Any]:
    """N ticket lifecycles on the store at `url`, with the `swarm_engine` on sys.path."""
    import swarm_engine
    from swarm_engine.records import Usage
    from swarm_engine.store import open_store

    store = open_store(url)
    try:
        store.engines.register(
            "bench", kind="daemon", host="bench", pid=os.getpid(), max_vms=1, backend="process"
        )
        started = time.perf_counter()
        for i in range(n):  # the engine's writes, in its transactions (`engine/writes.py`)
            tid = store.tickets.create(title=f"life-{i}", agent_id="echo", inputs={"i": i})
            (ticket,) = store.tickets.claim_next(
                engine_id="bench", attempt_id=f"a{i}", lease_ttl=60, limit=1
            )
            assert ticket.id == tid, (ticket.id, tid)
            with store.transaction():
                run_id = store.runs.start_run(
                    ticket, engine_id="bench", workflow_name=None, workflow_version=None,
                    inputs={"i": i},
                )  # fmt: skip
                step = store.runs.add_step(
                    run_id, step_id="main", agent_name="echo", agent_version="1",
                    agent_kind="shell", inputs={"i": i},
                )  # fmt: skip
            ticket = store.tickets.get(tid)
            vm = f"vm-{i}"
            store.vms.record_boot(
                vm, backend="process", host="bench", engine_id="bench", owner_pid=1,
                memory_mb=512, vcpus=1,
            )  # fmt: skip
            with store.transaction():
                store.vms.record_ready(
                    vm, pid=1, workspace=None, socket_path=None, overlay_path=None,
                    isolation="none", busy_with=step,
                )  # fmt: skip
                store.runs.step_started(step, vm)
            with store.transaction():
                store.logs.append(step, f"line {i}\n")
                store.vms.record_destroyed(vm)
                store.runs.step_finished(
                    step, status="done", outputs={"o": i}, exit_code=0, error=None,
                    usage=Usage(),
                )  # fmt: skip
                store.runs.finish_run(run_id, ticket, status="done", outputs={"o": i})
        elapsed = time.perf_counter() - started
        done = store.tickets.counts().get("done", 0)
    finally:
        store.close()
    return {"n": n, "seconds": elapsed, "done": done,
            "imported": str(Path(swarm_engine.__file__).parent)}  # fmt: skip


def count_one(url: str) -> dict[str, int]:
    """The round trips, writes and savepoints of one lifecycle, from psycopg's calls
    counted in a pass apart from the timed ones: each `execute` is one round trip, each
    `transaction()` two (BEGIN and COMMIT, or SAVEPOINT and RELEASE when nested)."""
    import psycopg

    seen = {"round_trips": 0, "writes": 0, "savepoints": 0}
    execute, transaction = psycopg.Cursor.execute, psycopg.Connection.transaction
    savepoint = re.compile(r"(?:^|;\s*)SAVEPOINT\b", re.IGNORECASE)

    def counted_execute(self: Any, query: Any, *args: Any, **kw: Any) -> Any:
        text = query.decode() if isinstance(query, bytes) else str(query)
        seen["round_trips"] += 1
        seen["writes"] += any(w in text.upper() for w in ("INSERT ", "UPDATE "))
        seen["savepoints"] += savepoint.search(text) is not None
        return execute(self, query, *args, **kw)

    def counted_transaction(self: Any, *args: Any, **kw: Any) -> Any:
        seen["round_trips"] += 2
        if self.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            seen["savepoints"] += 1
        return transaction(self, *args, **kw)

    psycopg.Cursor.execute = counted_execute  # type: ignore[method-assign]
    psycopg.Connection.transaction = counted_transaction  # type: ignore[method-assign]
    run_lifecycles(url, 1)
    return seen


def child(src: str | None, url: str, n: int, *, count: bool = False) -> dict[str, Any]:
    """This module run as a child process, importing `swarm_engine` from `src` (None:
    as installed)."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    argv = [sys.executable, str(HERE), url, str(n), *(["count"] if count else [])]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"lifecycle child ({src or 'this checkout'}) failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def raw_savepoint(url: str, n: int) -> dict[str, float]:
    """µs per transaction of one status UPDATE, n of each way, taking turns in blocks of
    `RAW_BLOCK`: bare; under `conn.transaction()` nested (SAVEPOINT, UPDATE, RELEASE: the
    store before this measurement); after a `SAVEPOINT` the commit releases (the store
    now, `PostgresDatabase._savepoint`)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        (tid,) = conn.execute(
            "INSERT INTO tickets (title, status, agent_id) VALUES ('raw', 'open', 'echo')"
            " RETURNING id"
        ).fetchone() or (0,)
        flip = ["running", "open"]
        times: dict[str, list[float]] = {w: [] for w in WAYS}
        update = "UPDATE tickets SET status = %(s)s WHERE id = %(id)s"
        for block in range(len(WAYS) * max(1, n // RAW_BLOCK)):
            way = WAYS[block % len(WAYS)]
            for i in range(RAW_BLOCK):
                args = {"s": flip[i % 2], "id": tid}
                started = time.perf_counter()
                with conn.transaction():
                    if way == "nested":
                        with conn.transaction():
                            conn.execute(update, args)
                    else:
                        if way == "savepoint":
                            conn.execute(b"SAVEPOINT swarm_write")
                        conn.execute(update, args)
                times[way].append(time.perf_counter() - started)
    out = {f"{w}_us": statistics.median(t) * 1e6 for w, t in times.items()}
    return {"n": len(times["bare"]), **out}


WAYS = ("bare", "nested", "savepoint")


if __name__ == "__main__":
    URL, N = sys.argv[1], int(sys.argv[2])
    out = count_one(URL) if sys.argv[3:] == ["count"] else run_lifecycles(URL, N)
    print(json.dumps(out))

"""Peers: one sandboxed job, 300 times on 4 slots, run bare, by huey and by swarm-engine.

The job is what the process backend runs for the echo agent, with `sh -c 'echo hello'`
as the command: the argv comes from the backend's own code (`ProcessBackend.boot` for the
echo agent's VM spec, then `ProcessVM._argv`), so it is bubblewrap with the same
namespaces, uid, mounts and /etc files, under the same `prlimit` limits, with the same
environment (`ProcessVM._guest_env`, handed to bubblewrap in a memory file; the host
programs get `sandbox_env.host_env`), in its own session, with stdout and stderr piped,
exactly as the engine starts a step's command (as root, also the same `unshare` +
`setpriv` to the VM's own host uid). Only the fds of the command's environment, passwd and
group change per job (memory files made fresh each time, as the engine does). Bare and
huey run it in one VM folder.

* bare: a `ThreadPoolExecutor(SLOTS)` calling `subprocess.run` of the job N times.
* huey: `SqliteHuey` (huey's defaults: WAL, results stored), N tasks enqueued first, then
  a consumer process with SLOTS thread workers (`create_consumer(workers=SLOTS,
  worker_type="thread")`); each task runs the job and returns its start and end time.
  huey lives in its own venv, `~/.cache/swarm-engine-bench/huey-<version>/` (made on first
  use with pip), never in the project's.
* swarm: a throw-away home, N open tickets for the built-in `echo` agent inserted first,
  then `swarm-engine start --foreground --until-idle --max-vms SLOTS`. Its echo step writes
  the inputs file and runs `cat` on it in a fresh VM per ticket (same sandbox, `cat`
  instead of `sh -c 'echo hello'`).

Rate = N / (process start -> last job done): bare from the executor's creation, huey and
swarm from just before their process is started (so their start-up counts), to the last
task's end (huey) or `tickets.completed_at` (swarm). Also shown: the steady span, first job
started (or ticket claimed) -> last job done. Runs are interleaved (bare, huey, swarm,
bare, ...), REPS times; medians and the ratios swarm/huey and swarm/bare are printed.
CPU per job: each runner process's own CPU time (all threads, start-up included) and its
waited-for children's (the sandboxes), over N. Host CPU per job: the whole host's busy
CPU time over the run (`/proc/stat`, every core), over N, and the busy fraction of all
cores: it also counts the kernel's work for the jobs that no process is charged with
(namespace teardown in kworkers, RCU, the file system's), and shows whether the host was
CPU-bound (busy near 1.0). VM occupancy (swarm): the sum of its VMs'
lifetimes (`vms.created_at` -> `destroyed_at`) over SLOTS x the steady span, i.e. how
full the engine kept its `--max-vms` slots (1.0: a VM in every slot all the time). Homes, the huey database and the VM folder
go under $TMPDIR (default /tmp): the file system matters to the engine, which makes and
removes folders per ticket.

* floor (with `--floor`): bare's job plus what swarm-engine records and makes for a
  one-step ticket (claim, run and step rows, VM rows, artifacts folder and log, VM folder
  and inputs file, run's end), done in line by each of SLOTS threads through the store's
  own classes: what any design of the engine could reach while keeping those records.
* swarm-m (with `--measured`): swarm-engine with `disk_cap = "measured"` in its home's
  config.toml: each workspace a folder measured every 50 ms, not a filesystem of its own
  mounted per VM (the default, `mount`); what the hard disk cap costs.

* bare-f, huey-f (with `--fresh`): bare and huey, each job given what swarm-engine gives
  each ticket: a new workspace and a new memory cgroup, made before it and removed after
  it (`_freshjob.py`): what "huey plus my own sandbox call" costs with the same isolation
  per job, not one folder and one cgroup shared by every job.

Usage: python benchmarks/peers.py [-n 300] [--slots 4] [--reps 3] [--src PATH] [--quick]
                                  [--floor] [--measured] [--fresh] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shlex
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import _common
from _common import (
    engine_log,
    host_cpu,
    init_home,
    insert_tickets,
    install_sigterm_handler,
    load1,
    parse_ts,
    print_machine,
    query,
    start_engine,
    stop_engine,
    temp_root,
    write_json,
)
from _freshjob import run_fresh_job

HUEY_VERSION = "3.5.4"
VENVS = Path.home() / ".cache" / "swarm-engine-bench"
HERE = Path(__file__).resolve()
JOB = "echo hello"
"""The command run in the sandbox (`sh -c JOB`), and what it must print."""
EXPECT = b"hello\n"
FD_MARK = "@fd:{}@"
"""Stands in the argv for the number of an fd made per job (passwd, group)."""


# -- the job (stdlib only: the huey side imports this file in its own venv) ------------------
def run_job(recipe: dict[str, Any]) -> tuple[float, float]:
    """Run the sandboxed job once; returns its (start, end) in Unix seconds."""
    start = time.time()
    fds: dict[str, int] = {}
    for name, text in recipe["data"].items():  # as the backend does: a memory file each
        fds[name] = os.memfd_create(f"swarm-{name}", os.MFD_CLOEXEC)
        os.write(fds[name], text.encode())
        os.lseek(fds[name], 0, os.SEEK_SET)
    try:
        marks = {FD_MARK.format(name): str(fd) for name, fd in fds.items()}
        argv = [marks.get(a, a) for a in recipe["argv"]]
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            cwd=recipe["cwd"],
            env=recipe["env"],
            start_new_session=True,
            pass_fds=tuple(fds.values()),
            check=False,
        )
    finally:
        for fd in fds.values():
            os.close(fd)
    if done.returncode != 0 or done.stdout != EXPECT:
        raise RuntimeError(f"job failed ({done.returncode}): {done.stdout!r} {done.stderr!r}")
    return start, time.time()


# -- the job's recipe, from the process backend's own code -----------------------------------
async def _boot_recipe(root: Path) -> tuple[dict[str, Any], Any]:
    """Boot one VM as the engine does for an echo step; the job's argv, environment and
    folder, with fd marks for its environment, passwd and group. Fails loudly if the backend's internals
    change shape (rather than measuring some other job)."""
    from swarm_engine.registry.builtins import builtin_agents
    from swarm_engine.vm.bwrap import GROUP, PASSWD
    from swarm_engine.vm.pool import spec_for
    from swarm_engine.vm.process import ProcessBackend, ProcessConfig
    from swarm_engine.vm.sandbox_env import bwrap_env_args, host_env

    echo = next(a for a in builtin_agents() if a.name == "echo")
    spec = spec_for(echo.vm.model_dump(), echo.memory_mb, echo.vcpus, echo.timeout_seconds)
    backend = ProcessBackend(root, ProcessConfig())
    if not backend.isolated:  # raises when bubblewrap does not work: no fair comparison
        raise RuntimeError("the process backend is not isolated here")
    vm = await backend.boot("vm-peers", spec)
    # what `ProcessVM.exec` passes: a `SandboxFds` with the command's environment (bwrap's
    # `--args` memory file), the passwd and group fds, no ports
    fds = SimpleNamespace(
        env=FD_MARK.format("env"), passwd=FD_MARK.format("passwd"),
        group=FD_MARK.format("group"), info=None, block=None,
    )  # fmt: skip
    argv = vm._argv(JOB, None, spec.timeout_seconds, fds)
    recipe = {
        "argv": argv,
        "env": host_env(vm.id),  # the host programs' fixed environment
        "cwd": str(vm.workspace),
        "data": {
            "env": bwrap_env_args(vm._guest_env(None)).decode(),
            "passwd": PASSWD,
            "group": GROUP,
        },
    }
    return recipe, (vm, backend)


def make_recipe(root: Path) -> tuple[dict[str, Any], Any]:
    """The job's recipe, and what `end_recipe` ends (its VM and backend)."""
    return asyncio.run(_boot_recipe(root))


async def end_recipe(made: Any) -> None:
    vm, backend = made
    await vm.destroy()
    await backend.close()  # (its spare workspace: vm/spares.py)


# -- bare ------------------------------------------------------------------------------------
def run_bare(recipe: dict[str, Any], n: int, slots: int) -> dict[str, float]:
    def one(recipe: dict[str, Any]) -> tuple[float, float]:
        return run_fresh_job(recipe, run_job) if recipe.get("fresh") else run_job(recipe)

    def jobs(pool: ThreadPoolExecutor) -> list[tuple[float, float]]:
        return list(pool.map(one, [recipe] * n))

    return _in_process(n, slots, jobs)[0]


def _in_process(
    n: int, slots: int, jobs: Callable[[ThreadPoolExecutor], list[tuple[float, float]]]
) -> tuple[dict[str, float], list[tuple[float, float]]]:
    """Run `jobs` on a pool of `slots` threads in this process: its rates and CPU per job
    (this process's, and its waited-for sandboxes'), and each job's (start, end)."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    started = time.time()
    with ThreadPoolExecutor(max_workers=slots) as pool:
        times = jobs(pool)
    result = rates(n, started, times)
    own2, kids2 = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    result["runner_cpu_ms"] = _cpu_s(own2, own) / n * 1000
    result["sandbox_cpu_ms"] = _cpu_s(kids2, kids) / n * 1000
    return result, times


# -- floor: the engine's bookkeeping, in line ----------------------------------------------
def run_floor(recipe: dict[str, Any], root: Path, n: int, slots: int, rep: int) -> dict[str, float]:
    """Bare's job, plus what swarm-engine records and makes for a one-step ticket
    (`_records.TicketRecords`), done in line by each of SLOTS threads (no event loop, no
    hand-offs), one store connection per thread. It bounds what any design of the engine
    could reach while keeping these records."""
    from _records import TicketRecords, register_engine

    home = root / f"floor-{rep}"
    db = init_home(home)
    insert_tickets(db, "echo", [{"i": i} for i in range(n)])
    engine_id = f"floor:{os.getpid()}:{rep}"
    register_engine(db, engine_id, slots)

    def worker() -> list[tuple[float, float]]:
        records = TicketRecords(db, home, engine_id)
        times: list[tuple[float, float]] = []

        def job() -> bytes:
            times.append(run_job(recipe))
            return EXPECT

        try:
            while records.one_ticket(job, lambda stage: None):
                pass
            return times
        finally:
            records.close()

    def jobs(pool: ThreadPoolExecutor) -> list[tuple[float, float]]:
        return [t for part in pool.map(lambda _: worker(), range(slots)) for t in part]

    result, times = _in_process(n, slots, jobs)
    counts = {
        r["status"]: r["c"]
        for r in query(db, "SELECT status, count(*) AS c FROM tickets GROUP BY status")
    }
    if counts != {"done": n} or len(times) != n:
        raise RuntimeError(f"floor: not every ticket is done: {counts}")
    return result


def _cpu_s(after: resource.struct_rusage, before: resource.struct_rusage) -> float:
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def rates(n: int, started: float, times: list[tuple[float, float]]) -> dict[str, float]:
    first, last = min(t[0] for t in times), max(t[1] for t in times)
    return {
        "seconds": last - started,
        "rate": n / (last - started),
        "span_rate": n / (last - first),
    }


def wait_cpu(pid: int, timeout: float) -> tuple[float, float]:
    """Wait until child `pid` exits, without reaping it, and return its final CPU seconds:
    its own (every thread, start-up included) and its waited-for children's (the sandboxes)."""
    deadline = time.monotonic() + timeout
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} still runs after {timeout:g} s")
        time.sleep(0.005)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / hz, (int(fields[13]) + int(fields[14])) / hz


# -- huey ------------------------------------------------------------------------------------
def huey_python(version: str) -> Path:
    """The Python of the benchmark's own venv with huey `version` (made once, with pip)."""
    venv = VENVS / f"huey-{version}"
    python = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        print(f"setting up {venv} (huey {version}) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"huey=={version}"], check=True)
        (venv / ".ready").write_text(version + "\n")
    return python


def _huey(db: str, recipe_file: str) -> Any:
    """The huey app (in huey's venv): a SqliteHuey with one task, the job."""
    from huey import SqliteHuey

    recipe = json.loads(Path(recipe_file).read_text())
    huey = SqliteHuey("peers", filename=db)

    @huey.task(name="job")
    def job(i: int) -> tuple[float, float]:
        return run_fresh_job(recipe, run_job) if recipe.get("fresh") else run_job(recipe)

    return huey, job


def huey_consumer(db: str, recipe_file: str, slots: int) -> None:
    """Consumer process (in huey's venv): SLOTS thread workers until SIGTERM."""
    huey, _ = _huey(db, recipe_file)
    huey.create_consumer(workers=slots, worker_type="thread", periodic=False).run()


def huey_driver(db: str, recipe_file: str, n: int, slots: int) -> None:
    """In huey's venv: enqueue N tasks, start the consumer, wait for N results; prints JSON."""
    _, job = _huey(db, recipe_file)
    results = [job(i) for i in range(n)]
    conn = sqlite3.connect(db, timeout=30)
    started = time.time()
    log = Path(db).with_suffix(".log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(HERE), "--huey-consumer", db, recipe_file, "--slots", str(slots)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        while conn.execute("SELECT count(*) FROM kv WHERE queue = 'peers'").fetchone()[0] < n:
            if proc.poll() is not None:
                raise RuntimeError(f"huey consumer exited {proc.returncode}:\n{log.read_text()}")
            time.sleep(0.002)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        conn.close()
    proc.send_signal(signal.SIGTERM)  # huey: immediate stop (nothing is running now)
    own, kids = wait_cpu(proc.pid, 30)
    proc.wait()
    values = [r.get() for r in results]
    if any(v is None for v in values):
        raise RuntimeError(f"missing huey results:\n{log.read_text()[-2000:]}")
    result = rates(n, started, [tuple(v) for v in values])
    result |= {"runner_cpu_ms": own / n * 1000, "sandbox_cpu_ms": kids / n * 1000}
    print(json.dumps(result))


def run_huey(
    python: Path, root: Path, recipe: dict[str, Any], n: int, slots: int, rep: int
) -> dict[str, float]:
    recipe_file = root / "recipe.json"
    recipe_file.write_text(json.dumps(recipe))
    db = root / f"huey-{rep}.db"
    args = ["--huey-driver", str(db), str(recipe_file), "-n", str(n), "--slots", str(slots)]
    return huey_json(python, HERE, args, timeout=120 + n)


def huey_json(python: Path, script: Path, args: list[str], *, timeout: float) -> dict[str, float]:
    """Run `script ARGS` with huey's venv Python; its last stdout line, as JSON."""
    done = subprocess.run(
        [str(python), str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"huey run failed:\n{done.stdout}{done.stderr[-4000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- swarm-engine ----------------------------------------------------------------------------
def run_swarm(
    root: Path, n: int, slots: int, rep: int, disk_cap: str | None = None
) -> dict[str, float]:
    """`disk_cap`: the process backend's `disk_cap` option (None: its default, "mount")."""
    home = root / f"swarm-{rep}-{disk_cap or 'default'}"
    db = init_home(home)
    if disk_cap is not None:
        (home / "config.toml").write_text(
            f'[backend_options.process]\ndisk_cap = "{disk_cap}"\n', encoding="utf-8"
        )
    insert_tickets(db, "echo", [{"i": i} for i in range(n)])
    started = time.time()
    proc = start_engine(
        home, "--until-idle", "--max-vms", str(slots), log=home / "engine-bench.log"
    )
    try:
        own, kids = wait_cpu(proc.pid, timeout=60 + n)
        exited = time.time()
        code = proc.wait()
    except TimeoutError:
        print(engine_log(home))
        raise
    finally:
        stop_engine(proc)
    if code != 0:
        raise RuntimeError(f"engine exited {code}:\n{engine_log(home)}")
    counts = {
        r["status"]: r["c"]
        for r in query(db, "SELECT status, count(*) AS c FROM tickets GROUP BY status")
    }
    if counts != {"done": n}:
        raise RuntimeError(f"not every ticket is done: {counts}\n{engine_log(home)}")
    span = query(db, "SELECT min(claimed_at) AS a, max(completed_at) AS b FROM tickets")[0]
    first, last = parse_ts(span["a"]), parse_ts(span["b"])
    vms = query(db, "SELECT created_at, destroyed_at FROM vms")
    held = sum(parse_ts(v["destroyed_at"]) - parse_ts(v["created_at"]) for v in vms)
    return {
        # how full the engine kept its VM slots, from each VM's recorded boot and end
        "occupancy": held / (slots * (last - first)),
        "seconds": last - started,
        "rate": n / (last - started),
        "span_rate": n / (last - first),
        "exit_rate": n / (exited - started),
        "runner_cpu_ms": own / n * 1000,
        "sandbox_cpu_ms": kids / n * 1000,
    }


# -- main ------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300, help="jobs per run (default 300)")
    parser.add_argument("--slots", type=int, default=4, help="parallel slots each (default 4)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (default 3)")
    parser.add_argument("--huey-version", default=HUEY_VERSION, help=f"default {HUEY_VERSION}")
    parser.add_argument("--src", help="run this src/ folder instead of the repository's")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 jobs, 1 repetition")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument(
        "--measured",
        action="store_true",
        help="also run 'swarm-m': swarm-engine with disk_cap = \"measured\" (workspaces not"
        " mounted, their size measured every 50 ms)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also run 'floor': bare plus the engine's records and files, in line per slot",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="also run 'bare-f' and 'huey-f': each job in a new workspace and memory cgroup"
        " of its own, removed after it, as swarm-engine gives each ticket (_freshjob.py)",
    )
    args = parser.parse_args()
    install_sigterm_handler()
    n, reps = (20, 1) if args.quick else (args.n, args.reps)
    if args.src:  # the engine and the job's argv both come from that code
        src = Path(os.path.abspath(args.src))
        _common.REPO = src.parent
        sys.path.insert(0, str(src))
    python = huey_python(args.huey_version)
    print_machine()
    print(f"{n} jobs per run, {args.slots} slots, {reps} repetitions, huey {args.huey_version}")
    runs: dict[str, list[dict[str, float]]] = {"bare": [], "huey": [], "swarm": []}
    if args.measured:
        runs["swarm-m"] = []
    if args.floor:
        runs["floor"] = []
    if args.fresh:
        runs["bare-f"], runs["huey-f"] = [], []
    with temp_root("peers") as root:
        recipe, vm = make_recipe(root)
        try:
            print("job:", shlex.join(recipe["argv"]), flush=True)
            run_job(recipe)  # warm: the page cache holds bwrap, sh, prlimit
            fresh = recipe | {"fresh": True}
            if args.fresh:
                run_fresh_job(fresh, run_job)
            for rep in range(1, reps + 1):
                for method in runs:
                    before = load1()
                    busy0, idle0 = host_cpu()
                    if method == "bare":
                        result = run_bare(recipe, n, args.slots)
                    elif method == "huey":
                        result = run_huey(python, root, recipe, n, args.slots, rep)
                    elif method == "bare-f":
                        result = run_bare(fresh, n, args.slots)
                    elif method == "huey-f":
                        result = run_huey(python, root, fresh, n, args.slots, rep + reps)
                    elif method == "floor":
                        result = run_floor(recipe, root, n, args.slots, rep)
                    elif method == "swarm-m":
                        result = run_swarm(root, n, args.slots, rep, disk_cap="measured")
                    else:
                        result = run_swarm(root, n, args.slots, rep)
                    busy1, idle1 = host_cpu()
                    result |= {
                        "load_before": before,
                        "load_after": load1(),
                        "host_cpu_ms": (busy1 - busy0) / n * 1000,
                        "host_busy": (busy1 - busy0) / max(busy1 - busy0 + idle1 - idle0, 1e-9),
                    }
                    runs[method].append(result)
                    print(
                        f"rep {rep} {method:<6} {result['rate']:6.1f} jobs/s"
                        f"  (steady {result['span_rate']:6.1f}/s)"
                        f"  {result['seconds']:5.2f} s  load {before:.2f} -> {result['load_after']:.2f}"
                        f"  cpu/job: runner {result['runner_cpu_ms']:5.2f} ms,"
                        f" sandbox {result['sandbox_cpu_ms']:5.2f} ms,"
                        f" host {result['host_cpu_ms']:5.2f} ms (busy {result['host_busy']:.2f})"
                        + (
                            f", VM occupancy {result['occupancy']:.2f}"
                            if "occupancy" in result
                            else ""
                        ),
                        flush=True,
                    )
        finally:
            asyncio.run(end_recipe(vm))
    med = {m: statistics.median(r["rate"] for r in rs) for m, rs in runs.items()}
    steady = {m: statistics.median(r["span_rate"] for r in rs) for m, rs in runs.items()}
    print(f"\nmedians, jobs/s ({n} jobs, {args.slots} slots, {reps} reps)")
    cpu = {
        m: {
            k: statistics.median(r[k] for r in rs)
            for k in ("runner_cpu_ms", "sandbox_cpu_ms", "host_cpu_ms", "host_busy")
        }
        for m, rs in runs.items()
    }
    print(
        f"{'':>8}{'start->last':>13}{'steady':>9}{'runner CPU ms/job':>19}"
        f"{'sandbox CPU ms/job':>20}{'host CPU ms/job':>17}{'host busy':>11}"
    )
    for m in runs:
        print(
            f"{m:>8}{med[m]:>13.1f}{steady[m]:>9.1f}"
            f"{cpu[m]['runner_cpu_ms']:>19.2f}{cpu[m]['sandbox_cpu_ms']:>20.2f}"
            f"{cpu[m]['host_cpu_ms']:>17.2f}{cpu[m]['host_busy']:>11.2f}"
        )
    ratios = {
        "swarm/huey": med["swarm"] / med["huey"],
        "swarm/bare": med["swarm"] / med["bare"],
        "huey/bare": med["huey"] / med["bare"],
    }
    if "swarm-m" in med:
        ratios |= {"swarm-m/huey": med["swarm-m"] / med["huey"]}
        ratios |= {"swarm-m/bare": med["swarm-m"] / med["bare"]}
    if "huey-f" in med:
        ratios |= {
            "swarm/huey-f": med["swarm"] / med["huey-f"],
            "swarm/bare-f": med["swarm"] / med["bare-f"],
            "huey-f/huey": med["huey-f"] / med["huey"],
        }
    if "floor" in med:
        ratios |= {
            "floor/huey": med["floor"] / med["huey"],
            "swarm/floor": med["swarm"] / med["floor"],
        }
    print("  ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    print(
        "steady: "
        + "  ".join(
            f"{a}/{b} {steady[a] / steady[b]:.2f}"
            for a, b in (("swarm", "huey"), ("swarm", "bare"), ("huey", "bare"))
        )
    )
    print(f"load average (1 min) now: {load1():.2f}")
    write_json(
        args.json,
        {
            "benchmark": "peers",
            "n": n,
            "slots": args.slots,
            "reps": reps,
            "huey": args.huey_version,
            "runs": runs,
            "medians": med,
            "steady_medians": steady,
            "cpu_medians": cpu,
            "ratios": ratios,
        },
    )


def child() -> None:
    """The huey side, run by huey's venv Python: `--huey-driver` or `--huey-consumer`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("recipe")
    parser.add_argument("-n", type=int, default=0)
    parser.add_argument("--slots", type=int, default=4)
    args = parser.parse_args(sys.argv[2:])
    if sys.argv[1] == "--huey-driver":
        huey_driver(args.db, args.recipe, args.n, args.slots)
    else:
        huey_consumer(args.db, args.recipe, args.slots)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("--huey-driver", "--huey-consumer"):
        child()
    else:
        main()

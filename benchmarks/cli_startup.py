"""CLI start-up: wall time of short commands, against a bare `python -c pass`.

On a throw-away home (SWARM_HOME, set up first with `status --init` and 20 open tickets),
each round runs, one after the other: `python -c pass` (the interpreter's own start-up,
the floor), `swarm-engine --version`, `status`, `ticket create` (an `echo` ticket) and
`ticket cancel` of the ticket that round created. The commands are interleaved, so a
burst of other work on the machine weighs on all of them alike. Wall time is taken around
each `subprocess.run` (fork, exec, interpreter start-up, imports, the command, exit), with
stdout and stderr captured; every command must exit 0. CPU time (user + system, from
`getrusage(RUSAGE_CHILDREN)` before and after) is reported too: on a shared machine it moves
much less with other load than wall time does. Warm-up rounds (page cache, .pyc
files, written even when PYTHONDONTWRITEBYTECODE is set around it) are not counted. Commands run as `python -m swarm_engine` with a `src/` folder
first on PYTHONPATH: the repository's, or each `--src` given (e.g. an older checkout's,
`git archive <commit> src | tar -x -C /tmp/old`); with several, every round runs them all
in turn, each on its own home, so before and after are measured side by side.

Usage: python benchmarks/cli_startup.py [-n 40] [--warmup 3] [--quick]
       [--src PATH ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    REPO,
    env_for,
    insert_tickets,
    install_sigterm_handler,
    load1,
    percentile,
    print_machine,
    temp_root,
    write_json,
)

BASELINE = "python -c pass"
COMMANDS = ("--version", "status", "ticket create", "ticket cancel")
SMALL_STORE = 20
"""Open tickets in the store before the first round."""


Sample = tuple[float, float]
"""Seconds of one command: wall, CPU (user + system)."""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], env: dict[str, str]) -> tuple[Sample, str]:
    """Wall and CPU seconds of one command, and its stdout; it must exit 0."""
    cpu = children_cpu()
    start = time.perf_counter()
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return (elapsed, children_cpu() - cpu), done.stdout


def one_round(env: dict[str, str]) -> dict[str, Sample]:
    """The four commands once each, in order; a sample by command."""
    swarm = [sys.executable, "-m", "swarm_engine"]
    times: dict[str, Sample] = {}
    times["--version"], _ = timed([*swarm, "--version"], env)
    times["status"], _ = timed([*swarm, "status"], env)
    create = [*swarm, "ticket", "create", "--title", "bench", "--agent", "echo", "--json"]
    times["ticket create"], out = timed([*create, "--input", "greeting=hi"], env)
    ticket_id = str(json.loads(out)["id"])
    times["ticket cancel"], _ = timed([*swarm, "ticket", "cancel", ticket_id], env)
    return times


def home_for(root: Path, index: int, src: Path) -> dict[str, str]:
    """A fresh home with a small store, run with `src`; the environment to use it."""
    home = root / f"home-{index}"
    env = env_for(home, PYTHONPATH=str(src))
    # as an installed package runs: .pyc files written once (in the warm-up), then read;
    # without them every module is compiled at every start (a copy of an older checkout)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    done = subprocess.run(
        [sys.executable, "-m", "swarm_engine", "status", "--init"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"status --init with {src} failed:\n{done.stderr}")
    insert_tickets(
        home / "tickets.db", "echo", [{"greeting": f"hi {i}"} for i in range(SMALL_STORE)]
    )
    return env


def run(srcs: list[Path], rounds: int, warmup: int) -> dict[str, dict[str, list[Sample]]]:
    """Samples per command per source (and the baseline under BASELINE)."""
    with temp_root("cli-startup") as root:
        envs = [home_for(root, i, src) for i, src in enumerate(srcs)]
        samples: dict[str, dict[str, list[Sample]]] = {BASELINE: {BASELINE: []}}
        for src in srcs:
            samples[str(src)] = {name: [] for name in COMMANDS}
        for i in range(warmup + rounds):
            base, _ = timed([sys.executable, "-c", "pass"], envs[0])
            per_src = [one_round(env) for env in envs]
            if i < warmup:
                continue
            samples[BASELINE][BASELINE].append(base)
            for src, times in zip(srcs, per_src, strict=True):
                for name, seconds in times.items():
                    samples[str(src)][name].append(seconds)
        return samples


def stats(samples: list[Sample]) -> dict[str, float]:
    wall = [w for w, _ in samples]
    cpu = [c for _, c in samples]
    return {
        "p50_ms": percentile(wall, 50) * 1000,
        "p95_ms": percentile(wall, 95) * 1000,
        "min_ms": min(wall) * 1000,
        "max_ms": max(wall) * 1000,
        "cpu_p50_ms": percentile(cpu, 50) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=40, help="measured rounds")
    parser.add_argument("--warmup", type=int, default=3, help="rounds not counted")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 rounds, 1 warm-up")
    parser.add_argument(
        "--src", action="append", help="a src/ folder to run (repeatable; default: this repo's)"
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    install_sigterm_handler()
    srcs = [Path(os.path.abspath(s)) for s in args.src or [str(REPO / "src")]]
    rounds, warmup = (5, 1) if args.quick else (args.rounds, args.warmup)
    print_machine()
    before = load1()
    samples = run(srcs, rounds, warmup)
    after = load1()
    results = {src: {name: stats(v) for name, v in by.items()} for src, by in samples.items()}
    floor = results[BASELINE][BASELINE]["p50_ms"]
    print(f"\n{rounds} rounds, {warmup} warm-up; wall time in ms")
    print(
        f"{'command':<16} {'p50':>7} {'p95':>7} {'min':>7} {'max':>7} {'p50 - python':>13}"
        f" {'CPU p50':>8}"
    )
    for src, by in results.items():
        if src != BASELINE:
            print(src)
        for name, row in by.items():
            print(
                f"{name:<16} {row['p50_ms']:7.1f} {row['p95_ms']:7.1f} {row['min_ms']:7.1f}"
                f" {row['max_ms']:7.1f} {row['p50_ms'] - floor:13.1f} {row['cpu_p50_ms']:8.1f}"
            )
    print(f"load average (1 min) before/after: {before:.2f} / {after:.2f}")
    data: dict[str, Any] = {"benchmark": "cli_startup", "rounds": rounds, "warmup": warmup}
    write_json(args.json, {**data, "results": results})


if __name__ == "__main__":
    main()

"""The API server's memory while slow clients download a big log.

A home whose ticket 100 has one step with a 10 MiB stored log (SQLite); `swarm-engine
serve` on a free port; N clients (24) each download `GET /v1/tickets/100/logs` at once,
each reading at most RATE (2 MiB/s, like `curl --limit-rate 2M`). The server's RSS
(/proc) is sampled every 20 ms: its RSS before, its peak during, and the bytes each client
got (all must get the whole log).

Usage: python benchmarks/api_downloads.py [-n 24] [--rate-mib 2] [--log-mib 10]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.acceptance.test_big_stored_logs import write_run  # noqa: E402
from tests.support.api import Api, start_api  # noqa: E402
from tests.support.cli import swarm_inproc  # noqa: E402

MiB = 1024 * 1024
TOKEN = "a-token-for-the-download-benchmark"


def rss(api: Api) -> int:
    found = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{api.proc.pid}/status").read_text())
    return int(found.group(1)) * 1024 if found else 0


def download(api: Api, rate: float, got: list[int], at: int) -> None:
    with api.get("/v1/tickets/100/logs", stream=True, timeout=600) as response:
        assert response.status_code == 200, response.status_code
        start, total = time.monotonic(), 0
        for block in response.iter_content(64 * 1024):
            total += len(block)
            ahead = total / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)  # sleep-ok: a client reading at a limited rate
    got[at] = total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=24)
    parser.add_argument("--rate-mib", type=float, default=2.0)
    parser.add_argument("--log-mib", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        assert swarm_inproc(home, "status", "--init").returncode == 0
        write_run(home, [args.log_mib * MiB])
        api = start_api(home, token=TOKEN)
        try:
            api.get("/v1/tickets/100/logs")  # warm: the code paths are loaded
            before = rss(api)
            got = [0] * args.n
            threads = [
                threading.Thread(target=download, args=(api, args.rate_mib * MiB, got, i))
                for i in range(args.n)
            ]
            began = time.monotonic()
            for thread in threads:
                thread.start()
            peak = before
            while any(thread.is_alive() for thread in threads):
                peak = max(peak, rss(api))
                time.sleep(0.02)  # sleep-ok: sampling
            took = time.monotonic() - began
        finally:
            api.stop()
    print(
        f"{args.n} downloads of a {args.log_mib} MiB log at {args.rate_mib} MiB/s each:"
        f" server RSS {before / MiB:.0f} MiB before, peak {peak / MiB:.0f} MiB"
        f" (+{(peak - before) / MiB:.0f} MiB), {took:.1f} s;"
        f" bytes per client {min(got)}-{max(got)}"
    )


if __name__ == "__main__":
    main()

"""The pause before each next try of a transaction PostgreSQL rolled back (`store/rerun.py`):
10-30 ms after the first try, twice that range after each next one, as docs/engine.md says."""

from __future__ import annotations

from swarm_engine.store.rerun import TRIES, pause


def test_each_pause_is_in_its_doubling_range() -> None:
    for tries in range(1, TRIES):
        low, high = 0.01 * 2 ** (tries - 1), 0.03 * 2 ** (tries - 1)
        seen = [pause(tries) for _ in range(2000)]
        assert all(low <= p <= high for p in seen), (tries, min(seen), max(seen))
        assert max(seen) - min(seen) > (high - low) / 2  # jittered, not one value

"""`PassedOver`: ticket ids held for a while and at most so many (`store/passover.py`)."""

from __future__ import annotations

from swarm_engine.store.passover import PassedOver


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_id_is_held_for_retry_after_seconds_then_tried_again() -> None:
    clock = Clock()
    passed = PassedOver(retry_after=10, clock=clock)
    passed.add(1)
    clock.now = 5
    passed.add(2)
    assert 1 in passed and sorted(passed) == [1, 2]
    clock.now = 10
    assert 1 not in passed and list(passed) == [2]
    passed.add(1)  # passed over again: held anew
    clock.now = 15
    assert list(passed) == [1]
    clock.now = 20
    assert len(passed) == 0


def test_a_trigger_ignoring_every_claim_holds_at_most_limit_ids() -> None:
    """Past the limit the oldest is dropped (and so tried again first)."""
    clock = Clock()
    passed = PassedOver(retry_after=1e9, limit=100, clock=clock)
    for tid in range(1, 100_001):
        clock.now += 0.001
        passed.add(tid)
    assert len(passed) == 100
    assert sorted(passed) == list(range(99_901, 100_001))

"""Parts of the service layer and the API that need no server: what counts as this machine
only, which client values the stores can hold, lenient records, the handle pool."""

from __future__ import annotations

import math
import re
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from swarm_engine.api.auth import check_exposure, is_loopback
from swarm_engine.api.models import Run, Step
from swarm_engine.api.pools import Pool
from swarm_engine.errors import UsageError
from swarm_engine.service.metrics import Histogram, _is_reclaim
from swarm_engine.service.values import check_ids, check_json, check_text

ACCEPTANCE = Path(__file__).resolve().parents[1] / "acceptance"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("localhost", True), ("::1", True),
     ("[::1]", True), ("0.0.0.0", False), ("::", False), ("10.0.0.5", False),
     ("example.org", False), ("localhost.example.org", False), ("", False)],
)  # fmt: skip
def test_what_counts_as_this_machine_only(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    if loopback:
        check_exposure(host, None)
    else:
        with pytest.raises(UsageError, match="give a bearer token"):
            check_exposure(host, None)
        check_exposure(host, "x" * 16)
    with pytest.raises(UsageError, match="at least 16"):
        check_exposure(host, "short")
    with pytest.raises(UsageError, match="is empty"):  # given, but empty: never "no token"
        check_exposure(host, "")
    with pytest.raises(UsageError, match="may hold only printable"):  # blank: unsendable
        check_exposure(host, " \t")


@pytest.mark.parametrize(
    ("value", "problem"),
    [(None, None), ("", None), ("x", "$HK holds 1 character, fewer than the 16"),
     (" ", "$HK is blank"), (" " * 20, "$HK is blank"), ("x" * 15, "holds 15 characters"),
     ("x" * 16, None)],
)  # fmt: skip
def test_a_secret_env_is_held_to_the_rule_of_a_secret(
    monkeypatch: pytest.MonkeyPatch, value: str | None, problem: str | None
) -> None:
    """A webhook secret from a variable: 16+ characters, not blank, as an inline `secret`
    (an unset or empty variable is no secret: its deliveries get 403). `serve` refuses to
    start on a bad one (`check_secrets`), and a delivery is refused if it became bad."""
    from pydantic import ValidationError

    from swarm_engine.config_model import TriggerHostSettings
    from swarm_engine.errors import ConfigError
    from swarm_engine.service.triggers import check_secrets

    if value is None:
        monkeypatch.delenv("HK", raising=False)
    else:
        monkeypatch.setenv("HK", value)
    host = TriggerHostSettings(secret_env="HK")
    settings = SimpleNamespace(triggers={"hk": host})  # (all check_secrets reads)
    if problem is None:
        assert host.resolve() == (value or None)
        check_secrets(settings)  # type: ignore[arg-type]
    else:
        with pytest.raises(ValueError, match=re.escape(problem)):
            host.resolve()
        with pytest.raises(ConfigError, match=r"^setting triggers\.hk\.secret_env: \$HK "):
            check_secrets(settings)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="blank"):  # inline: the same rule
        TriggerHostSettings(secret=" " * 16)


@pytest.mark.parametrize(
    ("value", "problem"),
    [({"a": "\x00"}, "NUL"), ({"a": "\ud800"}, "surrogate"), ({"a": math.nan}, "finite"),
     ({"a": [math.inf]}, "finite"), ({"\x00": 1}, "NUL"), ({"a": {1, 2}}, "not a JSON value"),
     ({"a": 1, 2: 3}, "not text"), ({"a": [[[]]] * 1}, None), ({"a": 10**40, "b": None}, None)],
)  # fmt: skip
def test_json_the_stores_can_hold(value: dict[object, object], problem: str | None) -> None:
    if problem is None:
        assert check_json(value, "inputs") is value
    else:
        with pytest.raises(UsageError, match=problem):
            check_json(value, "inputs")


def test_inputs_over_the_limit_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    """Every way in (CLI, API, triggers) creates tickets through `service.tickets.create`:
    inputs of more than `MAX_INPUTS_BYTES` of JSON are refused there with one line, the
    store untouched; up to the limit is fine."""
    from swarm_engine.records import MAX_INPUTS_BYTES
    from swarm_engine.registry import Registry
    from swarm_engine.service.tickets import NewTicket, create
    from swarm_engine.store import open_store

    store = open_store(tmp_path / "tickets.db")
    registry = Registry(tmp_path / "registry.db", tmp_path / "packages")
    try:
        text = "w" * (MAX_INPUTS_BYTES - 20)
        ok = create(store, registry, NewTicket("fits", agent="echo", inputs={"t": text}))
        assert ok.inputs == {"t": text}
        with pytest.raises(UsageError, match=r"^inputs: [\d,]+ bytes of JSON, more than the 8 MiB"):
            create(store, registry, NewTicket("over", agent="echo", inputs={"t": text + "w" * 12}))
        assert [t.title for t in store.tickets.list()] == ["fits"]
    finally:
        store.close()
        registry.close()


def test_nesting_is_bounded() -> None:
    deep: list[object] = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(UsageError, match="nested deeper than 64"):
        check_json({"a": deep}, "inputs")
    assert check_text("fine ✓", "title") == "fine ✓"


def test_ids_are_checked_and_made_distinct() -> None:
    assert check_ids([3, 1, 3]) == [3, 1]
    assert check_ids([0, -5, 2**63 - 1, -(2**63)]) == [0, -5, 2**63 - 1, -(2**63)]
    for bad in ([-(2**63) - 1], [2**63], [True], ["7"]):
        with pytest.raises(UsageError):
            check_ids(bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="at most 2"):
        check_ids([1, 2, 3], most=2)


def test_records_keep_what_they_can_read() -> None:
    run = Run.model_validate({"id": 1, "duration_ms": "slow", "cost_usd": 0.5, "defects": ["x"],
                              "steps": [{"id": 2, "exit_code": "x", "outputs": {"a": 1}}]})  # fmt: skip
    assert run.duration_ms is None and run.cost_usd == 0.5
    assert run.defects[0] == "x" and run.defects[1].startswith("duration_ms: unreadable")
    assert run.steps is not None and run.steps[0].outputs == {"a": 1}
    assert run.steps[0].exit_code is None and run.steps[0].defects
    assert Step.model_validate({"id": 3}).defects == []


def test_histograms_are_cumulative() -> None:
    h = Histogram((1.0, 5.0, math.inf))
    for value in (0.5, 2, 2, 100):
        h.observe(value)
    assert h.counts == [1, 3, 4] and h.count == 4 and h.sum == 104.5


def test_what_a_reclaim_looks_like_in_the_events() -> None:
    assert _is_reclaim({"new_status": "open", "attempt_id": None})
    assert not _is_reclaim({"new_status": "open", "attempt_id": "a-1"})  # a retry
    assert _is_reclaim({"new_status": "failed", "note": "lease expired after 3 attempt(s)"})
    assert not _is_reclaim({"new_status": "failed", "note": "exit 3"})


def test_a_pool_lends_each_handle_to_one_borrower() -> None:
    made: list[object] = []
    ended: list[object] = []

    def make() -> object:
        made.append(object())
        return made[-1]

    pool: Pool[object] = Pool(make, ended.append, shared=False)
    with pool.borrow() as a, pool.borrow() as b:
        assert a is not b
    with pool.borrow() as again:
        assert again in (a, b)
    seen: set[int] = set()
    barrier = threading.Barrier(4)

    def borrow() -> None:
        with pool.borrow() as handle:
            barrier.wait(5)
            seen.add(id(handle))

    threads = [threading.Thread(target=borrow) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 4  # four at once: four handles
    pool.close()
    assert sorted(map(id, ended)) == sorted(map(id, made))
    shared: Pool[object] = Pool(make, ended.append, shared=True)
    with shared.borrow() as x, shared.borrow() as y:
        assert x is y
    shared.close()


def test_every_endpoint_has_a_test(tmp_path: Path) -> None:
    """Each path of the OpenAPI schema is called by the API's acceptance tests."""
    from swarm_engine.api.app import create_app
    from swarm_engine.config import Settings

    app = create_app(Settings(home=tmp_path))
    try:
        paths = list(app.openapi()["paths"])
    finally:
        app.state.server.close()
    tests = "".join(
        (ACCEPTANCE / name).read_text()
        for name in ("test_api.py", "test_api_logs.py", "test_api_webhooks.py")
    )
    untested = [
        path
        for path in paths
        if not re.search(re.sub(r"\\\{\w+\\\}", r"[^/\"'?]+", re.escape(path)) + "[\"'?]", tests)
    ]
    assert untested == []


def test_the_inputs_limit_counts_what_the_engine_writes_again() -> None:
    """Raw UTF-8 written by another client is counted as the engine writes it again (run
    and step rows, `\\u` escapes): 8 MB of emoji is 24 MB there, over the limit, as
    `ticket create` says for the same value."""
    import json

    from swarm_engine.records import MAX_INPUTS_BYTES, inputs_too_big

    raw = json.dumps({"x": "😀" * 2_000_000}, ensure_ascii=False)
    assert len(raw.encode()) <= MAX_INPUTS_BYTES
    assert inputs_too_big(raw) == (
        "24,000,009 bytes of JSON, more than the 8 MiB a ticket's inputs may hold"
        " (hand larger data in as a file or a URL)"
    )
    assert inputs_too_big(json.dumps({"x": "a" * (MAX_INPUTS_BYTES - 20)})) is None
    assert inputs_too_big("{not json" + " " * MAX_INPUTS_BYTES) is None  # (said elsewhere)


def test_a_title_or_description_is_measured_in_utf8_bytes_when_decoded() -> None:
    """`text_too_big` counts UTF-8 bytes (four-byte characters too, without holding a
    copy of the whole text); a decoded row over the limit has a defect saying the size
    (its value is kept, as a row's other values are)."""
    from swarm_engine.records import MAX_DESCRIPTION_BYTES, MAX_TITLE_BYTES, text_too_big
    from swarm_engine.store.rows import decode_ticket

    assert text_too_big("😀" * (MAX_TITLE_BYTES // 4), MAX_TITLE_BYTES) is None
    assert text_too_big("😀" * (MAX_TITLE_BYTES // 4) + "x", MAX_TITLE_BYTES) == (
        "65,537 bytes of text, more than the 64 KiB it may hold"
    )
    assert text_too_big("x" * MAX_DESCRIPTION_BYTES, MAX_DESCRIPTION_BYTES) is None
    ticket = decode_ticket({"id": 7, "title": "é" * 40_000, "description": "ok"})
    assert ticket.title == "é" * 40_000
    assert ticket.problem == (
        "ticket 7 row is malformed: title: 80,000 bytes of text, more than the 64 KiB it may hold"
    )

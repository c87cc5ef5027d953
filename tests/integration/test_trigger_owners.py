"""A trigger's name belongs to one workflow, however many clients register at once: the
ownership check and the insert are one step (`DefinitionStore.registering`: SQLite's write
lock, a PostgreSQL advisory lock). Many registrars, each with its own connection, all read
the owners at the same moment if they can; exactly one of them gets the name."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest
from tests.conftest import Target

from swarm_engine.errors import ConflictError
from swarm_engine.models import WorkflowSpec
from swarm_engine.registry.catalog import Registry
from swarm_engine.registry.triggers import ambiguity, trigger_owners

REGISTRARS = 6


def registry_target(target: Target, tmp_path: Path) -> str | Path:
    return tmp_path / "registry.db" if target.dialect == "sqlite" else target.target


def spec(name: str) -> WorkflowSpec:
    return WorkflowSpec.model_validate({
        "name": name, "steps": [{"id": "a", "agent": "echo"}],
        "triggers": [{"name": "shared", "webhook": True}],
    })  # fmt: skip


def test_concurrent_registrations_give_a_trigger_name_one_owner(
    store_target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = registry_target(store_target, tmp_path)
    Registry(where, tmp_path / "packages").close()  # (made and migrated once)
    registries = [Registry(where, tmp_path / "packages") for _ in range(REGISTRARS)]
    read = threading.Barrier(REGISTRARS)
    latest = Registry.latest_workflows

    def in_step(self: Registry, skipped: list[str] | None = None) -> object:
        """Each registrar's read of the owners waits (a little) for every other's: the
        race's window held open. Under the lock no other can read meanwhile: the wait
        times out and the registrar goes on."""
        out = latest(self, skipped)
        with contextlib.suppress(threading.BrokenBarrierError):
            read.wait(timeout=0.3)
        return out

    monkeypatch.setattr(Registry, "latest_workflows", in_step)
    won: list[str] = []
    refused: list[str] = []

    def register(registry: Registry, name: str) -> None:
        try:
            registry.register_workflows([(spec(name), name)])
            won.append(name)
        except ConflictError as exc:
            refused.append(str(exc))

    threads = [
        threading.Thread(target=register, args=(r, f"w{i}")) for i, r in enumerate(registries)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    monkeypatch.undo()
    try:
        assert len(won) == 1, (won, refused)
        assert len(refused) == REGISTRARS - 1
        assert all(f"trigger 'shared' belongs to workflow '{won[0]}'" in r for r in refused)
        owners = trigger_owners(w for w, _ in registries[0].latest_workflows())
        assert owners == {"shared": won}
    finally:
        for r in registries:
            r.close()


def test_an_ambiguity_is_one_bounded_line() -> None:
    assert ambiguity("t", ["a"]) is None
    assert ambiguity("t", ["wh", "evil"]) == (
        "trigger 't' is declared by more than one workflow (evil, wh): it fires for none of"
        " them until only one declares it"
    )
    line = ambiguity("t", [f"w{i:02}" for i in range(40)])
    assert line is not None and "(w00, w01, w02, w03, w04 and 35 more)" in line
    assert "(a, 2 times)" in str(ambiguity("t", ["a", "a"]))

"""VMs, engines and hosts: what runs where now, and how many slots are busy or free.

Read from the store, so every host's engines and VMs are seen (each host records its own).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from swarm_engine.errors import NotFoundError
from swarm_engine.records import shown
from swarm_engine.service.values import check_text

if TYPE_CHECKING:
    from swarm_engine.store import Store


def live(store: Store, host: str | None = None) -> list[dict[str, Any]]:
    """VMs not yet destroyed (booting, ready, busy, destroying), oldest first; only
    `host`'s when given."""
    if host is not None:
        check_text(host, "host")
    return store.vms.live(host)


def one(store: Store, vm_id: str) -> dict[str, Any]:
    """One VM's row, whatever its state; `NotFoundError`."""
    check_text(vm_id, "vm id")
    record = store.vms.get(vm_id)
    if record is None:
        raise NotFoundError(f"VM {shown(vm_id)} does not exist")
    return record


def engines(
    store: Store,
    host: str | None = None,
    alive: Callable[[Any], bool] | None = None,
    silent_after: float = 30.0,
) -> list[dict[str, Any]]:
    """Engines not stopped, of every host, oldest first; `busy_vms` counts the VMs each
    holds now. Given `host` (this host) and `alive(pid)`, an engine of `host` whose
    process is gone (killed, or exited unable to record its end) and whose heartbeat is
    older than `silent_after` s (`EngineStore.gone_from`, the rule `cleanup` reaps by: a
    row's pid is any writer's, and an engine in another pid namespace has a pid this host
    does not show) is `state` 'dead', what its row says kept in `recorded_state`. One
    whose process this host does not show but whose heartbeat is younger keeps its
    `state`, with `process_seen` false and `reaped_in` (the seconds until `cleanup`
    records it dead and reaps its VMs, unless it heartbeats again). Other hosts' engines
    are as their rows (and heartbeats) say."""
    rows = store.engines.running()
    if host is None or alive is None:
        return rows
    gone = {str(e["id"]) for e in store.engines.gone_from(host, alive, silent_after)}
    unreaped = {
        str(e["id"]): e["reaped_in"] for e in store.engines.gone_unreaped(host, alive, silent_after)
    }
    for row in rows:
        row["recorded_state"] = row.get("state")
        if str(row.get("id")) in gone:
            row["state"] = "dead"
        elif str(row.get("id")) in unreaped:
            row["process_seen"] = False
            row["reaped_in"] = unreaped[str(row.get("id"))]
    return rows


def hosts(store: Store) -> list[dict[str, Any]]:
    """Per host with a live engine or VM: `host`, `engines`, `slots` (their max VMs; an
    engine row's negative max_vms, or one over 1024 (the most an engine runs: inf,
    2**63-1), adds none, and is a defect of the host), `vms` (live
    VMs), `busy` (VMs holding a slot: booting, ready or busy), `free` (slots - busy, at
    least 0)."""
    busy: dict[str, int] = {}
    for row in store.vms.live_counts():
        if row["state"] in ("booting", "ready", "busy"):
            busy[str(row["host"])] = busy.get(str(row["host"]), 0) + _int(row["n"])
    out = []
    for record in store.engines.hosts():
        held = busy.get(str(record["host"]), 0)
        slots = _int(record.get("slots"))
        negative = _int(record.pop("negative_max_vms", 0))
        if negative:  # (they added no slot)
            defects = record.setdefault("defects", [])
            defects.append(f"slots: {negative} engine(s) with a negative max_vms, counted as 0")
        huge = _int(record.pop("huge_max_vms", 0))
        if huge:  # (inf, 2**63-1: no engine runs more than 1024 VMs)
            defects = record.setdefault("defects", [])
            defects.append(
                f"slots: {huge} engine(s) with a max_vms over 1024 (the most an engine runs),"
                " counted as 0"
            )
        out.append(record | {"slots": slots, "busy": held, "free": max(slots - held, 0)})
    return out


def slot_counts(store: Store) -> list[tuple[str, str, int]]:
    """(host, state, count) for metrics: live VMs by state, and `free` slots per host."""
    out = [(str(r["host"]), str(r["state"]), _int(r["n"])) for r in store.vms.live_counts()]
    out += [(str(h["host"]), "free", int(h["free"])) for h in hosts(store)]
    return out


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0

"""What runs where: VMs, engines, hosts; usage and cost; the fleet at a glance."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from swarm_engine.api import models
from swarm_engine.api.deps import RegistryDep, ServerDep, StoreDep
from swarm_engine.records import MAX_TOTAL_TOKENS
from swarm_engine.service import runs as run_service
from swarm_engine.service import vms as service
from swarm_engine.service.metrics import TOKEN_KINDS, Tally, model_for

router = APIRouter(prefix="/v1", tags=["fleet"])


@router.get("/vms", response_model=list[models.VM], summary="Live VMs")
def vms(
    store: StoreDep,
    host: Annotated[str | None, Query(max_length=253, description="Only this host's.")] = None,
) -> list[dict[str, Any]]:
    """VMs not yet destroyed, of every host (or `host`), oldest first."""
    return service.live(store, host)


@router.get("/vms/{vm_id}", response_model=models.VM, summary="Show a VM")
def vm(vm_id: Annotated[str, Path(max_length=200)], store: StoreDep) -> dict[str, Any]:
    """One VM, whatever its state."""
    return service.one(store, vm_id)


@router.get("/engines", response_model=list[models.Engine], summary="Running engines")
def engines(store: StoreDep) -> list[dict[str, Any]]:
    """Engines not stopped, of every host, oldest first."""
    return service.engines(store)


@router.get("/hosts", response_model=list[models.Host], summary="Hosts and their slots")
def hosts(store: StoreDep) -> list[dict[str, Any]]:
    """Each host with a live engine or VM: engines, VM slots, busy and free slots."""
    return service.hosts(store)


def usage_report(tally: Tally) -> models.UsageReport:
    by_model: dict[str, dict[str, Any]] = {}
    for (model, kind), n in tally.tokens.items():
        by_model.setdefault(model, {"model": model})[f"{kind}_tokens"] = n
    for model, cost in tally.cost.items():
        by_model.setdefault(model, {"model": model})["cost_usd"] = cost
    rows = [models.ModelUsage(**v) for _, v in sorted(by_model.items())]
    total = models.Usage(
        **{
            f"{k}_tokens": min(sum(getattr(r, f"{k}_tokens") for r in rows), MAX_TOTAL_TOKENS)
            for k in TOKEN_KINDS
        },
        cost_usd=sum(r.cost_usd for r in rows),
    )
    return models.UsageReport(total=total, by_model=rows, left_out_steps=tally.left_out)


@router.get("/usage", response_model=models.UsageReport, summary="Usage and cost")
def usage(store: StoreDep, registry: RegistryDep, server: ServerDep) -> models.UsageReport:
    """Model API tokens and cost over every finished step, in total and per model."""
    server.tally.refresh(store, model_for(registry))
    with server.tally.lock:
        return usage_report(server.tally)


@router.get("/status", response_model=models.Status, summary="The fleet at a glance")
def status(store: StoreDep, registry: RegistryDep, server: ServerDep) -> models.Status:
    """Tickets per status, hosts, running engines, live VMs, the 10 newest runs, usage."""
    counts = server.counts.get(store)
    return models.Status.model_validate(
        {
            "tickets": counts,
            "hosts": service.hosts(store),
            "engines": service.engines(store),
            "vms": service.live(store),
            "recent_runs": run_service.recent(store, 10),
            "usage": usage(store, registry, server).total,
        }
    )

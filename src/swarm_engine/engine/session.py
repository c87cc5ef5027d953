"""An engine session: the store, the registry, a VM pool and this engine's row.

Both `run-ticket --wait` and the daemon run tickets through a session. Entering it
registers the engine; leaving it closes the pool and marks the engine stopped.
"""

from __future__ import annotations

import os
import socket
import uuid
from types import TracebackType
from typing import Any

from swarm_engine.agents.kinds import get_agent
from swarm_engine.config import Settings
from swarm_engine.engine.events import EventSink, ignore
from swarm_engine.engine.plan import Plan, build_plan
from swarm_engine.engine.runner import TicketRunner
from swarm_engine.errors import SwarmError
from swarm_engine.registry import Registry
from swarm_engine.store import Store, open_store
from swarm_engine.store.tickets import not_claimable
from swarm_engine.vm.backends import create_backend
from swarm_engine.vm.base import VMBackend, VMInfo, VMSpec
from swarm_engine.vm.pool import VMPool

HOST = socket.gethostname()


class StoreRecorder:
    """Records the pool's VM transitions in the `vms` table."""

    def __init__(self, store: Store, engine_id: str) -> None:
        self.store = store
        self.engine_id = engine_id

    def booting(self, vm_id: str, backend: str, spec: VMSpec) -> None:
        self.store.vms.record_boot(
            vm_id,
            backend=backend,
            host=HOST,
            engine_id=self.engine_id,
            owner_pid=os.getpid(),
            memory_mb=spec.memory_mb,
            vcpus=spec.vcpus,
        )

    def ready(self, vm_id: str, info: VMInfo) -> None:
        self.store.vms.record_ready(vm_id, info)

    def destroyed(self, vm_id: str, error: str | None) -> None:
        self.store.vms.record_destroyed(vm_id, error)


def new_engine_id() -> str:
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class EngineSession:
    def __init__(
        self,
        settings: Settings,
        *,
        kind: str = "run-ticket",
        max_vms: int | None = None,
        backend: str | None = None,
        events: EventSink = ignore,
    ) -> None:
        self.settings = settings
        self.kind = kind
        self.max_vms = max_vms or settings.max_vms
        self.backend_name = backend or settings.backend
        self.events = events
        self.engine_id = new_engine_id()
        self.registered = False
        self.store: Store = open_store(settings.tickets_path)
        self.registry = Registry(settings.registry_path, settings.packages_dir)
        self.pool = VMPool(
            self.max_vms,
            self._make_backend,
            self.backend_name,
            StoreRecorder(self.store, self.engine_id),
        )
        self.runner = TicketRunner(
            store=self.store,
            pool=self.pool,
            settings=settings,
            engine_id=self.engine_id,
            events=events,
        )

    def _make_backend(self, name: str) -> VMBackend:
        return create_backend(name, self.settings.home, self.settings.backend_options.get(name, {}))

    async def __aenter__(self) -> EngineSession:
        try:
            self.pool.backend()  # fail early on an unknown backend
            if self.kind == "daemon":
                self._register()
                await self.pool.start()
        except BaseException:
            self._close()
            raise
        return self

    def _register(self) -> None:
        if self.registered:
            return
        self.store.engines.register(
            self.engine_id,
            kind=self.kind,
            host=HOST,
            pid=os.getpid(),
            max_vms=self.max_vms,
            backend=self.backend_name,
        )
        self.registered = True

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.pool.close()
        finally:
            if self.registered:
                self.store.engines.stopped(self.engine_id)
            self._close()

    def _close(self) -> None:
        self.registry.close()
        self.store.close()

    def plan(self, ticket: dict[str, Any]) -> Plan:
        """Resolve the ticket's agent/workflow and run each agent kind's host checks."""
        plan = build_plan(ticket, self.registry)
        for step in plan.steps.values():
            get_agent(step.agent.kind, self.settings.agents.get(step.agent.kind)).preflight(
                step.agent
            )
        return plan

    async def run_ticket(self, ticket_id: int) -> dict[str, Any]:
        """Claim one ticket by id and run it to the end (`run-ticket --wait`).

        Resolution errors (unknown agent, missing key) are raised before the claim, so
        they change nothing.
        """
        ticket = self.store.tickets.get(ticket_id)
        plan = self.plan(ticket)
        if ticket["status"] not in ("draft", "open"):
            raise not_claimable(ticket)
        self._register()
        claimed = self.store.tickets.claim(
            ticket_id,
            engine_id=self.engine_id,
            attempt_id=uuid.uuid4().hex,
            lease_ttl=self.settings.lease_ttl,
        )
        return await self.runner.run(claimed, plan)

    async def run_claimed(self, ticket: dict[str, Any]) -> dict[str, Any]:
        """Run a ticket the daemon already claimed; resolution errors fail the ticket."""
        plan: Plan | SwarmError
        try:
            plan = self.plan(ticket)
        except SwarmError as exc:
            plan = exc
        return await self.runner.run(ticket, plan)

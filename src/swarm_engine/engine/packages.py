"""The agent package copies a run was planned with, held on this host until it ends.

A step reads its agent's package only when its files have the digest the run was planned
with (`agents.files.package_contents`). `agent register --force` with other files links a
new copy for the runs planned after it; the copies a running run holds (a shared `flock`,
`package_folders.HeldCopy`) are left in place by that swap and by `cleanup`, so the run's
later steps still find and run the files it was planned with. Released when the run ends;
then the next registration of that name, or `cleanup`, removes a copy no link names.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from swarm_engine.agents.files import hold_package
from swarm_engine.engine.plan import Plan
from swarm_engine.errors import AgentError
from swarm_engine.models import AgentSpec
from swarm_engine.package_folders import HeldCopy

log = logging.getLogger(__name__)

MAX_HELD = 4
"""The most packages one run holds (one open descriptor each, within the room an engine
keeps per slot: `engine/fdlimit.py`): the first ones in its steps' order. A step of a
further package reads the copy its link names, as a run's single read always did."""


class RunPackages:
    """The package copies one run holds, one per agent (name, version, digest)."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str, str], HeldCopy] = {}

    @classmethod
    def hold(cls, plan: Plan, packages_dir: Path | None) -> RunPackages:
        """Hold the copy of each package `plan`'s steps were planned with (those this
        host has). A package it cannot hold is left to its step, which says what is
        wrong. Blocking: run it in a worker thread (`hold_for`)."""
        out = cls()
        try:
            for step in plan.steps.values():
                agent = step.agent
                key = _key(agent)
                if key is None or key in out._held:
                    continue
                if len(out._held) >= MAX_HELD:
                    log.debug("agent %s: its package is not held (%d are)", agent.ref, MAX_HELD)
                    continue
                try:
                    held = hold_package(agent, packages_dir)
                except (AgentError, OSError) as exc:  # the step meets it again, and says so
                    log.debug("agent %s: its package is not held: %s", agent.ref, exc)
                    continue
                if held is not None:
                    out._held[key] = held
        except BaseException:
            out.release()
            raise
        return out

    def of(self, agent: AgentSpec) -> HeldCopy | None:
        """The copy held for `agent` (None: none)."""
        key = _key(agent)
        return None if key is None else self._held.get(key)

    def release(self) -> None:
        """Let every copy go (safe to call again)."""
        held, self._held = self._held, {}
        for copy in held.values():
            copy.release()


def _key(agent: AgentSpec) -> tuple[str, str, str] | None:
    if agent.package_digest is None:
        return None
    return (agent.name, agent.version, agent.package_digest)


async def hold_for(plan: Plan, packages_dir: Path | None) -> RunPackages:
    """`RunPackages.hold` off the event loop. A cancel while it runs releases what it
    held once it is done (never left held for the engine's life). A plan without a
    package to hold is no hop to a thread."""
    if all(_key(step.agent) is None for step in plan.steps.values()):
        return RunPackages()
    job = asyncio.ensure_future(asyncio.to_thread(RunPackages.hold, plan, packages_dir))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        job.add_done_callback(_release_done)
        raise


def _release_done(job: asyncio.Future[RunPackages]) -> None:
    if not job.cancelled() and job.exception() is None:
        job.result().release()

"""Which workflow a trigger name belongs to: a trigger's name is its address (a webhook's
URL, a cron slot's key), so it has one owner.

Registration refuses a name another workflow owns (`Registry.register_workflows`, under a
lock: the check and the insert are one step). A registry row is untrusted, and any client
may write one that declares a name another workflow owns; such a name, declared more than
once among the latest workflows, is *ambiguous*: it fires for none of them (a webhook
delivery gets 409, a cron trigger is skipped with one warning) until one declares it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from swarm_engine.records import shown

if TYPE_CHECKING:
    from swarm_engine.models import WorkflowSpec

NAMES_SHOWN = 5
"""The most workflow names an ambiguity's line lists (then `and N more`)."""


def trigger_owners(workflows: Iterable[WorkflowSpec]) -> dict[str, list[str]]:
    """trigger name -> the workflows that declare it (a name once per declaration: a
    row declaring one twice is listed twice)."""
    owners: dict[str, list[str]] = {}
    for workflow in workflows:
        for trigger in workflow.triggers:
            owners.setdefault(trigger.name, []).append(workflow.name)
    return owners


def ambiguity(name: str, owners: list[str]) -> str | None:
    """One line when `name` is declared more than once (`owners`: `trigger_owners`'),
    else None: `trigger 'hook' is declared by more than one workflow (evil, wh): it fires
    for none of them until only one declares it`."""
    if len(owners) < 2:
        return None
    names = sorted(set(owners))
    listed = ", ".join(names[:NAMES_SHOWN])
    if len(names) > NAMES_SHOWN:
        listed += f" and {len(names) - NAMES_SHOWN} more"
    if len(names) == 1:
        listed = f"{listed}, {len(owners)} times"
    return (
        f"trigger {shown(name)} is declared by more than one workflow ({listed}): it fires"
        " for none of them until only one declares it"
    )

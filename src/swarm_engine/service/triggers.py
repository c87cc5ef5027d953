"""Webhook triggers: a signed delivery makes one ticket of the trigger's workflow, once.

A delivery is `POST /v1/triggers/<name>` with the raw body signed by the trigger's secret
(host configuration, `[triggers.<name>]`): header `X-Swarm-Signature: sha256=<hex HMAC-SHA256
of the body>`, and an `Idempotency-Key` header: a retried delivery with the same key makes
no second ticket (`trigger_firings`, key `webhook:<key>`). The ticket's inputs are the
trigger's literal `inputs` plus `webhook`: the body parsed as JSON (data, never a template).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from swarm_engine.config import Settings
from swarm_engine.errors import NotFoundError, SwarmError, UsageError
from swarm_engine.models import strict_json
from swarm_engine.records import shown
from swarm_engine.registry import Registry
from swarm_engine.service.values import check_json
from swarm_engine.store import Store

SIGNATURE_HEADER = "X-Swarm-Signature"
KEY_HEADER = "Idempotency-Key"
MAX_KEY = 200


class WebhookRefused(SwarmError):
    """The delivery is not accepted: `status` 401 (bad signature) or 403 (no secret here)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Delivery:
    """What a delivery made: the ticket, and whether this delivery made it."""

    ticket_id: int | None
    created: bool


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for `body`: `sha256=<hex>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(
    store: Store,
    registry: Registry,
    settings: Settings,
    name: str,
    body: bytes,
    signature: str | None,
    key: str | None,
) -> Delivery:
    """Check and fire one webhook delivery. Raises `NotFoundError` (no such webhook
    trigger), `WebhookRefused` (401/403), `UsageError` (no key, or a body that is not
    JSON)."""
    found = [
        (workflow, trigger)
        for workflow, _ in registry.latest_workflows()
        for trigger in workflow.triggers
        if trigger.name == name and trigger.webhook
    ]
    if not found:
        raise NotFoundError(f"no webhook trigger named {shown(name)}")
    workflow, trigger = found[0]
    host = settings.triggers.get(name)
    secret = host.resolve() if host is not None else None
    if secret is None:
        raise WebhookRefused(403, f"trigger {shown(name)} has no secret configured on this host")
    if signature is None or not hmac.compare_digest(signature.strip(), sign(secret, body)):
        raise WebhookRefused(401, f"the {SIGNATURE_HEADER} header does not match the body")
    if key is None or not key.strip():
        raise UsageError(f"a delivery needs an {KEY_HEADER} header")
    if len(key) > MAX_KEY or not key.isprintable():
        raise UsageError(f"the {KEY_HEADER} is at most {MAX_KEY} printable characters")
    payload: Any = None
    if body.strip():
        try:
            payload = strict_json(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as exc:
            raise UsageError(f"the body is not JSON: {exc}") from exc
    check_json(payload, "the body")  # what POST /v1/tickets refuses, a delivery may not bring
    inputs = {**trigger.inputs, "webhook": payload}
    ticket_id, created = store.triggers.fire(
        name,
        f"webhook:{key}",
        workflow_id=workflow.ref,
        title=f"{name} {key[:60]}",
        inputs=inputs,
        priority=trigger.priority,
    )
    return Delivery(ticket_id, created)

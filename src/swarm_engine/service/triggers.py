"""Webhook triggers: a signed delivery makes one ticket of the trigger's workflow, once.

A delivery is `POST /v1/triggers/<name>` with the raw body signed by the trigger's secret
(host configuration, `[triggers.<name>]`). By default the signature is the Standard
Webhooks scheme's (https://www.standardwebhooks.com/, checked by the `standardwebhooks`
library): headers `webhook-id` (the delivery's id), `webhook-timestamp` (Unix seconds) and
`webhook-signature: v1,<base64 HMAC-SHA256 of "ID.TIMESTAMP.BODY">`; a timestamp more than
5 minutes from this host's clock is refused, so a delivery seen once cannot be sent again
later, nor under another id. With `signature = "body"` the trigger takes the older,
GitHub-style `X-Swarm-Signature: sha256=<hex HMAC-SHA256 of the body>` and an
`Idempotency-Key` header instead (the body alone signed: replayable under a new key).
Either way a retried delivery with the same id makes no second ticket (`trigger_firings`,
key `webhook:<id>`). The ticket's inputs are the trigger's literal `inputs` plus
`webhook`: the body parsed as JSON (data, never a template), read as every JSON body of
the API is (`read_body`: a key given twice, or an empty body, is refused). The secret is
held to one rule (16+ characters, not blank) whether it is given inline or by
`secret_env`: `serve` checks the variables when it starts (`check_secrets`), and each
delivery checks its secret again. A Standard Webhooks secret written `whsec_<base64>` is
the key it encodes; any other is its UTF-8 bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from swarm_engine.config import Settings
from swarm_engine.config_model import whsec_key
from swarm_engine.errors import ConfigError, ConflictError, NotFoundError, SwarmError, UsageError
from swarm_engine.jsonwire import wire_text
from swarm_engine.models import strict_json
from swarm_engine.records import DuplicateKey, TooManyDigits, shown
from swarm_engine.registry import Registry
from swarm_engine.registry.triggers import ambiguity
from swarm_engine.service.values import check_json
from swarm_engine.store import Store

SIGNATURE_HEADER = "X-Swarm-Signature"
KEY_HEADER = "Idempotency-Key"
STANDARD_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
"""A Standard Webhooks delivery's headers (lower case, as `deliver` takes them)."""
MAX_KEY = 200
WINDOW_MINUTES = 5
"""How far a Standard Webhooks delivery's timestamp may be from this host's clock (the
`standardwebhooks` library's tolerance)."""


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
    """The `X-Swarm-Signature` header's value for `body` (`signature = "body"`):
    `sha256=<hex>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_webhook(secret: str) -> Webhook:
    """The Standard Webhooks signer and checker of `secret`: a `whsec_<base64>` secret is
    the key it encodes (as the scheme's senders write it), any other its UTF-8 bytes.
    `ValueError` for a `whsec_` secret with no base64 after it (`config_model.whsec_key`:
    the settings refuse one before a delivery comes)."""
    key = whsec_key(secret)
    return Webhook(key if key is not None else secret.encode())


def sign_standard(secret: str, delivery_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """A Standard Webhooks delivery's headers for `body`, sent at `timestamp` (Unix
    seconds): what a sender writes (tests and examples use it)."""
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    signature = standard_webhook(secret).sign(delivery_id, when, body)
    return {"webhook-id": delivery_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature}  # fmt: skip


def _check_standard(name: str, secret: str, body: bytes, headers: Mapping[str, str]) -> str:
    """The delivery's id, once its Standard Webhooks signature is checked; else
    `WebhookRefused` (401) saying which part failed."""
    given = {h: headers.get(h) for h in STANDARD_HEADERS}
    missing = [h for h, v in given.items() if not v]
    if missing:
        hint = (
            f" (this trigger takes Standard Webhooks signatures, not {SIGNATURE_HEADER}:"
            f' signature = "body" in [triggers.{name}] takes that)'
            if headers.get(SIGNATURE_HEADER.lower())
            else ""
        )
        plural = "s" if len(missing) > 1 else ""
        raise WebhookRefused(401, f"a delivery needs the {', '.join(missing)} header{plural}{hint}")
    delivery_id = str(given["webhook-id"])
    if len(delivery_id) > MAX_KEY or not (delivery_id.isascii() and delivery_id.isprintable()):
        # (a header is read as Latin-1: only ASCII is signed as its sender wrote it)
        raise UsageError(f"the webhook-id is at most {MAX_KEY} printable ASCII characters")
    try:
        checker = standard_webhook(secret)
    except ValueError as exc:  # (a variable changed since start-up)
        raise WebhookRefused(403, f"trigger {shown(name)} has no usable secret: {exc}") from exc
    try:
        checker.verify(body, {h: str(v) for h, v in given.items()}, json_parse=False)
    except WebhookVerificationError as exc:
        said = str(exc)
        if "too old" in said or "too new" in said:
            raise WebhookRefused(
                401,
                f"the webhook-timestamp is more than {WINDOW_MINUTES} minutes from this"
                " host's clock (a delivery is signed with the time it is sent)",
            ) from None
        if "Invalid Signature Headers" in said:
            raise WebhookRefused(
                401, "the webhook-timestamp is not a time in Unix seconds"
            ) from None
        raise WebhookRefused(
            401,
            "the webhook-signature header does not match the webhook-id, webhook-timestamp"
            " and body",
        ) from None
    return delivery_id


def check_secrets(settings: Settings) -> None:
    """`ConfigError` (one line, exit 5) when a `[triggers.<name>]` of this host takes its
    secret from a variable holding one that breaks the rule an inline `secret` is held to
    (16+ characters, not blank): `serve` refuses to start, as it does for such a `secret`.
    An unset or empty variable is no secret (its deliveries get 403), as documented."""
    for name, host in sorted(settings.triggers.items()):
        problem = host.env_problem()
        if problem is not None:
            raise ConfigError(f"setting triggers.{name}.secret_env: {problem}")


def read_body(body: bytes) -> Any:
    """The delivery's body as JSON, read as every JSON body of the API is: a key given
    twice in one object, at any depth, is refused (`the body: duplicate key "a"`), never
    read as its last value; so is an empty or blank body (it is not JSON), and one that
    is not UTF-8 or starts with a byte-order mark (`jsonwire.wire_text`). `UsageError`
    (400) with one line; `TooManyDigits` for an integer too long to read."""
    if not body.strip():
        raise UsageError("the body is not JSON: it is empty")
    try:
        return strict_json(wire_text(body), unique_keys=True)  # (UTF-8, no BOM)
    except DuplicateKey as exc:
        raise UsageError(f"the body: {exc.line}") from exc
    except TooManyDigits:
        raise  # answered as on every route (api/bodies.py): 422, not "not JSON"
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise UsageError(f"the body is not JSON: {exc}") from exc


def deliver(
    store: Store,
    registry: Registry,
    settings: Settings,
    name: str,
    body: bytes,
    headers: Mapping[str, str],
) -> Delivery:
    """Check and fire one webhook delivery (`headers`: the request's, names in lower
    case). Raises `NotFoundError` (no such webhook trigger), `WebhookRefused` (401/403),
    `ConflictError` (409: the name is declared by more than one workflow,
    registry/triggers.py), `UsageError` (no key or an unusable one, or a body that is not
    JSON)."""
    declared = [
        (workflow, trigger)
        for workflow, _ in registry.latest_workflows()
        for trigger in workflow.triggers
        if trigger.name == name
    ]
    if not any(trigger.webhook for _, trigger in declared):
        raise NotFoundError(f"no webhook trigger named {shown(name)}")
    host = settings.triggers.get(name)
    try:
        secret = host.resolve() if host is not None else None
    except ValueError as exc:  # the variable changed since start-up (check_secrets)
        raise WebhookRefused(
            403, f"trigger {shown(name)} has no usable secret on this host: {exc}"
        ) from exc
    if secret is None:
        raise WebhookRefused(403, f"trigger {shown(name)} has no secret configured on this host")
    assert host is not None
    if host.signature == "standard-webhooks":
        key: str | None = _check_standard(name, secret, body, headers)
        key_header = "webhook-id"
    else:
        signature = headers.get(SIGNATURE_HEADER.lower())
        if signature is None:
            raise WebhookRefused(401, f"a delivery needs the {SIGNATURE_HEADER} header")
        if not hmac.compare_digest(signature.strip(), sign(secret, body)):
            raise WebhookRefused(401, f"the {SIGNATURE_HEADER} header does not match the body")
        key, key_header = headers.get(KEY_HEADER.lower()), KEY_HEADER
    # a name declared by more than one workflow (rows any client may write): for none
    # of them, never the first one read; said only to a sender holding the secret
    problem = ambiguity(name, [w.name for w, _ in declared])
    if problem is not None:
        raise ConflictError(problem)
    workflow, trigger = declared[0]  # the one declaration, a webhook's
    if key is None or not key.strip():
        raise UsageError(f"a delivery needs an {KEY_HEADER} header")
    if len(key) > MAX_KEY or not key.isprintable():
        raise UsageError(f"the {key_header} is at most {MAX_KEY} printable characters")
    payload = read_body(body)
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

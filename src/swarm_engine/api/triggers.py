"""`POST /v1/triggers/{name}`: webhook deliveries (service/triggers.py). Authenticated by
the trigger's HMAC signature, not by the API token: senders are other systems."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import JSONResponse

from swarm_engine.api.bodies import too_many_digits
from swarm_engine.api.deps import RegistryDep, ServerDep, StoreDep
from swarm_engine.api.models import ErrorBody
from swarm_engine.records import TooManyDigits
from swarm_engine.service.triggers import WebhookRefused, deliver

router = APIRouter(prefix="/v1/triggers", tags=["triggers"])


@router.post(
    "/{name}",
    summary="Deliver a webhook",
    responses={
        200: {"description": "already delivered: the earlier ticket"},
        201: {"description": "the ticket made"},
        401: {"description": "the signature does not match, or is too old", "model": ErrorBody},
        403: {"description": "no secret for this trigger here", "model": ErrorBody},
        409: {"description": "the name is declared by more than one workflow", "model": ErrorBody},
        422: {"description": "a number of more than 4300 digits in the body", "model": ErrorBody},
    },
)
async def webhook(
    request: Request,
    store: StoreDep,
    registry: RegistryDep,
    server: ServerDep,
    name: Annotated[str, Path(max_length=63, pattern=r"^[a-z0-9][a-z0-9_.-]*$")],
    webhook_id: Annotated[str | None, Header(max_length=1000)] = None,
    webhook_timestamp: Annotated[str | None, Header(max_length=1000)] = None,
    webhook_signature: Annotated[str | None, Header(max_length=1000)] = None,
    x_swarm_signature: Annotated[str | None, Header(max_length=1000)] = None,
    idempotency_key: Annotated[str | None, Header(max_length=1000)] = None,
) -> JSONResponse:
    """One delivery of webhook trigger `name`, signed with the trigger's secret: by
    default the Standard Webhooks way (`webhook-id`, `webhook-timestamp` in Unix seconds,
    within 5 minutes of this host's clock, `webhook-signature: v1,<base64 HMAC-SHA256 of
    "ID.TIMESTAMP.BODY">`); with `signature = "body"` on this host, `X-Swarm-Signature:
    sha256=<hex HMAC-SHA256 of the raw body>` and an `Idempotency-Key`. Answers 201 with
    `{"ticket_id", "created": true}`, or 200 with the first delivery's ticket on a repeat."""
    import anyio

    body = await request.body()
    given = {
        "webhook-id": webhook_id,
        "webhook-timestamp": webhook_timestamp,
        "webhook-signature": webhook_signature,
        "x-swarm-signature": x_swarm_signature,
        "idempotency-key": idempotency_key,
    }
    headers = {h: v for h, v in given.items() if v is not None}
    try:
        done = await anyio.to_thread.run_sync(
            deliver, store, registry, server.settings, name, body, headers
        )
    except TooManyDigits as exc:  # the answer every JSON body gets (api/bodies.py)
        raise too_many_digits(exc) from None
    except WebhookRefused as exc:
        code = "unauthorized" if exc.status == 401 else "forbidden"
        return JSONResponse({"error": code, "message": str(exc)}, status_code=exc.status)
    return JSONResponse(
        {"ticket_id": done.ticket_id, "created": done.created},
        status_code=201 if done.created else 200,
    )

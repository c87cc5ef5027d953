"""The web dashboard under `/ui` (docs/api.md, "Dashboard"): server-rendered pages
(Jinja2) that htmx keeps current without a reload, from the same process as the API.

- `/ui`: tickets by status (filters, a create form, bulk cancel), the rows polled.
- `/ui/tickets/{id}`: a ticket's runs as their steps (needs, state, timings, VM, tokens,
  cost), polled; its live log tail from `/v1/tickets/{id}/logs/stream` (htmx's SSE
  extension); cancel.
- `/ui/fleet`: hosts and engines with busy and free slots, polled.
- `/ui/login?token=...`: for a server with a token, checks it once and keeps it in an
  HttpOnly, SameSite=Strict cookie that `api/auth.py` accepts like the header.

htmx and its SSE extension are vendored in `api/static/` (no CDN, no build step). Every
value is escaped by Jinja2's autoescape; log text is added as text nodes (`dashboard.js`).
Handlers are plain functions (FastAPI's thread pool), like the API's.
"""

from __future__ import annotations

import hmac
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    HTTPException,
    Query,
    Request,
    Security,
)
from fastapi import (
    Path as PathParam,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from swarm_engine.api.auth import COOKIE, bearer, require_token
from swarm_engine.api.deps import RegistryDep, Server, ServerDep, StoreDep
from swarm_engine.api.models import TicketStatusName
from swarm_engine.api.numbers import ASCII_WHOLE
from swarm_engine.api.queries import one_value_each
from swarm_engine.api.refs import REFERENCE
from swarm_engine.errors import SwarmError
from swarm_engine.records import loads_unique, money, shown
from swarm_engine.registry import Registry
from swarm_engine.registry.workflows import dependencies
from swarm_engine.service import tickets as tickets_service
from swarm_engine.service import vms as vms_service
from swarm_engine.service.runs import runs_with_steps
from swarm_engine.service.values import MAX_ID, MIN_INT
from swarm_engine.store import Store

HERE = Path(__file__).parent
PAGE_SIZE = 50
POLL = "every 2s"
"""How often a page asks for its changing parts again."""
ENDED = ("done", "failed", "cancelled")


class LoginRequired(Exception):
    """A page asked for without the token: the browser goes to the login page."""


def page_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> None:
    """`require_token` for pages: a browser without the token is sent to the login page
    (a 401 for an htmx request, which must not swap a whole page into a fragment)."""
    try:
        require_token(request, credentials)
    except HTTPException:
        if request.method != "GET" or request.headers.get("HX-Request") == "true":
            raise
        raise LoginRequired() from None


def htmx_only(request: Request) -> None:
    """A dependency: an action (POST) must come from the dashboard's htmx (`HX-Request`),
    which another site's form cannot send: no cross-site request forgery, token or not."""
    if request.method == "POST" and request.headers.get("HX-Request") != "true":
        raise HTTPException(400, "dashboard actions come from its pages (HX-Request)")


router = APIRouter(
    prefix="/ui", include_in_schema=False,
    dependencies=[Depends(page_token), Depends(htmx_only), Depends(one_value_each)],
)  # fmt: skip
login_router = APIRouter(
    prefix="/ui", include_in_schema=False, dependencies=[Depends(one_value_each)]
)
templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters["money"] = money
TicketPath = Annotated[int, PathParam(ge=MIN_INT, le=MAX_ID), ASCII_WHOLE]
TICKET_ID_TEXT = re.compile(r"-?[0-9]+", re.ASCII)
"""A checked row's id as the bulk cancel form sends it: ASCII digits, as every route
reads an id (`api/numbers.py`), of a 64-bit integer (`form_ids`)."""


def render(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("poll", POLL)
    context.setdefault("statuses", tickets_service.STATUS_NAMES)
    return HTMLResponse(templates.get_template(name).render(**context), status_code=status_code)


def install(app: FastAPI) -> None:
    """Serve the dashboard from `app`: its pages, `/ui/static`, and `/` leading to it."""
    app.include_router(login_router)
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse("/ui/login", status_code=303)

    @app.get("/", include_in_schema=False, dependencies=[Depends(one_value_each)])
    def root() -> RedirectResponse:
        return RedirectResponse("/ui", status_code=303)


@login_router.get("/login")
def login(request: Request, token: Annotated[str, Query(max_length=1000)] = "") -> Response:
    """Check `token` once and keep it in an HttpOnly cookie; then the tickets page."""
    expected: str | None = request.app.state.token
    if expected is None:
        return RedirectResponse("/ui", status_code=303)
    if not hmac.compare_digest(token.encode(), expected.encode()):
        return render("login.html", 401, failed=bool(token))
    response = RedirectResponse("/ui", status_code=303)
    response.set_cookie(
        COOKIE, expected, httponly=True, samesite="strict", path="/",
        secure=request.url.scheme == "https",
    )  # fmt: skip
    return response


# -- tickets --------------------------------------------------------------------------------
class Filters:
    """The ticket list's filters, from the query string (empty fields are no filter)."""

    def __init__(self, status: list[str], agent: str, workflow: str, cursor: int | None) -> None:
        self.status = status
        self.agent = agent.strip() or None
        self.workflow = workflow.strip() or None
        self.cursor = cursor


def _filters(
    status: Annotated[list[TicketStatusName] | None, Query()] = None,
    agent: Annotated[str, Query(max_length=200), REFERENCE] = "",
    workflow: Annotated[str, Query(max_length=200), REFERENCE] = "",
    cursor: Annotated[int | None, Query(ge=MIN_INT, le=MAX_ID), ASCII_WHOLE] = None,
) -> Filters:
    """The filters, each read as `GET /v1/tickets` reads it: a status that is none
    (`?status=bogus`) or a reference with no version after its `@` is a 422 naming it
    (`query.status.0: Input should be 'draft', ...`), never dropped to list every ticket."""
    return Filters(list(status or []), agent, workflow, cursor)


FiltersDep = Annotated[Filters, Depends(_filters)]


def _rows(store: Store, server: Server, filters: Filters, message: str = "") -> dict[str, Any]:
    try:
        found = tickets_service.page(
            store, statuses=filters.status, agent=filters.agent, workflow=filters.workflow,
            cursor=filters.cursor, limit=PAGE_SIZE,
        )  # fmt: skip
        items, next_cursor, error = found.items, found.next_cursor, ""
    except SwarmError as exc:
        items, next_cursor, error = [], None, str(exc)
    return {
        "tickets": items,
        "next_cursor": next_cursor,
        "counts": server.counts.get(store),
        "filters": filters,
        "message": message,
        "error": error,
    }


@router.get("", response_class=HTMLResponse)
def tickets_page(store: StoreDep, server: ServerDep, filters: FiltersDep) -> HTMLResponse:
    return render("tickets.html", **_rows(store, server, filters))


@router.get("/tickets/rows", response_class=HTMLResponse)
def ticket_rows(store: StoreDep, server: ServerDep, filters: FiltersDep) -> HTMLResponse:
    return render("ticket_rows.html", **_rows(store, server, filters))


MAX_FORM_FIELDS = 2000
"""A dashboard form with more fields than this is refused (400)."""


FORM_TYPE = "application/x-www-form-urlencoded"


async def _form(request: Request) -> dict[str, list[str]]:
    """The fields of an urlencoded form (what htmx posts), without python-multipart.
    HTTP 400 for a form of more than `MAX_FORM_FIELDS` fields, for one that is not valid
    UTF-8 (raw or %-escaped: never read with U+FFFD in its place, as the JSON API
    refuses such a body too), and for a body of another type (a multipart form was read
    as empty: `give exactly one of agent or workflow`)."""
    raw = await request.body()
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if raw and kind != FORM_TYPE:
        shown_kind = " ".join(kind.split())[:100] or "none"
        raise HTTPException(
            400, f"a dashboard form is sent as {FORM_TYPE} (this body's type: {shown_kind})"
        )
    try:
        return parse_qs(  # (a blank field kept: `id=` is a bad id, not no id)
            raw.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS,
            errors="strict",
        )  # fmt: skip
    except UnicodeDecodeError:
        raise HTTPException(400, "the form is not valid UTF-8 text") from None
    except ValueError:  # parse_qs: "Max number of fields exceeded"
        raise HTTPException(
            400, f"a form of more than {MAX_FORM_FIELDS} fields is refused"
        ) from None


FormDep = Annotated[dict[str, list[str]], Depends(_form)]


CREATE_FIELDS = {"title": True, "target": True, "inputs": False}
"""The create form's fields, each taking one value, and whether it is required."""


def form_values(form: dict[str, list[str]], fields: dict[str, bool]) -> dict[str, str]:
    """The one value of each of `fields` (name: required) in `form`; "" for an optional
    one not given. A field given more than once or a required one missing is a 422
    naming it, as the JSON API refuses such a body (`form.title: given 2 times; it takes
    one value`, `form.title: Field required`), every such field in `details`: the first
    value was taken, and a form without a title made a ticket titled ""."""
    errors = []
    for name, required in fields.items():
        given = len(form.get(name, ()))
        if given > 1:
            msg, kind = f"given {given} times; it takes one value", "repeated_parameter"
        elif required and not given:
            msg, kind = "Field required", "missing"
        else:
            continue
        errors.append({"loc": ("form", name), "msg": msg, "type": kind})
    if errors:
        raise RequestValidationError(errors)
    return {name: (form.get(name) or [""])[0] for name in fields}


@router.post("/tickets/create", response_class=HTMLResponse)
def create_ticket(store: StoreDep, registry: RegistryDep, form: FormDep) -> HTMLResponse:
    """Create a ticket from the form: `target` is `agent NAME` or `workflow NAME`; a 422
    for a field given twice or missing (`form_values`)."""
    title, target, inputs = form_values(form, CREATE_FIELDS).values()
    kind, _, name = target.strip().partition(" ")
    try:
        values = loads_unique(inputs) if inputs.strip() else {}  # a key twice: refused
        if not isinstance(values, dict):
            raise ValueError("inputs must be a JSON object")
        new = tickets_service.NewTicket(
            title=title, inputs=values,
            agent=name.strip() if kind == "agent" else None,
            workflow=name.strip() if kind == "workflow" else None,
        )  # fmt: skip
        ticket = tickets_service.create(store, registry, new)
        message = f"ticket {ticket.id} created"
    except (SwarmError, ValueError, RecursionError) as exc:  # JSONDecodeError too
        message = f"not created: {' '.join(str(exc).split())}"
    return _told(message, "refresh-rows")


def form_ids(form: dict[str, list[str]]) -> list[int]:
    """The form's `id` fields as ticket ids. One that is not ASCII digits (`-?[0-9]+`)
    of a 64-bit integer is a 422 naming it (`form.id: ...`), as a bad id in a path is:
    all or nothing, never the other ids without it (`1_0`, `' 1'` or `\u0663` were
    dropped, and the rest cancelled)."""
    ids = []
    for text in form.get("id", []):
        if TICKET_ID_TEXT.fullmatch(text) is None:
            why = "is not a whole number in ASCII digits (-?[0-9]+)"
        elif len(digits := text.lstrip("-").lstrip("0")) > 19 or not (
            MIN_INT <= (value := int(digits or "0") * (-1 if text[0] == "-" else 1)) <= MAX_ID
        ):  # (read without its leading zeros: 4300 of them are past int()'s digit limit)
            why = f"is not a ticket id ({MIN_INT} to {MAX_ID})"
        else:
            ids.append(value)
            continue
        error = {"loc": ("form", "id"), "msg": f"{shown(text, 40)} {why}", "type": "int_parsing"}
        raise RequestValidationError([error])
    return ids


@router.post("/tickets/cancel", response_class=HTMLResponse)
def cancel_tickets(store: StoreDep, form: FormDep) -> HTMLResponse:
    """Bulk cancel of the checked rows, in one statement (`service.tickets.cancel_many`)."""
    ids = form_ids(form)
    if not ids:
        message = "no ticket checked"
    else:
        try:
            done = tickets_service.cancel_many(store, ids)
            skipped = [f"{i}: {why}" for i, why in sorted(done.skipped.items())]
            message = f"cancelled {len(done.changed)}"
            if skipped:
                message += f"; skipped {len(skipped)} ({', '.join(skipped)})"
        except SwarmError as exc:
            message = f"not cancelled: {exc}"
    return _told(message, "refresh-rows")


def _told(message: str, refresh: str) -> HTMLResponse:
    """A one-line answer to an action, and the event that makes the page read again."""
    response = render("message.html", message=message)
    response.headers["HX-Trigger"] = refresh
    return response


# -- one ticket -----------------------------------------------------------------------------
def _detail(store: Store, registry: Registry, ticket_id: int) -> dict[str, Any]:
    ticket = store.tickets.get(ticket_id)  # NotFoundError: the API's 404
    shown = runs_with_steps(store, ticket_id)  # the newest SHOWN_RUNS
    runs = shown.items
    for run in runs:
        needs: dict[str, set[str]] = {}
        if run.get("workflow_name") and run.get("workflow_version"):
            try:
                spec = registry.workflow(f"{run['workflow_name']}@{run['workflow_version']}")
                needs = dependencies(spec)
            except SwarmError:
                pass  # a workflow no longer registered: steps without their edges
        for step in run["steps"]:
            step["needs"] = sorted(needs.get(str(step.get("step_id")), ()))
    return {
        "ticket": ticket,
        "runs": list(reversed(runs)),
        "older_runs": shown.total - len(runs),
        "runs_before": shown.before,
        "ended": ticket.status in ENDED,
    }


@router.get("/tickets/{ticket_id}", response_class=HTMLResponse)
def ticket_page(ticket_id: TicketPath, store: StoreDep, registry: RegistryDep) -> HTMLResponse:
    return render("ticket.html", **_detail(store, registry, ticket_id))


@router.get("/tickets/{ticket_id}/runs", response_class=HTMLResponse)
def ticket_runs(ticket_id: TicketPath, store: StoreDep, registry: RegistryDep) -> HTMLResponse:
    return render("ticket_runs.html", **_detail(store, registry, ticket_id))


@router.post("/tickets/{ticket_id}/cancel", response_class=HTMLResponse)
def cancel_ticket(ticket_id: TicketPath, store: StoreDep) -> HTMLResponse:
    try:
        tickets_service.cancel(store, ticket_id)
        message = "cancel requested"
    except SwarmError as exc:
        message = f"not cancelled: {exc}"
    return _told(message, "refresh-runs")


# -- fleet ----------------------------------------------------------------------------------
def _fleet(store: Store) -> dict[str, Any]:
    return {"hosts": vms_service.hosts(store), "engines": vms_service.engines(store),
            "vms": vms_service.live(store)}  # fmt: skip


@router.get("/fleet", response_class=HTMLResponse)
def fleet_page(store: StoreDep) -> HTMLResponse:
    return render("fleet.html", **_fleet(store))


@router.get("/fleet/table", response_class=HTMLResponse)
def fleet_table(store: StoreDep) -> HTMLResponse:
    return render("fleet_table.html", **_fleet(store))

"""Who may call the API: everyone on this machine when it listens on a loopback address
without a token; otherwise only requests with `Authorization: Bearer <token>`.

Listening on any other address without a token is refused before the server starts
(`check_exposure`): the API creates, cancels and registers work, so it is never open to
a network by accident.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from swarm_engine.errors import UsageError

MIN_TOKEN_LENGTH = 16
COOKIE = "swarm_token"
"""The dashboard's cookie (set by `/ui/login`): the token, HttpOnly and SameSite=Strict."""
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>`")


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or name, as given to --host) is this machine only:
    `localhost` or an address in 127.0.0.0/8 or ::1. Any other name counts as not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_sendable(token: str) -> bool:
    """Whether a client can send `token` in an `Authorization: Bearer` header and have it
    compared as given: printable ASCII without whitespace (a header is read as latin-1,
    stripped of surrounding spaces, and ends at a line break)."""
    return all("!" <= char <= "~" for char in token)


def check_exposure(host: str, token: str | None) -> None:
    """`UsageError` when the server would listen beyond this machine without a token,
    or the token is empty, too short to be one or holds a character no client can send.
    An empty token given (`--token ""`, `SWARM_API_TOKEN=`: a variable that expanded to
    nothing, say) is refused, never read as "no token"."""
    if token == "":
        raise UsageError(
            "--token (or SWARM_API_TOKEN) is empty: give a token of at least"
            f" {MIN_TOKEN_LENGTH} characters, or neither (a server on a loopback address,"
            " for this machine only)"
        )
    if token is not None and not is_sendable(token):
        raise UsageError(
            "--token (or SWARM_API_TOKEN) may hold only printable ASCII characters, no"
            " spaces or other whitespace ('!' to '~', as in `openssl rand -hex 24`):"
            " a client could not send another in its Authorization header"
        )
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise UsageError(f"--token must be at least {MIN_TOKEN_LENGTH} characters")
    if token is None and not is_loopback(host):
        raise UsageError(
            f"--host {host} is reachable from other machines: give a bearer token"
            " (--token, or SWARM_API_TOKEN in the environment), or listen on 127.0.0.1"
        )


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> None:
    """A dependency: 401 unless the request carries the server's token (when it has one),
    in the Authorization header or in the dashboard's cookie. A request that changes
    something with the cookie alone must also carry `HX-Request` (htmx sends it; another
    site's form cannot), on top of SameSite=Strict. An Authorization header given more
    than once is a 401 whatever the values (a singleton field, RFC 9110), never read as
    its first."""
    expected: str | None = request.app.state.token
    if expected is None:
        return
    lines = len(request.headers.getlist("authorization"))
    if lines > 1:  # (HTTPBearer reads the first: a proxy's or a client's second went unseen)
        raise HTTPException(
            status_code=401,
            detail=f"the Authorization header is given {lines} times; it takes one value"
            " (RFC 9110 section 11.6.2)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    given = credentials.credentials if credentials is not None else ""
    cookie = request.cookies.get(COOKIE)
    if (
        credentials is None
        and cookie
        and (request.method in SAFE_METHODS or request.headers.get("HX-Request") == "true")
    ):
        given = cookie
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status_code=401,
            detail="a bearer token is required (Authorization: Bearer <token>)"
            if credentials is None
            else "the bearer token is not this server's",
            headers={"WWW-Authenticate": "Bearer"},
        )

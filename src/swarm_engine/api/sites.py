"""Guards against web pages of other sites, for a server without a token (whose only
guard is that it listens on loopback).

- `SameOrigin`: a request that changes something and whose `Origin` is not this server's
  is refused (a plain HTML form posted from a page elsewhere).
- `LoopbackHost`: on a server without a token, a request whose `Host` is not a loopback
  name is refused. A page on `evil.example` whose name an attacker then points at
  127.0.0.1 (DNS rebinding) reaches the server with `Host: evil.example:PORT` and a
  matching `Origin`: same-origin to the browser, so it could read every answer.

Both answer 403 with the API's JSON error body (`api/errors.py`). A server with a token
checks no `Host`: the token authenticates each request, and a rebound page has neither
it nor the dashboard's cookie (a browser keeps that for the name it was set on).
"""

from __future__ import annotations

import ipaddress
import re

from starlette.types import ASGIApp, Receive, Scope, Send

from swarm_engine.api.errors import body

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
PORT = re.compile(r"(:[0-9]{1,5})?")
"""What may follow a `Host` header's name: nothing, or `:` and a port."""


def is_loopback_host(header: str) -> bool:
    """Whether a `Host` header names this machine's loopback, read strictly: `localhost`
    or an IPv4 address in 127.0.0.0/8, or `[::1]` (a bracketed IPv6 literal, read by
    `ipaddress`, no zone), then nothing or `:PORT` (ASCII digits) and nothing else."""
    if header.startswith("["):
        literal, closed, rest = header[1:].partition("]")
        if not closed or not PORT.fullmatch(rest) or "%" in literal:
            return False
        try:
            return ipaddress.IPv6Address(literal).is_loopback
        except ValueError:
            return False
    name, colon, port = header.partition(":")
    if not PORT.fullmatch(colon + port):
        return False
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.IPv4Address(name).is_loopback
    except ValueError:
        return False


class SameOrigin:
    """Refuses (403) a request that changes something when a browser says it comes from
    another site (`Origin` not this server's): a page elsewhere must not drive a
    tokenless loopback server through a plain HTML form. Clients that are not browsers
    send no `Origin` and are not affected."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            headers = dict(scope.get("headers") or [])
            origin = headers.get(b"origin")
            host = headers.get(b"host", b"")
            if origin is not None and origin.split(b"://", 1)[-1] != host:
                message = "a request from another site (Origin)"
                await body(403, "forbidden", message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class LoopbackHost:
    """Refuses (403) every request, reading ones too, whose `Host` header names anything
    but this machine's loopback (`localhost`, 127.0.0.0/8, `[::1]`; any port; read strictly: `is_loopback_host`), when
    `checked` (the server has no token). A request without `Host` (no browser sends
    one) passes."""

    def __init__(self, app: ASGIApp, checked: bool) -> None:
        self.app = app
        self.checked = checked

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.checked and scope["type"] == "http":
            raw = dict(scope.get("headers") or []).get(b"host")
            if raw is not None and not is_loopback_host(raw.decode("latin-1")):
                shown = raw.decode("latin-1")[:100]
                message = (
                    f"Host {shown!r} is not this machine's loopback: a server without a token"
                    " answers only to localhost, 127.0.0.1 or [::1] (DNS rebinding)"
                )
                await body(403, "forbidden", message)(scope, receive, send)
                return
        await self.app(scope, receive, send)

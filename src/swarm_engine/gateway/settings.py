"""`[gateway]` in config.toml: where the model API gateway listens and what it allows.

Only the host sets these. The key the gateway injects and the endpoint it forwards to are
the Claude kind's host settings (`[agents.claude]`: `api_key_*`, `base_url`), so a key is
configured once for the built-in agent and for every metered VM.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_PORTS = (29000, 29999)


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ports: tuple[int, int] = DEFAULT_PORTS
    """The host ports (of 127.0.0.1) the gateway's per-step listeners take, first and last.
    Reserved: a step whose own `vm.allowed_ports` names one of them is refused, so only the
    engine forwards a gateway port into a VM, and only its own step's."""
    request_timeout: float = Field(default=600.0, gt=0, le=3600)
    """Seconds the gateway waits on the endpoint for one response (between bytes)."""
    max_request_mb: int = Field(default=8, ge=1, le=256)
    """The largest request body a VM may send (413 above it). The Messages API takes 32 MB;
    a conversation with images may need more than the default."""
    max_connections: int = Field(default=16, ge=1, le=1024)
    """Connections that presented the step's token a step may hold open to its gateway at
    once; a request with the token on one more is answered 503 and its connection closed."""
    max_pending: int = Field(default=64, ge=1, le=1024)
    """Connections that have not yet presented the step's token, held at once; a new one
    past it closes the oldest of them. Counted apart from `max_connections`, so connections
    without the token (any local process can open them) never lock the step out; a
    listener holds at most `max_connections + max_pending`."""
    head_timeout: float = Field(default=5.0, gt=0, le=60)
    """Seconds a request's head may take to arrive: from the connection's opening for its
    first request, from its first byte for the next ones. The connection is then closed."""
    idle_timeout: float = Field(default=60.0, gt=0, le=3600)
    """Seconds a kept-alive connection may stay idle between requests before it is closed."""
    max_in_flight: int = Field(default=4, ge=1, le=256)
    """`/v1/messages` requests of one step forwarded at once; more wait their turn. The
    budget is checked as each one's turn comes, so requests in flight together can go over
    it by at most this many answers (the step is then reported `budget_exceeded`)."""
    allow_server_tools: bool = False
    """Forward requests that carry `mcp_servers` or server tools (`web_search_*`,
    `web_fetch_*`, `code_execution_*`): the API then fetches URLs and runs code on the
    VM's behalf, outside its sandbox, at prices the gateway does not count. Off: 400."""
    allow_unisolated: bool = False
    """Give the gateway to steps in a VM without isolation (the process backend with
    `isolation = "none"`), whose commands run on the host as the engine's user and could
    read other steps' tokens, or the engine's own environment. Off: such a step is refused."""

    @model_validator(mode="after")
    def _range(self) -> GatewaySettings:
        first, last = self.ports
        if not 1024 <= first <= last <= 65535:
            raise ValueError("ports must be [first, last] with 1024 <= first <= last <= 65535")
        return self

    def reserves(self, port: int) -> bool:
        return self.ports[0] <= port <= self.ports[1]

"""`/metrics`: Prometheus text format, through `prometheus_client`.

| metric | type | labels | from |
|---|---|---|---|
| `swarm_tickets` | gauge | `status` | tickets per status (index-only count, cached 5 s) |
| `swarm_vm_slots` | gauge | `host`, `state` | live VMs per state, and `free` slots, per host |
| `swarm_dispatch_latency_seconds` | histogram | | time in the queue: became open -> claimed |
| `swarm_step_duration_seconds` | histogram | | finished steps' `duration_ms` |
| `swarm_lease_reclaims_total` | counter | | tickets the reclaimer took back from a silent engine |
| `swarm_agent_tokens_total` | counter | `model`, `kind` | tokens per model and kind (input, output, cache_creation_input, cache_read_input) |
| `swarm_agent_cost_usd_total` | counter | `model` | cost per model |
| `swarm_step_usage_left_out_total` | counter | | finished steps with a duration, token count or cost left out of the totals above (implausible or unreadable) |
| `swarm_api_log_streams` | gauge | | live log streams this server has open |
| `swarm_api_log_streams_stalled_total` | counter | | log streams whose client stopped reading, disconnected |

How each stays cheap on a large history: `service/metrics.py`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from swarm_engine.api.deps import RegistryDep, ServerDep, StoreDep
from swarm_engine.models import TicketStatus
from swarm_engine.service import vms
from swarm_engine.service.metrics import Histogram, Tally, model_for

router = APIRouter(tags=["metrics"])


class Snapshot(Collector):
    """A collector that yields metrics read once, for one scrape."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it: `0.5`, `10.0`, `+Inf`."""
    return "+Inf" if bound == math.inf else repr(float(bound))


def _histogram(name: str, doc: str, data: Histogram) -> HistogramMetricFamily:
    buckets = [(_le(b), float(n)) for b, n in zip(data.bounds, data.counts, strict=True)]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=data.sum)


def families(
    counts: dict[str, int], slots: list[tuple[str, str, int]], tally: Tally,
    streams: tuple[int, int] = (0, 0),
) -> list[Metric]:  # fmt: skip
    """Every metric, from what was read for this scrape (`streams`: log streams open, and
    stalled ones disconnected)."""
    tickets = GaugeMetricFamily("swarm_tickets", "Tickets per status.", labels=["status"])
    for status in [s.value for s in TicketStatus] + sorted(set(counts) - set(TicketStatus)):
        tickets.add_metric([status], counts.get(status, 0))
    vm_slots = GaugeMetricFamily(
        "swarm_vm_slots",
        "VM slots per host: live VMs by state (booting, ready, busy, destroying) and free slots.",
        labels=["host", "state"],
    )
    for host, state, n in slots:
        vm_slots.add_metric([host, state], n)
    with tally.lock:
        tokens = CounterMetricFamily(
            "swarm_agent_tokens", "Model API tokens used by agents.", labels=["model", "kind"]
        )
        for (model, kind), n in sorted(tally.tokens.items()):
            tokens.add_metric([model, kind], n)
        cost = CounterMetricFamily(
            "swarm_agent_cost_usd", "Model API cost of agents, in USD.", labels=["model"]
        )
        for model, usd in sorted(tally.cost.items()):
            cost.add_metric([model], usd)
        reclaims = CounterMetricFamily(
            "swarm_lease_reclaims",
            "Tickets taken back from an engine whose lease ran out.",
            value=tally.reclaims,
        )
        left_out = CounterMetricFamily(
            "swarm_step_usage_left_out",
            "Finished steps with a duration, token count or cost left out of these totals"
            " (implausible or unreadable: written by another client).",
            value=tally.left_out,
        )
        dispatch = _histogram(
            "swarm_dispatch_latency_seconds",
            "Time tickets waited in the queue: from becoming open to being claimed.",
            tally.dispatch,
        )
        steps = _histogram(
            "swarm_step_duration_seconds", "Duration of finished steps.", tally.steps
        )
    open_streams = GaugeMetricFamily(
        "swarm_api_log_streams", "Live log streams open.", value=streams[0]
    )
    stalled = CounterMetricFamily(
        "swarm_api_log_streams_stalled",
        "Live log streams whose client stopped reading, disconnected.",
        value=streams[1],
    )
    return [
        tickets, vm_slots, dispatch, steps, reclaims, tokens, cost, left_out, open_streams,
        stalled,
    ]  # fmt: skip


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                     "description": "Prometheus text format."}},
)  # fmt: skip
def metrics(store: StoreDep, registry: RegistryDep, server: ServerDep) -> Response:
    """Ticket counts, VM slots, dispatch latency and step duration histograms, lease
    reclaims, tokens and cost, in Prometheus text format."""
    server.tally.refresh(store, model_for(registry))
    collected = CollectorRegistry(auto_describe=False)
    collected.register(
        Snapshot(
            families(
                server.counts.get(store), vms.slot_counts(store), server.tally,
                (server.streams.taken, server.stalled_streams),
            )
        )
    )  # fmt: skip
    return Response(generate_latest(collected), media_type=CONTENT_TYPE_LATEST)

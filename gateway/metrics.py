"""The gateway's own counters, on the process's registry (runtime.metrics). By principal kind,
not id: five kinds, where ids can be thousands of POS terminals."""

from __future__ import annotations

from gateway.credentials import Kind
from runtime.metrics import Metrics


class GatewayCounters:
    def __init__(self, metrics: Metrics) -> None:
        admitted = metrics.counter(
            "gateway_admitted_calls", "Calls authenticated and admitted by the rate limit.",
            ["principal_kind"],
        )
        limited = metrics.counter(
            "gateway_rate_limited_calls", "Calls refused by a principal's rate limit.", ["principal_kind"]
        )
        shed = metrics.counter(
            "gateway_overload_refused_calls",
            "Calls refused because too many were in flight, by the bound reached (backend, principal).",
            ["bound"],
        )
        # Children resolved once: the hot path does one dict lookup and one increment.
        self.admitted = {kind: admitted.labels(kind.value) for kind in Kind}
        self.rate_limited = {kind: limited.labels(kind.value) for kind in Kind}
        self.shed = {bound: shed.labels(bound) for bound in ("backend", "principal")}

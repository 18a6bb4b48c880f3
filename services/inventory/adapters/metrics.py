"""Inventory's business counters, on the process's registry (runtime.metrics)."""

from __future__ import annotations

from runtime.metrics import Metrics, bounded

# The channels the orchestrator reserves for (services.orchestrator.domain.model.CHANNELS);
# other callers name theirs freely, so anything else is counted as "other".
CHANNELS = ("web", "app", "marketplace", "store", "call_centre")


class PrometheusStockCounters:
    def __init__(self, metrics: Metrics) -> None:
        self._refused = metrics.counter(
            "reservations_refused_for_stock",
            "Reservations refused because a location had not enough available stock.",
            ["channel"],
        )
        self._pos = metrics.counter("pos_transactions", "Till sales and till returns recorded.", ["kind"])
        for kind in ("sale", "return"):
            self._pos.labels(kind)

    def reservation_refused(self, channel: str) -> None:
        self._refused.labels(bounded(channel.lower(), CHANNELS)).inc()

    def pos_recorded(self, is_return: bool) -> None:
        self._pos.labels("return" if is_return else "sale").inc()

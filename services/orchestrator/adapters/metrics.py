"""The orchestrator's business counters, on the process's registry (runtime.metrics)."""

from __future__ import annotations

from runtime.metrics import Metrics, bounded
from services.orchestrator.domain.model import CHANNELS

REASONS = ("invalid", "conflict", "not_found", "unsourceable", "quote_not_kept")
TRIGGERS = ("rejected", "accept_timeout", "location_offline")


class PrometheusOrderCounters:
    def __init__(self, metrics: Metrics) -> None:
        self._placed = metrics.counter("orders_placed", "Orders placed (replays not counted).", ["channel"])
        self._refused = metrics.counter(
            "orders_refused", "Placements refused, by reason (unsourceable: no location could take it).",
            ["channel", "reason"],
        )
        self._reallocated = metrics.counter(
            "reallocations",
            "Lines moved away from a location (trigger), and whether they found a new one (outcome).",
            ["trigger", "outcome"],
        )
        self._parked = metrics.counter(
            "orchestrator_tasks_parked",
            "Background work parked after a permanent refusal (listed by ListParkedTasks), by kind.",
            ["kind"],
        )
        # Every series exists from the start, so rate() and absent() behave before the first order.
        for channel in CHANNELS:
            self._placed.labels(channel)

    def placed(self, channel: str) -> None:
        self._placed.labels(bounded(channel, CHANNELS)).inc()

    def refused(self, channel: str, reason: str) -> None:
        self._refused.labels(bounded(channel, CHANNELS), bounded(reason, REASONS)).inc()

    def reallocated(self, trigger: str, resourced: bool) -> None:
        self._reallocated.labels(bounded(trigger, TRIGGERS), "resourced" if resourced else "cancelled").inc()

    def task_parked(self, kind: str) -> None:
        self._parked.labels(bounded(kind, TRIGGERS)).inc()

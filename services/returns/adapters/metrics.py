"""The returns service's business counters, on the process's registry (runtime.metrics)."""

from __future__ import annotations

from runtime.metrics import Metrics, bounded
from services.returns.adapters.codec import CHANNEL_OF
from services.returns.adapters.inventory import LOCATION_TYPES as TYPE_NAMES
from services.returns.domain.model import TaskKind

CHANNELS = tuple(str(name) for name in CHANNEL_OF.values())
LOCATION_TYPES = tuple(TYPE_NAMES.values())
TASK_KINDS = tuple(kind.value for kind in TaskKind)


class PrometheusReturnCounters:
    def __init__(self, metrics: Metrics) -> None:
        self._created = metrics.counter(
            "returns_created", "Returns and exchanges opened (replays not counted).", ["channel", "kind"]
        )
        self._received = metrics.counter(
            "returns_received", "Return receipts recorded, by the type of location that received them.",
            ["location_type"],
        )

        self._parked = metrics.counter(
            "returns_tasks_parked",
            "Inventory effects parked after a permanent refusal (listed by ListParkedTasks), by kind.",
            ["kind"],
        )

    def task_parked(self, kind: str) -> None:
        self._parked.labels(bounded(kind, TASK_KINDS)).inc()

    def created(self, channel: str, kind: str) -> None:
        self._created.labels(bounded(channel.lower(), CHANNELS), kind).inc()

    def received(self, location_type: str) -> None:
        self._received.labels(bounded(location_type.lower(), LOCATION_TYPES)).inc()

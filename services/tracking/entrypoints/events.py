"""The Kafka side of tracking: every envelope of the consumed topics becomes a RawEvent handed
to the service. A failure that may pass on retry (database down) propagates, so the batch is
not committed and is redelivered; an event that can never be recorded is logged and skipped,
so one poison message cannot stall a partition forever."""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import UTC, datetime

from aiokafka import ConsumerRecord
from tutti.events.v1 import envelope_pb2

from runtime.errors import is_retriable
from services.tracking.adapters.events import to_raw_event
from services.tracking.service import TrackingService

log = logging.getLogger(__name__)


class EventHandler:
    def __init__(self, service: TrackingService, order_keyed_topics: Collection[str]) -> None:
        self._service = service
        self._order_keyed = frozenset(order_keyed_topics)

    async def __call__(self, envelope: envelope_pb2.EventEnvelope, record: ConsumerRecord) -> None:
        record_time = datetime.fromtimestamp(record.timestamp / 1000, tz=UTC)
        try:
            raw = to_raw_event(envelope, record.topic, self._order_keyed, record_time)
            await self._service.record(raw)
        except Exception as exc:
            if is_retriable(exc):
                raise
            log.exception(
                "event %s (%s) from %s[%d]@%d cannot be recorded; skipped",
                envelope.event_id,
                envelope.type,
                record.topic,
                record.partition,
                record.offset,
            )

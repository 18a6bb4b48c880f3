"""The Kafka side of tracking: each partition batch of envelopes becomes RawEvents recorded in
one transaction. A failure that may pass on retry (database down) propagates, so the batch is
not committed and is redelivered; when a batch fails for any other reason it is recorded event
by event, and an event that can never be recorded is logged and skipped, so one poison message
cannot stall a partition forever."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import UTC, datetime

from aiokafka import ConsumerRecord
from tutti.events.v1 import envelope_pb2

from runtime.errors import is_retriable
from services.tracking.adapters.events import to_raw_event
from services.tracking.domain.events import RawEvent
from services.tracking.service import TrackingService

log = logging.getLogger(__name__)

Received = tuple[envelope_pb2.EventEnvelope, ConsumerRecord]


class EventHandler:
    def __init__(self, service: TrackingService, order_keyed_topics: Collection[str]) -> None:
        self._service = service
        self._order_keyed = frozenset(order_keyed_topics)

    def _raw(self, envelope: envelope_pb2.EventEnvelope, record: ConsumerRecord) -> RawEvent | None:
        record_time = datetime.fromtimestamp(record.timestamp / 1000, tz=UTC)
        try:
            return to_raw_event(envelope, record.topic, self._order_keyed, record_time)
        except Exception:
            log.exception(
                "event %s (%s) at %s[%d]@%d cannot be decoded; skipped",
                envelope.event_id,
                envelope.type,
                record.topic,
                record.partition,
                record.offset,
            )
            return None

    async def __call__(self, envelope: envelope_pb2.EventEnvelope, record: ConsumerRecord) -> None:
        await self.batch([(envelope, record)])

    async def batch(self, received: Sequence[Received]) -> None:
        decoded = [
            (raw, envelope, record)
            for envelope, record in received
            if (raw := self._raw(envelope, record)) is not None
        ]
        try:
            await self._service.record_batch([raw for raw, _, _ in decoded])
            return
        except Exception as exc:  # noqa: BLE001 - retriable ones are re-raised just below
            if is_retriable(exc) or len(decoded) == 1:
                self._raise_or_skip(exc, decoded[0][1], decoded[0][2])
                return
            log.warning("batch of %d events failed (%r); recording them one by one", len(decoded), exc)
        for raw, envelope, record in decoded:
            try:
                await self._service.record(raw)
            except Exception as exc:  # noqa: BLE001 - retriable ones are re-raised
                self._raise_or_skip(exc, envelope, record)

    @staticmethod
    def _raise_or_skip(exc: Exception, envelope: envelope_pb2.EventEnvelope, record: ConsumerRecord) -> None:
        if is_retriable(exc):
            raise exc
        log.error(
            "event %s (%s) at %s[%d]@%d cannot be recorded; skipped",
            envelope.event_id,
            envelope.type,
            record.topic,
            record.partition,
            record.offset,
            exc_info=exc,
        )

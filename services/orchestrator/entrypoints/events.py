"""Kafka entrypoint: a location deactivated in inventory (``LocationUpserted`` with
``active = false`` on the inventory ledger) has its open lines re-sourced, like
``ReportLocationOffline``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from aiokafka import ConsumerRecord
from tutti.events.v1 import envelope_pb2
from tutti.inventory.v1 import events_pb2 as inventory_events

from services.orchestrator.service import OrderService

log = logging.getLogger(__name__)

LOCATION_UPSERTED = inventory_events.LocationUpserted.DESCRIPTOR.full_name
# The ledger is kept forever: on a first start the consumer reads history, where old
# deactivations have long been handled. Only recent ones are acted upon, and only when the
# location is still inactive now.
MAX_AGE = timedelta(hours=1)


class LocationEvents:
    def __init__(self, service: OrderService) -> None:
        self._service = service

    async def __call__(self, envelope: envelope_pb2.EventEnvelope, record: ConsumerRecord) -> None:
        if envelope.type != LOCATION_UPSERTED:
            return
        event = inventory_events.LocationUpserted()
        if not envelope.payload.Unpack(event) or event.location.active:
            return
        if envelope.occurred_at.ToDatetime(tzinfo=UTC) < datetime.now(UTC) - MAX_AGE:
            return
        location_id = event.location_id or event.location.location_id
        moved, failed = await self._service.location_deactivated(location_id)
        if moved or failed:
            log.info(
                "re-sourced the open lines of a deactivated location",
                extra={"location_id": location_id, "orders": len(moved), "failed": len(failed)},
            )

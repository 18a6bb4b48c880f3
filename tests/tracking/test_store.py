"""Timeline notifications across replicas, on the real PostgreSQL: an entry recorded through one
replica's pool wakes the watchers of another replica's listener."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime

import pytest

from runtime.postgres import apply_migrations, create_pool
from runtime.settings import CommonSettings
from services.tracking.adapters.postgres import PostgresTimelineNotifications, PostgresTrackingStore
from services.tracking.bootstrap import MIGRATIONS, SCHEMA
from services.tracking.domain.events import RawEvent
from services.tracking.service import TrackingService
from tests.support import random_id, wait_for

pytestmark = pytest.mark.integration


async def test_an_entry_recorded_by_one_replica_wakes_watchers_of_another(settings: CommonSettings) -> None:
    await apply_migrations(settings.database_url, SCHEMA, [MIGRATIONS])
    # Replica A only listens; replica B only records, through its own pool.
    listener = PostgresTimelineNotifications(settings.database_url)
    listening = asyncio.create_task(listener.run())
    pool = await create_pool(settings.database_url, SCHEMA, max_size=2)
    try:
        await wait_for(listener.listening.is_set, message="listener connected")
        recorder = TrackingService(PostgresTrackingStore(pool), listener)
        order_id, other_order = random_id("order"), random_id("order")
        async with listener.subscribe(order_id) as wake, listener.subscribe(other_order) as other_wake:
            recorded = await recorder.record(
                RawEvent(
                    event_id=str(uuid.uuid4()),
                    type="tutti.orchestrator.v1.OrderPlaced",
                    occurred_at=datetime.now(UTC),
                    source="orchestrator",
                    key=order_id,
                    sequence=1,
                    topic="tutti.orders.events.v1",
                    payload={"order_id": order_id},
                    keyed_by_order=True,
                )
            )
            assert recorded
            await asyncio.wait_for(wake.wait(), timeout=5)
            assert not other_wake.is_set()
    finally:
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
        await pool.close()

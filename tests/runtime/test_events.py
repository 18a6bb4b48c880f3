"""Kafka and PostgreSQL plumbing on the real servers: envelopes, consumers that commit only after
handling, the transactional outbox and the inbox."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from google.protobuf import struct_pb2

from runtime.kafka import (
    ORDER_EVENTS,
    EventConsumer,
    EventPublisher,
    build_envelope,
    create_producer,
    ensure_topics,
    unpack,
)
from runtime.postgres import OutboxRelay, apply_migrations, claim_event, create_pool, enqueue_event
from runtime.settings import CommonSettings
from tests.support import random_id, read_events, wait_for

pytestmark = pytest.mark.integration


def _payload(**fields: object) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(fields)
    return message


async def test_ensure_topics_is_idempotent(settings: CommonSettings) -> None:
    await ensure_topics(settings.kafka_bootstrap)
    assert await ensure_topics(settings.kafka_bootstrap) == []


async def test_published_envelopes_carry_metadata_and_payload(settings: CommonSettings) -> None:
    order_id = random_id("O")
    producer = create_producer(settings.kafka_bootstrap, "test")
    await producer.start()
    try:
        sent = await EventPublisher(producer, "test").publish(
            ORDER_EVENTS, _payload(order_id=order_id), key=order_id
        )
    finally:
        await producer.stop()
    (received,) = await read_events(settings.kafka_bootstrap, ORDER_EVENTS.name, lambda e: e.key == order_id)
    assert received.event_id == sent.event_id
    assert received.type == "google.protobuf.Struct"
    assert received.source == "test"
    assert received.occurred_at.seconds > 0
    assert unpack(received, struct_pb2.Struct)["order_id"] == order_id


async def test_consumer_commits_only_after_handling(settings: CommonSettings) -> None:
    """A handler that fails leaves the offset uncommitted: a new consumer in the same group gets
    the event again. Once handled, a restarted consumer does not see it again."""
    group = random_id("group")
    order_id = random_id("O")
    producer = create_producer(settings.kafka_bootstrap, "test")
    await producer.start()
    try:
        await EventPublisher(producer, "test").publish(
            ORDER_EVENTS, _payload(order_id=order_id), key=order_id
        )
    finally:
        await producer.stop()

    seen: list[str] = []

    async def failing(envelope, record) -> None:
        if envelope.key == order_id:
            seen.append("failing")
            raise RuntimeError("handler crashed")

    async def run_until_seen(handler, marker: str) -> None:
        """Runs a consumer as the services do: supervised, so a transient broker error (the
        suite restarts Kafka) restarts it, and its uncommitted events come again."""
        task: asyncio.Task | None = None

        def handled_or_restarted() -> bool:
            nonlocal task
            if marker in seen:
                return True
            if task is None or task.done():
                task = asyncio.create_task(
                    EventConsumer(settings.kafka_bootstrap, group, [ORDER_EVENTS.name], handler).run()
                )
            return False

        try:
            await wait_for(handled_or_restarted, timeout=30, interval=0.2, message=f"{marker} handled")
        finally:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    await run_until_seen(failing, "failing")

    async def working(envelope, record) -> None:
        if envelope.key == order_id:
            seen.append("working")

    await run_until_seen(working, "working")
    assert seen == ["failing", "working"]

    # Handled and committed: a third consumer in the group starts after it.
    marker = random_id("O")
    producer = create_producer(settings.kafka_bootstrap, "test")
    await producer.start()
    try:
        await EventPublisher(producer, "test").publish(ORDER_EVENTS, _payload(order_id=marker), key=order_id)
    finally:
        await producer.stop()
    keys: list[str] = []

    async def recording(envelope, record) -> None:
        payload = unpack(envelope, struct_pb2.Struct)
        if envelope.key == order_id:
            keys.append(payload["order_id"])
            if payload["order_id"] == marker:
                seen.append("marker")

    await run_until_seen(recording, "marker")
    assert keys == [marker]


@pytest.fixture
async def schema(settings: CommonSettings):
    name = random_id("t").replace("-", "_")
    await apply_migrations(settings.database_url, name, [])
    yield name
    conn = await asyncpg.connect(settings.database_url)
    await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
    await conn.close()


async def test_migrations_apply_once(settings: CommonSettings, schema: str) -> None:
    assert await apply_migrations(settings.database_url, schema, []) == []


async def test_outbox_relays_committed_events_only(settings: CommonSettings, schema: str) -> None:
    pool = await create_pool(settings.database_url, schema)
    producer = create_producer(settings.kafka_bootstrap, "test")
    await producer.start()
    started_ms = int(time.time() * 1000) - 1000
    try:
        committed = build_envelope(_payload(order_id="kept"), source="test", key=random_id("O"))
        rolled_back = build_envelope(_payload(order_id="lost"), source="test", key=committed.key)
        async with pool.acquire() as conn:
            async with conn.transaction():
                await enqueue_event(conn, ORDER_EVENTS, committed)
            with pytest.raises(RuntimeError):
                async with conn.transaction():
                    await enqueue_event(conn, ORDER_EVENTS, rolled_back)
                    raise RuntimeError("business rule failed after the write")
        relay = OutboxRelay(pool, producer, schema)
        task = asyncio.create_task(relay.run())
        try:
            events = await read_events(
                settings.kafka_bootstrap, ORDER_EVENTS.name, lambda e: e.key == committed.key,
                from_beginning_ms=started_ms,
            )
            assert [e.event_id for e in events] == [committed.event_id]
            await wait_for(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox"), message="outbox drained")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await producer.stop()
        await pool.close()


async def test_outbox_row_committed_during_a_relay_pass_is_not_lost(
    settings: CommonSettings, schema: str
) -> None:
    """Ids are taken at insert, rows become visible at commit: an earlier id can commit while
    the relay is publishing a later one. That row must be relayed on the next pass, not deleted."""
    pool = await create_pool(settings.database_url, schema)
    producer = create_producer(settings.kafka_bootstrap, "test")
    await producer.start()
    started_ms = int(time.time() * 1000) - 1000
    key = random_id("O")
    early = build_envelope(_payload(n=1), source="test", key=key)
    late = build_envelope(_payload(n=2), source="test", key=key)
    slow_writer = await pool.acquire()
    try:
        slow_tx = slow_writer.transaction()
        await slow_tx.start()
        await enqueue_event(slow_writer, ORDER_EVENTS, early)  # takes the lower id, not committed
        async with pool.acquire() as conn, conn.transaction():
            await enqueue_event(conn, ORDER_EVENTS, late)

        class CommitsTheEarlierRowWhileSending:
            async def send(self, *args, **kwargs):
                if slow_tx is not None and not committed:
                    committed.append(True)
                    await slow_tx.commit()  # between the relay's SELECT and its DELETE
                return await producer.send(*args, **kwargs)

        committed: list[bool] = []
        relay = OutboxRelay(pool, CommitsTheEarlierRowWhileSending(), schema)  # type: ignore[arg-type]
        assert await relay.relay_once() == 1  # the late row only; the early one was not visible
        assert committed
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 1
        assert await relay.relay_once() == 1  # the early row, on the next pass
        seen = await read_events(
            settings.kafka_bootstrap, ORDER_EVENTS.name, lambda e: e.key == key,
            from_beginning_ms=started_ms, count=2,
        )
        assert sorted(e.event_id for e in seen) == sorted([early.event_id, late.event_id])
    finally:
        await pool.release(slow_writer)
        await producer.stop()
        await pool.close()


async def test_the_relay_renews_a_producer_whose_state_the_broker_lost(
    settings: CommonSettings, schema: str
) -> None:
    """After a broker outage aiokafka's idempotent producer can be refused for good
    (OutOfOrderSequenceNumber); the relay swaps it for a fresh one and the event still arrives."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import OutOfOrderSequenceNumber

    from runtime.kafka import RenewableProducer

    class Wedged:
        async def start(self) -> None: ...

        async def stop(self) -> None: ...

        async def send(self, *args: object, **kwargs: object) -> None:
            raise OutOfOrderSequenceNumber()

    made: list[object] = [
        Wedged(),
        AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True),
    ]
    producer = RenewableProducer(lambda: made.pop(0))  # type: ignore[arg-type, return-value]
    await producer.start()
    pool = await create_pool(settings.database_url, schema)
    started_ms = int(time.time() * 1000) - 1000
    envelope = build_envelope(_payload(n=1), source="test", key=random_id("O"))
    async with pool.acquire() as conn, conn.transaction():
        await enqueue_event(conn, ORDER_EVENTS, envelope)
    task = asyncio.create_task(OutboxRelay(pool, producer, schema).run())
    try:
        (_seen,) = await read_events(
            settings.kafka_bootstrap, ORDER_EVENTS.name, lambda e: e.event_id == envelope.event_id,
            from_beginning_ms=started_ms,
        )
        assert producer.renewals == 1
        await wait_for(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox"), message="outbox drained")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
        await pool.close()


async def test_inbox_claims_an_event_once(settings: CommonSettings, schema: str) -> None:
    pool = await create_pool(settings.database_url, schema)
    try:
        event_id = "6f1c1d0e-2f0a-4b8e-9a55-0d6b0c9f9b11"
        async with pool.acquire() as conn:
            assert await claim_event(conn, "tracking", event_id) is True
            assert await claim_event(conn, "tracking", event_id) is False
            assert await claim_event(conn, "returns", event_id) is True
    finally:
        await pool.close()


@pytest.mark.restarts
async def test_outbox_events_survive_a_kafka_restart(settings: CommonSettings, schema: str) -> None:
    """Events committed while the broker restarts are relayed once it is back: none is lost."""
    import subprocess
    from pathlib import Path

    pool = await create_pool(settings.database_url, schema)
    producer = create_producer(
        settings.kafka_bootstrap, "test", request_timeout_ms=5000, retry_backoff_ms=200
    )
    await producer.start()
    started_ms = int(time.time() * 1000) - 1000
    key = random_id("O")
    relay = OutboxRelay(pool, producer, schema)
    task = asyncio.create_task(relay.run())
    try:
        restart = asyncio.create_task(asyncio.to_thread(
            subprocess.run, [str(Path(__file__).parents[2] / "infra" / "infra.sh"), "restart-one", "kafka"],
            check=True, capture_output=True,
        ))
        sent = []
        for n in range(20):
            envelope = build_envelope(_payload(n=n), source="test", key=key)
            async with pool.acquire() as conn, conn.transaction():
                await enqueue_event(conn, ORDER_EVENTS, envelope)
            sent.append(envelope.event_id)
            await asyncio.sleep(0.2)  # spread the writes across the restart window
        await restart
        # At least once: a batch in flight during the restart may be sent twice; consumers
        # de-duplicate by event id, and so does this reader.
        seen: set[str] = set()

        def first_time(envelope) -> bool:
            fresh = envelope.key == key and envelope.event_id not in seen
            seen.add(envelope.event_id)
            return fresh

        events = await read_events(settings.kafka_bootstrap, ORDER_EVENTS.name, first_time,
                                   count=20, timeout=90, from_beginning_ms=started_ms)
        # Order per key is kept: one relay at a time, in outbox id order.
        assert [e.event_id for e in events] == sent
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
        await pool.close()


async def test_an_outbox_row_kafka_refuses_for_good_is_parked_and_the_rows_behind_it_go_on(
    settings: CommonSettings, schema: str
) -> None:
    pool = await create_pool(settings.database_url, schema)
    # A producer whose largest request is small: the big row is refused before it is sent.
    producer = create_producer(settings.kafka_bootstrap, "test", max_request_size=64 * 1024)
    await producer.start()
    started_ms = int(time.time() * 1000) - 1000
    key = random_id("O")
    try:
        huge = build_envelope(_payload(blob="x" * 200_000), source="test", key=key)
        after = build_envelope(_payload(n=2), source="test", key=key)
        async with pool.acquire() as conn, conn.transaction():
            await enqueue_event(conn, ORDER_EVENTS, huge)
            await enqueue_event(conn, ORDER_EVENTS, after)
        relay = OutboxRelay(pool, producer, schema)
        assert await relay.relay_once() == 2
        [parked] = await relay.parked()
        assert "MessageSizeTooLarge" in parked["parked_reason"]
        assert await relay.backlog() == (0, None)  # parked rows are not a stuck relay
        (received,) = await read_events(
            settings.kafka_bootstrap, ORDER_EVENTS.name, lambda e: e.key == key, from_beginning_ms=started_ms
        )
        assert received.event_id == after.event_id
        # Retried on demand: relayed again on the next pass (and parked again while still too big).
        assert await relay.unpark(parked["id"])
        assert await relay.relay_once() == 1
        assert [r["id"] for r in await relay.parked()] == [parked["id"]]
    finally:
        await producer.stop()
        await pool.close()

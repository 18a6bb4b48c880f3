"""Kafka plumbing: the topic registry, safe producer and consumer settings, event envelopes.

aiokafka's defaults favour throughput over safety; here producers are idempotent with
acks=all, consumers never auto-commit and commit only after the handler returned, and every
event carries an id that consumers de-duplicate on (delivery is at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka import errors as aiokafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry import trace
from tutti.events.v1 import envelope_pb2

from runtime import telemetry
from runtime.metrics import Metrics
from runtime.settings import KafkaSecurity

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    partitions: int
    compacted: bool = False
    # -1 keeps records forever: ledgers are the record Redis state is rebuilt from.
    retention_ms: int = 7 * 24 * 3600 * 1000
    description: str = ""

    def configs(self, replication_factor: int = 1) -> dict[str, str]:
        # With three or more replicas an acks=all write survives the loss of one broker.
        min_insync = 2 if replication_factor >= 3 else 1
        cfg = {"retention.ms": str(self.retention_ms), "min.insync.replicas": str(min_insync)}
        if self.compacted:
            cfg["cleanup.policy"] = "compact"
        return cfg


# Every topic Tutti uses, created explicitly (brokers run with auto-creation off).
# Names are versioned: a breaking change of a payload gets a new topic.
INVENTORY_MOVEMENTS = Topic(
    "tutti.inventory.movements.v1", 6, retention_ms=-1,
    description="Every stock movement, keyed by SKU: the inventory ledger.",
)
INVENTORY_AVAILABILITY = Topic(
    "tutti.inventory.availability.v1", 6, compacted=True, retention_ms=-1,
    description="Latest availability per SKU x location (compacted) for marketplaces and connectors.",
)
ORDER_EVENTS = Topic(
    "tutti.orders.events.v1", 6, description="Order lifecycle events, keyed by order id."
)
RETURN_EVENTS = Topic(
    "tutti.returns.events.v1", 3, description="Return and exchange events, keyed by order id."
)

TOPICS: tuple[Topic, ...] = (INVENTORY_MOVEMENTS, INVENTORY_AVAILABILITY, ORDER_EVENTS, RETURN_EVENTS)


def security_options(security: KafkaSecurity | None) -> dict[str, Any]:
    """aiokafka client arguments for ``security`` (TUTTI_KAFKA_SECURITY_PROTOCOL and friends):
    TLS checked against the CA file (or the system's trust store), SASL PLAIN or SCRAM."""
    if security is None or security.protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.tls:
        options["ssl_context"] = create_ssl_context(cafile=security.ca_file)
    if security.sasl:
        options.update(
            sasl_mechanism=security.sasl_mechanism,
            sasl_plain_username=security.username,
            sasl_plain_password=security.password,
        )
    return options


async def ensure_topics(
    bootstrap: str,
    topics: Iterable[Topic] = TOPICS,
    replication_factor: int = 1,
    *,
    security: KafkaSecurity | None = None,
) -> list[str]:
    """Create missing topics; returns the names created. Safe to run concurrently and repeatedly."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=15_000, **security_options(security)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t.name not in existing]
        if not missing:
            return []
        new = [
            NewTopic(name=t.name, num_partitions=t.partitions, replication_factor=replication_factor,
                     topic_configs=t.configs(replication_factor))
            for t in missing
        ]
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(new)
        return [t.name for t in missing]
    finally:
        await admin.close()


# The broker no longer knows this producer's id or sequence numbers (it restarted or failed
# over while batches were in flight). aiokafka does not bump the epoch as the Java client does:
# the producer stays wedged until it is replaced (aio-libs/aiokafka#1017).
# Refusals of one record that no retry can change: an outbox relay parks the row and goes on.
REFUSED_FOR_GOOD = (
    aiokafka_errors.MessageSizeTooLargeError,
    aiokafka_errors.RecordTooLargeError,
    aiokafka_errors.InvalidTopicError,
    aiokafka_errors.CorruptRecordException,
)

PRODUCER_STATE_LOST = (
    aiokafka_errors.OutOfOrderSequenceNumber,
    aiokafka_errors.UnknownProducerId,
    aiokafka_errors.InvalidProducerEpoch,
    aiokafka_errors.InvalidProducerIdMapping,
)


class RenewableProducer:
    """An AIOKafkaProducer (every attribute is the current one's) that ``renew`` replaces with a
    fresh one, under a new producer id, when the broker lost the old one's state. Whatever was
    in flight is the caller's to resend: outbox relays do, and consumers de-duplicate."""

    def __init__(self, factory: Callable[[], AIOKafkaProducer]) -> None:
        self._factory = factory
        self._current = factory()
        self.renewals = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._current, name)

    async def start(self) -> None:
        await self._current.start()

    async def stop(self) -> None:
        await self._current.stop()

    async def renew(self) -> None:
        old, self._current = self._current, self._factory()
        self.renewals += 1
        with contextlib.suppress(Exception):
            await old.stop()
        await self._current.start()


def create_producer(
    bootstrap: str, client_id: str, *, security: KafkaSecurity | None = None, **overrides: object
) -> RenewableProducer:
    """An idempotent producer: acks=all, retries without duplicates or reordering."""
    options: dict[str, object] = {
        **security_options(security),
        "bootstrap_servers": bootstrap,
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 2,
        "request_timeout_ms": 30_000,
        "compression_type": None,
    }
    options.update(overrides)
    return RenewableProducer(lambda: AIOKafkaProducer(**options))


def new_event_id() -> str:
    return str(uuid.uuid4())


def build_envelope(
    payload: Message,
    *,
    source: str,
    key: str,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
    schema_version: int = 1,
    sequence: int = 0,
    position: int = 0,
) -> envelope_pb2.EventEnvelope:
    packed = any_pb2.Any()
    packed.Pack(payload, type_url_prefix="type.tutti.dev/")
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(occurred_at or datetime.now(UTC))
    return envelope_pb2.EventEnvelope(
        event_id=event_id or new_event_id(),
        type=payload.DESCRIPTOR.full_name,
        occurred_at=ts,
        source=source,
        key=key,
        schema_version=schema_version,
        sequence=sequence,
        payload=packed,
        position=position,
    )


def unpack(envelope: envelope_pb2.EventEnvelope, message_type: type[Message]) -> Message:
    message = message_type()
    if not envelope.payload.Unpack(message):
        raise ValueError(
            f"event {envelope.event_id} carries {envelope.type}, not {message_type.DESCRIPTOR.full_name}"
        )
    return message


class EventPublisher:
    """Publishes envelopes keyed by aggregate id, with trace context in the headers."""

    def __init__(self, producer: AIOKafkaProducer, source: str) -> None:
        self._producer = producer
        self._source = source

    async def publish(
        self, topic: Topic | str, payload: Message, *, key: str, **envelope_fields: object
    ) -> envelope_pb2.EventEnvelope:
        envelope = build_envelope(payload, source=self._source, key=key, **envelope_fields)  # type: ignore[arg-type]
        await self.publish_envelope(topic, envelope)
        return envelope

    async def publish_envelope(self, topic: Topic | str, envelope: envelope_pb2.EventEnvelope) -> None:
        name = topic.name if isinstance(topic, Topic) else topic
        await self._producer.send_and_wait(
            name,
            value=envelope.SerializeToString(),
            key=envelope.key.encode(),
            headers=telemetry.inject_kafka_headers([("event-type", envelope.type.encode())]),
        )


Handler = Callable[[envelope_pb2.EventEnvelope, ConsumerRecord], Awaitable[None]]
# Receives one partition's batch (offset order) at once, e.g. to apply it in one transaction.
BatchHandler = Callable[[list[tuple[envelope_pb2.EventEnvelope, ConsumerRecord]]], Awaitable[None]]


@dataclass
class EventConsumer:
    """Consumes envelopes and commits each partition's offset only after its batch was handled.

    Handlers must be idempotent by ``envelope.event_id`` (delivery is at least once); a handler
    that raises stops the batch before the commit, so the events are redelivered.
    """

    bootstrap: str
    group_id: str
    topics: Sequence[str]
    handler: Handler
    client_id: str = "tutti"
    batch_timeout_ms: int = 200
    max_records: int = 500
    started: asyncio.Event = field(default_factory=asyncio.Event)
    # When set, called once per partition batch instead of ``handler`` once per record; the
    # offset is committed after it returns, as with ``handler``.
    batch_handler: BatchHandler | None = None
    # Lag per partition and handling time go there when given.
    metrics: Metrics | None = None
    # Lag is read from the consumer's own fetch state, at most this often.
    lag_interval_seconds: float = 1.0
    # TLS and SASL towards the brokers (CommonSettings.kafka_security); None: PLAINTEXT.
    security: KafkaSecurity | None = None

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            client_id=self.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=self.max_records,
            **security_options(self.security),
        )
        await consumer.start()
        self.started.set()
        lag_due = 0.0
        lagging: set[TopicPartition] = set()
        try:
            while True:
                batches = await consumer.getmany(
                    timeout_ms=self.batch_timeout_ms, max_records=self.max_records
                )
                for tp, records in batches.items():
                    if self.batch_handler is not None:
                        start = time.perf_counter()
                        await self._handle_batch(self.batch_handler, records)
                        self._observe(tp, time.perf_counter() - start)
                    else:
                        for record in records:
                            start = time.perf_counter()
                            await self._handle(record)
                            self._observe(tp, time.perf_counter() - start)
                    await consumer.commit({tp: records[-1].offset + 1})
                    if self.metrics is not None:
                        self.metrics.events_handled.labels(self.group_id, tp.topic).inc(len(records))
                if self.metrics is not None and time.monotonic() >= lag_due:
                    lag_due = time.monotonic() + self.lag_interval_seconds
                    lagging = await self._record_lag(consumer, self.metrics, lagging)
        finally:
            # Offsets of fully handled batches are already committed; stopping leaves the group cleanly.
            await consumer.stop()

    def _observe(self, tp: TopicPartition, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.event_duration.labels(self.group_id, tp.topic).observe(seconds)

    async def _record_lag(
        self, consumer: AIOKafkaConsumer, metrics: Metrics, before: set[TopicPartition]
    ) -> set[TopicPartition]:
        """Lag = high watermark (from the last fetch) - position, for each assigned partition;
        partitions this member no longer owns drop out (another member reports them)."""
        assigned = set(consumer.assignment())
        for tp in before - assigned:
            with contextlib.suppress(KeyError):
                metrics.consumer_lag.remove(self.group_id, tp.topic, str(tp.partition))
        for tp in assigned:
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue  # nothing fetched yet: unknown, not zero
            position = await consumer.position(tp)
            metrics.consumer_lag.labels(self.group_id, tp.topic, str(tp.partition)).set(
                max(0, highwater - position)
            )
        return assigned

    @staticmethod
    def _parse(record: ConsumerRecord) -> envelope_pb2.EventEnvelope | None:
        envelope = envelope_pb2.EventEnvelope()
        try:
            envelope.ParseFromString(record.value)
        except Exception:  # noqa: BLE001 - any unparseable record (DecodeError, None value...) is skipped
            # A poison message must not block the partition forever; it is logged and skipped.
            log.error("skipping unparseable record %s[%d]@%d", record.topic, record.partition, record.offset)
            return None
        return envelope

    async def _handle_batch(self, batch_handler: BatchHandler, records: Sequence[ConsumerRecord]) -> None:
        parsed = [(envelope, record) for record in records if (envelope := self._parse(record)) is not None]
        if not parsed:
            return
        if not telemetry.tracing_enabled():
            await batch_handler(parsed)
            return
        first = parsed[0][1]
        with telemetry.tracer(__name__).start_as_current_span(
            f"{first.topic} process",
            kind=trace.SpanKind.CONSUMER,
            links=telemetry.kafka_links(record.headers for _, record in parsed),
            attributes={
                "messaging.system": "kafka",
                "messaging.operation": "process",
                "messaging.destination.name": first.topic,
                "messaging.destination.partition.id": str(first.partition),
                "messaging.consumer.group.name": self.group_id,
                "messaging.batch.message_count": len(parsed),
            },
        ):
            await batch_handler(parsed)

    async def _handle(self, record: ConsumerRecord) -> None:
        envelope = self._parse(record)
        if envelope is None:
            return
        token = otel_context.attach(telemetry.extract_kafka_context(record.headers))
        try:
            await self.handler(envelope, record)
        finally:
            otel_context.detach(token)


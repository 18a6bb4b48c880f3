"""Test support shared by every suite: waiting on conditions, running services in-process on
ephemeral ports, reading events back from Kafka, random ids. No fakes of servers here."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TypeVar

import grpc
from aiokafka import AIOKafkaConsumer, TopicPartition
from tutti.events.v1 import envelope_pb2

from runtime import tls
from runtime.grpc_server import Wiring, serve
from runtime.settings import CommonSettings, InternalTls

T = TypeVar("T")


def random_id(prefix: str) -> str:
    """Ids unique per test so suites never see each other's data on shared servers."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def wait_for(
    condition: Callable[[], Awaitable[T]] | Callable[[], T],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - the keyword every test passes; bounds the polling loop
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        last = result
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout}s (last value: {last!r})")
        await asyncio.sleep(interval)


def internal_tls(identity: str | None = None) -> InternalTls:
    """The test process's internal TLS files (the gateway's certificate, tests/conftest.py), or
    those of ``identity`` from the same test CA."""
    mine = InternalTls.from_env("test")
    if identity is None:
        return mine
    return InternalTls(mine.ca, mine.ca.with_name(f"{identity}.crt"), mine.ca.with_name(f"{identity}.key"))


def internal_credentials(identity: str | None = None) -> grpc.ChannelCredentials:
    """Client credentials for a backend's internal mTLS port, as the gateway (or ``identity``)."""
    return tls.channel_credentials(internal_tls(identity))


def internal_channel(address: str, identity: str | None = None) -> grpc.aio.Channel:
    """A channel to a backend's internal mTLS port, as the gateway (or as ``identity``)."""
    return grpc.aio.secure_channel(address, internal_credentials(identity))


@dataclasses.dataclass
class RunningService:
    address: str
    settings: CommonSettings
    stop: asyncio.Event
    task: asyncio.Task[None]
    # http://127.0.0.1:<port>/metrics of this service's own registry.
    metrics_url: str = ""


@asynccontextmanager
async def running_service(
    settings: CommonSettings,
    build: Callable[[CommonSettings, AsyncExitStack], Awaitable[Wiring]],
    *,
    ready_timeout: float = 30.0,
    shutdown_grace_seconds: float = 2.0,
) -> AsyncIterator[RunningService]:
    """Run a service's real composition root in this event loop on an ephemeral port (its
    metrics on another), wait until its health check says SERVING, and shut it down gracefully
    afterwards."""
    from grpc_health.v1 import health_pb2

    from tools.stack import health

    settings = dataclasses.replace(
        settings,
        listen_address="127.0.0.1:0",
        metrics_address="127.0.0.1:0",
        shutdown_grace_seconds=shutdown_grace_seconds,
    )
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    metrics_port: list[int] = []
    task = asyncio.create_task(
        serve(settings, build, stop=stop, bound=port.set_result, metrics_bound=metrics_port.append)
    )
    done, _ = await asyncio.wait({task, port}, timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # re-raise the start-up failure
    if port not in done:
        task.cancel()
        raise AssertionError("service did not bind in time")
    address = f"127.0.0.1:{port.result()}"
    reply_type = health_pb2.HealthCheckResponse
    serving = reply_type.ServingStatus.Name(reply_type.SERVING).lower()

    async def is_serving() -> bool:
        if task.done():
            task.result()
        # A backend's port is mTLS (runtime.tls); the gateway's public one is not.
        if settings.internal_tls is not None:
            credentials = tls.channel_credentials(settings.internal_tls)
            if await health(address, credentials=credentials) == serving:
                return True
        return await health(address) == serving

    try:
        await wait_for(is_serving, timeout=ready_timeout, message=f"service at {address} SERVING")
        yield RunningService(
            address, settings, stop, task, f"http://127.0.0.1:{metrics_port[0]}/metrics"
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def read_events(
    bootstrap: str,
    topic: str,
    predicate: Callable[[envelope_pb2.EventEnvelope], bool],
    *,
    count: int = 1,
    timeout: float = 15.0,  # noqa: ASYNC109 - part of this helper's API, like wait_for's
    from_beginning_ms: int | None = None,
) -> list[envelope_pb2.EventEnvelope]:
    """Read ``topic`` (all partitions, no consumer group) until ``count`` envelopes match.

    Starts at the offsets for ``from_beginning_ms`` (a wall-clock ms timestamp taken before the
    action under test), or at the beginning of the topic."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            await consumer._client.force_metadata_update()  # metadata for a topic not yet seen
            partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        if from_beginning_ms is None:
            await consumer.seek_to_beginning(*partitions)
        else:
            # End offsets first: anything published after this snapshot is at or beyond them,
            # so a partition with nothing newer than the timestamp still misses nothing.
            ends = await consumer.end_offsets(partitions)
            offsets = await consumer.offsets_for_times({tp: from_beginning_ms for tp in partitions})
            for tp in partitions:
                found = offsets.get(tp)
                consumer.seek(tp, ends[tp] if found is None else found.offset)
        matched: list[envelope_pb2.EventEnvelope] = []
        deadline = time.monotonic() + timeout
        while len(matched) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"only {len(matched)} of {count} matching events on {topic} within {timeout}s"
                )
            batches = await consumer.getmany(timeout_ms=int(min(remaining, 0.5) * 1000))
            for records in batches.values():
                for record in records:
                    envelope = envelope_pb2.EventEnvelope.FromString(record.value)
                    if predicate(envelope):
                        matched.append(envelope)
        return matched
    finally:
        await consumer.stop()

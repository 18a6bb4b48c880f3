"""Trace context crosses process boundaries: gRPC metadata and Kafka headers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AsyncExitStack

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from runtime import telemetry
from runtime.grpc_server import Wiring, client_channel
from runtime.settings import CommonSettings
from tests.support import internal_tls, running_service

tracer = trace.get_tracer("tests")
spans = InMemorySpanExporter()


@pytest.fixture(autouse=True, scope="module")
def tracing_on() -> Iterator[None]:
    """Tracing as a deployment with an exporter has it; the rest of the suite runs without."""
    telemetry.configure_tracing("test", "none", processor=SimpleSpanProcessor(spans))
    assert telemetry.tracing_enabled()
    yield
    telemetry.configure_tracing("test", "none")
    assert not telemetry.tracing_enabled()


def test_without_an_exporter_no_interceptor_is_installed() -> None:
    telemetry.configure_tracing("test", "none")
    try:
        assert telemetry.server_interceptors() == [] and telemetry.client_interceptors() == []
    finally:
        telemetry.configure_tracing("test", "none", processor=SimpleSpanProcessor(spans))
    assert telemetry.server_interceptors() and telemetry.client_interceptors()


def test_kafka_headers_carry_the_trace_context() -> None:
    with tracer.start_as_current_span("publish") as span:
        headers = telemetry.inject_kafka_headers([("event-type", b"x")])
    assert headers[0] == ("event-type", b"x")
    assert any(key == "traceparent" for key, _ in headers)
    restored = trace.get_current_span(telemetry.extract_kafka_context(headers)).get_span_context()
    assert restored.trace_id == span.get_span_context().trace_id


async def test_grpc_calls_carry_the_trace_context(settings: CommonSettings) -> None:
    seen: list[int] = []

    async def whoami(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        seen.append(trace.get_current_span().get_span_context().trace_id)
        return b""

    identity = lambda b: b  # noqa: E731
    handler = grpc.method_handlers_generic_handler(
        "tutti.test.v1.Trace", {"WhoAmI": grpc.unary_unary_rpc_method_handler(whoami, identity, identity)}
    )

    async def build(settings: CommonSettings, stack: AsyncExitStack) -> Wiring:
        return Wiring(
            register=lambda s: s.add_generic_rpc_handlers((handler,)), service_names=["tutti.test.v1.Trace"]
        )

    async with (
        running_service(settings, build) as svc,
        client_channel(svc.address, internal_tls=internal_tls()) as channel,
    ):
        with tracer.start_as_current_span("caller") as span:
            await channel.unary_unary("/tutti.test.v1.Trace/WhoAmI")(b"", timeout=5)
    assert seen == [span.get_span_context().trace_id]
    # Both sides recorded a span of that trace: the client call and the server handler.
    recorded = [s for s in spans.get_finished_spans() if s.context.trace_id == seen[0]]
    kinds = {s.kind for s in recorded}
    assert {trace.SpanKind.CLIENT, trace.SpanKind.SERVER} <= kinds, recorded


async def test_a_batch_handled_at_once_links_to_the_trace_of_each_event() -> None:
    """Tracking handles a partition's batch in one transaction: its span links to the span
    that produced each event, so every order's trace still reaches the timeline write."""
    from aiokafka.structs import ConsumerRecord
    from tutti.events.v1 import envelope_pb2

    from runtime.kafka import EventConsumer

    producers, records = [], []
    for offset in range(3):
        with tracer.start_as_current_span(f"producer {offset}") as span:
            producers.append(span.get_span_context())
            headers = telemetry.inject_kafka_headers()
        value = envelope_pb2.EventEnvelope(event_id=f"e{offset}").SerializeToString()
        records.append(
            ConsumerRecord("tutti.test", 0, offset, 0, 0, None, value, None, len(value), 0, tuple(headers))
        )
    records.append(ConsumerRecord("tutti.test", 0, 3, 0, 0, None, b"\xff", None, 1, 0, ()))  # poison: skipped
    seen: list[trace.SpanContext] = []

    async def batch(parsed: object) -> None:
        seen.append(trace.get_current_span().get_span_context())

    consumer = EventConsumer(
        "unused:9092", "tracking-test", ["tutti.test"], handler=None, batch_handler=batch  # type: ignore[arg-type]
    )
    await consumer._handle_batch(batch, records)

    # By span id: the module's processor may have joined the provider more than once.
    span = {s.context.span_id: s for s in spans.get_finished_spans()}[seen[0].span_id]
    assert span.kind == trace.SpanKind.CONSUMER and span.name == "tutti.test process"
    assert [link.context.span_id for link in span.links] == [p.span_id for p in producers]
    assert span.attributes["messaging.batch.message_count"] == 3

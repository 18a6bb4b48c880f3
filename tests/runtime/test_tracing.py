"""Trace context crosses process boundaries: gRPC metadata and Kafka headers."""

from __future__ import annotations

from contextlib import AsyncExitStack

import grpc
from opentelemetry import trace

from runtime import telemetry
from runtime.grpc_server import Wiring, client_channel
from runtime.settings import CommonSettings
from tests.support import running_service

telemetry.configure_tracing("test", "none")
tracer = trace.get_tracer("tests")


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
        return Wiring(register=lambda s: s.add_generic_rpc_handlers((handler,)), service_names=["tutti.test.v1.Trace"])

    async with running_service(settings, build) as svc:
        async with client_channel(svc.address) as channel:
            with tracer.start_as_current_span("caller") as span:
                await channel.unary_unary("/tutti.test.v1.Trace/WhoAmI")(b"", timeout=5)
    assert seen == [span.get_span_context().trace_id]

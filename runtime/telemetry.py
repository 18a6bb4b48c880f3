"""OpenTelemetry tracing set up from the environment, with context carried across
gRPC (interceptors from opentelemetry-instrumentation-grpc) and Kafka (message headers)."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
import os

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

_configured = False


def configure_tracing(service: str, exporter: str) -> TracerProvider:
    """Install a tracer provider once per process. exporter: none | console | otlp."""
    global _configured
    # With no exporter, spans are not recorded (the standard OTEL_TRACES_SAMPLER still wins), but
    # trace ids are still made and propagated, so logs and downstream services can correlate.
    sampler = ParentBased(ALWAYS_OFF) if exporter == "none" and not os.environ.get("OTEL_TRACES_SAMPLER") else None
    provider = TracerProvider(resource=Resource.create({"service.name": f"tutti-{service}"}), sampler=sampler)
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        # Optional dependency: only deployments that ship traces install the exporter.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
            OTLPSpanExporter,
        )

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if not _configured:
        trace.set_tracer_provider(provider)
        _configured = True
    return provider


def server_interceptors() -> list[object]:
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]


def client_interceptors() -> list[object]:
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())


def inject_kafka_headers(headers: list[tuple[str, bytes]] | None = None) -> list[tuple[str, bytes]]:
    """Current trace context as Kafka headers (W3C traceparent/tracestate)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    out = list(headers or [])
    out.extend((key, value.encode()) for key, value in carrier.items())
    return out


def extract_kafka_context(headers: Sequence[tuple[str, bytes]] | None) -> otel_context.Context:
    carrier = {key: value.decode(errors="replace") for key, value in headers or ()}
    return propagate.extract(carrier)


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)

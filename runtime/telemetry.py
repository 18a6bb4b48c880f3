"""OpenTelemetry tracing set up from the environment, with context carried across
gRPC (interceptors from opentelemetry-instrumentation-grpc) and Kafka (message headers).

Tracing is on when spans go somewhere (an exporter, or a processor given by a test). With
``OTEL_TRACES_EXPORTER=none`` it is off: no gRPC interceptors at all, because grpc.aio runs every
intercepted client call in an extra task and the spans would be dropped anyway (availability
reads through the gateway went from about 780 to 850 calls/s without them). The gateway then
forwards a caller's W3C trace headers untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

_configured = False
_enabled = False


def configure_tracing(
    service: str, exporter: str, *, processor: SpanProcessor | None = None
) -> TracerProvider:
    """Install a tracer provider once per process. exporter: none | console | otlp.
    ``processor`` receives the spans too (tests record them in memory)."""
    global _configured, _enabled
    _enabled = exporter != "none" or processor is not None
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"tutti-{service}"}),
        sampler=None if _enabled else ALWAYS_OFF,
    )
    if processor is not None:
        provider.add_span_processor(processor)
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
    elif processor is not None and isinstance(current := trace.get_tracer_provider(), TracerProvider):
        # The global provider is set once per process; a later processor joins it.
        current.add_span_processor(processor)
        return current
    return provider


def tracing_enabled() -> bool:
    return _enabled


def server_interceptors() -> list[object]:
    if not _enabled:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]


def client_interceptors() -> list[object]:
    if not _enabled:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())


_TRACE_HEADERS = ("traceparent", "tracestate")


def caller_context(metadata: Iterable[Any]) -> otel_context.Context | None:
    """The trace context a caller sent (W3C traceparent), or None when it sent none. Used with
    tracing off, where no interceptor reads it: the handler's log lines still carry the
    caller's trace id, and its events carry the trace on to Kafka. Parsing one header is cheap."""
    carrier = {item[0]: item[1] for item in metadata if item[0] in _TRACE_HEADERS}
    if not carrier:
        return None
    extracted = propagate.extract(carrier)
    return extracted if trace.get_current_span(extracted).get_span_context().is_valid else None


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the active span, or of the caller's context; None without."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


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


def kafka_links(headers_of_records: Iterable[Sequence[tuple[str, bytes]] | None]) -> list[trace.Link]:
    """Links to the spans that produced a batch's records: a batch handled at once has many
    parents, so (as OpenTelemetry's messaging conventions say) its span links to each instead."""
    links = []
    for headers in headers_of_records:
        context = trace.get_current_span(extract_kafka_context(headers)).get_span_context()
        if context.is_valid:
            links.append(trace.Link(context))
    return links


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)

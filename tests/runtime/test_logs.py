"""JSON log lines carry the trace they belong to: the active span's, or with tracing off the
trace id a caller sent in its traceparent header."""

from __future__ import annotations

import json
import logging
from contextlib import AsyncExitStack

import grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from runtime import telemetry
from runtime.grpc_server import Wiring
from runtime.logs import JsonFormatter
from runtime.settings import CommonSettings
from tests.support import internal_channel, running_service

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Lines(logging.Handler):
    """Keeps each record formatted as the service would write it (at emit time, in the
    logging call's context, as a StreamHandler does)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter("test"))
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def capture(name: str) -> Lines:
    lines = Lines()
    logger = logging.getLogger(name)
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    return lines


def test_a_line_outside_any_span_has_no_trace_fields() -> None:
    lines = capture("tests.logs.none")
    logging.getLogger("tests.logs.none").info("hello")
    assert "trace_id" not in lines.lines[0] and "span_id" not in lines.lines[0]


def test_a_line_inside_a_span_carries_its_ids() -> None:
    lines = capture("tests.logs.span")
    # A provider of its own: spans are recorded whatever the process-wide one samples.
    tracer = TracerProvider().get_tracer("tests")
    with tracer.start_as_current_span("work") as span:
        logging.getLogger("tests.logs.span").info("inside")
    context = span.get_span_context()
    assert lines.lines[0]["trace_id"] == format(context.trace_id, "032x")
    assert lines.lines[0]["span_id"] == format(context.span_id, "016x")


async def test_with_tracing_off_a_handler_logs_the_trace_id_its_caller_sent(settings: CommonSettings) -> None:
    assert not telemetry.tracing_enabled()
    lines = capture("tests.logs.handler")

    async def work(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        logging.getLogger("tests.logs.handler").info("handling", extra={"request": request.decode()})
        return b""

    identity = lambda b: b  # noqa: E731
    handler = grpc.method_handlers_generic_handler(
        "tutti.test.v1.Logs", {"Work": grpc.unary_unary_rpc_method_handler(work, identity, identity)}
    )

    async def build(settings: CommonSettings, stack: AsyncExitStack) -> Wiring:
        return Wiring(
            register=lambda s: s.add_generic_rpc_handlers((handler,)), service_names=["tutti.test.v1.Logs"]
        )

    async with running_service(settings, build) as svc, internal_channel(svc.address) as channel:
        call = channel.unary_unary("/tutti.test.v1.Logs/Work")
        await call(b"traced", metadata=[("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01")], timeout=5)
        await call(b"untraced", timeout=5)
        await call(b"malformed", metadata=[("traceparent", "00-nonsense")], timeout=5)
    by_request = {line["request"]: line for line in lines.lines}
    assert by_request["traced"]["trace_id"] == TRACE_ID
    assert by_request["traced"]["span_id"] == PARENT_ID  # the caller's: no span of our own
    assert "trace_id" not in by_request["untraced"]
    assert "trace_id" not in by_request["malformed"]
    # Nothing of one call's context leaks into what the process logs afterwards.
    logging.getLogger("tests.logs.handler").info("after", extra={"request": "after"})
    assert "trace_id" not in lines.lines[-1]
    assert trace.get_current_span().get_span_context().is_valid is False

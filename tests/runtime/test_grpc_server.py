"""The shared server bootstrap, exercised through a real grpc.aio server and client."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import grpc
import pytest
import redis.exceptions
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from runtime import deadlines, errors
from runtime.grpc_server import Wiring
from runtime.settings import CommonSettings
from tests.support import internal_channel, running_service, wait_for

SERVICE = "tutti.test.v1.Probe"


entered = asyncio.Event()


def _probe_handler(behaviours: dict[str, object], release: asyncio.Event) -> grpc.GenericRpcHandler:
    async def fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise behaviours[request.decode()]  # type: ignore[misc]

    async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        entered.set()
        await release.wait()
        return b"done"

    async def budget(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        # What a downstream call made from this handler would get, for a 5 s budget.
        return str(deadlines.timeout(5.0)).encode()

    async def stream_fail(request: bytes, context: grpc.aio.ServicerContext):
        yield b"first"
        raise behaviours[request.decode()]  # type: ignore[misc]

    identity = lambda b: b  # noqa: E731 - raw bytes in, raw bytes out
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Fail": grpc.unary_unary_rpc_method_handler(fail, identity, identity),
            "Slow": grpc.unary_unary_rpc_method_handler(slow, identity, identity),
            "Budget": grpc.unary_unary_rpc_method_handler(budget, identity, identity),
            "StreamFail": grpc.unary_stream_rpc_method_handler(stream_fail, identity, identity),
        },
    )


def _build(behaviours: dict[str, object], release: asyncio.Event, ready: list[bool]):
    async def build(settings: CommonSettings, stack: AsyncExitStack) -> Wiring:
        async def is_ready() -> None:
            if not ready[0]:
                raise ConnectionError("dependency down")

        return Wiring(
            register=lambda server: server.add_generic_rpc_handlers((_probe_handler(behaviours, release),)),
            service_names=[SERVICE],
            ready=is_ready,
        )

    return build


BEHAVIOURS: dict[str, object] = {
    "invalid": errors.InvalidArgument("sku", "must not be empty"),
    "missing": errors.NotFound("order O-1 not found"),
    "short": errors.FailedPrecondition("not enough stock for SKU-1@S1"),
    "busy": errors.ResourceExhausted("rate limit", retry_after_seconds=0.5),
    "redis": redis.exceptions.ConnectionError("connection refused"),
    "bug": ZeroDivisionError("division by zero in a secret place"),
}


@pytest.fixture
async def probe(settings: CommonSettings):
    release = asyncio.Event()
    ready = [True]
    async with (
        running_service(settings, _build(BEHAVIOURS, release, ready)) as svc,
        internal_channel(svc.address) as channel,
    ):
        yield svc, channel, release, ready


async def _call(channel: grpc.aio.Channel, method: str, payload: bytes) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(f"/{SERVICE}/{method}")(payload, timeout=5)
    return caught.value


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("invalid", grpc.StatusCode.INVALID_ARGUMENT, "sku: must not be empty"),
        ("missing", grpc.StatusCode.NOT_FOUND, "order O-1 not found"),
        ("short", grpc.StatusCode.FAILED_PRECONDITION, "not enough stock for SKU-1@S1"),
        ("busy", grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit"),
        ("redis", grpc.StatusCode.UNAVAILABLE, "a dependency is temporarily unavailable; retry with backoff"),
        ("bug", grpc.StatusCode.INTERNAL, "internal error; it has been logged"),
    ],
)
async def test_errors_map_to_precise_status_codes(
    probe, case: str, code: grpc.StatusCode, message: str
) -> None:
    _, channel, _, _ = probe
    error = await _call(channel, "Fail", case.encode())
    assert error.code() == code
    assert error.details() == message
    assert "Traceback" not in (error.debug_error_string() or "")


async def test_downstream_calls_end_with_the_callers_deadline(probe) -> None:
    _, channel, _, _ = probe
    budget = channel.unary_unary(f"/{SERVICE}/Budget")
    assert 0 < float(await budget(b"", timeout=1.5)) < 1.5  # what the caller has left
    assert float(await budget(b"", timeout=60)) == 5.0  # never more than the call's own budget
    assert float(await budget(b"")) == 5.0  # no deadline: the budget
    assert deadlines.timeout(5.0) == 5.0  # outside a call: the budget


async def test_validation_errors_carry_bad_request_details(probe) -> None:
    _, channel, _, _ = probe
    error = await _call(channel, "Fail", b"invalid")
    status = rpc_status.from_call(error)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "sku"


async def test_errors_in_server_streams_are_mapped_too(probe) -> None:
    _, channel, _, _ = probe
    call = channel.unary_stream(f"/{SERVICE}/StreamFail")(b"missing", timeout=5)
    assert await call.read() == b"first"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_follows_dependencies(probe) -> None:
    _, channel, _, ready = probe
    health = health_pb2_grpc.HealthStub(channel)

    async def status(service: str = "") -> int:
        return (await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)).status

    assert await status(SERVICE) == health_pb2.HealthCheckResponse.SERVING
    ready[0] = False
    await wait_for(lambda: _is(status(), health_pb2.HealthCheckResponse.NOT_SERVING), timeout=15,
                   message="NOT_SERVING once the dependency is down")
    # Alive all the same: a liveness probe must not restart a process that waits for its database.
    assert await status("liveness") == health_pb2.HealthCheckResponse.SERVING


async def _is(value, expected) -> bool:
    return await value == expected


async def test_reflection_lists_the_services(probe) -> None:
    _, channel, _, _ = probe
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = set()
    async for response in responses:
        names |= {s.name for s in response.list_services_response.service}
        break
    assert {SERVICE, "grpc.health.v1.Health"} <= names


async def test_shutdown_drains_in_flight_calls_and_reports_not_serving(settings: CommonSettings) -> None:
    release = asyncio.Event()
    build = _build(BEHAVIOURS, release, [True])
    async with running_service(settings, build, shutdown_grace_seconds=20) as svc:
        channel = internal_channel(svc.address)
        in_flight = asyncio.ensure_future(channel.unary_unary(f"/{SERVICE}/Slow")(b"", timeout=10))
        await wait_for(entered.is_set, timeout=5, message="call reached the handler")
        svc.stop.set()
        health = health_pb2_grpc.HealthStub(channel)

        async def not_serving() -> bool:
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                return True
            return reply.status == health_pb2.HealthCheckResponse.NOT_SERVING

        await wait_for(not_serving, timeout=5, message="NOT_SERVING during shutdown")
        release.set()
        assert await in_flight == b"done"
        await channel.close()


async def test_shutdown_stops_a_background_loop_that_swallowed_its_cancellation(settings) -> None:
    """redis-py can swallow a cancellation that lands inside a blocking read (the inventory relay's
    XREAD BLOCK did, and SIGTERM then never finished): shutdown asks again until the loop stops."""
    cancellations: list[int] = []

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancellations.append(1)
                if len(cancellations) > 1:
                    raise
                # Swallowed, as the library did: the loop goes on.

    async def build(settings: CommonSettings, stack: AsyncExitStack) -> Wiring:
        return Wiring(register=lambda server: None, service_names=[SERVICE], background=(stubborn,))

    async with running_service(settings, build) as svc:
        pass
    assert svc.task.done() and not svc.task.cancelled()
    assert len(cancellations) == 2

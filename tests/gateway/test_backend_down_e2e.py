"""One backend down: the gateway stays SERVING (it stays in every load balancer), reports that
backend NOT_SERVING under the backend's own health names, answers UNAVAILABLE naming it for its
methods only, and serves the other backends' methods as before."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from tutti.tracking.v1 import tracking_pb2

from gateway.bootstrap import backend_health_name, builder
from gateway.credentials import Kind
from gateway.policy import Rule
from runtime import tls
from runtime.settings import CommonSettings
from tests.gateway.backend import SERVICE, FakeBackend, load_test_proto, start_backend
from tests.gateway.conftest import KEYS, TEST_POLICIES, Client, gateway_settings
from tests.support import internal_tls, running_service, wait_for

pytestmark = pytest.mark.e2e

TRACKING = tracking_pb2.DESCRIPTOR.services_by_name["TrackingService"]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _health_only_server() -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await health.set("", SERVING)
    # A backend's port: mTLS with the test CA, as the gateway's channels expect (runtime.tls).
    port = server.add_secure_port("127.0.0.1:0", tls.server_credentials(internal_tls("tracking")))
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_one_backend_down_leaves_the_gateway_serving_the_others(
    settings: CommonSettings, credentials_file: Path
) -> None:
    orders_server, orders_address = await start_backend(FakeBackend())
    tracking_server, tracking_address = await _health_only_server()
    policies = {
        **TEST_POLICIES,
        **{f"{TRACKING.full_name}/{method.name}": Rule(frozenset(Kind)) for method in TRACKING.methods},
    }
    common = dataclasses.replace(
        settings,
        addresses={**settings.addresses, "orchestrator": orders_address, "tracking": tracking_address},
    )
    build = builder(
        gateway_settings(credentials_file),
        services={"orchestrator": [load_test_proto()], "tracking": [TRACKING]},
        policies=policies,
        order_lookup=f"{SERVICE}/GetOrder",
    )
    try:
        async with (
            running_service(common, build) as gateway,
            grpc.aio.insecure_channel(gateway.address) as channel,
        ):
            health = health_pb2_grpc.HealthStub(channel)

            async def status(name: str = "") -> int:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)
                return int(reply.status)

            get_timeline = channel.unary_unary(
                f"/{TRACKING.full_name}/GetOrderTimeline",
                request_serializer=tracking_pb2.GetOrderTimelineRequest.SerializeToString,
                response_deserializer=tracking_pb2.GetOrderTimelineResponse.FromString,
            )

            async def timeline() -> object:
                request = tracking_pb2.GetOrderTimelineRequest(order_id="o-1")
                admin = [("authorization", f"Bearer {KEYS['admin']}")]
                return await get_timeline(request, metadata=admin, timeout=5)

            client = Client(channel, KEYS["web"])

            # Both up: every name SERVING; the tracking stand-in answers for itself (it
            # implements nothing), so the call reached it.
            for name in ("", backend_health_name("orchestrator"), SERVICE, backend_health_name("tracking"),
                         TRACKING.full_name):
                await wait_for(lambda name=name: _is(status(name), SERVING), timeout=15, message=f"{name} up")
            with pytest.raises(grpc.aio.AioRpcError) as reached:
                await timeline()
            assert reached.value.code() == grpc.StatusCode.UNIMPLEMENTED

            await tracking_server.stop(None)

            for name in (backend_health_name("tracking"), TRACKING.full_name):
                await wait_for(
                    lambda name=name: _is(status(name), NOT_SERVING), timeout=20, message=f"{name} down"
                )
            # The gateway itself, and the backend still up, stay SERVING.
            assert await status() == SERVING
            assert await status(backend_health_name("orchestrator")) == SERVING
            assert await status(SERVICE) == SERVING
            assert (await client.echo(text="still here")).text == "still here"
            # The stopped backend's methods: UNAVAILABLE, naming it.
            with pytest.raises(grpc.aio.AioRpcError) as down:
                await timeline()
            assert down.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "tracking" in (down.value.details() or ""), down.value.details()
            assert "orchestrator" not in (down.value.details() or "")
    finally:
        await orders_server.stop(None)
        await tracking_server.stop(None)


async def _is(value: object, expected: int) -> bool:
    try:
        return await value == expected  # type: ignore[misc]
    except grpc.aio.AioRpcError:
        return False
